// Schedule arithmetic shared by the schedulers, reproducing the numpy and torch calls of diffusers.
//
// Products and sums that numpy/torch round separately are written as separate statements so that no compiler
// fuses them into FMAs: Clang's default contracts only within an expression, and GCC contracts nothing in ISO
// C++ mode (sdrt's setting; -ffp-contract=fast with FMA hardware flags would break exactness).
#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <limits>
#include <numbers>

#include <fmt/format.h>

#include "schedulers/schedule_math.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {

std::vector<float> torch_linspace_f32(double start, double end, int64_t n) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n <= 0) return out;
  const float start_f = static_cast<float>(start);
  const float end_f = static_cast<float>(end);
  if (n == 1) {
    out[0] = start_f;
    return out;
  }
  // torch fills the first half forwards from start and the second half backwards from end; its AVX2 build
  // fuses each multiply-add.
  const float step = (end_f - start_f) / static_cast<float>(n - 1);
  const int64_t halfway = n / 2;
  for (int64_t i = 0; i < n; ++i) {
    out[static_cast<size_t>(i)] = i < halfway ? std::fma(step, static_cast<float>(i), start_f)
                                              : std::fma(-step, static_cast<float>(n - i - 1), end_f);
  }
  return out;
}

std::vector<double> np_linspace(double start, double stop, int64_t n) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(n, 0)));
  const int64_t div = n - 1;
  const double delta = stop - start;
  const double step = div > 0 ? delta / static_cast<double>(div) : 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double v = static_cast<double>(i);
    if (div > 0 && step != 0.0) {
      v = v * step;
    } else if (div > 0) {
      v = v / static_cast<double>(div);
      v = v * delta;
    } else {
      v = v * delta;
    }
    y[static_cast<size_t>(i)] = v + start;
  }
  if (n > 1) y.back() = stop;
  return y;
}

std::vector<double> np_arange(double start, double stop, double step) {
  const double count = std::ceil((stop - start) / step);
  std::vector<double> out;
  if (!(count > 0)) return out;
  const auto n = static_cast<size_t>(count);
  out.resize(n);
  out[0] = start;
  if (n > 1) out[1] = start + step;
  // numpy's fill recomputes the step from the first two values.
  const double delta = n > 1 ? out[1] - start : 0.0;
  for (size_t i = 2; i < n; ++i) {
    const double offset = static_cast<double>(i) * delta;
    out[i] = start + offset;
  }
  return out;
}

double np_round(double x) {
  return std::nearbyint(x);
}  // default rounding mode: ties to even

float np_log_f32(float x) {
  if (std::isnan(x)) return x;
  if (x < 0.0f) return -std::numeric_limits<float>::quiet_NaN();
  if (x == 0.0f) return -std::numeric_limits<float>::infinity();
  if (std::isinf(x)) return x;
  // Split into a mantissa in [0.5, 1) and an exponent (denormals scaled by 2^100 first).
  float exp_adjust = 0.0f;
  if (x < FLT_MIN) {
    x = x * std::bit_cast<float>(0x71800000U);
    exp_adjust = 100.0f;
  }
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  float exponent = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  exponent = exponent - exp_adjust;
  float m = std::bit_cast<float>((bits & 0x7fffffU) | (126U << 23));
  if (m <= static_cast<float>(0.707106781186547524400844362104849039)) {
    m = m + m;
    exponent = exponent - 1.0f;
  }
  m = m - 1.0f;
  // Rational minimax approximation of log(1 + m), evaluated with fused multiply-adds as numpy does.
  float num = std::fma(2.589979117907922693523e-02f, m, 3.808837741388407920751e-01f);
  num = std::fma(num, m, 1.480000633576506585156e+00f);
  num = std::fma(num, m, 2.112677543073053063722e+00f);
  num = std::fma(num, m, 9.999999999999998702752e-01f);
  num = std::fma(num, m, 0.0f);
  float den = std::fma(5.875095403124574342950e-03f, m, 1.546476374983906719538e-01f);
  den = std::fma(den, m, 9.864942958519418960339e-01f);
  den = std::fma(den, m, 2.453006071784736363091e+00f);
  den = std::fma(den, m, 2.612677543073109236779e+00f);
  den = std::fma(den, m, 1.0f);
  const float poly = num / den;
  return std::fma(exponent, static_cast<float>(0.693147180559945309417232121458176568), poly);
}

double np_interp_index(double x, std::span<const float> fp) {
  const auto n = static_cast<int64_t>(fp.size());
  if (n == 0) throw Error(ErrorKind::kInternal, "np_interp_index: empty table");
  if (std::isnan(x)) return x;
  if (x < 0.0) return fp.front();
  if (x >= static_cast<double>(n - 1)) return fp.back();
  const auto j = static_cast<int64_t>(std::floor(x));
  const double xj = static_cast<double>(j);
  const double yj = fp[static_cast<size_t>(j)];
  if (xj == x) return yj;
  const double slope = (static_cast<double>(fp[static_cast<size_t>(j + 1)]) - yj) / 1.0;
  const double rise = slope * (x - xj);
  return rise + yj;
}

// ---- noise schedule ---------------------------------------------------------------------------------------

namespace {

// betas_for_alpha_bar with the "cosine" transform (squaredcos_cap_v2), in Python floats.
std::vector<float> cosine_betas(int n) {
  const auto alpha_bar = [](double t) {
    const double c = std::cos((t + 0.008) / 1.008 * std::numbers::pi / 2);
    return std::pow(c, 2.0);
  };
  std::vector<float> betas(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n;
    const double t2 = static_cast<double>(i + 1) / n;
    betas[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return betas;
}

// rescale_zero_terminal_snr (Lin et al. 2023), in float32 torch ops.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> root = alphas_cumprod_of(betas);
  for (float& v : root) v = std::sqrt(v);
  const float first = root.front();
  const float last = root.back();
  const float scale = first / (first - last);
  for (float& v : root) {
    v = v - last;
    v = v * scale;
  }
  std::vector<float> out(root.size());
  for (size_t i = 0; i < root.size(); ++i) {
    const float bar = root[i] * root[i];
    const float prev_bar = i > 0 ? root[i - 1] * root[i - 1] : 1.0f;
    const float alpha = i > 0 ? bar / prev_bar : bar;
    out[i] = 1.0f - alpha;
  }
  return out;
}

}  // namespace

std::vector<float> make_betas(const BetaSchedule& s) {
  if (s.num_train_timesteps < 1)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("num_train_timesteps must be >= 1, not {}", s.num_train_timesteps));
  std::vector<float> betas;
  if (!s.trained_betas.empty()) {
    for (double b : s.trained_betas) betas.push_back(static_cast<float>(b));
  } else if (s.beta_schedule == "linear") {
    betas = torch_linspace_f32(s.beta_start, s.beta_end, s.num_train_timesteps);
  } else if (s.beta_schedule == "scaled_linear") {
    betas = torch_linspace_f32(std::pow(s.beta_start, 0.5), std::pow(s.beta_end, 0.5), s.num_train_timesteps);
    for (float& b : betas) b = b * b;
  } else if (s.beta_schedule == "squaredcos_cap_v2") {
    betas = cosine_betas(s.num_train_timesteps);
  } else {
    throw Error(ErrorKind::kUnsupported,
                fmt::format("beta_schedule \"{}\" is not supported", s.beta_schedule));
  }
  if (s.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  return betas;
}

std::vector<float> alphas_cumprod_of(const std::vector<float>& betas) {
  std::vector<float> out(betas.size());
  double product = 1.0;  // torch's CPU cumprod accumulates float32 in double
  for (size_t i = 0; i < betas.size(); ++i) {
    const float alpha = 1.0f - betas[i];
    product *= alpha;
    out[i] = static_cast<float>(product);
  }
  return out;
}

std::vector<float> train_sigmas(const std::vector<float>& alphas_cumprod) {
  std::vector<float> out(alphas_cumprod.size());
  for (size_t i = 0; i < out.size(); ++i) {
    const float ratio = (1.0f - alphas_cumprod[i]) / alphas_cumprod[i];
    out[i] = std::sqrt(ratio);
  }
  return out;
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  constexpr double kRho = 7.0;
  const std::vector<double> ramp = np_linspace(0.0, 1.0, n);
  const double min_inv_rho = std::pow(sigma_min, 1 / kRho);
  const double max_inv_rho = std::pow(sigma_max, 1 / kRho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) {
    const double offset = ramp[i] * (min_inv_rho - max_inv_rho);
    out[i] = std::pow(max_inv_rho + offset, kRho);
  }
  return out;
}

double sigma_to_t(double sigma, std::span<const float> log_sigmas) {
  const auto n = static_cast<int64_t>(log_sigmas.size());
  if (n < 2) throw Error(ErrorKind::kInternal, "sigma_to_t: need at least two training sigmas");
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  // The last index whose log-sigma does not exceed ours (0 if none), at most n - 2.
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - static_cast<double>(log_sigmas[static_cast<size_t>(i)]) >= 0) low = i;
  low = std::min(low, n - 2);
  const float lo = log_sigmas[static_cast<size_t>(low)];
  const float hi = log_sigmas[static_cast<size_t>(low + 1)];
  const float span = lo - hi;  // a float32 difference in numpy too
  double w = (static_cast<double>(lo) - log_sigma) / static_cast<double>(span);
  w = std::clamp(w, 0.0, 1.0);
  const double from_low = (1 - w) * static_cast<double>(low);
  const double from_high = w * static_cast<double>(low + 1);
  return from_low + from_high;
}

// ---- float32 tensor helpers -------------------------------------------------------------------------------

Tensor to_f32(const Tensor& t) {
  if (t.empty()) throw Error(ErrorKind::kInvalidArgument, "scheduler: empty tensor");
  return t.dtype() == DType::kF32 ? t : t.to(DType::kF32);
}

Tensor cast_like(Tensor result, const Tensor& like) {
  return like.dtype() == DType::kF32 ? result : result.to(like.dtype());
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  if (a.shape() != b.shape())
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: model output shape {} differs from sample shape {}", what,
                            shape_to_string(a.shape()), shape_to_string(b.shape())));
}

void check_step_index(size_t step_index, size_t count, const char* scheduler) {
  if (count == 0)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: call set_timesteps before stepping", scheduler));
  if (step_index >= count)
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{}: step index {} is out of range for {} timesteps",
                                                         scheduler, step_index, count));
}

}  // namespace sdrt::schedulers::detail
