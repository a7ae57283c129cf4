// Building blocks of the CUDA models: fp16 weights on the device (uploaded once at load), NHWC fp16
// activations drawn from a pool, and thin layer wrappers that call the CUDA op families in
// src/backends/cuda/. Every model (UNet, VAE, text encoder) is written against these, mirroring the CPU
// modules in src/models/ line by line.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/context.h"
#include "models/layers.h"

namespace sdrt::models::gpu {

using cuda::check;
using cuda::Context;
using cuda::DeviceBuffer;

// Per-op-family GPU time of eager forward passes, for the benchmark's breakdown: while a profiler is active,
// every OpScope records a pair of CUDA events around its op. Never active during graph capture.
class OpProfiler {
 public:
  explicit OpProfiler(Context& ctx);  // becomes the active profiler
  ~OpProfiler();
  // Waits for the stream and sums the milliseconds per family.
  std::map<std::string, double> totals();

  struct Mark {
    const char* family;
    cudaEvent_t start, stop;
  };
  static OpProfiler* active();
  void push(Mark mark) { marks_.push_back(mark); }

 private:
  Context& ctx_;
  std::vector<Mark> marks_;
};

class OpScope {
 public:
  OpScope(Context& ctx, const char* family);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  Context& ctx_;
  OpProfiler::Mark mark_{};
  bool on_ = false;
};

// Device memory for activations. Blocks are reused LIFO per exact size, so a forward pass that repeats the
// same sequence of requests is served the same addresses every time after the first — which is what lets a
// CUDA graph captured on one pass be replayed on the next. New memory is only allocated outside graph
// capture.
class ActivationPool {
 public:
  void* acquire(size_t bytes);
  void release(void* ptr, size_t bytes);
  size_t reserved_bytes() const { return reserved_; }

 private:
  std::map<size_t, std::vector<void*>> free_;
  std::vector<DeviceBuffer> owned_;
  size_t reserved_ = 0;
};

// An NHWC fp16 activation [n, h, w, c] from the pool (token tensors use h = tokens, w = 1). Move-only; the
// memory returns to the pool when it dies.
class Act {
 public:
  Act() = default;
  Act(ActivationPool& pool, int64_t n, int64_t h, int64_t w, int64_t c);
  Act(Act&& other) noexcept;
  Act& operator=(Act&& other) noexcept;
  Act(const Act&) = delete;
  Act& operator=(const Act&) = delete;
  ~Act();

  __half* data() const { return data_; }
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t numel() const { return n * h * w * c; }
  int64_t rows() const { return n * h * w; }  // pixels or tokens

 private:
  void reset();
  ActivationPool* pool_ = nullptr;
  __half* data_ = nullptr;
  size_t bytes_ = 0;
};

// Weight `name` (shape checked against `expected`, as WeightSource::get) streamed from its stored bytes to
// the device through the context's uploader, converted to fp16 / fp32 on the GPU. Asynchronous: the engine
// calls Context::finish_uploads once everything is issued.
DeviceBuffer weight_f16(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected);
DeviceBuffer weight_f32(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected);
// The same into existing device memory (stacked weights).
void weight_f16_into(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected,
                     __half* dst);

// torch.nn.Linear with fp16 weight [out, in] and bias [out].
struct DLinear {
  DeviceBuffer weight, bias;
  int64_t in = 0, out = 0;
  static DLinear load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                      bool has_bias);
  // Several Linears over the same input fused into one product: weights stacked along `out`.
  static DLinear load_stacked(Context& ctx, const WeightSource& w, const std::vector<std::string>& prefixes,
                              int64_t in, int64_t out_each, bool has_bias);
  // From a 1×1 convolution's weight [out, in, 1, 1] (Transformer2D proj_in/proj_out in SD 1.x).
  static DLinear load_conv1x1(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in,
                              int64_t out);
  // y [rows, out] = x [rows, in] · Wᵀ + b (+ residual, which may alias y)
  void forward(Context& ctx, const __half* x, __half* y, int64_t rows, const __half* residual = nullptr,
               int64_t x_stride = 0) const;
};

// torch.nn.Conv2d, weight stored [out, k, k, in] for NHWC.
struct DConv2d {
  DeviceBuffer weight, bias;
  int64_t in = 0, out = 0, kernel = 3, stride = 1;
  int64_t pad_top = 1, pad_bottom = 1, pad_left = 1, pad_right = 1;
  static DConv2d load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                      int64_t kernel, int64_t stride = 1, int64_t padding = -1 /* kernel / 2 */);
  // x [n, h, w, in] -> [n, h', w', out] (+ residual of the output's shape, fused)
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, const __half* residual = nullptr) const;
};

// torch.nn.GroupNorm with fp32 affine parameters; optional fused SiLU and per-(batch, channel) pre-bias.
struct DGroupNorm {
  DeviceBuffer gamma, beta;
  int64_t groups = 32, channels = 0;
  float eps = 1e-5f;
  static DGroupNorm load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t groups,
                         int64_t channels, float eps);
  // pre_bias: optional [batch, channels] added before the statistics, batch items pre_bias_stride apart (0:
  // channels).
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, bool silu, const __half* pre_bias = nullptr,
              int64_t pre_bias_stride = 0) const;
};

// torch.nn.LayerNorm over the channel (last) dimension.
struct DLayerNorm {
  DeviceBuffer gamma, beta;
  int64_t dim = 0;
  float eps = 1e-5f;
  static DLayerNorm load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t dim,
                         float eps);
  Act forward(Context& ctx, ActivationPool& pool, const Act& x) const;
};

}  // namespace sdrt::models::gpu
