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

namespace sdrt::models::cuda {

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

ops::WeightUploader::Source stored_source(const WeightSource& w, const std::string& name,
                                          const Shape& expected) {
  w.check(name, expected);
  const auto b = w.bytes(name);
  const ops::StoredType type = b.dtype == DType::kF16    ? ops::StoredType::kF16
                               : b.dtype == DType::kBF16 ? ops::StoredType::kBF16
                                                         : ops::StoredType::kF32;
  return {b.data, type, b.numel};
}

void weight_f16_into(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected,
                     __half* dst) {
  ctx.uploader().to_f16(stored_source(w, name, expected), dst);
}

DeviceBuffer weight_f16(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected) {
  DeviceBuffer buffer(static_cast<size_t>(shape_numel(expected)) * sizeof(__half));
  weight_f16_into(ctx, w, name, expected, buffer.as<__half>());
  return buffer;
}

DeviceBuffer weight_f32(Context& ctx, const WeightSource& w, const std::string& name, const Shape& expected) {
  const auto src = stored_source(w, name, expected);
  DeviceBuffer buffer(static_cast<size_t>(src.numel) * sizeof(float));
  ctx.uploader().to_f32(src, buffer.as<float>());
  return buffer;
}

}  // namespace

Linear Linear::load(Context& ctx, const WeightSource& w, const LinearSpec& spec) {
  return load_stacked(ctx, w, {&spec});
}

Linear Linear::load_stacked(Context& ctx, const WeightSource& w,
                            const std::vector<const LinearSpec*>& specs) {
  Linear l;
  if (specs.empty()) return l;
  l.in = specs.front()->in;
  const bool has_bias = specs.front()->bias;
  for (const LinearSpec* s : specs) {
    if (s->in != l.in || s->bias != has_bias)
      throw Error(ErrorKind::kInternal,
                  fmt::format("{}: stacked linears must share input width and bias", s->name));
    l.out += s->out;
  }
  l.weight = DeviceBuffer(static_cast<size_t>(l.out * l.in) * sizeof(__half));
  if (has_bias) l.bias = DeviceBuffer(static_cast<size_t>(l.out) * sizeof(__half));
  int64_t row = 0;
  for (const LinearSpec* s : specs) {
    const auto keys = w.linear(*s);  // [out, in] or a 1×1 convolution's [out, in, 1, 1]: the same bytes
    weight_f16_into(ctx, w, keys.weight, keys.weight_shape, l.weight.as<__half>() + row * l.in);
    if (has_bias) weight_f16_into(ctx, w, keys.bias, {s->out}, l.bias.as<__half>() + row);
    row += s->out;
  }
  return l;
}

void Linear::forward(Context& ctx, const __half* x, __half* y, int64_t rows, const __half* residual,
                     int64_t x_stride) const {
  OpScope scope(ctx, "gemm");
  ops::linear(ctx, {.x = x,
                    .weight = weight.as<__half>(),
                    .bias = bias.size() ? bias.as<__half>() : nullptr,
                    .residual = residual,
                    .y = y,
                    .rows = rows,
                    .in = in,
                    .out = out,
                    .x_stride = x_stride});
}

Conv2d Conv2d::load(Context& ctx, const WeightSource& w, const Conv2dSpec& spec) {
  Conv2d c;
  c.spec = spec;
  // torch [out, in, k, k] -> [out, k, k, in], permuted on the GPU
  const auto src = stored_source(w, spec.name + ".weight", {spec.out, spec.in, spec.kernel, spec.kernel});
  c.weight = DeviceBuffer(static_cast<size_t>(src.numel) * sizeof(__half));
  ctx.uploader().conv_to_ohwi_f16(src, spec.out, spec.in, spec.kernel * spec.kernel, c.weight.as<__half>());
  c.bias = weight_f16(ctx, w, spec.name + ".bias", {spec.out});
  return c;
}

Act Conv2d::forward(Context& ctx, ActivationPool& pool, const Act& x, const __half* residual) const {
  if (x.c != spec.in)
    throw Error(ErrorKind::kInternal, fmt::format("conv: input has {} channels, expected {}", x.c, spec.in));
  Act y(pool, x.n, spec.out_height(x.h), spec.out_width(x.w), spec.out);
  OpScope scope(ctx, "conv");
  ops::conv2d(ctx, {.x = x.data(),
                    .weight = weight.as<__half>(),
                    .bias = bias.as<__half>(),
                    .residual = residual,
                    .y = y.data(),
                    .batch = x.n,
                    .h = x.h,
                    .w = x.w,
                    .in = spec.in,
                    .out = spec.out,
                    .kernel = spec.kernel,
                    .stride = spec.stride,
                    .pad_top = spec.pad_top,
                    .pad_bottom = spec.pad_bottom,
                    .pad_left = spec.pad_left,
                    .pad_right = spec.pad_right});
  return y;
}

GroupNorm GroupNorm::load(Context& ctx, const WeightSource& w, const GroupNormSpec& spec) {
  w.check(spec);
  GroupNorm g;
  g.groups = spec.groups;
  g.channels = spec.channels;
  g.eps = spec.eps;
  g.gamma = weight_f32(ctx, w, spec.name + ".weight", {spec.channels});
  g.beta = weight_f32(ctx, w, spec.name + ".bias", {spec.channels});
  return g;
}

Act GroupNorm::forward(Context& ctx, ActivationPool& pool, const Act& x, bool silu, const __half* pre_bias,
                       int64_t pre_bias_stride) const {
  Act y(pool, x.n, x.h, x.w, x.c);
  OpScope scope(ctx, "group_norm");
  ops::launch_group_norm(
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
       .scratch = ctx.zeroed_scratch(ops::group_norm_scratch_bytes(x.n, x.h * x.w, x.c, groups))},
      ctx.stream());
  return y;
}

LayerNorm LayerNorm::load(Context& ctx, const WeightSource& w, const LayerNormSpec& spec) {
  LayerNorm l;
  l.dim = spec.dim;
  l.eps = spec.eps;
  l.gamma = weight_f32(ctx, w, spec.name + ".weight", {spec.dim});
  l.beta = weight_f32(ctx, w, spec.name + ".bias", {spec.dim});
  return l;
}

Act LayerNorm::forward(Context& ctx, ActivationPool& pool, const Act& x) const {
  Act y(pool, x.n, x.h, x.w, x.c);
  OpScope scope(ctx, "layer_norm");
  ops::launch_layer_norm(x.data(), y.data(), gamma.as<float>(), beta.as<float>(), x.rows(), dim, eps,
                         ctx.stream());
  return y;
}

}  // namespace sdrt::models::cuda
