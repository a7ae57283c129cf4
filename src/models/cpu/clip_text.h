// The CPU executor of the CLIP text encoder (fp32): loads the layers a ClipTextDescription names
// (models/clip_text.h, where the architecture is described) and runs them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "models/clip_text.h"
#include "models/cpu/layers.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::cpu {

struct ClipTextOutput {
  Tensor last_hidden_state;           // [1, S, D], after final_layer_norm
  std::vector<Tensor> hidden_states;  // num_hidden_layers + 1 tensors [1, S, D]: embeddings, then each layer
  Tensor pooler_output;               // [1, D]: last_hidden_state at the (first) EOS token
  Tensor text_embeds;                 // [1, P]: text_projection(pooler_output), with a projection only
};

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
  // The layers `description` names, from `weights`.
  static ClipTextModel load(const ClipTextDescription& description, const WeightSource& weights,
                            bool embeddings_only = false);

  const ClipTextConfig& config() const { return config_; }

  // Runs one sequence of token ids (length <= max_position_embeddings).
  ClipTextOutput forward(std::span<const int32_t> ids, bool keep_hidden_states = false) const;

  // The input of the first layer: token_embedding[ids] + position_embedding[0..S) -> [1, S, D]. Throws
  // naming the token when an id is outside the vocabulary.
  Tensor embed(std::span<const int32_t> ids) const;
  // Number of parameters (for `sdrt info`).
  int64_t parameter_count() const;
  // The pooled output of a last_hidden_state [1, S, D] for `ids`: the row at the end-of-text token (the
  // CUDA engine runs the layers and pools on the host), and its text_projection when the model has one.
  Tensor pool(const Tensor& last_hidden_state, std::span<const int32_t> ids) const;
  std::optional<Tensor> project(const Tensor& pooled) const;

 private:
  struct Layer {
    LayerNorm layer_norm1, layer_norm2;
    Linear q_proj, k_proj, v_proj, out_proj, fc1, fc2;
  };
  ClipTextConfig config_;
  Tensor token_embedding_;     // [vocab, D]
  Tensor position_embedding_;  // [max_positions, D]
  std::vector<Layer> layers_;
  LayerNorm final_layer_norm_;
  std::optional<Linear> text_projection_;
};

}  // namespace sdrt::models::cpu
