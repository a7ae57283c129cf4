// DDIMScheduler (diffusers scheduling_ddim.py) with eta = 0: the deterministic DDIM update, as a step plan.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "schedulers/plan_builder.h"
#include "schedulers/scheduler_impl.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {
namespace {

class DdimScheduler final : public Scheduler {
 public:
  explicit DdimScheduler(const DdimOptions& o) : o_(o) {
    alphas_cumprod_ = alphas_cumprod_of(make_betas(o.betas));
    final_alpha_cumprod_ = o.set_alpha_to_one ? 1.0f : alphas_cumprod_.front();
  }

  // Mirrors DDIMScheduler.set_timesteps.
  void set_timesteps(int num_inference_steps) override {
    const int train = o_.betas.num_train_timesteps;
    if (num_inference_steps < 1 || num_inference_steps > train)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("DDIM: the number of steps must be in [1, {}], not {}", train, num_inference_steps));
    n_ = num_inference_steps;
    std::vector<int64_t> ts;
    switch (o_.timestep_spacing) {
      case TimestepSpacing::kLinspace:
        for (double t : np_linspace(0, train - 1, n_)) ts.push_back(static_cast<int64_t>(np_round(t)));
        std::reverse(ts.begin(), ts.end());
        break;
      case TimestepSpacing::kLeading: {
        const int ratio = train / n_;
        for (int i = n_ - 1; i >= 0; --i) ts.push_back(static_cast<int64_t>(i) * ratio + o_.steps_offset);
        break;
      }
      case TimestepSpacing::kTrailing:
        for (double t : np_arange(train, 0, -static_cast<double>(train) / n_))
          ts.push_back(static_cast<int64_t>(np_round(t)) - 1);
        break;
    }
    timesteps_.assign(ts.begin(), ts.end());
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  float init_noise_sigma() const override { return 1.0f; }
  const char* name() const override { return "DDIM"; }
  float model_input_divisor(size_t) const override { return 1.0f; }
  int state_buffer_count() const override { return 0; }

  // Mirrors DDIMScheduler.step with eta = 0 and use_clipped_model_output = False.
  StepPlan plan_step(size_t step_index) override {
    check_step_index(step_index, timesteps_.size(), name());
    const auto timestep = static_cast<int64_t>(timesteps_[step_index]);
    const int64_t prev_timestep = timestep - o_.betas.num_train_timesteps / n_;

    const float alpha_t = alpha_cumprod_at(timestep);
    const float alpha_prev = prev_timestep >= 0 ? alpha_cumprod_at(prev_timestep) : final_alpha_cumprod_;
    const float beta_t = 1.0f - alpha_t;
    const float sqrt_alpha_t = std::sqrt(alpha_t);
    const float sqrt_beta_t = std::sqrt(beta_t);

    // _get_variance; with eta = 0 it only matters through NaN.
    const float beta_prev = 1.0f - alpha_prev;
    const float variance = beta_prev / beta_t * (1.0f - alpha_t / alpha_prev);
    const float std_dev = 0.0f * std::sqrt(variance);
    const float direction_coeff = std::sqrt(1.0f - alpha_prev - std_dev * std_dev);
    const float sqrt_alpha_prev = std::sqrt(alpha_prev);

    PlanBuilder plan;
    const PlanValue x = plan.load(step_buffer::kSample);
    const PlanValue model_output = plan.load(step_buffer::kModelOutput);
    PlanValue x0, eps;
    switch (o_.prediction_type) {
      case PredictionType::kEpsilon:
        x0 = (x - sqrt_beta_t * model_output) / sqrt_alpha_t;
        eps = model_output;
        break;
      case PredictionType::kSample:
        x0 = model_output;
        eps = (x - sqrt_alpha_t * x0) / sqrt_beta_t;  // from the unclipped x0, as diffusers
        break;
      case PredictionType::kVPrediction:
        x0 = sqrt_alpha_t * x - sqrt_beta_t * model_output;
        eps = sqrt_alpha_t * model_output + sqrt_beta_t * x;
        break;
    }
    if (o_.clip_sample) x0 = clamp(x0, static_cast<float>(o_.clip_sample_range));
    const PlanValue direction = direction_coeff * eps;
    plan.store(sqrt_alpha_prev * x0 + direction, step_buffer::kPrevSample);
    return plan.finish();
  }

 private:
  float alpha_cumprod_at(int64_t t) const {
    if (t < 0 || t >= static_cast<int64_t>(alphas_cumprod_.size()))
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("DDIM: timestep {} is outside the training range", t));
    return alphas_cumprod_[static_cast<size_t>(t)];
  }

  DdimOptions o_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  int n_ = 0;
  std::vector<double> timesteps_;
};

}  // namespace

std::unique_ptr<Scheduler> make_ddim(const DdimOptions& options) {
  return std::make_unique<DdimScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
