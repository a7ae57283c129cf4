// UNet2DConditionModel (diffusers), described once: the config, the block plan and the checkpoint key of
// every weight. The CPU executor (models/cpu/unet.h, fp32 NCHW) and the CUDA executor (models/cuda/unet.h,
// fp16 NHWC) both build their layers from a UNetDescription and run its block plan; neither restates the
// structure.
//
//   sample [B, in, h, w], timestep t, context [B, S, cross_dim]
//   emb = time_embedding(timestep_embedding(t))                          [B, 4·C0]
//   x = conv_in(sample)                                                  [B, C0, h, w]        (kept as a
//   skip) down blocks: (ResnetBlock2D [+ Transformer2D]) × layers, then a stride-2 conv; every output kept as
//   a skip mid block:   ResnetBlock2D, Transformer2D, ResnetBlock2D up blocks:   (concat the last skip,
//   ResnetBlock2D [+ Transformer2D]) × (layers + 1), then nearest up-
//                sampling to the next skip's size + conv
//   out = conv_out(silu(conv_norm_out(x)))                               [B, out, h, w]
// The architecture comes from unet/config.json with diffusers' meanings, including its reading of
// "attention_head_dim" as the number of heads when "num_attention_heads" is absent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/layer_specs.h"
#include "sdrt/tensor.h"

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
  // SDXL: addition_embed_type "text_time" — emb += add_embedding(text_embeds ‖ sinusoidal(time ids)), each
  // time id addition_time_embed_dim wide; projection_class_embeddings_input_dim is add_embedding's input.
  bool text_time_embedding = false;
  int64_t addition_time_embed_dim = 0;
  int64_t projection_class_embeddings_input_dim = 0;

  static UNetConfig from_json_file(const std::filesystem::path& path);
  // The same from parsed JSON; `what` names the source in errors (single-file checkpoints synthesise
  // configs).
  static UNetConfig from_json(const nlohmann::json& j, const std::string& what);
};

// diffusers' Attention inside BasicTransformerBlock: no q/k/v bias, to_out.0 with bias.
struct AttentionSpec {
  LinearSpec to_q;        // dim -> dim
  LinearSpec to_k, to_v;  // context_dim -> dim
  LinearSpec to_out;      // dim -> dim
  int64_t dim = 0, heads = 1, context_dim = 0;
  bool cross = false;  // k/v from the context (attn2) rather than from x (attn1)
  int64_t head_dim() const { return dim / heads; }
};

// BasicTransformerBlock: pre-LayerNorm self-attention, cross-attention and GEGLU feed-forward, each added to
// the residual stream x [B, N, dim].
struct TransformerBlockSpec {
  LayerNormSpec norm1, norm2, norm3;
  AttentionSpec attn1, attn2;
  LinearSpec ff_proj;  // GEGLU: dim -> 2·inner (value half, then gate half)
  LinearSpec ff_out;   // inner -> dim
};

// Transformer2DModel (continuous input): GroupNorm, proj_in, transformer blocks, proj_out, + x.
// proj_in / proj_out are 1×1 convolutions (SD 1.x) or linears (use_linear_projection, SD 2.x): on the token
// layout both are the same matrix product.
struct Transformer2DSpec {
  GroupNormSpec norm;  // eps 1e-6
  LinearSpec proj_in;  // C -> C
  std::vector<TransformerBlockSpec> blocks;
  LinearSpec proj_out;  // C -> C
};

// One step of the block plan, between conv_in and conv_norm_out. The plan keeps a stack of skips.
struct UNetStep {
  enum class Kind {
    kResnet,       // x = resnets[index](x, emb)
    kTransformer,  // x = transformers[index](x, context)
    kDownsample,   // x = downsamplers[index](x): a stride-2 conv
    kUpsample,     // x = upsamplers[index](nearest(x, size of the top skip))
    kPushSkip,     // skips.push(x)
    kConcatSkip,   // x = concat_channels(x, skips.pop())
  };
  Kind kind;
  size_t index = 0;
};

struct UNetDescription {
  UNetConfig config;
  int64_t time_embed_dim = 0;  // 4·C0: the width of emb
  LinearSpec time_linear_1;    // C0 -> 4·C0
  LinearSpec time_linear_2;    // 4·C0 -> 4·C0
  // SDXL's added embedding (addition_embed_type "text_time"), absent otherwise:
  //   add_embeds [B, P] = text_embeds [B, P - n·T] ‖ timestep_embedding(time_ids[b][k], T) for k < n
  //   emb += linear_2(silu(linear_1(add_embeds)))                        P -> 4·C0 -> 4·C0
  std::optional<LinearSpec> add_linear_1, add_linear_2;
  Conv2dSpec conv_in;  // in -> C0
  std::vector<ResnetSpec> resnets;
  std::vector<Transformer2DSpec> transformers;
  std::vector<Conv2dSpec> downsamplers, upsamplers;
  std::vector<UNetStep> steps;  // the block plan
  GroupNormSpec conv_norm_out;  // [C0], followed by SiLU
  Conv2dSpec conv_out;          // C0 -> out

  // Every tensor the checkpoint must hold, in plan order.
  std::vector<WeightSpec> weights() const;
};

// The description of the UNet `config` defines (keys are diffusers' names).
UNetDescription describe_unet(const UNetConfig& config);

// SDXL's add_embeds [B, P] from the pooled text embeddings [B, P - n·T] and the time ids [B, n] (original
// size, crop, target size or aesthetic score): diffusers' concat of text_embeds with add_time_proj(time_ids).
// Throws kInvalidArgument when the widths do not add up to the UNet's projection_class_embeddings_input_dim.
Tensor text_time_add_embeds(const UNetConfig& config, const Tensor& text_embeds, const Tensor& time_ids);

// diffusers' get_timestep_embedding for one timestep: [dim] sinusoidal features (float32, diffusers' order of
// operations; the CUDA kernel follows the same).
std::vector<float> timestep_embedding(double timestep, int64_t dim, bool flip_sin_to_cos, double freq_shift);

}  // namespace sdrt::models
