// The CUDA executor of the UNet: fp16 weights and NHWC fp16 activations, built from the UNetDescription in
// src/models/unet.h (read that file for the architecture) and running its block plan. Differences from the
// CPU executor that are only about speed: self-attention q/k/v is one stacked product, every
// cross-attention's k/v and every ResNet's time projection are one product each (LinearStack below), the
// time-embedding add rides on GroupNorm (pre-bias), every bias and skip connection rides on the convolution /
// GEMM epilogue, and a whole step can be captured into a CUDA graph (UNetGraph) and replayed.
#pragma once

#include <memory>

#include "models/cuda/layers.h"
#include "models/unet.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::cuda {

class UNet {
 public:
  // The layers `description` names, streamed from `weights` to the device.
  static UNet load(Context& ctx, const UNetDescription& description, const WeightSource& weights);
  UNet(UNet&&) noexcept;
  UNet& operator=(UNet&&) noexcept;
  ~UNet();

  const UNetConfig& config() const;

  // The context as the cross-attentions read it: context [B, S, cross_dim] -> context_kv [B, S,
  // context_kv_width()], every cross-attention's k and v projection side by side (one product per prompt).
  int64_t context_kv_width() const;
  void project_context(Context& ctx, const Act& context, Act& context_kv) const;

  // sample [B, h, w, in] NHWC fp16, *timestep (device fp32, one for the batch), context_kv from
  // project_context, add_embeds [B, 1, 1, P] for SDXL's text_time embedding (else null) -> [B, h, w, out].
  // Everything runs on ctx.stream() with no host synchronisation.
  Act forward(Context& ctx, ActivationPool& pool, const Act& sample, const float* timestep,
              const Act& context_kv, const Act* add_embeds = nullptr) const;

  struct Layers;

 private:
  UNet();
  std::unique_ptr<Layers> layers_;
};

// One UNet step as a CUDA graph over fixed input/output buffers: the first run() for a shape runs eagerly
// (planning every cuDNN/cuBLASLt shape and filling the activation pool), the second captures, and every
// later run() replays. Inputs are written into sample()/context()/timestep() before run().
class UNetGraph {
 public:
  UNetGraph(const UNet& unet, int64_t batch, int64_t height, int64_t width, int64_t context_tokens,
            bool use_graph = true);
  UNetGraph(const UNetGraph&) = delete;
  UNetGraph& operator=(const UNetGraph&) = delete;
  ~UNetGraph();

  Act& sample() { return sample_; }
  // Write the prompt embeddings here, then call context_changed().
  Act& context() { return context_; }
  void context_changed() { context_changed_ = true; }
  float* timestep() { return timestep_.as<float>(); }
  // SDXL: the text_time input [B, 1, 1, P] (fp16), written with the context; empty for other UNets.
  Act& add_embeds() { return add_embeds_; }
  const Act& output() const { return output_; }
  void run(Context& ctx);

 private:
  const UNet& unet_;
  ActivationPool io_pool_, pool_;
  Act sample_, context_, context_kv_, output_, add_embeds_;
  bool context_changed_ = true;
  DeviceBuffer timestep_;
  bool use_graph_;
  int runs_ = 0;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace sdrt::models::cuda
