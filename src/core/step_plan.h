// A scheduler step as an elementwise program. Every step of PNDM, DDIM, Euler, Euler a and DPM-Solver++ is,
// per element, a short float32 expression over a few same-shaped tensors — the sample, the model output, the
// scheduler's history (PNDM's ets, DPM-Solver's previous data predictions, ...) and for Euler a fresh noise —
// with scalars that depend only on the step (plus DDIM's optional clipping). A StepPlan is that expression
// as straight-line code: loads, stores, and float32 operations with the scalars baked in, in exactly the
// order diffusers evaluates them. The host (execute_step_plan) and the GPU (backends/cuda/scheduler_step.cuh)
// run the same plan with IEEE float32 rounding of every operation, so their results are identical and match
// diffusers' operation order — including where it cancels catastrophically (Euler's first step on a
// zero-terminal-SNR schedule, where sigma is 4096).
//
// It lives in core/ because it is the contract between two layers that must not know each other: the
// schedulers write plans (schedulers/plan_builder.h) and the backends run them (the host executor below,
// backends/cuda/scheduler_step.cuh), so it sits below both; the header needs only the standard library.
//
// This header is plain C++17 without sdrt types: CUDA translation units include it too.
#pragma once

#include <cstdint>
#include <vector>

namespace sdrt {

// The buffers a plan names, each a float32 tensor of the sample's shape.
namespace step_buffer {
inline constexpr int kSample = 0;       // x_t, the current latents (read only)
inline constexpr int kModelOutput = 1;  // the (guided) model output (read only)
inline constexpr int kNoise = 2;       // N(0, 1) noise drawn for this step when the plan needs it (read only)
inline constexpr int kPrevSample = 3;  // the step's result x_{t-1}
inline constexpr int kFirstState = 4;  // the scheduler's own buffers, kept between steps
// The id of the scheduler's state buffer `index` (0 <= index < schedulers::Scheduler::state_buffer_count()).
constexpr int state(int index) {
  return kFirstState + index;
}
}  // namespace step_buffer

// Limits that let a device executor hold a plan in fixed-size kernel arguments.
inline constexpr int kMaxStepBuffers = 12;
inline constexpr int kMaxStepRegisters = 32;
inline constexpr int kMaxStepInstructions = 64;

enum class StepOpcode : uint8_t {
  kLoad,       // r[dst] = buffers[buffer][i]
  kStore,      // buffers[buffer][i] = r[a]
  kMulScalar,  // r[dst] = r[a] · scalar
  kDivScalar,  // r[dst] = r[a] / scalar
  kAdd,        // r[dst] = r[a] + r[b]
  kSub,        // r[dst] = r[a] − r[b]
  kClamp,      // r[dst] = r[a] clamped to [−scalar, scalar] (NaN stays NaN, as torch.clamp)
};

struct StepInstruction {
  StepOpcode op = StepOpcode::kLoad;
  uint8_t dst = 0, a = 0, b = 0;  // registers
  uint8_t buffer = 0;             // kLoad / kStore
  float scalar = 0.0f;
};

struct StepPlan {
  // Run once per element i, top to bottom, every operation rounded to float32 on its own (no fused
  // multiply-add). Only kPrevSample and state buffers are stored to; kPrevSample is always stored. A buffer
  // stored to and loaded later in the same program reads the new value (everything is elementwise).
  std::vector<StepInstruction> program;
  // The caller fills kNoise with the scheduler's generator (randn of the sample's shape) for this step: the
  // draw advances the generator as diffusers' step does.
  bool needs_noise = false;
};

// Throws kInternal when `plan` exceeds the limits above or names a buffer that `buffers` (buffer_count
// pointers) lacks; both executors check with this before running.
void validate_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count);

// Runs `plan` on host buffers of n floats each: buffers[id] (an array of `buffer_count` pointers) for every
// buffer id the plan names. Throws kInternal when the plan names a buffer that is missing.
void execute_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count, int64_t n);

}  // namespace sdrt
