// CLIP text encoder (transformers' CLIPTextModel), CPU fp32.
//
//   ids [S] -> token_embedding + position_embedding            -> x [S, D]
//   per layer: x += out_proj(causal_attention(layer_norm1(x)))  (H heads of D/H)
//              x += fc2(act(fc1(layer_norm2(x))))               (D -> I -> D)
//   last_hidden_state = final_layer_norm(x)
// The architecture comes from text_encoder/config.json; weights are keyed by the checkpoint's own names, with
// or without transformers 4's "text_model." prefix.
#pragma once

#include <cstdint>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
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
  cpu::Activation hidden_act = cpu::Activation::kQuickGelu;
  std::string hidden_act_name = "quick_gelu";
  float layer_norm_eps = 1e-5f;
  int64_t eos_token_id = 49407;

  // Parses a CLIPTextModel config.json; throws naming `path` and the field at fault.
  static ClipTextConfig from_json_file(const std::filesystem::path& path);
  // The same from parsed JSON; `what` names the source in errors (single-file checkpoints synthesise
  // configs).
  static ClipTextConfig from_json(const nlohmann::json& j, const std::string& what);
};

struct ClipTextOutput {
  Tensor last_hidden_state;           // [1, S, D], after final_layer_norm
  std::vector<Tensor> hidden_states;  // num_hidden_layers + 1 tensors [1, S, D]: embeddings, then each layer
  Tensor pooler_output;               // [1, D]: last_hidden_state at the (first) EOS token
};

// The prefix of a CLIP text encoder's keys in `weights`: transformers 4 wrote "text_model.embeddings...",
// transformers 5 writes "embeddings...". Throws kModel naming the file when neither is there.
std::string clip_text_key_prefix(const io::WeightStore& weights);

class ClipTextModel {
 public:
  // Loads text_encoder/ of a diffusers folder: config.json + (sharded / fp16-variant) safetensors.
  // `embeddings_only` loads just the embedding tables (embed() works, forward() throws): enough when another
  // backend runs the layers.
  static ClipTextModel from_folder(const std::filesystem::path& dir, bool embeddings_only = false);
  // Builds from weights already opened; `prefix` is prepended to every key ("", "text_model.", ...).
  static ClipTextModel from_weights(const ClipTextConfig& config, const io::WeightStore& weights,
                                    const std::string& prefix, const std::string& config_source,
                                    bool embeddings_only = false);

  const ClipTextConfig& config() const { return config_; }

  // Runs one sequence of token ids (length <= max_position_embeddings).
  ClipTextOutput forward(std::span<const int32_t> ids, bool keep_hidden_states = false) const;

  // The input of the first layer: token_embedding[ids] + position_embedding[0..S) -> [1, S, D]. Throws
  // naming the token when an id is outside the vocabulary.
  Tensor embed(std::span<const int32_t> ids) const;
  // Number of parameters (for `sdrt info`).
  int64_t parameter_count() const;

 private:
  struct Layer {
    Tensor ln1_w, ln1_b, q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
  };
  ClipTextConfig config_;
  Tensor token_embedding_;     // [vocab, D]
  Tensor position_embedding_;  // [max_positions, D]
  std::vector<Layer> layers_;
  Tensor final_ln_w_, final_ln_b_;
};

}  // namespace sdrt::models
