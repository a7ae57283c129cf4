// Fused multi-head attention (flash-attention style: the [seq_q, seq_kv] score matrix never reaches memory).
//
// q [batch, seq_q, heads·head_dim], k and v [batch, seq_kv, heads·head_dim], out [batch, seq_q,
// heads·head_dim], fp16 with fp32 softmax/accumulation. Row strides (in elements) let q/k/v be column slices
// of one fused QKV projection: e.g. q = qkv, k = qkv + C, v = qkv + 2C with stride 3C.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <string>

namespace sdrt::cuda {

class Context;

struct AttentionShape {
  int64_t batch, heads, seq_q, seq_kv, head_dim;
  int64_t q_stride, k_stride, v_stride, out_stride;  // row strides in elements
  float scale;                                       // usually 1/sqrt(head_dim)
  bool causal = false;                               // mask key j > query i (CLIP text encoder)
};

// Runs attention on ctx.stream(). Plans (cuDNN graphs / kernel choice) are cached per shape, so the first
// call with a shape must happen outside CUDA-graph capture.
void attention(Context& ctx, const AttentionShape& shape, const __half* q, const __half* k, const __half* v,
               __half* out);

// The implementation `attention` uses for `shape` with 16-byte-aligned pointers: "cudnn-sdpa" (cuDNN's fused
// flash attention) or "fallback" (cuBLASLt QKᵀ, fp32 softmax, cuBLASLt P·V; for head_dim > 256, where it is
// faster, and shapes cuDNN cannot run: head_dim not a multiple of 8, pointers/strides not 16-byte aligned,
// GPUs before sm80). Plans the shape if needed, so call it outside graph capture.
const char* attention_path(Context& ctx, const AttentionShape& shape);

// attention_path plus, for the fallback, why cuDNN was not used ("fallback (cuDNN: check_support: ...)").
std::string attention_plan_note(Context& ctx, const AttentionShape& shape);

// Forces the fallback path for all later calls (tests, benchmarks); the environment variable
// SDRT_ATTENTION=fallback sets it at start-up. Plans for both settings are cached side by side.
void attention_force_fallback(bool on);

// Drops the cached plans made with ctx's handles (call before destroying a Context, so a later Context whose
// handles reuse the same addresses cannot pick up stale plans).
void attention_release_plans(Context& ctx);

}  // namespace sdrt::cuda
