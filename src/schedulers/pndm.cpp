// PNDMScheduler (diffusers scheduling_pndm.py): pseudo linear multi-step (PLMS) steps, optionally preceded by
// the Runge-Kutta (PRK) warm-up of the PNDM paper when skip_prk_steps is false.
//
// All per-element math is float32, as diffusers does it on float32 tensors and 0-d float32 coefficients.
#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>

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
    ets_.clear();
    counter_ = 0;
    cur_model_output_.reset();
    cur_sample_.reset();
  }

  const std::vector<double>& timesteps() const override { return timesteps_; }
  float init_noise_sigma() const override { return 1.0f; }
  Tensor scale_model_input(const Tensor& sample, size_t) const override { return sample.to(sample.dtype()); }

  // Mirrors PNDMScheduler.step: PRK while the warm-up lasts, PLMS after.
  Tensor step(const Tensor& model_output, size_t step_index, const Tensor& sample, TorchGenerator&) override {
    check_step_index(step_index, timesteps_.size(), "PNDM");
    check_same_shape(model_output, sample, "PNDM");
    // The multistep history assumes one call per step, in order (diffusers' counter).
    if (step_index != counter_)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("PNDM: step {} taken out of order (expected step {})", step_index, counter_));
    const auto t = static_cast<int64_t>(timesteps_[step_index]);
    Tensor out = counter_ < prk_timesteps_.size() && !o_.skip_prk_steps
                     ? step_prk(to_f32(model_output), t, to_f32(sample))
                     : step_plms(to_f32(model_output), t, to_f32(sample));
    return cast_like(std::move(out), model_output);
  }

 private:
  using Vec = std::vector<float>;

  static Vec values(const Tensor& t) {
    const float* p = t.data<float>();
    return Vec(p, p + t.numel());
  }

  // Mirrors PNDMScheduler.step_prk.
  Tensor step_prk(const Tensor& model_output, int64_t timestep, const Tensor& sample) {
    const int64_t diff_to_prev = counter_ % 2 ? 0 : o_.betas.num_train_timesteps / n_ / 2;
    const int64_t prev_timestep = timestep - diff_to_prev;
    const int64_t t = prk_timesteps_[counter_ / 4 * 4];
    Vec mo = values(model_output);
    const float sixth = static_cast<float>(1.0 / 6);
    const float third = static_cast<float>(1.0 / 3);
    const auto accumulate = [&](float weight) {
      if (!cur_model_output_) cur_model_output_ = Vec(mo.size(), 0.0f);
      for (size_t i = 0; i < mo.size(); ++i) {
        const float w = weight * mo[i];
        (*cur_model_output_)[i] = (*cur_model_output_)[i] + w;
      }
    };
    switch (counter_ % 4) {
      case 0:
        accumulate(sixth);
        ets_.push_back(mo);
        cur_sample_ = values(sample);
        break;
      case 1:
      case 2:
        accumulate(third);
        break;
      case 3:
        for (size_t i = 0; i < mo.size(); ++i) {
          const float w = sixth * mo[i];
          mo[i] = (*cur_model_output_)[i] + w;
        }
        cur_model_output_.reset();
        break;
    }
    const Vec cur = cur_sample_ ? *cur_sample_ : values(sample);
    Tensor out = prev_sample(cur, t, prev_timestep, mo, sample.shape());
    ++counter_;
    return out;
  }

  // Mirrors PNDMScheduler.step_plms.
  Tensor step_plms(const Tensor& model_output, int64_t timestep, const Tensor& sample) {
    const int64_t ratio = o_.betas.num_train_timesteps / n_;
    int64_t prev_timestep = timestep - ratio;
    Vec mo = values(model_output);
    Vec x = values(sample);
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(mo);
    } else {
      prev_timestep = timestep;
      timestep = timestep + ratio;
    }
    const size_t k = ets_.size();
    const auto e = [&](size_t back, size_t i) { return ets_[k - back][i]; };  // ets[-back]
    if (k == 1 && counter_ == 0) {
      cur_sample_ = x;
    } else if (k == 1 && counter_ == 1) {
      for (size_t i = 0; i < mo.size(); ++i) mo[i] = (mo[i] + e(1, i)) / 2.0f;
      x = *cur_sample_;
      cur_sample_.reset();
    } else if (k == 2) {
      for (size_t i = 0; i < mo.size(); ++i) {
        const float a = 3.0f * e(1, i);
        mo[i] = (a - e(2, i)) / 2.0f;
      }
    } else if (k == 3) {
      for (size_t i = 0; i < mo.size(); ++i) {
        const float a = 23.0f * e(1, i);
        const float b = 16.0f * e(2, i);
        const float c = 5.0f * e(3, i);
        const float ab = a - b;
        mo[i] = (ab + c) / 12.0f;
      }
    } else {
      const float w = static_cast<float>(1.0 / 24);
      for (size_t i = 0; i < mo.size(); ++i) {
        const float a = 55.0f * e(1, i);
        const float b = 59.0f * e(2, i);
        const float c = 37.0f * e(3, i);
        const float d = 9.0f * e(4, i);
        const float ab = a - b;
        const float abc = ab + c;
        const float sum = abc - d;
        mo[i] = w * sum;
      }
    }
    Tensor out = prev_sample(x, timestep, prev_timestep, mo, sample.shape());
    ++counter_;
    return out;
  }

  // Mirrors PNDMScheduler._get_prev_sample: formula (9) of the PNDM paper.
  Tensor prev_sample(const Vec& x, int64_t timestep, int64_t prev_timestep, Vec mo,
                     const Shape& shape) const {
    const float alpha_t = alpha_cumprod_at(timestep);
    const float alpha_prev = prev_timestep >= 0 ? alpha_cumprod_at(prev_timestep) : final_alpha_cumprod_;
    const float beta_t = 1.0f - alpha_t;
    const float beta_prev = 1.0f - alpha_prev;
    if (o_.prediction_type == PredictionType::kVPrediction) {
      const float sa = std::sqrt(alpha_t);
      const float sb = std::sqrt(beta_t);
      for (size_t i = 0; i < mo.size(); ++i) {
        const float a = sa * mo[i];
        const float b = sb * x[i];
        mo[i] = a + b;
      }
    }
    const float sample_coeff = std::sqrt(alpha_prev / alpha_t);
    const float denom_a = alpha_t * std::sqrt(beta_prev);
    const float denom_b = std::sqrt(alpha_t * beta_t * alpha_prev);
    const float denom = denom_a + denom_b;
    const float diff = alpha_prev - alpha_t;
    Tensor out(shape, DType::kF32);
    float* o = out.data<float>();
    for (size_t i = 0; i < mo.size(); ++i) {
      const float a = sample_coeff * x[i];
      const float b = diff * mo[i];
      o[i] = a - b / denom;
    }
    return out;
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
  // Runner state (diffusers' ets, counter, cur_model_output, cur_sample).
  std::vector<Vec> ets_;
  size_t counter_ = 0;
  std::optional<Vec> cur_model_output_;
  std::optional<Vec> cur_sample_;
};

}  // namespace

std::unique_ptr<Scheduler> make_pndm(const PndmOptions& options) {
  return std::make_unique<PndmScheduler>(options);
}

}  // namespace sdrt::schedulers::detail
