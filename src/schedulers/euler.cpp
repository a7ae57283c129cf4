// EulerDiscreteScheduler and EulerAncestralDiscreteScheduler (diffusers scheduling_euler_discrete.py and
// scheduling_euler_ancestral_discrete.py), which share their sigma schedule.
//
// The schedule is built in float64 numpy arithmetic from the float32 training sigmas, then stored as float32;
// the step's scalars are float32 as diffusers' 0-d tensors are, and the step itself a plan
// (core/step_plan.h).
//
// Karras sigmas for Euler a are an sdrt extension: diffusers' EulerAncestralDiscreteScheduler has no
// use_karras_sigmas, so Euler a Karras takes EulerDiscreteScheduler's Karras sigmas and timesteps and steps
// with the ancestral update.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "schedulers/plan_builder.h"
#include "schedulers/scheduler_impl.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {
namespace {

class EulerBase : public Scheduler {
 public:
  EulerBase(const EulerOptions& o, const char* name) : o_(o), name_(name) {
    std::vector<float> alphas_cumprod = alphas_cumprod_of(make_betas(o.betas));
    // Euler-family schedulers pin the last cumulative alpha of a zero-terminal-SNR schedule to 2^-24.
    if (o.betas.rescale_betas_zero_snr) alphas_cumprod.back() = std::ldexp(1.0f, -24);
    alpha_cumprod_0_ = alphas_cumprod.front();
    train_sigmas_ = train_sigmas(alphas_cumprod);
    for (float s : train_sigmas_) log_sigmas_.push_back(np_log_f32(s));
    // Before set_timesteps diffusers holds the training sigmas, largest first, then 0.
    sigmas_.assign(train_sigmas_.rbegin(), train_sigmas_.rend());
    sigmas_.push_back(0.0f);
  }

  // Mirrors EulerDiscreteScheduler.set_timesteps (and EulerAncestralDiscreteScheduler's, which is the same
  // without the Karras and final-sigma options).
  void set_timesteps(int num_inference_steps) override {
    const int train = o_.betas.num_train_timesteps;
    if (num_inference_steps < 1)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}: the number of steps must be >= 1, not {}", name_, num_inference_steps));
    const int n = num_inference_steps;
    std::vector<float> ts;  // float32 timesteps
    switch (o_.timestep_spacing) {
      case TimestepSpacing::kLinspace: {
        const std::vector<double> lin = np_linspace(0, train - 1, n);
        for (auto it = lin.rbegin(); it != lin.rend(); ++it) ts.push_back(static_cast<float>(*it));
        break;
      }
      case TimestepSpacing::kLeading: {
        const int ratio = train / n;
        for (int i = n - 1; i >= 0; --i)
          ts.push_back(static_cast<float>(static_cast<int64_t>(i) * ratio) +
                       static_cast<float>(o_.steps_offset));
        break;
      }
      case TimestepSpacing::kTrailing:
        for (double t : np_arange(train, 0, -static_cast<double>(train) / n))
          ts.push_back(static_cast<float>(np_round(t)) - 1.0f);
        break;
    }
    std::vector<double> sigmas;
    for (float t : ts) sigmas.push_back(np_interp_index(t, train_sigmas_));
    if (o_.use_karras_sigmas) {
      // _convert_to_karras between the ends of the interpolated schedule, then _sigma_to_t for each sigma.
      const double sigma_min = o_.sigma_min.value_or(sigmas.back());
      const double sigma_max = o_.sigma_max.value_or(sigmas.front());
      sigmas = karras_sigmas(sigma_min, sigma_max, n);
      ts.clear();
      for (double s : sigmas) ts.push_back(static_cast<float>(sigma_to_t(s, log_sigmas_)));
    }
    float sigma_last = 0.0f;
    if (o_.final_sigma_min) sigma_last = std::sqrt((1.0f - alpha_cumprod_0_) / alpha_cumprod_0_);
    sigmas_.clear();
    for (double s : sigmas) sigmas_.push_back(static_cast<float>(s));
    sigmas_.push_back(sigma_last);
    timesteps_.assign(ts.begin(), ts.end());
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  const std::vector<float>& sigmas() const override { return sigmas_; }

  float init_noise_sigma() const override {
    const float max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
    if (o_.timestep_spacing != TimestepSpacing::kLeading) return max_sigma;
    const float sq = max_sigma * max_sigma;
    return std::sqrt(sq + 1.0f);
  }

  const char* name() const override { return name_; }
  int state_buffer_count() const override { return 0; }

  // Mirrors scale_model_input: sample / (sigma**2 + 1) ** 0.5.
  float model_input_divisor(size_t step_index) const override {
    check_step_index(step_index, timesteps_.size(), name_);
    const float sigma = sigmas_[step_index];
    const float sq = sigma * sigma;
    return std::sqrt(sq + 1.0f);
  }

 protected:
  // The denoised estimate for prediction types epsilon and v_prediction (and sample for Euler).
  PlanValue predict_original(PlanValue model_output, PlanValue x, float sigma) const {
    switch (o_.prediction_type) {
      case PredictionType::kEpsilon:
        return x - sigma * model_output;
      case PredictionType::kVPrediction: {
        const float sq = sigma * sigma;
        const float sq1 = sq + 1.0f;
        const float c_out = -sigma / std::sqrt(sq1);
        return model_output * c_out + x / sq1;
      }
      case PredictionType::kSample:
        break;
    }
    return model_output;
  }

  EulerOptions o_;
  const char* name_;
  float alpha_cumprod_0_ = 1.0f;
  std::vector<float> train_sigmas_;
  std::vector<float> log_sigmas_;
  std::vector<float> sigmas_;
  std::vector<double> timesteps_;
};

class EulerScheduler final : public EulerBase {
 public:
  explicit EulerScheduler(const EulerOptions& o) : EulerBase(o, "Euler") {}

  // Mirrors EulerDiscreteScheduler.step with s_churn = 0 (so sigma_hat = sigma and no noise is drawn).
  StepPlan plan_step(size_t step_index) override {
    check_step_index(step_index, timesteps_.size(), name_);
    const float sigma = sigmas_[step_index];
    const float sigma_hat = sigma * 1.0f;  // sigma * (gamma + 1) with gamma = 0
    const float dt = sigmas_[step_index + 1] - sigma_hat;
    PlanBuilder plan;
    const PlanValue x = plan.load(step_buffer::kSample);
    const PlanValue pred = predict_original(plan.load(step_buffer::kModelOutput), x, sigma_hat);
    const PlanValue derivative = (x - pred) / sigma_hat;
    plan.store(x + derivative * dt, step_buffer::kPrevSample);
    return plan.finish();
  }
};

class EulerAncestralScheduler final : public EulerBase {
 public:
  explicit EulerAncestralScheduler(const EulerOptions& o) : EulerBase(o, "Euler a") {}

  // Mirrors EulerAncestralDiscreteScheduler.step: a deterministic step down to sigma_down, then fresh noise
  // of scale sigma_up drawn from the generator exactly as randn_tensor(model_output.shape) draws it.
  StepPlan plan_step(size_t step_index) override {
    check_step_index(step_index, timesteps_.size(), name_);
    const float sigma = sigmas_[step_index];
    const float sigma_to = sigmas_[step_index + 1];
    const float from_sq = sigma * sigma;
    const float to_sq = sigma_to * sigma_to;
    const float up_sq = to_sq * (from_sq - to_sq) / from_sq;
    const float sigma_up = std::sqrt(up_sq);
    const float up_sq_rounded = sigma_up * sigma_up;
    const float sigma_down = std::sqrt(to_sq - up_sq_rounded);
    const float dt = sigma_down - sigma;

    PlanBuilder plan;
    plan.set_needs_noise();  // drawn even when sigma_up is 0, as diffusers draws it
    const PlanValue x = plan.load(step_buffer::kSample);
    const PlanValue pred = predict_original(plan.load(step_buffer::kModelOutput), x, sigma);
    const PlanValue derivative = (x - pred) / sigma;
    const PlanValue prev = x + derivative * dt;
    plan.store(prev + plan.load(step_buffer::kNoise) * sigma_up, step_buffer::kPrevSample);
    return plan.finish();
  }
};

}  // namespace

std::unique_ptr<Scheduler> make_euler(const EulerOptions& options) {
  return std::make_unique<EulerScheduler>(options);
}

std::unique_ptr<Scheduler> make_euler_ancestral(const EulerOptions& options) {
  return std::make_unique<EulerAncestralScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
