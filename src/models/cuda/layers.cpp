#include "models/cuda/layers.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "backends/cuda/check.h"
#include "backends/cuda/conv.cuh"
#include "backends/cuda/gemm.cuh"
#include "backends/cuda/norm.cuh"
#include "backends/cuda/weight_upload.h"
#include "io/safetensors.h"

namespace sdrt::models::gpu {

namespace {
OpProfiler* g_active_profiler = nullptr;
}

OpProfiler::OpProfiler(Context& ctx) : ctx_(ctx) {
  g_active_profiler = this;
}

OpProfiler::~OpProfiler() {
  if (g_active_profiler == this) g_active_profiler = nullptr;
  for (auto& m : marks_) {
    cudaEventDestroy(m.start);
    cudaEventDestroy(m.stop);
  }
}

OpProfiler* OpProfiler::active() {
  return g_active_profiler;
}

std::map<std::string, double> OpProfiler::totals() {
  ctx_.synchronize();
  std::map<std::string, double> sums;
  for (const auto& m : marks_) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, m.start, m.stop), "cudaEventElapsedTime");
    sums[m.family] += ms;
  }
  return sums;
}

OpScope::OpScope(Context& ctx, const char* family) : ctx_(ctx) {
  OpProfiler* p = OpProfiler::active();
  if (!p) return;
  mark_.family = family;
  check(cudaEventCreate(&mark_.start), "cudaEventCreate");
  check(cudaEventCreate(&mark_.stop), "cudaEventCreate");
  check(cudaEventRecord(mark_.start, ctx.stream()), "cudaEventRecord");
  on_ = true;
}

OpScope::~OpScope() {
  if (!on_) return;
  cudaEventRecord(mark_.stop, ctx_.stream());
  if (OpProfiler* p = OpProfiler::active()) p->push(mark_);
}

void* ActivationPool::acquire(size_t bytes) {
  bytes = (bytes + 255) & ~size_t{255};
  auto it = free_.find(bytes);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    return p;
  }
  owned_.emplace_back(bytes);
  reserved_ += bytes;
  return owned_.back().data();
}

void ActivationPool::release(void* ptr, size_t bytes) {
  bytes = (bytes + 255) & ~size_t{255};
  free_[bytes].push_back(ptr);
}

Act::Act(ActivationPool& pool, int64_t n_, int64_t h_, int64_t w_, int64_t c_)
    : n(n_), h(h_), w(w_), c(c_), pool_(&pool) {
  bytes_ = static_cast<size_t>(numel()) * sizeof(__half);
  data_ = bytes_ ? static_cast<__half*>(pool.acquire(bytes_)) : nullptr;
}

Act::Act(Act&& o) noexcept
    : n(o.n),
      h(o.h),
      w(o.w),
      c(o.c),
      pool_(std::exchange(o.pool_, nullptr)),
      data_(std::exchange(o.data_, nullptr)),
      bytes_(std::exchange(o.bytes_, 0)) {}

Act& Act::operator=(Act&& o) noexcept {
  if (this != &o) {
    reset();
    n = o.n;
    h = o.h;
    w = o.w;
    c = o.c;
    pool_ = std::exchange(o.pool_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Act::~Act() {
  reset();
}

void Act::reset() {
  if (pool_ && data_) pool_->release(data_, bytes_);
  pool_ = nullptr;
  data_ = nullptr;
  bytes_ = 0;
}

namespace {

cuda::WeightUploader::Source stored_source(const WeightSource& w, const std::string& name,
                                           const Shape& expected) {
  w.check(name, expected);
  const io::WeightStore::Bytes b = w.store.bytes(name);
  const cuda::StoredType type = b.dtype == DType::kF16    ? cuda::StoredType::kF16
                                : b.dtype == DType::kBF16 ? cuda::StoredType::kBF16
                                                          : cuda::StoredType::kF32;
  return {b.data, type, b.numel};
}

}  // namespace

DeviceBuffer weight_f16(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected) {
  const auto src = stored_source(w, name, expected);
  DeviceBuffer buffer(static_cast<size_t>(src.numel) * sizeof(__half));
  ctx.uploader().to_f16(src, buffer.as<__half>());
  return buffer;
}

DeviceBuffer weight_f32(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected) {
  const auto src = stored_source(w, name, expected);
  DeviceBuffer buffer(static_cast<size_t>(src.numel) * sizeof(float));
  ctx.uploader().to_f32(src, buffer.as<float>());
  return buffer;
}

void weight_f16_into(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected,
                     __half* dst) {
  ctx.uploader().to_f16(stored_source(w, name, expected), dst);
}

DLinear DLinear::load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                      bool has_bias) {
  DLinear l;
  l.in = in;
  l.out = out;
  l.weight = weight_f16(ctx, w, prefix + ".weight", {out, in});
  if (has_bias) l.bias = weight_f16(ctx, w, prefix + ".bias", {out});
  return l;
}

DLinear DLinear::load_stacked(Context& ctx, const WeightSource& w, const std::vector<std::string>& prefixes,
                              int64_t in, int64_t out_each, bool has_bias) {
  const auto parts = static_cast<int64_t>(prefixes.size());
  DLinear l;
  l.in = in;
  l.out = parts * out_each;
  l.weight = DeviceBuffer(static_cast<size_t>(l.out * in) * sizeof(__half));
  if (has_bias) l.bias = DeviceBuffer(static_cast<size_t>(l.out) * sizeof(__half));
  for (int64_t i = 0; i < parts; ++i) {
    weight_f16_into(ctx, w, prefixes[i] + ".weight", {out_each, in},
                    l.weight.as<__half>() + i * out_each * in);
    if (has_bias)
      weight_f16_into(ctx, w, prefixes[i] + ".bias", {out_each}, l.bias.as<__half>() + i * out_each);
  }
  return l;
}

DLinear DLinear::load_conv1x1(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in,
                              int64_t out) {
  DLinear l;
  l.in = in;
  l.out = out;
  l.weight = weight_f16(ctx, w, prefix + ".weight", {out, in, 1, 1});
  l.bias = weight_f16(ctx, w, prefix + ".bias", {out});
  return l;
}

void DLinear::forward(Context& ctx, const __half* x, __half* y, int64_t rows, const __half* residual,
                      int64_t x_stride) const {
  OpScope scope(ctx, "gemm");
  cuda::linear(ctx, {.x = x,
                     .weight = weight.as<__half>(),
                     .bias = bias.size() ? bias.as<__half>() : nullptr,
                     .residual = residual,
                     .y = y,
                     .rows = rows,
                     .in = in,
                     .out = out,
                     .x_stride = x_stride});
}

DConv2d DConv2d::load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                      int64_t kernel, int64_t stride, int64_t padding) {
  DConv2d c;
  c.in = in;
  c.out = out;
  c.kernel = kernel;
  c.stride = stride;
  const int64_t p = padding < 0 ? kernel / 2 : padding;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = p;
  // torch [out, in, k, k] -> [out, k, k, in], permuted on the GPU
  const std::string name = prefix + ".weight";
  const auto src = stored_source(w, name, {out, in, kernel, kernel});
  c.weight = DeviceBuffer(static_cast<size_t>(src.numel) * sizeof(__half));
  ctx.uploader().conv_to_ohwi_f16(src, out, in, kernel * kernel, c.weight.as<__half>());
  c.bias = weight_f16(ctx, w, prefix + ".bias", {out});
  return c;
}

Act DConv2d::forward(Context& ctx, ActivationPool& pool, const Act& x, const __half* residual) const {
  if (x.c != in)
    throw Error(ErrorKind::kInternal, fmt::format("conv: input has {} channels, expected {}", x.c, in));
  const int64_t oh = cuda::conv_out_size(x.h, kernel, stride, pad_top, pad_bottom);
  const int64_t ow = cuda::conv_out_size(x.w, kernel, stride, pad_left, pad_right);
  Act y(pool, x.n, oh, ow, out);
  OpScope scope(ctx, "conv");
  cuda::conv2d(ctx, {.x = x.data(),
                     .weight = weight.as<__half>(),
                     .bias = bias.as<__half>(),
                     .residual = residual,
                     .y = y.data(),
                     .batch = x.n,
                     .h = x.h,
                     .w = x.w,
                     .in = in,
                     .out = out,
                     .kernel = kernel,
                     .stride = stride,
                     .pad_top = pad_top,
                     .pad_bottom = pad_bottom,
                     .pad_left = pad_left,
                     .pad_right = pad_right});
  return y;
}

DGroupNorm DGroupNorm::load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t groups,
                            int64_t channels, float eps) {
  DGroupNorm g;
  g.groups = groups;
  g.channels = channels;
  g.eps = eps;
  g.gamma = weight_f32(ctx, w, prefix + ".weight", {channels});
  g.beta = weight_f32(ctx, w, prefix + ".bias", {channels});
  return g;
}

Act DGroupNorm::forward(Context& ctx, ActivationPool& pool, const Act& x, bool silu, const __half* pre_bias,
                        int64_t pre_bias_stride) const {
  Act y(pool, x.n, x.h, x.w, x.c);
  OpScope scope(ctx, "group_norm");
  cuda::launch_group_norm(
      {.x = x.data(),
       .y = y.data(),
       .gamma = gamma.as<float>(),
       .beta = beta.as<float>(),
       .pre_bias = pre_bias,
       .batch = x.n,
       .spatial = x.h * x.w,
       .channels = x.c,
       .groups = groups,
       .pre_bias_stride = pre_bias_stride,
       .eps = eps,
       .silu = silu,
       .scratch = ctx.zeroed_scratch(cuda::group_norm_scratch_bytes(x.n, x.h * x.w, x.c, groups))},
      ctx.stream());
  return y;
}

DLayerNorm DLayerNorm::load(Context& ctx, const WeightSource& w, const std::string& prefix, int64_t dim,
                            float eps) {
  DLayerNorm l;
  l.dim = dim;
  l.eps = eps;
  l.gamma = weight_f32(ctx, w, prefix + ".weight", {dim});
  l.beta = weight_f32(ctx, w, prefix + ".bias", {dim});
  return l;
}

Act DLayerNorm::forward(Context& ctx, ActivationPool& pool, const Act& x) const {
  Act y(pool, x.n, x.h, x.w, x.c);
  OpScope scope(ctx, "layer_norm");
  cuda::launch_layer_norm(x.data(), y.data(), gamma.as<float>(), beta.as<float>(), x.rows(), dim, eps,
                          ctx.stream());
  return y;
}

}  // namespace sdrt::models::gpu
