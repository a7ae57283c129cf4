// UNet2DConditionModel (diffusers), CPU fp32, NCHW — the reference every other backend is tested against.
//
//   sample [B, in, h, w], timestep t, context [B, 77, cross_dim]
//   emb = time_embedding(timestep_proj(t))                               [B, 4·C0]
//   x = conv_in(sample)                                                   [B, C0, h, w]
//   down blocks: (ResnetBlock2D [+ Transformer2D]) × layers, then a stride-2 conv; every output kept as a
//   skip mid block:   ResnetBlock2D, Transformer2D, ResnetBlock2D up blocks:   (concat skip, ResnetBlock2D [+
//   Transformer2D]) × (layers + 1), then nearest ×2 + conv out = conv_out(silu(conv_norm_out(x))) [B, out, h,
//   w]
// The architecture comes from unet/config.json with diffusers' meanings, including its reading of
// "attention_head_dim" as the number of heads when "num_attention_heads" is absent.
#pragma once

#include <filesystem>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/layers.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models {

struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types;
  std::vector<std::string> up_block_types;
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<int64_t> layers_per_block;              // per down block
  std::vector<int64_t> transformer_layers_per_block;  // per down block
  std::vector<int64_t> num_attention_heads;           // per down block
  int64_t cross_attention_dim = 768;
  int64_t norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool flip_sin_to_cos = true;
  double freq_shift = 0;
  bool use_linear_projection = false;
  bool upcast_attention = false;  // fp32 attention scores; the CPU path is fp32 throughout anyway
  int64_t downsample_padding = 1;
  double mid_block_scale_factor = 1.0;
  int64_t sample_size = 64;

  static UNetConfig from_json_file(const std::filesystem::path& path);
  // The same from parsed JSON; `what` names the source in errors (single-file checkpoints synthesise
  // configs).
  static UNetConfig from_json(const nlohmann::json& j, const std::string& what);
};

class UNet {
 public:
  // unet/ of a diffusers folder: config.json + diffusion_pytorch_model(.fp16).safetensors (or sharded).
  static UNet from_folder(const std::filesystem::path& dir);
  // From weights already opened, keyed by diffusers' names; `config_source` names the config in errors.
  static UNet from_weights(const UNetConfig& config, const io::WeightStore& weights,
                           const std::string& config_source);
  UNet(UNet&&) noexcept;
  UNet& operator=(UNet&&) noexcept;
  ~UNet();

  const UNetConfig& config() const { return config_; }
  int64_t parameter_count() const;

  // sample [B, in, h, w], context [B, S, cross_attention_dim] -> [B, out, h, w]. One timestep for the batch.
  Tensor forward(const Tensor& sample, double timestep, const Tensor& context) const;

  struct Blocks;  // the module tree (defined in unet.cpp)

 private:
  UNet();
  UNetConfig config_;
  std::unique_ptr<Blocks> blocks_;
};

// diffusers' get_timestep_embedding for one timestep: [dim] sinusoidal features.
std::vector<float> timestep_embedding(double timestep, int64_t dim, bool flip_sin_to_cos, double freq_shift);

}  // namespace sdrt::models
