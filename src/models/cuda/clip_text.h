// The CUDA executor of the CLIP text encoder (fp16), built from the ClipTextDescription in
// src/models/clip_text.h: the host computes the input embeddings (a table lookup), the GPU runs every
// pre-LayerNorm block (causal self-attention, MLP) and the final LayerNorm.
#pragma once

#include <memory>

#include "models/clip_text.h"
#include "models/cuda/layers.h"

namespace sdrt::models::cuda {

class ClipTextModel {
 public:
  // The layers `description` names (not the embedding tables: the host looks them up), streamed from
  // `weights`.
  static ClipTextModel load(Context& ctx, const ClipTextDescription& description,
                            const WeightSource& weights);
  ClipTextModel(ClipTextModel&&) noexcept;
  ClipTextModel& operator=(ClipTextModel&&) noexcept;
  ~ClipTextModel();

  // x [B, S, D] input embeddings -> last_hidden_state [B, S, D]; with `penultimate`, also hidden_states[-2]
  // (the last layer's input, before any LayerNorm: SDXL's context).
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, Act* penultimate = nullptr) const;

  struct Layers;

 private:
  ClipTextModel();
  ClipTextConfig config_;
  std::unique_ptr<Layers> layers_;
};

}  // namespace sdrt::models::cuda
