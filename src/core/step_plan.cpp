// The host executor of step plans.
#include "core/step_plan.h"

#include <algorithm>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt {

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

}  // namespace sdrt
