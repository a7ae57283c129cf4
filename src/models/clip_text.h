// CLIP text encoder (transformers' CLIPTextModel), described once: config, layers and checkpoint keys. The
// CPU executor (models/cpu/clip_text.h) and the CUDA executor (models/cuda/clip_text.h) build from it.
//
//   ids [S] -> token_embedding + position_embedding            -> x [S, D]
//   per layer: x += out_proj(causal_attention(layer_norm1(x)))  (H heads of D/H)
//              x += fc2(act(fc1(layer_norm2(x))))               (D -> I -> D)
//   last_hidden_state = final_layer_norm(x)
//   pooler_output = last_hidden_state[eos]                       [D]
//   text_embeds = text_projection(pooler_output)                 [P]   (CLIPTextModelWithProjection)
// The architecture comes from text_encoder/config.json; weights are keyed by the checkpoint's own names, with
// or without transformers 4's "text_model." prefix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/layer_specs.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models {

struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  Activation hidden_act = Activation::kQuickGelu;
  std::string hidden_act_name = "quick_gelu";
  float layer_norm_eps = 1e-5f;
  int64_t eos_token_id = 49407;
  // CLIPTextModelWithProjection (SDXL's second encoder): text_embeds = text_projection(pooled output),
  // projection_dim wide. Read from "architectures"; every CLIP text config carries a projection_dim.
  bool with_projection = false;
  int64_t projection_dim = 0;

  // Parses a CLIPTextModel config.json; throws naming `path` and the field at fault.
  static ClipTextConfig from_json_file(const std::filesystem::path& path);
  // The same from parsed JSON; `what` names the source in errors (single-file checkpoints synthesise
  // configs).
  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& what);
};

// The prefix of a CLIP text encoder's keys in `weights`: transformers 4 wrote "text_model.embeddings...",
// transformers 5 writes "embeddings...". Throws kModel naming the file when neither is there.
std::string clip_text_key_prefix(const io::WeightStore& weights);

// One encoder layer: pre-LayerNorm causal self-attention and MLP, each added to x [S, D].
struct ClipLayerSpec {
  LayerNormSpec layer_norm1;                    // [D]
  LinearSpec q_proj, k_proj, v_proj, out_proj;  // D -> D, with bias
  LayerNormSpec layer_norm2;                    // [D]
  LinearSpec fc1;                               // D -> I
  LinearSpec fc2;                               // I -> D
};

// Keys are transformers 5's (no "text_model." prefix): WeightSource::key_prefix says how a checkpoint stores
// them.
struct ClipTextDescription {
  ClipTextConfig config;
  WeightSpec token_embedding;         // [vocab, D]
  WeightSpec position_embedding;      // [max_positions, D]
  std::vector<ClipLayerSpec> layers;  // num_hidden_layers
  LayerNormSpec final_layer_norm;     // [D]
  // D -> projection_dim, no bias (CLIPTextModelWithProjection). Its key sits beside "text_model.", not
  // under it: load it with an empty key prefix.
  std::optional<LinearSpec> text_projection;
  std::vector<WeightSpec> weights() const;
};

// The description of the text encoder `config` defines.
ClipTextDescription describe_clip_text(const ClipTextConfig& config);

}  // namespace sdrt::models
