// The host executor of step plans, and Scheduler's host-side scale_model_input and step built on it.
#include "schedulers/step_plan.h"

#include <algorithm>

#include <fmt/format.h>

#include "schedulers/schedule_math.h"
#include "schedulers/scheduler.h"
#include "sdrt/error.h"

namespace sdrt::schedulers {

void validate_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count) {
  if (plan.program.size() > static_cast<size_t>(kMaxStepInstructions))
    throw Error(ErrorKind::kInternal, fmt::format("step plan of {} instructions", plan.program.size()));
  for (const StepInstruction& in : plan.program) {
    const bool memory = in.op == StepOpcode::kLoad || in.op == StepOpcode::kStore;
    if (memory &&
        (in.buffer >= buffer_count || in.buffer >= kMaxStepBuffers || buffers[in.buffer] == nullptr))
      throw Error(ErrorKind::kInternal,
                  fmt::format("step plan names buffer {}, which is missing", in.buffer));
    if (in.dst >= kMaxStepRegisters || in.a >= kMaxStepRegisters || in.b >= kMaxStepRegisters)
      throw Error(ErrorKind::kInternal, "step plan register out of range");
  }
}

void execute_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count, int64_t n) {
  validate_step_plan(plan, buffers, buffer_count);
  // Instruction by instruction over blocks of elements: the same per-element operations as the CUDA kernel,
  // in loops the compiler can vectorise.
  constexpr int64_t kBlock = 256;
  std::vector<float> registers(static_cast<size_t>(kMaxStepRegisters * kBlock));
  const auto reg = [&](uint8_t r) { return registers.data() + static_cast<int64_t>(r) * kBlock; };
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t len = std::min(kBlock, n - start);
    for (const StepInstruction& in : plan.program) {
      float* d = reg(in.dst);
      const float* a = reg(in.a);
      const float* b = reg(in.b);
      const float s = in.scalar;
      switch (in.op) {
        case StepOpcode::kLoad:
          std::copy_n(buffers[in.buffer] + start, len, d);
          break;
        case StepOpcode::kStore:
          std::copy_n(a, len, buffers[in.buffer] + start);
          break;
        case StepOpcode::kMulScalar:
          for (int64_t j = 0; j < len; ++j) d[j] = a[j] * s;
          break;
        case StepOpcode::kDivScalar:
          for (int64_t j = 0; j < len; ++j) d[j] = a[j] / s;
          break;
        case StepOpcode::kAdd:
          for (int64_t j = 0; j < len; ++j) d[j] = a[j] + b[j];
          break;
        case StepOpcode::kSub:
          for (int64_t j = 0; j < len; ++j) d[j] = a[j] - b[j];
          break;
        case StepOpcode::kClamp:
          for (int64_t j = 0; j < len; ++j) d[j] = a[j] < -s ? -s : (a[j] > s ? s : a[j]);
          break;
      }
    }
  }
}

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
