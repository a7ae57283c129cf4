// The leaves of every model description: one layer's hyper-parameters and the checkpoint keys of its
// weights, with no storage and no backend. The network descriptions (unet.h, vae.h, clip_text.h) are trees of
// these; the CPU executor (models/cpu/) and the CUDA executor (models/cuda/) build their layers from them,
// and WeightSource is the one place that finds a spec's tensors in a checkpoint and checks their shapes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models {

// One checkpoint tensor a description expects.
struct WeightSpec {
  std::string key;
  Shape shape;
  std::string legacy_key;  // the same tensor's name in older checkpoints ("" if none)
};

// How a Linear's weight may be stored.
enum class LinearStorage {
  kMatrix,   // [out, in]
  kConv1x1,  // [out, in, 1, 1]: a 1×1 convolution holding the same numbers (SD 1.x proj_in / proj_out)
  kEither,   // either (VAE attention: conversions from LDM sometimes keep the 1×1 convolutions)
};

// torch.nn.Linear: `name`.weight [out, in], `name`.bias [out].
struct LinearSpec {
  std::string name;
  int64_t in = 0, out = 0;
  bool bias = true;
  LinearStorage storage = LinearStorage::kMatrix;
  std::string
      legacy_name;  // the same layer's name in older checkpoints ("" if none), used when `name` is absent
};

// torch.nn.Conv2d with a square kernel: `name`.weight [out, in, k, k], `name`.bias [out].
struct Conv2dSpec {
  std::string name;
  int64_t in = 0, out = 0, kernel = 3, stride = 1;
  int64_t pad_top = 1, pad_bottom = 1, pad_left = 1, pad_right = 1;

  // torch's symmetric padding (kernel / 2 unless given).
  static Conv2dSpec same(std::string name, int64_t in, int64_t out, int64_t kernel, int64_t stride = 1,
                         int64_t padding = -1);
  int64_t out_height(int64_t h) const { return (h + pad_top + pad_bottom - kernel) / stride + 1; }
  int64_t out_width(int64_t w) const { return (w + pad_left + pad_right - kernel) / stride + 1; }
};

// torch.nn.GroupNorm(groups, channels, eps) with affine `name`.weight / .bias [channels].
struct GroupNormSpec {
  std::string name;
  int64_t groups = 32, channels = 0;
  float eps = 1e-5f;
};

// torch.nn.LayerNorm(dim, eps) over the last dimension, `name`.weight / .bias [dim].
struct LayerNormSpec {
  std::string name;
  int64_t dim = 0;
  float eps = 1e-5f;
};

// ResnetBlock2D, shared by the UNet and the VAE (whose resnets have no time embedding):
//   (shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(emb)))))) /
//   output_scale_factor
struct ResnetSpec {
  GroupNormSpec norm1;                      // [in]
  Conv2dSpec conv1;                         // in -> out, 3×3
  std::optional<LinearSpec> time_emb_proj;  // 4·C0 -> out (UNet only)
  GroupNormSpec norm2;                      // [out]
  Conv2dSpec conv2;                         // out -> out, 3×3
  std::optional<Conv2dSpec> conv_shortcut;  // in -> out, 1×1, when in != out
  double output_scale_factor = 1.0;
  int64_t in() const { return conv1.in; }
  int64_t out() const { return conv2.out; }
};

// A ResnetBlock2D at `prefix` (diffusers' names); time_embed_dim 0 for none (the VAE's).
ResnetSpec describe_resnet(const std::string& prefix, int64_t in, int64_t out, int64_t groups, float eps,
                           int64_t time_embed_dim, double output_scale_factor = 1.0);

// The activation after a feed-forward's first product (CLIP's hidden_act).
enum class Activation { kGelu, kGeluTanh, kQuickGelu };

// Every tensor a spec expects (for `weights()` of whole descriptions: inspection, LoRA key matching).
void append_weights(std::vector<WeightSpec>& out, const LinearSpec& s);
void append_weights(std::vector<WeightSpec>& out, const Conv2dSpec& s);
void append_weights(std::vector<WeightSpec>& out, const GroupNormSpec& s);
void append_weights(std::vector<WeightSpec>& out, const LayerNormSpec& s);
void append_weights(std::vector<WeightSpec>& out, const ResnetSpec& s);

// A checkpoint as the executors read it: finds the tensors a spec names and checks their shapes against it.
// Errors name the file, the tensor, both shapes and `config_source` (the config the shapes come from).
// Keys are the descriptions' (diffusers' / transformers' names); `key_prefix` is how this checkpoint prefixes
// them (transformers 4 wrote CLIP's keys under "text_model.", transformers 5 writes none).
struct WeightSource {
  const io::WeightStore& store;
  std::string config_source;
  std::string key_prefix;

  // Throws unless `key` exists with shape `expected`.
  void check(const std::string& key, const Shape& expected) const;
  // check(), then the tensor converted to `dtype`.
  Tensor get(const std::string& key, const Shape& expected, DType dtype = DType::kF32) const;
  // The tensor (already checked), converted to `dtype` / as stored.
  Tensor load(const std::string& key, DType dtype = DType::kF32) const;
  struct StoredBytes {
    const std::byte* data = nullptr;
    DType dtype = DType::kF32;
    int64_t numel = 0;
  };
  StoredBytes bytes(const std::string& key) const;

  // A Linear's tensors as stored: which name was found (name or legacy_name) and the weight's stored shape
  // ([out, in] or [out, in, 1, 1], per the spec's storage).
  struct LinearKeys {
    std::string weight, bias;  // bias empty when the spec has none
    Shape weight_shape;
  };
  LinearKeys linear(const LinearSpec& s) const;
  // Checks every tensor of a spec (for backends that read the stored bytes themselves).
  void check(const Conv2dSpec& s) const;
  void check(const GroupNormSpec& s) const;
  void check(const LayerNormSpec& s) const;
};

}  // namespace sdrt::models
