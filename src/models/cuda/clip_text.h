// CLIP text encoder layers on CUDA (fp16), mirroring src/models/clip_text.h: the host computes the input
// embeddings (a table lookup), the GPU runs every pre-LayerNorm block (causal self-attention, MLP) and the
// final LayerNorm.
#pragma once

#include <memory>

#include "models/clip_text.h"
#include "models/cuda/layers.h"

namespace sdrt::models::gpu {

class CudaClipText {
 public:
  // `prefix` is prepended to every key ("" or transformers 4's "text_model.").
  static CudaClipText load(Context& ctx, const ClipTextConfig& config, const io::WeightStore& weights,
                           const std::string& prefix, const std::string& config_source);
  CudaClipText(CudaClipText&&) noexcept;
  CudaClipText& operator=(CudaClipText&&) noexcept;
  ~CudaClipText();

  // x [B, S, D] input embeddings -> last_hidden_state [B, S, D]
  Act forward(Context& ctx, ActivationPool& pool, const Act& x) const;

  struct Layers;

 private:
  CudaClipText();
  ClipTextConfig config_;
  std::unique_ptr<Layers> layers_;
};

}  // namespace sdrt::models::gpu
