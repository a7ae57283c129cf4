// The bias / residual additions of a convolution when cuDNN has no fused engine for the shape: one pass,
// half2-vectorised when the channel count is even.
#include "backends/cuda/check.h"
#include "backends/cuda/conv.cuh"

namespace sdrt::cuda {
namespace {

__global__ void add_bias_residual_kernel(__half2* y, const __half2* bias, const __half2* residual,
                                         int64_t pairs, int64_t channel_pairs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float2 v = __half22float2(y[i]);
    if (bias) {
      float2 b = __half22float2(bias[i % channel_pairs]);
      v.x += b.x;
      v.y += b.y;
    }
    if (residual) {
      float2 r = __half22float2(residual[i]);
      v.x += r.x;
      v.y += r.y;
    }
    y[i] = __float22half2_rn(v);
  }
}

__global__ void add_bias_residual_scalar_kernel(__half* y, const __half* bias, const __half* residual,
                                                int64_t n, int64_t channels) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = __half2float(y[i]);
    if (bias) v += __half2float(bias[i % channels]);
    if (residual) v += __half2float(residual[i]);
    y[i] = __float2half(v);
  }
}

}  // namespace

void launch_add_bias_residual(__half* y, const __half* bias, const __half* residual, int64_t rows,
                              int64_t channels, cudaStream_t stream) {
  const int64_t n = rows * channels;
  if (n == 0) return;
  const int64_t work = channels % 2 == 0 ? n / 2 : n;
  const int blocks = static_cast<int>(std::min<int64_t>((work + 255) / 256, 8192));
  if (channels % 2 == 0) {
    add_bias_residual_kernel<<<blocks, 256, 0, stream>>>(
        reinterpret_cast<__half2*>(y), reinterpret_cast<const __half2*>(bias),
        reinterpret_cast<const __half2*>(residual), n / 2, channels / 2);
  } else {
    add_bias_residual_scalar_kernel<<<blocks, 256, 0, stream>>>(y, bias, residual, n, channels);
  }
  check_launch("add_bias_residual");
}

}  // namespace sdrt::cuda
