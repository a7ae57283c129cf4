// The building blocks shared by the UNet (and later the VAE on other backends): parameter holders loaded by
// checkpoint name with their shapes checked against the config, and CPU forward passes on NCHW / token
// tensors.
#pragma once

#include <cstdint>
#include <string>

#include "backends/cpu/conv.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models {

// Loads `name` as f32 after checking it exists with shape `expected`; errors name the file, tensor, both
// shapes and `config_source` (the config.json the expectation came from).
Tensor load_weight(const io::WeightStore& weights, const std::string& name, const Shape& expected,
                   const std::string& config_source, DType dtype = DType::kF32);
// The same checks without loading (for backends that read the stored bytes themselves).
void check_weight(const io::WeightStore& weights, const std::string& name, const Shape& expected,
                  const std::string& config_source);

struct WeightSource {
  const io::WeightStore& store;
  std::string config_source;  // for error messages: the config.json the shapes come from
  Tensor get(const std::string& name, const Shape& expected, DType dtype = DType::kF32) const {
    return load_weight(store, name, expected, config_source, dtype);
  }
  void check(const std::string& name, const Shape& expected) const {
    check_weight(store, name, expected, config_source);
  }
};

// torch.nn.Linear: weight [out, in], bias [out] (optional).
struct Linear {
  Tensor weight, bias;
  int64_t in = 0, out = 0;
  static Linear load(const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                     bool has_bias);
  // x [rows, in] -> [rows, out]
  Tensor forward(const Tensor& x, int64_t rows) const;
  void forward(const float* x, float* y, int64_t rows) const;
};

// torch.nn.Conv2d with square kernel; weight [out, in, k, k], bias [out].
struct Conv2d {
  Tensor weight, bias;
  int64_t in = 0, out = 0, kernel = 3, stride = 1;
  int64_t pad_top = 1, pad_bottom = 1, pad_left = 1, pad_right = 1;
  static Conv2d load(const WeightSource& w, const std::string& prefix, int64_t in, int64_t out,
                     int64_t kernel, int64_t stride = 1, int64_t padding = -1 /* kernel / 2 */);
  // x [B, in, H, W] -> [B, out, H', W']
  Tensor forward(const Tensor& x) const;
};

// torch.nn.GroupNorm(groups, channels, eps) with affine weight/bias; optionally fused with the SiLU after it.
struct GroupNorm {
  Tensor weight, bias;
  int64_t groups = 32, channels = 0;
  float eps = 1e-5f;
  static GroupNorm load(const WeightSource& w, const std::string& prefix, int64_t groups, int64_t channels,
                        float eps);
  Tensor forward(const Tensor& x, bool silu_after = false) const;  // x [B, C, H, W]
};

// torch.nn.LayerNorm over the last dimension.
struct LayerNorm {
  Tensor weight, bias;
  int64_t dim = 0;
  float eps = 1e-5f;
  static LayerNorm load(const WeightSource& w, const std::string& prefix, int64_t dim, float eps);
  void forward(const float* x, float* y, int64_t rows) const;
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

}  // namespace sdrt::models
