// DDIMScheduler (diffusers scheduling_ddim.py) with eta = 0: the deterministic DDIM update.
//
// All per-element math is float32, as diffusers does it on float32 tensors and 0-d float32 coefficients.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

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
  Tensor scale_model_input(const Tensor& sample, size_t) const override { return sample.to(sample.dtype()); }

  // Mirrors DDIMScheduler.step with eta = 0 and use_clipped_model_output = False.
  Tensor step(const Tensor& model_output_in, size_t step_index, const Tensor& sample_in,
              TorchGenerator&) override {
    check_step_index(step_index, timesteps_.size(), "DDIM");
    check_same_shape(model_output_in, sample_in, "DDIM");
    const Tensor model_output = to_f32(model_output_in);
    const Tensor sample = to_f32(sample_in);
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
    const float clip = static_cast<float>(o_.clip_sample_range);

    Tensor out(sample.shape(), DType::kF32);
    const float* mo = model_output.data<float>();
    const float* x = sample.data<float>();
    float* o = out.data<float>();
    for (int64_t i = 0; i < out.numel(); ++i) {
      float x0 = 0.0f, eps = 0.0f;
      switch (o_.prediction_type) {
        case PredictionType::kEpsilon: {
          const float b = sqrt_beta_t * mo[i];
          x0 = (x[i] - b) / sqrt_alpha_t;
          eps = mo[i];
          break;
        }
        case PredictionType::kSample: {
          x0 = mo[i];
          const float a = sqrt_alpha_t * x0;
          eps = (x[i] - a) / sqrt_beta_t;
          break;
        }
        case PredictionType::kVPrediction: {
          const float a = sqrt_alpha_t * x[i];
          const float b = sqrt_beta_t * mo[i];
          x0 = a - b;
          const float c = sqrt_alpha_t * mo[i];
          const float d = sqrt_beta_t * x[i];
          eps = c + d;
          break;
        }
      }
      if (o_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      const float direction = direction_coeff * eps;
      const float scaled_x0 = sqrt_alpha_prev * x0;
      o[i] = scaled_x0 + direction;
    }
    return cast_like(std::move(out), model_output_in);
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
