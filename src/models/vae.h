// AutoencoderKL (diffusers' VAE), described once: config, block plans and checkpoint keys. The CPU executor
// (models/cpu/vae.h) runs both halves; the CUDA executor (models/cuda/vae.h) the decoder.
//
//   decode: z [B, L, h, w] -> post_quant_conv -> Decoder -> image [B, 3, h·f, w·f]   (f = 2^(blocks - 1))
//     Decoder: conv_in -> mid block -> up blocks (ResnetBlock2D × (layers_per_block + 1), Upsample2D but the
//              last) -> GroupNorm + SiLU -> conv_out
//   encode: image [B, 3, H, W] -> Encoder -> quant_conv -> moments [B, 2L, H/f, W/f] (mean, logvar)
//     Encoder: conv_in -> down blocks (ResnetBlock2D × layers_per_block, Downsample2D but the last)
//              -> mid block -> GroupNorm + SiLU -> conv_out
//   mid block: ResnetBlock2D -> single-head self-attention over all pixels -> ResnetBlock2D
// The architecture comes from vae/config.json; weights are keyed by diffusers' checkpoint names. Images are
// in diffusers' raw range (about [-1, 1]); latents are unscaled (already divided by scaling_factor).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/layer_specs.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models {

struct VaeConfig {
  // Defaults are diffusers' AutoencoderKL defaults, used when config.json leaves a field out.
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  int64_t latent_channels = 4;
  std::vector<int64_t> block_out_channels = {64};
  int64_t layers_per_block = 1;
  int64_t norm_num_groups = 32;
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;  // null for SD 1.x / 2.x
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  // Spatial ratio between image and latents (8 for SD).
  int64_t downscale_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }

  // Parses an AutoencoderKL config.json; throws naming `path` and the field at fault.
  static VaeConfig from_json_file(const std::filesystem::path& path);
  // The same from parsed JSON; `what` names the source in errors (single-file checkpoints synthesise
  // configs).
  static VaeConfig from_json(const nlohmann::json& j, const std::string& what);
};

// Which halves to load: text-to-image needs only the decoder.
struct VaeParts {
  bool encoder = true;
  bool decoder = true;
};

// diffusers' Attention in the VAE's mid block: one head over all channels, + x.
struct VaeAttentionSpec {
  GroupNormSpec group_norm;             // [C], eps 1e-6
  LinearSpec to_q, to_k, to_v, to_out;  // C -> C, with bias
};

// One step of an encoder's / decoder's block plan, between conv_in and norm_out.
struct VaeStep {
  enum class Kind {
    kResnet,      // x = resnets[index](x)
    kAttention,   // x = attentions[index](x)
    kDownsample,  // x = samplers[index](x): stride-2 conv, padded right / bottom by one
    kUpsample,    // x = samplers[index](nearest ×2 (x))
  };
  Kind kind;
  size_t index = 0;
};

// Encoder:  image [B, 3, H, W] -> conv_in -> plan -> GroupNorm + SiLU -> conv_out -> quant_conv -> moments
// Decoder:  z [B, L, h, w] -> post_quant_conv (quant_conv here) -> conv_in -> plan -> GroupNorm + SiLU ->
// conv_out
struct VaeCoderSpec {
  Conv2dSpec conv_in;
  std::vector<ResnetSpec> resnets;
  std::vector<VaeAttentionSpec> attentions;
  std::vector<Conv2dSpec> samplers;
  std::vector<VaeStep> steps;  // the block plan
  GroupNormSpec norm_out;
  Conv2dSpec conv_out;
  std::optional<Conv2dSpec>
      quant_conv;  // 1×1: after the encoder (quant_conv), before the decoder (post_quant_conv)
};

struct VaeDescription {
  VaeConfig config;
  std::optional<VaeCoderSpec> encoder, decoder;  // the halves asked for
  std::vector<WeightSpec> weights() const;
};

// The description of the AutoencoderKL `config` defines (keys are diffusers' names).
VaeDescription describe_vae(const VaeConfig& config, VaeParts parts = {});

// diffusers' postprocess to 8-bit: (x / 2 + 0.5).clamp(0, 1), then (x · 255).round() (half to even, as
// numpy). image [1, 3, H, W] (or [3, H, W]) -> H·W·3 bytes, row-major RGB.
std::vector<uint8_t> image_to_rgb8(const Tensor& image);

}  // namespace sdrt::models
