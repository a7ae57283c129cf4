#include "models/layers.h"

#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models {

void check_weight(const io::WeightStore& weights, const std::string& name, const Shape& expected,
                  const std::string& config_source) {
  if (!weights.contains(name))
    throw Error(ErrorKind::kModel, fmt::format("{}: missing tensor \"{}\" (expected by {})",
                                               weights.source().string(), name, config_source));
  const auto& info = weights.info(name);
  if (info.shape != expected)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tensor \"{}\" has shape {} but {} implies {}", weights.file_of(name).string(), name,
                    shape_to_string(info.shape), config_source, shape_to_string(expected)));
}

Tensor load_weight(const io::WeightStore& weights, const std::string& name, const Shape& expected,
                   const std::string& config_source, DType dtype) {
  check_weight(weights, name, expected, config_source);
  return weights.load(name, dtype);
}

Linear Linear::load(const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                    bool has_bias) {
  Linear l;
  l.in = in;
  l.out = out;
  l.weight = w.get(prefix + ".weight", {out, in});
  if (has_bias) l.bias = w.get(prefix + ".bias", {out});
  return l;
}

void Linear::forward(const float* x, float* y, int64_t rows) const {
  cpu::linear(x, weight.data<float>(), bias.empty() ? nullptr : bias.data<float>(), y, rows, in, out);
}

Tensor Linear::forward(const Tensor& x, int64_t rows) const {
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y(shape, DType::kF32);
  forward(x.data<float>(), y.data<float>(), rows);
  return y;
}

Conv2d Conv2d::load(const WeightSource& w, const std::string& prefix, int64_t in, int64_t out, int64_t kernel,
                    int64_t stride, int64_t padding) {
  Conv2d c;
  c.in = in;
  c.out = out;
  c.kernel = kernel;
  c.stride = stride;
  const int64_t p = padding < 0 ? kernel / 2 : padding;
  c.pad_top = c.pad_bottom = c.pad_left = c.pad_right = p;
  c.weight = w.get(prefix + ".weight", {out, in, kernel, kernel});
  c.bias = w.get(prefix + ".bias", {out});
  return c;
}

Tensor Conv2d::forward(const Tensor& x) const {
  cpu::Conv2dShape s;
  s.batch = x.dim(0);
  s.in_channels = x.dim(1);
  s.height = x.dim(2);
  s.width = x.dim(3);
  s.out_channels = out;
  s.kernel = kernel;
  s.stride = stride;
  s.pad_top = pad_top;
  s.pad_bottom = pad_bottom;
  s.pad_left = pad_left;
  s.pad_right = pad_right;
  if (s.in_channels != in)
    throw Error(ErrorKind::kInternal,
                fmt::format("conv2d: input has {} channels, weight expects {}", s.in_channels, in));
  Tensor y({s.batch, out, s.out_height(), s.out_width()}, DType::kF32);
  cpu::conv2d(x.data<float>(), weight.data<float>(), bias.empty() ? nullptr : bias.data<float>(),
              y.data<float>(), s);
  return y;
}

GroupNorm GroupNorm::load(const WeightSource& w, const std::string& prefix, int64_t groups, int64_t channels,
                          float eps) {
  if (groups <= 0 || channels % groups != 0)
    throw Error(ErrorKind::kModel, fmt::format("{}: {} channels at \"{}\" are not divisible into {} groups",
                                               w.config_source, channels, prefix, groups));
  GroupNorm g;
  g.groups = groups;
  g.channels = channels;
  g.eps = eps;
  g.weight = w.get(prefix + ".weight", {channels});
  g.bias = w.get(prefix + ".bias", {channels});
  return g;
}

Tensor GroupNorm::forward(const Tensor& x, bool silu_after) const {
  Tensor y(x.shape(), DType::kF32);
  cpu::group_norm(x.data<float>(), weight.data<float>(), bias.data<float>(), y.data<float>(), x.dim(0),
                  channels, x.numel() / (x.dim(0) * channels), groups, eps, silu_after);
  return y;
}

LayerNorm LayerNorm::load(const WeightSource& w, const std::string& prefix, int64_t dim, float eps) {
  LayerNorm l;
  l.dim = dim;
  l.eps = eps;
  l.weight = w.get(prefix + ".weight", {dim});
  l.bias = w.get(prefix + ".bias", {dim});
  return l;
}

void LayerNorm::forward(const float* x, float* y, int64_t rows) const {
  cpu::layer_norm(x, weight.data<float>(), bias.data<float>(), y, rows, dim, eps);
}

Tensor nchw_to_tokens(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), HW = x.dim(2) * x.dim(3);
  Tensor t({B, HW, C}, DType::kF32);
  const float* src = x.data<float>();
  float* dst = t.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) dst[(b * HW + p) * C + c] = src[(b * C + c) * HW + p];
  return t;
}

Tensor tokens_to_nchw(const Tensor& tokens, int64_t height, int64_t width) {
  const int64_t B = tokens.dim(0), HW = tokens.dim(1), C = tokens.dim(2);
  Tensor x({B, C, height, width}, DType::kF32);
  const float* src = tokens.data<float>();
  float* dst = x.data<float>();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < HW; ++p) dst[(b * C + c) * HW + p] = src[(b * HW + p) * C + c];
  return x;
}

Tensor concat_channels(const Tensor& a, const Tensor& b) {
  const int64_t B = a.dim(0), Ca = a.dim(1), Cb = b.dim(1), H = a.dim(2), W = a.dim(3);
  if (b.dim(0) != B || b.dim(2) != H || b.dim(3) != W)
    throw Error(ErrorKind::kInternal, fmt::format("concat_channels: {} vs {}", shape_to_string(a.shape()),
                                                  shape_to_string(b.shape())));
  Tensor y({B, Ca + Cb, H, W}, DType::kF32);
  const size_t plane = static_cast<size_t>(H * W);
  for (int64_t i = 0; i < B; ++i) {
    std::memcpy(y.data<float>() + i * (Ca + Cb) * H * W, a.data<float>() + i * Ca * H * W, Ca * plane * 4);
    std::memcpy(y.data<float>() + (i * (Ca + Cb) + Ca) * H * W, b.data<float>() + i * Cb * H * W,
                Cb * plane * 4);
  }
  return y;
}

Tensor add(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw Error(ErrorKind::kInternal,
                fmt::format("add: {} vs {}", shape_to_string(a.shape()), shape_to_string(b.shape())));
  Tensor y(a.shape(), DType::kF32);
  cpu::add(a.data<float>(), b.data<float>(), y.data<float>(), a.numel());
  return y;
}

void silu_inplace(Tensor& x) {
  cpu::activate(x.data<float>(), x.numel(), cpu::Activation::kSilu);
}

}  // namespace sdrt::models
