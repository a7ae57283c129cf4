// Internal to the op table (tests/backend_ops/op_*.cpp): seeded fp16-exact data, layout adapters, device
// buffers, and Run objects made from two lambdas.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend_ops/op_table.h"

#if SDRT_HAVE_CUDA
#include "backends/cuda/context.h"
#endif

namespace sdrt::backend_ops {

// Rounds to the nearest fp16 value (ties to even, overflow to ±inf), returned as float. Our own, so the
// CPU-only build rounds exactly as __float2half_rn does.
float round_to_f16(float x);
// offset + scale · N(0, 1), rounded to fp16.
Host random_normal(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f);
// Uniform in [lo, hi), rounded to fp16.
Host random_uniform(size_t n, uint32_t seed, float lo, float hi);
std::vector<double> to_double(const std::vector<float>& v);

// [batch, channels, spatial] <-> [batch, spatial, channels]
Host nchw_to_nhwc(const Host& x, int64_t batch, int64_t channels, int64_t spatial);
Host nhwc_to_nchw(const Host& x, int64_t batch, int64_t channels, int64_t spatial);

// A Run from a launch and an output function (the lambdas own the case's buffers through their captures).
std::unique_ptr<Run> make_run(std::function<void()> launch, std::function<std::vector<float>()> output);

// Element counts as doubles, for Cost.
inline double d(int64_t v) {
  return static_cast<double>(v);
}
// Cost of an op moving `elems` activation / weight elements (fp32 on the CPU, fp16 on CUDA) plus `f32_elems`
// that are fp32 on both (norm affine parameters, guidance output).
inline Cost traffic(double flop, double elems, double f32_elems = 0) {
  return {flop, 4 * (elems + f32_elems), 2 * elems + 4 * f32_elems};
}

#if SDRT_HAVE_CUDA
// Device copies: fp16 from fp16-exact floats, fp32 as is; and back to floats in the same layout.
cuda::DeviceBuffer upload_f16(cuda::Context& ctx, const Host& host);
cuda::DeviceBuffer upload_f32(cuda::Context& ctx, const Host& host);
std::vector<float> download_f16(cuda::Context& ctx, const cuda::DeviceBuffer& buf, size_t n);
std::vector<float> download_f32(cuda::Context& ctx, const cuda::DeviceBuffer& buf, size_t n);
#endif

// The ops (one function per op; op_table() lists them in this order).
Op conv2d_op();
Op linear_op();
Op group_norm_op();
Op layer_norm_op();
Op attention_op();
Op geglu_op();
Op gelu_op();
Op quick_gelu_op();
Op silu_op();
Op add_op();
Op upsample_nearest_op();
Op concat_channels_op();
Op timestep_embedding_op();
Op guidance_combine_op();

}  // namespace sdrt::backend_ops
