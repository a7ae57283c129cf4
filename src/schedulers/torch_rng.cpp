// torch's CPU generator: an mt19937 engine, 24-bit uniform floats and Box-Muller normals.
//
// torch.randn on a contiguous float tensor of >= 16 elements takes the block path (normal_fill): all uniforms
// are drawn first, then turned into normals 16 at a time — the first 8 values of a block give the radii, the
// last 8 the angles. When the size is not a multiple of 16 the final 16 values are drawn afresh and
// recomputed. On x86 machines with AVX2 (where torch dispatches its AVX2 kernel, AVX-512 machines included)
// the block math uses the Cephes-style polynomials of avx_mathfun.h in float32; they are plain IEEE float
// operations, so they are reproduced here bit for bit in portable scalar code. Smaller tensors take the
// scalar path: double-precision Box-Muller whose second sample is cached in the generator for the next draw.
#include "schedulers/torch_rng.h"

#include <bit>
#include <cmath>
#include <numbers>

#include "sdrt/error.h"

namespace sdrt::schedulers {
namespace {

constexpr int kStateSize = 624;
constexpr int kShift = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfU;
constexpr uint32_t kUpperMask = 0x80000000U;
constexpr uint32_t kLowerMask = 0x7fffffffU;

// ---- float32 log and sincos, operation for operation as avx_mathfun.h evaluates each lane ----
//
// torch builds its AVX2 kernels with -mfma and GCC's default -ffp-contract=fast, so every multiply whose only
// use is an add or subtract is fused. The fused multiply-adds are written out explicitly with std::fma (exact
// on any machine) and every other product and sum is rounded on its own, which reproduces torch's results bit
// for bit.

float bits_to_float(uint32_t b) {
  return std::bit_cast<float>(b);
}
uint32_t float_to_bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

float cephes_logf(float x) {
  const bool invalid = !(x > 0.0f);  // x <= 0 (or NaN) gives NaN
  const float kMinNormPos = bits_to_float(0x00800000U);
  x = x > kMinNormPos ? x : kMinNormPos;  // max_ps(x, min): returns the second operand when x is NaN
  const uint32_t xb = float_to_bits(x);
  const int32_t exponent = static_cast<int32_t>(xb >> 23) - 0x7f;
  // Mantissa scaled into [0.5, 1).
  x = bits_to_float((xb & ~0x7f800000U) | float_to_bits(0.5f));
  float e = static_cast<float>(exponent) + 1.0f;

  const bool below_sqrt_half = x < static_cast<float>(0.707106781186547524);
  const float tmp0 = below_sqrt_half ? x : 0.0f;
  x = x - 1.0f;
  e = e - (below_sqrt_half ? 1.0f : 0.0f);
  x = x + tmp0;

  const float z = x * x;
  static constexpr float kP[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                                  -1.2420140846E-1f, +1.4249322787E-1f, -1.6668057665E-1f,
                                  +2.0000714765E-1f, -2.4999993993E-1f, +3.3333331174E-1f};
  float y = kP[0];
  for (int i = 1; i < 9; ++i) y = std::fma(y, x, kP[i]);
  y = y * x;
  y = std::fma(y, z, e * -2.12194440e-4f);
  y = std::fma(-z, 0.5f, y);
  x = x + y;
  x = std::fma(e, 0.693359375f, x);
  return invalid ? bits_to_float(0xffffffffU) : x;  // or_ps with an all-ones mask
}

void cephes_sincosf(float x, float* sin_out, float* cos_out) {
  const uint32_t sign_in = float_to_bits(x) & 0x80000000U;
  x = std::fabs(x);
  const float scaled = x * static_cast<float>(1.27323954473516);  // 4 / pi
  // Octant index rounded up to even, as cvttps + ((j + 1) & ~1).
  int32_t j = static_cast<int32_t>(scaled);
  j = (j + 1) & ~1;
  const float jf = static_cast<float>(j);
  const uint32_t swap_sign_sin = static_cast<uint32_t>(j & 4) << 29;
  const bool use_cos_poly_for_cos = (j & 2) == 0;

  // Extended-precision reduction: x - j*pi/4 in three pieces.
  x = std::fma(jf, -0.78515625f, x);
  x = std::fma(jf, -2.4187564849853515625e-4f, x);
  x = std::fma(jf, -3.77489497744594108e-8f, x);

  const uint32_t sign_cos = static_cast<uint32_t>(~(j - 2) & 4) << 29;
  const uint32_t sign_sin = sign_in ^ swap_sign_sin;

  const float z = x * x;
  float yc = std::fma(2.443315711809948E-005f, z, -1.388731625493765E-003f);
  yc = std::fma(yc, z, 4.166664568298827E-002f);
  yc = yc * z;
  yc = std::fma(yc, z, -(z * 0.5f));
  yc = yc + 1.0f;

  float ys = std::fma(-1.9515295891E-4f, z, 8.3321608736E-3f);
  ys = std::fma(ys, z, -1.6666654611E-1f);
  ys = ys * z;
  ys = std::fma(ys, x, x);

  // Blend as the vector code does (masked adds and subtracts, which turn -0 into +0 the same way).
  const float sin_from_s = use_cos_poly_for_cos ? ys : 0.0f;
  const float sin_from_c = use_cos_poly_for_cos ? 0.0f : yc;
  ys = ys - sin_from_s;
  yc = yc - sin_from_c;
  const float s = sin_from_c + sin_from_s;
  const float c = yc + ys;
  *sin_out = bits_to_float(float_to_bits(s) ^ sign_sin);
  *cos_out = bits_to_float(float_to_bits(c) ^ sign_cos);
}

// Box-Muller on 16 uniforms in place: data[0..8) feed the radii, data[8..16) the angles.
void normal_block16(float* data) {
  const float two_pi = static_cast<float>(2.0f * std::numbers::pi);
  for (int k = 0; k < 8; ++k) {
    const float u1 = 1.0f - data[k];  // [0, 1) -> (0, 1] so that log is finite
    const float u2 = data[k + 8];
    const float radius = std::sqrt(-2.0f * cephes_logf(u1));
    float s, c;
    cephes_sincosf(two_pi * u2, &s, &c);
    // torch finishes with fma(n, std=1, mean=0): exact, except that -0 becomes +0.
    data[k] = std::fma(radius * c, 1.0f, 0.0f);
    data[k + 8] = std::fma(radius * s, 1.0f, 0.0f);
  }
}

}  // namespace

TorchGenerator::TorchGenerator(uint64_t seed) {
  // torch seeds the 32-bit engine with the low 32 bits of the 64-bit seed.
  state_[0] = static_cast<uint32_t>(seed & 0xffffffffU);
  for (int i = 1; i < kStateSize; ++i) {
    const uint32_t prev = state_[i - 1];
    state_[i] = 1812433253U * (prev ^ (prev >> 30)) + static_cast<uint32_t>(i);
  }
  index_ = kStateSize;
}

uint32_t TorchGenerator::random() {
  if (index_ >= kStateSize) {
    // Regenerate the whole state (the standard mt19937 twist).
    for (int i = 0; i < kStateSize; ++i) {
      const uint32_t mixed = (state_[i] & kUpperMask) | (state_[(i + 1) % kStateSize] & kLowerMask);
      const uint32_t twisted = (mixed >> 1) ^ ((state_[(i + 1) % kStateSize] & 1U) ? kMatrixA : 0U);
      state_[i] = state_[(i + kShift) % kStateSize] ^ twisted;
    }
    index_ = 0;
  }
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680U;
  y ^= (y << 15) & 0xefc60000U;
  y ^= y >> 18;
  return y;
}

uint64_t TorchGenerator::random64() {
  // The first draw forms the high word.
  const uint64_t hi = random();
  const uint64_t lo = random();
  return (hi << 32) | lo;
}

void TorchGenerator::fill_randn(float* out, int64_t n) {
  if (n < 0) throw Error(ErrorKind::kInternal, "fill_randn: negative count");
  if (n >= 16) {
    // torch's normal_fill: 24-bit uniforms in [0, 1), exactly representable as float.
    const auto uniform = [this] { return static_cast<float>(random() & 0xffffffU) * (1.0f / 16777216.0f); };
    for (int64_t i = 0; i < n; ++i) out[i] = uniform();
    for (int64_t i = 0; i + 16 <= n; i += 16) normal_block16(out + i);
    if (n % 16 != 0) {
      float* tail = out + n - 16;
      for (int i = 0; i < 16; ++i) tail[i] = uniform();
      normal_block16(tail);
    }
    return;
  }
  // Scalar path: normal_distribution<double>, one pair per two values, the sine half cached in the generator.
  for (int64_t i = 0; i < n; ++i) {
    if (has_cached_normal_) {
      has_cached_normal_ = false;
      out[i] = static_cast<float>(cached_normal_ + 0.0);  // torch applies mean 0 / std 1 here too
      continue;
    }
    const auto uniform = [this] {
      return static_cast<double>(random64() & ((uint64_t{1} << 53) - 1)) * (1.0 / 9007199254740992.0);
    };
    const double u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log1p(-u2));
    const double theta = 2.0 * std::numbers::pi * u1;
    cached_normal_ = r * std::sin(theta);
    has_cached_normal_ = true;
    out[i] = static_cast<float>(r * std::cos(theta) + 0.0);
  }
}

Tensor TorchGenerator::randn(const Shape& shape) {
  Tensor t(shape, DType::kF32);
  fill_randn(t.data<float>(), t.numel());
  return t;
}

}  // namespace sdrt::schedulers
