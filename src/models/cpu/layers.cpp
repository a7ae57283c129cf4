#include "models/cpu/layers.h"

#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models::cpu {

namespace ops = sdrt::cpu;

Linear Linear::load(const WeightSource& w, const LinearSpec& spec) {
  const auto keys = w.linear(spec);
  Linear l;
  l.in = spec.in;
  l.out = spec.out;
  l.weight = w.load(keys.weight, DType::kF32).reshape({spec.out, spec.in});
  if (spec.bias) l.bias = w.load(keys.bias, DType::kF32);
  return l;
}

void Linear::forward(const float* x, float* y, int64_t rows) const {
  ops::linear(x, weight.data<float>(), bias.empty() ? nullptr : bias.data<float>(), y, rows, in, out);
}

Tensor Linear::forward(const Tensor& x, int64_t rows) const {
  Shape shape = x.shape();
  shape.back() = out;
  Tensor y(shape, DType::kF32);
  forward(x.data<float>(), y.data<float>(), rows);
  return y;
}

Conv2d Conv2d::load(const WeightSource& w, const Conv2dSpec& spec) {
  Conv2d c;
  c.shape.in_channels = spec.in;
  c.shape.out_channels = spec.out;
  c.shape.kernel = spec.kernel;
  c.shape.stride = spec.stride;
  c.shape.pad_top = spec.pad_top;
  c.shape.pad_bottom = spec.pad_bottom;
  c.shape.pad_left = spec.pad_left;
  c.shape.pad_right = spec.pad_right;
  c.weight = w.get(spec.name + ".weight", {spec.out, spec.in, spec.kernel, spec.kernel});
  c.bias = w.get(spec.name + ".bias", {spec.out});
  return c;
}

Tensor Conv2d::forward(const Tensor& x) const {
  ops::Conv2dShape s = shape;
  s.batch = x.dim(0);
  s.height = x.dim(2);
  s.width = x.dim(3);
  if (x.dim(1) != s.in_channels)
    throw Error(ErrorKind::kInternal,
                fmt::format("conv2d: input has {} channels, weight expects {}", x.dim(1), s.in_channels));
  Tensor y({s.batch, s.out_channels, s.out_height(), s.out_width()}, DType::kF32);
  ops::conv2d(x.data<float>(), weight.data<float>(), bias.data<float>(), y.data<float>(), s);
  return y;
}

void Conv2d::forward(const float* x, int64_t h, int64_t w, float* y) const {
  ops::Conv2dShape s = shape;
  s.batch = 1;
  s.height = h;
  s.width = w;
  ops::conv2d(x, weight.data<float>(), bias.data<float>(), y, s);
}

GroupNorm GroupNorm::load(const WeightSource& w, const GroupNormSpec& spec) {
  w.check(spec);
  GroupNorm g;
  g.groups = spec.groups;
  g.channels = spec.channels;
  g.eps = spec.eps;
  g.weight = w.load(spec.name + ".weight", DType::kF32);
  g.bias = w.load(spec.name + ".bias", DType::kF32);
  return g;
}

void GroupNorm::forward(const float* x, float* y, int64_t batch, int64_t pixels, bool silu_after) const {
  ops::group_norm(x, weight.data<float>(), bias.data<float>(), y, batch, channels, pixels, groups, eps,
                  silu_after);
}

Tensor GroupNorm::forward(const Tensor& x, bool silu_after) const {
  Tensor y(x.shape(), DType::kF32);
  forward(x.data<float>(), y.data<float>(), x.dim(0), x.numel() / (x.dim(0) * channels), silu_after);
  return y;
}

LayerNorm LayerNorm::load(const WeightSource& w, const LayerNormSpec& spec) {
  w.check(spec);
  LayerNorm l;
  l.dim = spec.dim;
  l.eps = spec.eps;
  l.weight = w.load(spec.name + ".weight", DType::kF32);
  l.bias = w.load(spec.name + ".bias", DType::kF32);
  return l;
}

void LayerNorm::forward(const float* x, float* y, int64_t rows) const {
  ops::layer_norm(x, weight.data<float>(), bias.data<float>(), y, rows, dim, eps);
}

ResnetBlock ResnetBlock::load(const WeightSource& w, const ResnetSpec& spec) {
  ResnetBlock r;
  r.norm1 = GroupNorm::load(w, spec.norm1);
  r.conv1 = Conv2d::load(w, spec.conv1);
  if (spec.time_emb_proj) r.time_emb_proj = Linear::load(w, *spec.time_emb_proj);
  r.norm2 = GroupNorm::load(w, spec.norm2);
  r.conv2 = Conv2d::load(w, spec.conv2);
  if (spec.conv_shortcut) r.conv_shortcut = Conv2d::load(w, *spec.conv_shortcut);
  r.output_scale_factor = spec.output_scale_factor;
  return r;
}

Tensor ResnetBlock::forward(const Tensor& x, const Tensor& emb_silu) const {
  const int64_t B = x.dim(0);
  Tensor h = conv1.forward(norm1.forward(x, /*silu_after=*/true));  // [B, out, H, W]
  if (time_emb_proj) {
    const Tensor t = time_emb_proj->forward(emb_silu, B);  // [B, out]
    const int64_t C = h.dim(1), HW = h.dim(2) * h.dim(3);
    float* hd = h.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        const float add = t.data<float>()[b * C + c];
        float* plane = hd + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) plane[i] += add;
      }
  }
  h = conv2.forward(norm2.forward(h, /*silu_after=*/true));
  Tensor out = conv_shortcut ? conv_shortcut->forward(x) : x.to(DType::kF32);
  float* od = out.data<float>();
  const float* hh = h.data<float>();
  const float inv = static_cast<float>(1.0 / output_scale_factor);
  const bool scaled = output_scale_factor != 1.0;
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) od[i] = scaled ? (od[i] + hh[i]) * inv : od[i] + hh[i];
  return out;
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
  sdrt::cpu::add(a.data<float>(), b.data<float>(), y.data<float>(), a.numel());
  return y;
}

void silu_inplace(Tensor& x) {
  sdrt::cpu::activate(x.data<float>(), x.numel(), sdrt::cpu::Activation::kSilu);
}

}  // namespace sdrt::models::cpu
