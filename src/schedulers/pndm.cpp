// PNDMScheduler (diffusers scheduling_pndm.py): pseudo linear multi-step (PLMS) steps, optionally preceded by
// the Runge-Kutta (PRK) warm-up of the PNDM paper when skip_prk_steps is false.
//
// The step's scalars are float32 as diffusers' 0-d tensors are; the step itself is a plan (core/step_plan.h).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "schedulers/plan_builder.h"
#include "schedulers/scheduler_impl.h"
#include "sdrt/error.h"

namespace sdrt::schedulers::detail {
namespace {

class PndmScheduler final : public Scheduler {
 public:
  explicit PndmScheduler(const PndmOptions& o) : o_(o) {
    alphas_cumprod_ = alphas_cumprod_of(make_betas(o.betas));
    final_alpha_cumprod_ = o.set_alpha_to_one ? 1.0f : alphas_cumprod_.front();
  }

  // Mirrors PNDMScheduler.set_timesteps.
  void set_timesteps(int num_inference_steps) override {
    const int train = o_.betas.num_train_timesteps;
    if (num_inference_steps < 1 || num_inference_steps > train)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("PNDM: the number of steps must be in [1, {}], not {}", train, num_inference_steps));
    if (!o_.skip_prk_steps && num_inference_steps < 4)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("PNDM with Runge-Kutta warm-up (skip_prk_steps false) needs at least 4 steps, not {}",
                      num_inference_steps));
    n_ = num_inference_steps;
    // The ascending `_timesteps`.
    std::vector<int64_t> base;
    switch (o_.timestep_spacing) {
      case TimestepSpacing::kLinspace:
        for (double t : np_linspace(0, train - 1, n_)) base.push_back(static_cast<int64_t>(np_round(t)));
        break;
      case TimestepSpacing::kLeading: {
        const int ratio = train / n_;
        for (int i = 0; i < n_; ++i) base.push_back(static_cast<int64_t>(i) * ratio + o_.steps_offset);
        break;
      }
      case TimestepSpacing::kTrailing: {
        const std::vector<double> desc = np_arange(train, 0, -static_cast<double>(train) / n_);
        for (auto it = desc.rbegin(); it != desc.rend(); ++it)
          base.push_back(static_cast<int64_t>(np_round(*it)) - 1);
        break;
      }
    }
    prk_timesteps_.clear();
    std::vector<int64_t> plms;
    const size_t m = base.size();
    if (o_.skip_prk_steps) {
      // [t_0 .. t_{m-2}, t_{m-2}, t_{m-1}] reversed: the second-to-last timestep is evaluated twice.
      for (size_t i = 0; i + 1 < m; ++i) plms.push_back(base[i]);
      if (m >= 2) plms.push_back(base[m - 2]);
      plms.push_back(base[m - 1]);
      std::reverse(plms.begin(), plms.end());
    } else {
      if (m < 4) throw Error(ErrorKind::kInvalidArgument, "PNDM: the Runge-Kutta warm-up needs 4 timesteps");
      // Each of the last four timesteps t, paired with t + ratio/2, then the Runge-Kutta evaluation order.
      const int64_t half = train / n_ / 2;
      std::vector<int64_t> pairs;
      for (size_t i = m - 4; i < m; ++i) {
        pairs.push_back(base[i]);
        pairs.push_back(base[i] + half);
      }
      pairs.pop_back();
      std::vector<int64_t> doubled;
      for (int64_t t : pairs) doubled.insert(doubled.end(), {t, t});
      prk_timesteps_.assign(doubled.begin() + 1, doubled.end() - 1);
      std::reverse(prk_timesteps_.begin(), prk_timesteps_.end());
      for (size_t i = 0; i + 3 < m; ++i) plms.push_back(base[i]);
      std::reverse(plms.begin(), plms.end());
    }
    timesteps_.clear();
    for (int64_t t : prk_timesteps_) timesteps_.push_back(static_cast<double>(t));
    for (int64_t t : plms) timesteps_.push_back(static_cast<double>(t));
    ets_size_ = 0;
    ets_pushes_ = 0;
    counter_ = 0;
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  void set_begin_index(size_t index) override {
    if (index != 0)
      throw Error(ErrorKind::kUnsupported,
                  "PNDM cannot start in the middle of its schedule (an SDXL refiner's denoising_start): use "
                  "euler, euler_a, ddim or dpmpp_2m");
  }
  float init_noise_sigma() const override { return 1.0f; }
  const char* name() const override { return "PNDM"; }
  float model_input_divisor(size_t) const override { return 1.0f; }
  int state_buffer_count() const override { return kStateBuffers; }

  // Mirrors PNDMScheduler.step: PRK while the warm-up lasts, PLMS after.
  StepPlan plan_step(size_t step_index) override {
    check_step_index(step_index, timesteps_.size(), name());
    // The multistep history assumes one call per step, in order (diffusers' counter).
    if (step_index != counter_)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("PNDM: step {} taken out of order (expected step {})", step_index, counter_));
    const auto t = static_cast<int64_t>(timesteps_[step_index]);
    PlanBuilder plan;
    if (counter_ < prk_timesteps_.size() && !o_.skip_prk_steps) {
      plan_prk(plan, t);
    } else {
      plan_plms(plan, t);
    }
    ++counter_;
    return plan.finish();
  }

 private:
  // State buffers: diffusers' `ets` (the last four model outputs, a ring), `cur_sample` and
  // `cur_model_output` (the Runge-Kutta running sum).
  static constexpr int kEtsRing = 4;
  static constexpr int kCurSample = step_buffer::state(kEtsRing);
  static constexpr int kCurModelOutput = step_buffer::state(kEtsRing + 1);
  static constexpr int kStateBuffers = kEtsRing + 2;

  // ets[-back] (back = 1 is the newest).
  PlanValue ets(PlanBuilder& plan, size_t back) const {
    return plan.load(step_buffer::state(static_cast<int>((ets_pushes_ - back) % kEtsRing)));
  }
  // ets.append(model_output).
  void push_ets(PlanBuilder& plan, PlanValue model_output) {
    plan.store(model_output, step_buffer::state(static_cast<int>(ets_pushes_ % kEtsRing)));
    ++ets_pushes_;
    ++ets_size_;
  }

  // Mirrors PNDMScheduler.step_prk.
  void plan_prk(PlanBuilder& plan, int64_t timestep) {
    const int64_t diff_to_prev = counter_ % 2 ? 0 : o_.betas.num_train_timesteps / n_ / 2;
    const int64_t prev_timestep = timestep - diff_to_prev;
    const int64_t t = prk_timesteps_[counter_ / 4 * 4];
    const float sixth = static_cast<float>(1.0 / 6);
    const float third = static_cast<float>(1.0 / 3);
    PlanValue model_output = plan.load(step_buffer::kModelOutput);
    PlanValue cur_sample;
    switch (counter_ % 4) {
      case 0:  // a new running sum; the warm-up step starts from the sample it is given
        plan.store(sixth * model_output, kCurModelOutput);
        push_ets(plan, model_output);
        cur_sample = plan.load(step_buffer::kSample);
        plan.store(cur_sample, kCurSample);
        break;
      case 1:
      case 2:
        plan.store(plan.load(kCurModelOutput) + third * model_output, kCurModelOutput);
        cur_sample = plan.load(kCurSample);
        break;
      case 3:
        model_output = plan.load(kCurModelOutput) + sixth * model_output;
        cur_sample = plan.load(kCurSample);
        break;
    }
    plan.store(prev_sample(cur_sample, t, prev_timestep, model_output), step_buffer::kPrevSample);
  }

  // Mirrors PNDMScheduler.step_plms.
  void plan_plms(PlanBuilder& plan, int64_t timestep) {
    const int64_t ratio = o_.betas.num_train_timesteps / n_;
    int64_t prev_timestep = timestep - ratio;
    PlanValue model_output = plan.load(step_buffer::kModelOutput);
    PlanValue x = plan.load(step_buffer::kSample);
    if (counter_ != 1) {
      ets_size_ = std::min<size_t>(ets_size_, 3);  // ets = ets[-3:]
      push_ets(plan, model_output);
    } else {
      prev_timestep = timestep;
      timestep = timestep + ratio;
    }
    const size_t k = ets_size_;
    if (k == 1 && counter_ == 0) {
      plan.store(x, kCurSample);
    } else if (k == 1 && counter_ == 1) {
      model_output = (model_output + ets(plan, 1)) / 2.0f;
      x = plan.load(kCurSample);
    } else if (k == 2) {
      model_output = (3.0f * ets(plan, 1) - ets(plan, 2)) / 2.0f;
    } else if (k == 3) {
      const PlanValue ab = 23.0f * ets(plan, 1) - 16.0f * ets(plan, 2);
      model_output = (ab + 5.0f * ets(plan, 3)) / 12.0f;
    } else {
      const PlanValue ab = 55.0f * ets(plan, 1) - 59.0f * ets(plan, 2);
      const PlanValue abc = ab + 37.0f * ets(plan, 3);
      model_output = static_cast<float>(1.0 / 24) * (abc - 9.0f * ets(plan, 4));
    }
    plan.store(prev_sample(x, timestep, prev_timestep, model_output), step_buffer::kPrevSample);
  }

  // Mirrors PNDMScheduler._get_prev_sample: formula (9) of the PNDM paper.
  PlanValue prev_sample(PlanValue x, int64_t timestep, int64_t prev_timestep, PlanValue model_output) const {
    const float alpha_t = alpha_cumprod_at(timestep);
    const float alpha_prev = prev_timestep >= 0 ? alpha_cumprod_at(prev_timestep) : final_alpha_cumprod_;
    const float beta_t = 1.0f - alpha_t;
    const float beta_prev = 1.0f - alpha_prev;
    if (o_.prediction_type == PredictionType::kVPrediction)
      model_output = std::sqrt(alpha_t) * model_output + std::sqrt(beta_t) * x;
    const float sample_coeff = std::sqrt(alpha_prev / alpha_t);
    const float denom_a = alpha_t * std::sqrt(beta_prev);
    const float denom_b = std::sqrt(alpha_t * beta_t * alpha_prev);
    const float denom = denom_a + denom_b;
    const float diff = alpha_prev - alpha_t;
    return sample_coeff * x - (diff * model_output) / denom;
  }

  float alpha_cumprod_at(int64_t t) const {
    if (t < 0 || t >= static_cast<int64_t>(alphas_cumprod_.size()))
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("PNDM: timestep {} is outside the training range", t));
    return alphas_cumprod_[static_cast<size_t>(t)];
  }

  PndmOptions o_;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  int n_ = 0;
  std::vector<int64_t> prk_timesteps_;
  std::vector<double> timesteps_;
  // Runner state: diffusers' len(ets) and counter; ets, cur_sample and cur_model_output live in the state
  // buffers.
  size_t ets_size_ = 0;
  size_t ets_pushes_ = 0;  // the ring slot of the next push
  size_t counter_ = 0;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const PndmOptions& options) {
  return std::make_unique<PndmScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
