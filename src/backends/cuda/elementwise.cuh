// Elementwise and data-movement kernels (fp16 activations, fp32 math). Each reads and writes its tensors
// once; anything that can ride on a GEMM / convolution epilogue or a norm kernel is fused there instead.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

// y = a + b over n elements (y may alias a or b).
void launch_add(const __half* a, const __half* b, __half* y, int64_t n, cudaStream_t stream);

// In-place SiLU over n elements.
void launch_silu(__half* x, int64_t n, cudaStream_t stream);

// diffusers GEGLU after its projection: x [rows, 2·inner] = [hidden | gate] -> y [rows, inner] =
// hidden · gelu(gate) with the exact erf GELU.
void launch_geglu(const __half* x, __half* y, int64_t rows, int64_t inner, cudaStream_t stream);

// In-place exact-erf GELU (CLIP gelu) or quick GELU x·sigmoid(1.702x) (OpenAI CLIP) over n elements.
void launch_gelu(__half* x, int64_t n, bool quick, cudaStream_t stream);

// Nearest-neighbour ×2 upsampling, NHWC: x [batch, h, w, channels] -> y [batch, 2h, 2w, channels].
void launch_upsample_nearest2x(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w,
                               int64_t channels, cudaStream_t stream);
// Nearest-neighbour resize to any size, NHWC: x [batch, h, w, channels] -> y [batch, out_h, out_w, channels],
// source index floor(dst · (in / out)) in fp32 as torch's F.interpolate(mode="nearest") (UNet up-samplers
// of odd latent sizes, whose target is the skip connection's size).
void launch_upsample_nearest(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w, int64_t out_h,
                             int64_t out_w, int64_t channels, cudaStream_t stream);

// Channel concatenation, NHWC: a [rows, ca], b [rows, cb] -> y [rows, ca + cb] (rows = batch·H·W).
void launch_concat_channels(const __half* a, const __half* b, __half* y, int64_t rows, int64_t ca, int64_t cb,
                            cudaStream_t stream);

// diffusers get_timestep_embedding for every batch entry with one timestep read from device memory:
// y [batch, dim] (fp16) from *timestep (fp32); half = dim/2, exponent = -ln(10000)·i/(half - freq_shift),
// [sin | cos] or [cos | sin] when flip_sin_to_cos.
void launch_timestep_embedding(const float* timestep, __half* y, int64_t batch, int64_t dim,
                               bool flip_sin_to_cos, float freq_shift, cudaStream_t stream);

// Layout + dtype conversion at the engine boundary:
// NCHW fp32 [batch, channels, h·w] -> NHWC fp16 [batch, h·w, channels], each value multiplied by `scale`.
void launch_nchw_f32_to_nhwc_f16(const float* x, __half* y, int64_t batch, int64_t channels, int64_t spatial,
                                 float scale, cudaStream_t stream);
// NHWC fp16 [batch, h·w, channels] -> NCHW fp32 [batch, channels, h·w].
void launch_nhwc_f16_to_nchw_f32(const __half* x, float* y, int64_t batch, int64_t channels, int64_t spatial,
                                 cudaStream_t stream);
// fp32 <-> fp16 over n elements.
void launch_f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t stream);
void launch_f16_to_f32(const __half* x, float* y, int64_t n, cudaStream_t stream);

// Classifier-free guidance on the UNet output of the doubled batch, NHWC fp16 -> NCHW fp32:
// eps [2·batch, spatial, channels] = [uncond | cond]; out [batch, channels, spatial] =
// uncond + scale · (cond − uncond), computed in fp32 (as diffusers does after upcasting).
void launch_guidance_combine(const __half* eps, float* out, int64_t batch, int64_t channels, int64_t spatial,
                             float scale, cudaStream_t stream);

// Counts the non-finite values (NaN, ±Inf) of x [n] into *count (device int, accumulated: zero it first).
void launch_count_nonfinite_f16(const __half* x, int64_t n, int* count, cudaStream_t stream);
void launch_count_nonfinite_f32(const float* x, int64_t n, int* count, cudaStream_t stream);

}  // namespace sdrt::cuda
