// The CPU executor's layers: fp32 weights loaded from a layer spec (models/layer_specs.h) and forward passes
// on NCHW images / token rows through the CPU ops (backends/cpu/).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "backends/cpu/conv.h"
#include "models/layer_specs.h"
#include "sdrt/tensor.h"

namespace sdrt::models::cpu {

// torch.nn.Linear: weight [out, in], bias [out] (optional).
struct Linear {
  Tensor weight, bias;
  int64_t in = 0, out = 0;
  static Linear load(const WeightSource& w, const LinearSpec& spec);
  // x [rows, in] -> [rows, out]
  Tensor forward(const Tensor& x, int64_t rows) const;
  void forward(const float* x, float* y, int64_t rows) const;
};

// torch.nn.Conv2d with a square kernel; weight [out, in, k, k], bias [out].
struct Conv2d {
  Tensor weight, bias;
  sdrt::cpu::Conv2dShape shape;  // in / out channels, kernel, stride, padding (batch and size per call)
  static Conv2d load(const WeightSource& w, const Conv2dSpec& spec);
  // x [B, in, H, W] -> [B, out, H', W']
  Tensor forward(const Tensor& x) const;
  // One sample x [in, h, w] -> y [out, h', w'] (y may not alias x).
  void forward(const float* x, int64_t h, int64_t w, float* y) const;
};

// torch.nn.GroupNorm with affine weight / bias; optionally fused with the SiLU after it.
struct GroupNorm {
  Tensor weight, bias;
  int64_t groups = 32, channels = 0;
  float eps = 1e-5f;
  static GroupNorm load(const WeightSource& w, const GroupNormSpec& spec);
  Tensor forward(const Tensor& x, bool silu_after = false) const;  // x [B, C, H, W]
  // `batch` samples of [channels, pixels] -> y (may alias x).
  void forward(const float* x, float* y, int64_t batch, int64_t pixels, bool silu_after) const;
};

// torch.nn.LayerNorm over the last dimension.
struct LayerNorm {
  Tensor weight, bias;
  int64_t dim = 0;
  float eps = 1e-5f;
  static LayerNorm load(const WeightSource& w, const LayerNormSpec& spec);
  void forward(const float* x, float* y, int64_t rows) const;
};

// ResnetBlock2D (models/layer_specs.h), with or without the time embedding.
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Linear> time_emb_proj;
  std::optional<Conv2d> conv_shortcut;
  double output_scale_factor = 1.0;
  static ResnetBlock load(const WeightSource& w, const ResnetSpec& spec);
  // x [B, in, H, W], emb_silu [B, temb] (silu(emb); empty without a time embedding) -> [B, out, H, W]
  Tensor forward(const Tensor& x, const Tensor& emb_silu) const;
};

// Layout helpers: NCHW image [B, C, H, W] <-> tokens [B, H·W, C].
Tensor nchw_to_tokens(const Tensor& x);
Tensor tokens_to_nchw(const Tensor& tokens, int64_t height, int64_t width);
// Concatenates [B, Ca, H, W] and [B, Cb, H, W] along channels.
Tensor concat_channels(const Tensor& a, const Tensor& b);
// y = a + b elementwise (same shapes), returned as a new tensor.
Tensor add(const Tensor& a, const Tensor& b);
// In-place SiLU.
void silu_inplace(Tensor& x);

}  // namespace sdrt::models::cpu
