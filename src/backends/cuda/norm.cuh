// Normalisation kernels on fp16 activations with fp32 statistics.
//
// Layout: NHWC activations are [batch, spatial, channels] (spatial = H·W, channels fastest) — the same memory
// as the transformer's token layout [batch, tokens, channels], so no transposes are needed around attention.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace sdrt::cuda {

struct GroupNormArgs {
  const __half* x;     // [batch, spatial, channels]
  __half* y;           // [batch, spatial, channels]; may alias x
  const float* gamma;  // [channels]
  const float* beta;   // [channels]
  const __half*
      pre_bias;  // optional [batch, channels], added to x before the statistics (ResNet time embedding)
  int64_t batch, spatial, channels, groups;
  int64_t pre_bias_stride;  // elements between batch items of pre_bias; 0: channels (dense)
  float eps;
  bool silu;  // fuse the SiLU that follows most GroupNorms
  // Device scratch of at least group_norm_scratch_bytes(batch, spatial, channels, groups) bytes, zero-filled
  // once after allocation (cudaMemset); every launch leaves it zeroed again. One scratch per stream: launches
  // that may run concurrently need their own.
  void* scratch;
  // Let shapes that fit take the single-pass kernel (thread-block clusters, sm_90+); the op tests turn this
  // off to check the two-pass kernels on the same shapes.
  bool single_pass = true;
};
// torch.nn.GroupNorm (+ optional SiLU): statistics per (batch, group) over spatial × channels/groups, in
// fp32.
void launch_group_norm(const GroupNormArgs& args, cudaStream_t stream);
// Whether launch_group_norm takes the single-pass kernel for these arguments on the current device.
bool group_norm_single_pass(const GroupNormArgs& args);
// Scratch bytes launch_group_norm needs for this shape (partial statistics: at most ~32 KiB per batch item).
size_t group_norm_scratch_bytes(int64_t batch, int64_t spatial, int64_t channels, int64_t groups);

// torch.nn.LayerNorm over the last dimension: x, y [rows, dim] (y may alias x), gamma/beta [dim] fp32.
void launch_layer_norm(const __half* x, __half* y, const float* gamma, const float* beta, int64_t rows,
                       int64_t dim, float eps, cudaStream_t stream);

}  // namespace sdrt::cuda
