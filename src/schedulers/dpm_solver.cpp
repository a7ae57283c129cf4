// DPMSolverMultistepScheduler (diffusers scheduling_dpmsolver_multistep.py) with algorithm_type
// "dpmsolver++": DPM-Solver++ of order 1 to 3 (order 2 with the midpoint solver is "DPM++ 2M"),
// data-prediction form.
//
// The schedule is float64 numpy arithmetic stored as float32 sigmas and int64 timesteps; the update
// coefficients are float32 0-d tensor math (log/exp are the C library's float versions, within an ulp of the
// MKL/SLEEF kernels torch uses), and the step itself is a plan (core/step_plan.h).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "schedulers/plan_builder.h"
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
    model_output_pushes_ = 0;
    lower_order_nums_ = 0;
    steps_taken_ = 0;
  }

  void set_begin_index(size_t index) override {  // the history starts empty: a first-order step first
    model_output_pushes_ = 0;
    lower_order_nums_ = 0;
    steps_taken_ = index;
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  const std::vector<float>& sigmas() const override { return sigmas_; }
  float init_noise_sigma() const override { return 1.0f; }
  const char* name() const override { return "DPM++"; }
  float model_input_divisor(size_t) const override { return 1.0f; }
  // diffusers' model_outputs: the last solver_order data predictions, a ring.
  int state_buffer_count() const override { return o_.solver_order; }

  // Mirrors DPMSolverMultistepScheduler.step.
  StepPlan plan_step(size_t step_index) override {
    check_step_index(step_index, timesteps_.size(), name());
    if (step_index != steps_taken_)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("DPM++: step {} taken out of order (expected step {})", step_index, steps_taken_));
    const size_t count = timesteps_.size();
    const bool final_zero = !o_.final_sigma_min;
    const bool lower_order_final =
        step_index == count - 1 && (o_.euler_at_final || (o_.lower_order_final && count < 15) || final_zero);
    const bool lower_order_second = step_index + 2 == count && o_.lower_order_final && count < 15;

    PlanBuilder plan;
    const PlanValue x = plan.load(step_buffer::kSample);
    // model_outputs.append(convert_model_output(...)), dropping the oldest.
    plan.store(convert_model_output(plan.load(step_buffer::kModelOutput), x, step_index),
               model_output_slot(model_output_pushes_));
    ++model_output_pushes_;
    const int order = o_.solver_order;
    PlanValue prev;
    if (order == 1 || lower_order_nums_ < 1 || lower_order_final) {
      prev = first_order_update(plan, x, step_index);
    } else if (order == 2 || lower_order_nums_ < 2 || lower_order_second) {
      prev = second_order_update(plan, x, step_index);
    } else {
      prev = third_order_update(plan, x, step_index);
    }
    plan.store(prev, step_buffer::kPrevSample);
    if (lower_order_nums_ < order) ++lower_order_nums_;
    ++steps_taken_;
    return plan.finish();
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

  int model_output_slot(size_t push) const {
    return step_buffer::state(static_cast<int>(push % static_cast<size_t>(o_.solver_order)));
  }
  // model_outputs[-1 - back] once this step's data prediction is in (back = 0 is the newest).
  PlanValue data_prediction(PlanBuilder& plan, size_t back) const {
    return plan.load(model_output_slot(model_output_pushes_ - 1 - back));
  }

  // Mirrors convert_model_output for dpmsolver++: the data prediction x0.
  PlanValue convert_model_output(PlanValue model_output, PlanValue x, size_t i) const {
    const AlphaSigma s = alpha_sigma_of(sigmas_[i]);
    switch (o_.prediction_type) {
      case PredictionType::kEpsilon:
        return (x - s.sigma * model_output) / s.alpha;
      case PredictionType::kVPrediction:
        return s.alpha * x - s.sigma * model_output;
      case PredictionType::kSample:
        break;
    }
    return model_output;
  }

  // Mirrors dpm_solver_first_order_update (dpmsolver++).
  PlanValue first_order_update(PlanBuilder& plan, PlanValue x, size_t i) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s = alpha_sigma_of(sigmas_[i]);
    const float h = t.lambda - s.lambda;
    const float c_sample = t.sigma / s.sigma;
    const float c_d0 = t.alpha * (std::exp(-h) - 1.0f);
    return c_sample * x - c_d0 * data_prediction(plan, 0);
  }

  // Mirrors multistep_dpm_solver_second_order_update (dpmsolver++, midpoint or heun).
  PlanValue second_order_update(PlanBuilder& plan, PlanValue x, size_t i) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s0 = alpha_sigma_of(sigmas_[i]);
    const AlphaSigma s1 = alpha_sigma_of(sigmas_[i - 1]);
    const PlanValue m0 = data_prediction(plan, 0), m1 = data_prediction(plan, 1);
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
    const PlanValue d1 = inv_r0 * (m0 - m1);
    const PlanValue ab = c_sample * x - c_d0 * m0;
    return o_.heun ? ab + c_d1 * d1 : ab - c_d1 * d1;
  }

  // Mirrors multistep_dpm_solver_third_order_update (dpmsolver++).
  PlanValue third_order_update(PlanBuilder& plan, PlanValue x, size_t i) const {
    const AlphaSigma t = alpha_sigma_of(sigmas_[i + 1]);
    const AlphaSigma s0 = alpha_sigma_of(sigmas_[i]);
    const AlphaSigma s1 = alpha_sigma_of(sigmas_[i - 1]);
    const AlphaSigma s2 = alpha_sigma_of(sigmas_[i - 2]);
    const PlanValue m0 = data_prediction(plan, 0), m1 = data_prediction(plan, 1),
                    m2 = data_prediction(plan, 2);
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
    const PlanValue d1_0 = inv_r0 * (m0 - m1);
    const PlanValue d1_1 = inv_r1 * (m1 - m2);
    const PlanValue diff = d1_0 - d1_1;
    const PlanValue d1 = d1_0 + w1 * diff;
    const PlanValue d2 = inv_r_sum * diff;
    const PlanValue ab = c_sample * x - c_d0 * m0;
    const PlanValue abc = ab + c_d1 * d1;
    return abc - c_d2 * d2;
  }

  DpmSolverOptions o_;
  std::vector<float> alphas_cumprod_;
  std::vector<float> train_sigmas_;
  std::vector<float> log_sigmas_;
  std::vector<float> sigmas_;
  std::vector<double> timesteps_;
  // Runner state: diffusers' lower_order_nums; model_outputs lives in the state buffers.
  size_t model_output_pushes_ = 0;  // the ring slot of the next data prediction
  int lower_order_nums_ = 0;
  size_t steps_taken_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_dpm_solver(const DpmSolverOptions& options) {
  return std::make_unique<DpmSolverScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
