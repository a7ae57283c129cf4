// Internal to the CUDA attention (attention.cu): cuDNN's fused flash attention built with the cuDNN front
// end's graph API. Kept in its own host-only translation unit (attention_sdpa.cpp) because the header-only
// front end is large and nvcc gains nothing from seeing it.
#pragma once

#include <cuda_fp16.h>
#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <string>

#include "backends/cuda/attention.cuh"

namespace sdrt::cuda::detail {

// "batch 2 heads 8 seq_q 4096 ..." for messages (here because nvcc rejects this fmt call's compile-time
// check).
std::string describe(const AttentionShape& shape);

// One built cuDNN SDPA forward graph (inference, no softmax stats) for one AttentionShape.
class SdpaPlan;

// Builds the graph for `shape` on `handle`. Returns nullptr and sets *why_not when cuDNN cannot run the shape
// (unsupported head_dim, alignment, GPU or cuDNN version, no engine): the caller then takes the fallback
// path.
std::shared_ptr<SdpaPlan> build_sdpa_plan(cudnnHandle_t handle, const AttentionShape& shape,
                                          std::string* why_not);

// Device workspace the plan needs at execution, in bytes.
int64_t sdpa_workspace_size(const SdpaPlan& plan);

// Enqueues the attention on the handle's stream; q/k/v/out must be 16-byte aligned. Throws sdrt::Error.
void run_sdpa_plan(const SdpaPlan& plan, cudnnHandle_t handle, const __half* q, const __half* k,
                   const __half* v, __half* out, void* workspace);

}  // namespace sdrt::cuda::detail
