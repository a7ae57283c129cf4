// DPMSolverMultistepScheduler (diffusers scheduling_dpmsolver_multistep.py) with algorithm_type
// "dpmsolver++": DPM-Solver++ of order 1 to 3 (order 2 with the midpoint solver is "DPM++ 2M"),
// data-prediction form.
//
// The schedule is float64 numpy arithmetic stored as float32 sigmas and int64 timesteps; the update
// coefficients are float32 0-d tensor math (log/exp are the C library's float versions, within an ulp of the
// MKL/SLEEF kernels torch uses), and per-element math is float32.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "schedulers/scheduler_impl.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {
namespace {

// _sigma_to_alpha_sigma_t for the variance-preserving parameterisation.
struct AlphaSigma {
  float alpha;
  float sigma;
  float lambda;  // log(alpha) - log(sigma)
};

AlphaSigma alpha_sigma_of(float sigma) {
  const float sq = sigma * sigma;
  const float alpha = 1.0f / std::sqrt(sq + 1.0f);
  const float s = sigma * alpha;
  return {alpha, s, std::log(alpha) - std::log(s)};
}

class DpmSolverScheduler final : public Scheduler {
 public:
  explicit DpmSolverScheduler(const DpmSolverOptions& o) : o_(o) {
    alphas_cumprod_ = alphas_cumprod_of(make_betas(o.betas));
    if (o.betas.rescale_betas_zero_snr) alphas_cumprod_.back() = std::ldexp(1.0f, -24);
    train_sigmas_ = train_sigmas(alphas_cumprod_);
    for (float s : train_sigmas_) log_sigmas_.push_back(np_log_f32(s));
  }

  // Mirrors DPMSolverMultistepScheduler.set_timesteps.
  void set_timesteps(int num_inference_steps) override {
    const int train = o_.betas.num_train_timesteps;
    if (num_inference_steps < 1 || num_inference_steps > train)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("DPM++: the number of steps must be in [1, {}], not {}", train, num_inference_steps));
    const int n = num_inference_steps;
    const int64_t last_timestep = train - clipped_index();
    std::vector<double> ts;  // float64 until the final int64 conversion
    switch (o_.timestep_spacing) {
      case TimestepSpacing::kLinspace: {
        const std::vector<double> lin = np_linspace(0, static_cast<double>(last_timestep - 1), n + 1);
        for (size_t i = lin.size() - 1; i >= 1; --i) ts.push_back(np_round(lin[i]));
        break;
      }
      case TimestepSpacing::kLeading: {
        const int64_t ratio = last_timestep / (n + 1);
        for (int64_t i = n; i >= 1; --i) ts.push_back(static_cast<double>(i * ratio + o_.steps_offset));
        break;
      }
      case TimestepSpacing::kTrailing:
        for (double t : np_arange(static_cast<double>(last_timestep), 0, -static_cast<double>(train) / n))
          ts.push_back(np_round(t) - 1);
        break;
    }
    std::vector<double> sigmas;
    if (o_.use_karras_sigmas) {
      const double sigma_min = o_.sigma_min.value_or(train_sigmas_.front());
      const double sigma_max = o_.sigma_max.value_or(train_sigmas_.back());
      sigmas = karras_sigmas(sigma_min, sigma_max, n);
      ts.clear();
      for (double s : sigmas) {
        const double t = sigma_to_t(s, log_sigmas_);
        ts.push_back(o_.betas.beta_schedule == "squaredcos_cap_v2" ? t : np_round(t));
      }
    } else {
      for (double t : ts) sigmas.push_back(np_interp_index(t, train_sigmas_));
    }
    float sigma_last = 0.0f;
    if (o_.final_sigma_min) sigma_last = std::sqrt((1.0f - alphas_cumprod_[0]) / alphas_cumprod_[0]);
    sigmas_.clear();
    for (double s : sigmas) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(sigma_last);
    timesteps_.clear();
    for (double t : ts)
      timesteps_.push_back(static_cast<double>(static_cast<int64_t>(t)));  // .to(torch.int64)
    model_outputs_.assign(static_cast<size_t>(o_.solver_order), {});
    lower_order_nums_ = 0;
    steps_taken_ = 0;
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  const std::vector<float>& sigmas() const override { return sigmas_; }
  float init_noise_sigma() const override { return 1.0f; }
  Tensor scale_model_input(const Tensor& sample, size_t) const override { return sample.to(sample.dtype()); }

  // Mirrors DPMSolverMultistepScheduler.step.
  Tensor step(const Tensor& model_output_in, size_t step_index, const Tensor& sample_in,
              TorchGenerator&) override {
    check_step_index(step_index, timesteps_.size(), "DPM++");
    check_same_shape(model_output_in, sample_in, "DPM++");
    if (step_index != steps_taken_)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("DPM++: step {} taken out of order (expected step {})", step_index, steps_taken_));
    const size_t count = timesteps_.size();
    const bool final_zero = !o_.final_sigma_min;
    const bool lower_order_final =
        step_index == count - 1 && (o_.euler_at_final || (o_.lower_order_final && count < 15) || final_zero);
    const bool lower_order_second = step_index + 2 == count && o_.lower_order_final && count < 15;

    const Tensor sample = to_f32(sample_in);
    std::vector<float> x0 = convert_model_output(to_f32(model_output_in), sample, step_index);
    std::rotate(model_outputs_.begin(), model_outputs_.begin() + 1, model_outputs_.end());
    model_outputs_.back() = std::move(x0);

    Tensor out(sample.shape(), DType::kF32);
    const float* x = sample.data<float>();
    float* o = out.data<float>();
    const int order = o_.solver_order;
    if (order == 1 || lower_order_nums_ < 1 || lower_order_final) {
      first_order_update(x, step_index, o, out.numel());
    } else if (order == 2 || lower_order_nums_ < 2 || lower_order_second) {
      second_order_update(x, step_index, o, out.numel());
    } else {
      third_order_update(x, step_index, o, out.numel());
    }
    if (lower_order_nums_ < order) ++lower_order_nums_;
    ++steps_taken_;
    return cast_like(std::move(out), model_output_in);
  }

 private:
  // torch.searchsorted(torch.flip(lambda_t, [0]), lambda_min_clipped): how many of the smallest lambdas fall
  // below the clipping threshold.
  int64_t clipped_index() const {
    if (std::isinf(o_.lambda_min_clipped) && o_.lambda_min_clipped < 0) return 0;
    int64_t count = 0;
    for (auto it = alphas_cumprod_.rbegin(); it != alphas_cumprod_.rend(); ++it) {
      const float alpha = std::sqrt(*it);
      const float sigma = std::sqrt(1.0f - *it);
      const float lambda = std::log(alpha) - std::log(sigma);
      if (static_cast<double>(lambda) >= o_.lambda_min_clipped) break;
      ++count;
    }
    return count;
  }

  // Mirrors convert_model_output for dpmsolver++: the data prediction x0.
  std::vector<float> convert_model_output(const Tensor& model_output, const Tensor& sample, size_t i) const {
    const AlphaSigma s = alpha_sigma_of(sigmas_[i]);
    const float* mo = model_output.data<float>();
    const float* x = sample.data<float>();
    std::vector<float> x0(static_cast<size_t>(sample.numel()));
    for (size_t k = 0; k < x0.size(); ++k) {
      switch (o_.prediction_type) {
        case PredictionType::kEpsilon: {
          const float noise = s.sigma * mo[k];
          x0[k] = (x[k] - noise) / s.alpha;
          break;
        }
        case PredictionType::kSample:
          x0[k] = mo[k];
          break;
        case PredictionType::kVPrediction: {
          const float a = s.alpha * x[k];
          const float b = s.sigma * mo[k];
          x0[k] = a - b;
          break;
        }
      }
    }
    return x0;
  }

  // Mirrors dpm_solver_first_order_update (dpmsolver++).
  void first_order_update(const float* x, size_t i, float* out, int64_t n) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s = alpha_sigma_of(sigmas_[i]);
    const float h = t.lambda - s.lambda;
    const float c_sample = t.sigma / s.sigma;
    const float c_d0 = t.alpha * (std::exp(-h) - 1.0f);
    const std::vector<float>& d0 = model_outputs_.back();
    for (int64_t k = 0; k < n; ++k) {
      const float a = c_sample * x[k];
      const float b = c_d0 * d0[static_cast<size_t>(k)];
      out[k] = a - b;
    }
  }

  // Mirrors multistep_dpm_solver_second_order_update (dpmsolver++, midpoint or heun).
  void second_order_update(const float* x, size_t i, float* out, int64_t n) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s0 = alpha_sigma_of(sigmas_[i]);
    const AlphaSigma s1 = alpha_sigma_of(sigmas_[i - 1]);
    const std::vector<float>& m0 = model_outputs_[model_outputs_.size() - 1];
    const std::vector<float>& m1 = model_outputs_[model_outputs_.size() - 2];
    const float h = t.lambda - s0.lambda;
    const float h0 = s0.lambda - s1.lambda;
    const float r0 = h0 / h;
    const float inv_r0 = 1.0f / r0;
    const float c_sample = t.sigma / s0.sigma;
    const float expm = std::exp(-h) - 1.0f;
    const float c_d0 = t.alpha * expm;
    float c_d1 = 0.0f;
    if (o_.heun) {
      const float ratio = expm / h + 1.0f;
      c_d1 = t.alpha * ratio;
    } else {
      c_d1 = 0.5f * c_d0;
    }
    for (int64_t k = 0; k < n; ++k) {
      const auto j = static_cast<size_t>(k);
      const float d1 = inv_r0 * (m0[j] - m1[j]);
      const float a = c_sample * x[k];
      const float b = c_d0 * m0[j];
      const float c = c_d1 * d1;
      const float ab = a - b;
      out[k] = o_.heun ? ab + c : ab - c;
    }
  }

  // Mirrors multistep_dpm_solver_third_order_update (dpmsolver++).
  void third_order_update(const float* x, size_t i, float* out, int64_t n) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s0 = alpha_sigma_of(sigmas_[i]);
    const AlphaSigma s1 = alpha_sigma_of(sigmas_[i - 1]);
    const AlphaSigma s2 = alpha_sigma_of(sigmas_[i - 2]);
    const size_t m = model_outputs_.size();
    const std::vector<float>& m0 = model_outputs_[m - 1];
    const std::vector<float>& m1 = model_outputs_[m - 2];
    const std::vector<float>& m2 = model_outputs_[m - 3];
    const float h = t.lambda - s0.lambda;
    const float h0 = s0.lambda - s1.lambda;
    const float h1 = s1.lambda - s2.lambda;
    const float r0 = h0 / h;
    const float r1 = h1 / h;
    const float inv_r0 = 1.0f / r0;
    const float inv_r1 = 1.0f / r1;
    const float r_sum = r0 + r1;
    const float w1 = r0 / r_sum;
    const float inv_r_sum = 1.0f / r_sum;
    const float c_sample = t.sigma / s0.sigma;
    const float expm = std::exp(-h) - 1.0f;
    const float c_d0 = t.alpha * expm;
    const float c_d1 = t.alpha * (expm / h + 1.0f);
    const float h_sq = h * h;
    const float c_d2 = t.alpha * ((expm + h) / h_sq - 0.5f);
    for (int64_t k = 0; k < n; ++k) {
      const auto j = static_cast<size_t>(k);
      const float d1_0 = inv_r0 * (m0[j] - m1[j]);
      const float d1_1 = inv_r1 * (m1[j] - m2[j]);
      const float diff = d1_0 - d1_1;
      const float correction = w1 * diff;
      const float d1 = d1_0 + correction;
      const float d2 = inv_r_sum * diff;
      const float a = c_sample * x[k];
      const float b = c_d0 * m0[j];
      const float c = c_d1 * d1;
      const float d = c_d2 * d2;
      const float ab = a - b;
      const float abc = ab + c;
      out[k] = abc - d;
    }
  }

  DpmSolverOptions o_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<float> log_sigmas_;
  std::vector<float> sigmas_;
  std::vector<double> timesteps_;
  // Runner state (diffusers' model_outputs and lower_order_nums).
  std::vector<std::vector<float>> model_outputs_;
  int lower_order_nums_ = 0;
  size_t steps_taken_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const DpmSolverOptions& options) {
  return std::make_unique<DpmSolverScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
