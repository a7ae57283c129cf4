// A scheduler step plan as one kernel: each thread walks the plan's straight-line program for its elements
// (grid-stride), with the program and the buffer table passed by value in the kernel arguments. Every
// thread runs the same instructions, so the switch never diverges; the register file indexed by the
// program lives in local memory, which is cheap at latent sizes (64 K elements for 512×512).
#include <algorithm>

#include "backends/cuda/check.h"
#include "backends/cuda/scheduler_step.cuh"
#include "sdrt/error.h"

namespace sdrt::cuda {
namespace {

constexpr int kThreads = 256;

struct DeviceStepPlan {
  StepInstruction code[kMaxStepInstructions];
  float* buffers[kMaxStepBuffers];
  int count;
};

__global__ void step_plan_kernel(const DeviceStepPlan plan, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float r[kMaxStepRegisters];
    for (int k = 0; k < plan.count; ++k) {
      const StepInstruction in = plan.code[k];
      const float s = in.scalar;
      switch (in.op) {
        case StepOpcode::kLoad:
          r[in.dst] = plan.buffers[in.buffer][i];
          break;
        case StepOpcode::kStore:
          plan.buffers[in.buffer][i] = r[in.a];
          break;
        case StepOpcode::kMulScalar:
          r[in.dst] = __fmul_rn(r[in.a], s);
          break;
        case StepOpcode::kDivScalar:
          r[in.dst] = __fdiv_rn(r[in.a], s);
          break;
        case StepOpcode::kAdd:
          r[in.dst] = __fadd_rn(r[in.a], r[in.b]);
          break;
        case StepOpcode::kSub:
          r[in.dst] = __fsub_rn(r[in.a], r[in.b]);
          break;
        case StepOpcode::kClamp: {
          const float v = r[in.a];
          r[in.dst] = v < -s ? -s : (v > s ? s : v);  // NaN passes through, as on the host
          break;
        }
      }
    }
  }
}

}  // namespace

void launch_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count, int64_t n,
                      cudaStream_t stream) {
  validate_step_plan(plan, buffers, buffer_count);
  DeviceStepPlan device_plan{};
  device_plan.count = static_cast<int>(plan.program.size());
  for (size_t k = 0; k < plan.program.size(); ++k) device_plan.code[k] = plan.program[k];
  for (int b = 0; b < std::min(buffer_count, kMaxStepBuffers); ++b) device_plan.buffers[b] = buffers[b];
  if (n <= 0) return;
  const int64_t blocks = std::min<int64_t>((n + kThreads - 1) / kThreads, 132 * 8);
  step_plan_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(device_plan, n);
  check_launch("step_plan_kernel");
}

}  // namespace sdrt::cuda
