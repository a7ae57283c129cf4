// The CUDA executor's layers: fp16 weights on the device, uploaded once from a layer spec
// (models/layer_specs.h), NHWC fp16 activations drawn from a pool, and thin wrappers that call the CUDA op
// families in src/backends/cuda/. The UNet, VAE decoder and text encoder executors are written against these;
// their structure comes from the model descriptions in src/models/.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/context.h"
#include "models/layer_specs.h"

namespace sdrt::models::cuda {

namespace ops = ::sdrt::cuda;  // the CUDA op families (src/backends/cuda/)
using ops::check;
using ops::Context;
using ops::DeviceBuffer;

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

// torch.nn.Linear with fp16 weight [out, in] and bias [out].
struct Linear {
  DeviceBuffer weight, bias;
  int64_t in = 0, out = 0;
  // Streams the weights from their stored bytes to the device through the context's uploader, converted to
  // fp16 on the GPU. Asynchronous: the engine calls Context::finish_uploads once everything is issued.
  static Linear load(Context& ctx, const WeightSource& w, const LinearSpec& spec);
  // Several Linears over the same input (same `in`, all with or all without bias) fused into one product:
  // weights stacked along `out` in the order given.
  static Linear load_stacked(Context& ctx, const WeightSource& w,
                             const std::vector<const LinearSpec*>& specs);
  // y [rows, out] = x [rows, in] · Wᵀ + b (+ residual, which may alias y)
  void forward(Context& ctx, const __half* x, __half* y, int64_t rows, const __half* residual = nullptr,
               int64_t x_stride = 0) const;
};

// torch.nn.Conv2d, weight stored [out, k, k, in] for NHWC.
struct Conv2d {
  DeviceBuffer weight, bias;
  Conv2dSpec spec;  // channels, kernel, stride, padding
  static Conv2d load(Context& ctx, const WeightSource& w, const Conv2dSpec& spec);
  // x [n, h, w, in] -> [n, h', w', out] (+ residual of the output's shape, fused)
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, const __half* residual = nullptr) const;
};

// torch.nn.GroupNorm with fp32 affine parameters; optional fused SiLU and per-(batch, channel) pre-bias.
struct GroupNorm {
  DeviceBuffer gamma, beta;
  int64_t groups = 32, channels = 0;
  float eps = 1e-5f;
  static GroupNorm load(Context& ctx, const WeightSource& w, const GroupNormSpec& spec);
  // pre_bias: optional [batch, channels] added before the statistics, batch items pre_bias_stride apart (0:
  // channels).
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, bool silu, const __half* pre_bias = nullptr,
              int64_t pre_bias_stride = 0) const;
};

// torch.nn.LayerNorm over the channel (last) dimension.
struct LayerNorm {
  DeviceBuffer gamma, beta;
  int64_t dim = 0;
  float eps = 1e-5f;
  static LayerNorm load(Context& ctx, const WeightSource& w, const LayerNormSpec& spec);
  Act forward(Context& ctx, ActivationPool& pool, const Act& x) const;
};

}  // namespace sdrt::models::cuda
