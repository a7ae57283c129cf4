// Scheduler's host-side scale_model_input and step, built on the host executor of step plans
// (core/step_plan.h).
#include <cstdint>
#include <vector>

#include "core/step_plan.h"
#include "schedulers/schedule_math.h"
#include "schedulers/scheduler.h"
#include "sdrt/error.h"

namespace sdrt::schedulers {

Tensor Scheduler::scale_model_input(const Tensor& sample, size_t step_index) const {
  const float divisor = model_input_divisor(step_index);
  if (divisor == 1.0f) return sample.to(sample.dtype());
  const Tensor x = detail::to_f32(sample);
  Tensor out(x.shape(), DType::kF32);
  const float* in = x.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) o[i] = in[i] / divisor;
  return detail::cast_like(std::move(out), sample);
}

Tensor Scheduler::step(const Tensor& model_output_in, size_t step_index, const Tensor& sample_in,
                       TorchGenerator& rng) {
  // Everything that can fail comes before plan_step, which advances the scheduler.
  detail::check_step_index(step_index, timesteps().size(), name());
  detail::check_same_shape(model_output_in, sample_in, name());
  const Tensor model_output = detail::to_f32(model_output_in);
  const Tensor sample = detail::to_f32(sample_in);
  const StepPlan plan = plan_step(step_index);

  const int64_t n = sample.numel();
  const auto state_count = static_cast<size_t>(state_buffer_count());
  if (host_state_.size() != state_count ||
      (state_count > 0 && host_state_[0].size() != static_cast<size_t>(n)))
    host_state_.assign(state_count, std::vector<float>(static_cast<size_t>(n), 0.0f));
  Tensor noise;
  if (plan.needs_noise) noise = rng.randn(model_output.shape());
  Tensor out(sample.shape(), DType::kF32);

  // Inputs are only read (the plan writes kPrevSample and state buffers alone).
  std::vector<float*> buffers(static_cast<size_t>(step_buffer::kFirstState) + state_count, nullptr);
  buffers[step_buffer::kSample] = const_cast<float*>(sample.data<float>());
  buffers[step_buffer::kModelOutput] = const_cast<float*>(model_output.data<float>());
  buffers[step_buffer::kNoise] = plan.needs_noise ? noise.data<float>() : nullptr;
  buffers[step_buffer::kPrevSample] = out.data<float>();
  for (size_t i = 0; i < state_count; ++i)
    buffers[static_cast<size_t>(step_buffer::state(static_cast<int>(i)))] = host_state_[i].data();
  execute_step_plan(plan, buffers.data(), static_cast<int>(buffers.size()), n);
  return detail::cast_like(std::move(out), model_output_in);
}

}  // namespace sdrt::schedulers
