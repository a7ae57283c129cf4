// The scheduler's step on the GPU: runs a StepPlan (core/step_plan.h) over fp32 device buffers, so that
// the denoising loop keeps the latents and the scheduler's history on the device.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/step_plan.h"

namespace sdrt::cuda {

// Runs `plan` on device buffers of n floats: buffers[id] (a host array of `buffer_count` device pointers)
// for every buffer id the plan names. One kernel for the whole plan; every operation is IEEE-rounded on its
// own (no FMA contraction), so the results are bit-identical to the host's execute_step_plan. Throws
// kInternal when the plan names a buffer that is missing.
void launch_step_plan(const StepPlan& plan, float* const* buffers, int buffer_count, int64_t n,
                      cudaStream_t stream);

}  // namespace sdrt::cuda
