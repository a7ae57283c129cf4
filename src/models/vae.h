// AutoencoderKL (diffusers' VAE), CPU fp32.
//
//   decode: z [B, L, h, w] -> post_quant_conv -> Decoder -> image [B, 3, h·f, w·f]   (f = 2^(blocks - 1))
//     Decoder: conv_in -> mid block -> up blocks (ResnetBlock2D × (layers_per_block + 1), Upsample2D but the
//              last) -> GroupNorm + SiLU -> conv_out
//   encode: image [B, 3, H, W] -> Encoder -> quant_conv -> moments [B, 2L, H/f, W/f] (mean, logvar)
//     Encoder: conv_in -> down blocks (ResnetBlock2D × layers_per_block, Downsample2D but the last) -> mid
//     block
//              -> GroupNorm + SiLU -> conv_out
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

class AutoencoderKL {
 public:
  // Loads vae/ of a diffusers folder: config.json + diffusion_pytorch_model(.fp16).safetensors.
  static AutoencoderKL from_folder(const std::filesystem::path& dir, VaeParts parts = {});
  static AutoencoderKL from_weights(const VaeConfig& config, const io::WeightStore& weights,
                                    const std::string& config_source, VaeParts parts = {});

  const VaeConfig& config() const { return config_; }
  bool has_encoder() const { return has_encoder_; }
  bool has_decoder() const { return has_decoder_; }

  // latents [B, L, h, w] -> image [B, out_channels, h·f, w·f], before the pipeline's /2 + 0.5.
  Tensor decode(const Tensor& latents) const;
  // image [B, in_channels, H, W] in [-1, 1] -> moments [B, 2L, H/f, W/f] (each halving rounds down): mean
  // channels, then logvar channels.
  Tensor encode(const Tensor& image) const;

  int64_t parameter_count() const;

 private:
  struct Conv {
    Tensor w, b;  // [out, in, k, k], [out]
    int64_t in = 0, out = 0, kernel = 0;
  };
  struct Norm {
    Tensor w, b;  // GroupNorm affine, [channels]
  };
  struct Resnet {  // ResnetBlock2D without time embedding
    Norm norm1, norm2;
    Conv conv1, conv2;
    std::optional<Conv> conv_shortcut;  // 1x1, when in != out
  };
  struct Attention {  // diffusers Attention with one head of all channels and a residual connection
    Norm group_norm;
    Tensor q_w, q_b, k_w, k_b, v_w, v_b, out_w, out_b;  // linear [C, C], [C]
  };
  struct MidBlock {  // UNetMidBlock2D
    Resnet resnet0, resnet1;
    std::optional<Attention> attention;
  };
  struct Block {  // DownEncoderBlock2D / UpDecoderBlock2D
    std::vector<Resnet> resnets;
    std::optional<Conv> resample;  // Downsample2D / Upsample2D convolution
  };
  struct Coder {  // Encoder or Decoder
    Conv conv_in;
    std::vector<Block> blocks;
    MidBlock mid;
    Norm norm_out;
    Conv conv_out;
  };

  class Loader;
  class Runner;

  VaeConfig config_;
  bool has_encoder_ = false, has_decoder_ = false;
  Coder encoder_, decoder_;
  std::optional<Conv> quant_conv_, post_quant_conv_;  // 1x1
};

// diffusers' postprocess to 8-bit: (x / 2 + 0.5).clamp(0, 1), then (x · 255).round() (half to even, as
// numpy). image [1, 3, H, W] (or [3, H, W]) -> H·W·3 bytes, row-major RGB.
std::vector<uint8_t> image_to_rgb8(const Tensor& image);

}  // namespace sdrt::models
