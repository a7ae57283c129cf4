// Shared helpers for the CUDA op tests: one CUDA context for the whole test binary, seeded random data
// rounded to fp16, host <-> device copies and comparison against a CPU reference (NMSE and a per-element
// |got − ref| ≤ atol + rtol·|ref| bound). Tests start with SDRT_REQUIRE_CUDA() so that they skip, naming the
// reason, on machines without a GPU.
#pragma once

#if SDRT_HAVE_CUDA

#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cuda/context.h"

// Skips the current test (GTEST_SKIP returns from the enclosing function) when no CUDA device is usable.
#define SDRT_REQUIRE_CUDA()                                                            \
  do {                                                                                 \
    if (!::sdrt::cuda::device_available())                                             \
      GTEST_SKIP() << "no usable CUDA device: " << ::sdrt::cuda::device_description(); \
  } while (0)

namespace sdrt::testing::cuda {

// The process-wide context (created on first use; only call after SDRT_REQUIRE_CUDA()).
inline sdrt::cuda::Context& context() {
  static std::unique_ptr<sdrt::cuda::Context> ctx = std::make_unique<sdrt::cuda::Context>(0);
  return *ctx;
}
inline cudaStream_t stream() {
  return context().stream();
}

// offset + scale · N(0, 1), seeded.
inline std::vector<float> random_normal(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = offset + scale * normal(rng);
  return v;
}

// Uniform in [lo, hi), seeded.
inline std::vector<float> random_uniform(size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = uniform(rng);
  return v;
}

inline std::vector<__half> to_half(const std::vector<float>& v) {
  std::vector<__half> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = __float2half_rn(v[i]);
  return h;
}

inline std::vector<float> to_float(const std::vector<__half>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); ++i) v[i] = __half2float(h[i]);
  return v;
}

// Rounds every value to the nearest fp16 (in place) and returns it: the CPU reference then sees exactly the
// inputs the GPU sees.
inline std::vector<float>& round_to_half(std::vector<float>& v) {
  for (auto& x : v) x = __half2float(__float2half_rn(x));
  return v;
}

// Device copies of host vectors, and back.
template <typename T>
sdrt::cuda::DeviceBuffer to_device(const std::vector<T>& host) {
  sdrt::cuda::DeviceBuffer buf(host.size() * sizeof(T));
  if (!host.empty()) sdrt::cuda::upload(context(), buf.data(), host.data(), host.size() * sizeof(T));
  return buf;
}

template <typename T>
std::vector<T> from_device(const sdrt::cuda::DeviceBuffer& buf, size_t count) {
  std::vector<T> host(count);
  if (count > 0) sdrt::cuda::download(context(), host.data(), buf.data(), count * sizeof(T));
  return host;
}

// fp16 device buffer of float values (rounded), and an fp16 device buffer read back as floats.
inline sdrt::cuda::DeviceBuffer to_device_half(const std::vector<float>& host) {
  return to_device(to_half(host));
}
inline std::vector<float> from_device_half(const sdrt::cuda::DeviceBuffer& buf, size_t count) {
  return to_float(from_device<__half>(buf, count));
}

struct Tolerance {
  double nmse = 1e-6;  // Σ(got − ref)² / Σ ref²
  double atol = 1e-2;  // per element: |got − ref| ≤ atol + rtol·|ref|
  double rtol = 4e-3;  // 4e-3 ≈ 8 fp16 half-ulps
};

struct Comparison {
  double nmse = 0.0;
  double max_abs = 0.0;   // max |got − ref|
  double max_ref = 0.0;   // max |ref|
  size_t worst = 0;       // index of the element furthest outside atol + rtol·|ref| (or of max_abs)
  size_t violations = 0;  // elements outside the per-element bound
  size_t nonfinite = 0;   // non-finite values in got where ref is finite
};

inline Comparison compare(const std::vector<float>& got, const std::vector<float>& ref,
                          const Tolerance& tol) {
  Comparison c;
  double err = 0.0, norm = 0.0, worst_excess = -1e300;
  const size_t n = std::min(got.size(), ref.size());
  for (size_t i = 0; i < n; ++i) {
    const double g = got[i], r = ref[i];
    if (!std::isfinite(g) && std::isfinite(r)) {
      ++c.nonfinite;
      c.worst = i;
      worst_excess = 1e300;
      continue;
    }
    const double d = std::fabs(g - r);
    err += d * d;
    norm += r * r;
    c.max_abs = std::max(c.max_abs, d);
    c.max_ref = std::max(c.max_ref, std::fabs(r));
    const double excess = d - (tol.atol + tol.rtol * std::fabs(r));
    if (excess > 0.0) ++c.violations;
    if (excess > worst_excess) {
      worst_excess = excess;
      c.worst = i;
    }
  }
  c.nmse = norm > 0.0 ? err / norm : err;
  return c;
}

// EXPECT_TRUE(expect_close(got, ref, tol)) << "case name";
inline ::testing::AssertionResult expect_close(const std::vector<float>& got, const std::vector<float>& ref,
                                               const Tolerance& tol = {}) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != reference size " << ref.size();
  const Comparison c = compare(got, ref, tol);
  std::ostringstream msg;
  msg << "nmse " << c.nmse << " (limit " << tol.nmse << "), max |err| " << c.max_abs << ", max |ref| "
      << c.max_ref << ", " << c.violations << " of " << got.size() << " outside " << tol.atol << " + "
      << tol.rtol << "·|ref|, " << c.nonfinite << " non-finite";
  if (!got.empty()) msg << "; worst at [" << c.worst << "]: got " << got[c.worst] << ", ref " << ref[c.worst];
  if (c.nmse <= tol.nmse && c.violations == 0 && c.nonfinite == 0)
    return ::testing::AssertionSuccess() << msg.str();
  return ::testing::AssertionFailure() << msg.str();
}

}  // namespace sdrt::testing::cuda

#endif  // SDRT_HAVE_CUDA
