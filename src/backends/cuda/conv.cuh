// 2-D convolutions through cuDNN on NHWC fp16 tensors (fp32 accumulation), with bias and an optional residual
// fused into the same call: y = conv(x, w) + bias + residual.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

class Context;

struct ConvArgs {
  const __half* x;         // [batch, h, w, in]
  const __half* weight;    // [out, k, k, in] (KRSC: torch's [out, in, k, k] permuted at load)
  const __half* bias;      // [out] or null
  const __half* residual;  // [batch, out_h, out_w, out] or null; must not alias y
  __half* y;               // [batch, out_h, out_w, out]
  int64_t batch, h, w, in, out, kernel, stride;
  int64_t pad_top, pad_bottom, pad_left, pad_right;  // asymmetric padding (diffusers' VAE downsampler)
};
int64_t conv_out_size(int64_t size, int64_t kernel, int64_t stride, int64_t pad_before, int64_t pad_after);

// Runs the convolution; plans and algorithm choices are cached per shape, so the first call for a shape must
// happen outside CUDA-graph capture.
void conv2d(Context& ctx, const ConvArgs& args);

// y [rows, channels] += bias [channels] (if not null) + residual [rows, channels] (if not null): the part of
// the epilogue cuDNN could not fuse for a shape (conv_epilogue.cu).
void launch_add_bias_residual(__half* y, const __half* bias, const __half* residual, int64_t rows,
                              int64_t channels, cudaStream_t stream);

}  // namespace sdrt::cuda
