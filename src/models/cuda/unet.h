// UNet2DConditionModel on CUDA: fp16 weights and NHWC fp16 activations, the same module tree as the CPU
// reference in src/models/unet.h (read that file for the architecture). Differences that are only about
// speed: q/k/v projections are one stacked product, the time-embedding add rides on GroupNorm (pre-bias),
// every bias and skip connection rides on the convolution / GEMM epilogue, and a whole step can be captured
// into a CUDA graph (UNetGraph) and replayed.
#pragma once

#include <memory>

#include "models/cuda/layers.h"
#include "models/unet.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::gpu {

class CudaUNet {
 public:
  static CudaUNet load(Context& ctx, const UNetConfig& config, const io::WeightStore& weights,
                       const std::string& config_source);
  CudaUNet(CudaUNet&&) noexcept;
  CudaUNet& operator=(CudaUNet&&) noexcept;
  ~CudaUNet();

  const UNetConfig& config() const { return config_; }

  // The context as the cross-attentions read it: context [B, S, cross_dim] -> context_kv [B, S,
  // context_kv_width()], every cross-attention's k and v projection side by side (one product per prompt).
  int64_t context_kv_width() const;
  void project_context(Context& ctx, const Act& context, Act& context_kv) const;

  // sample [B, h, w, in] NHWC fp16, *timestep (device fp32, one for the batch), context_kv from
  // project_context -> [B, h, w, out]. Everything runs on ctx.stream() with no host synchronisation.
  Act forward(Context& ctx, ActivationPool& pool, const Act& sample, const float* timestep,
              const Act& context_kv) const;

  struct Blocks;

 private:
  CudaUNet();
  UNetConfig config_;
  std::unique_ptr<Blocks> blocks_;
};

// One UNet step as a CUDA graph over fixed input/output buffers: the first run() for a shape runs eagerly
// (planning every cuDNN/cuBLASLt shape and filling the activation pool), the second captures, and every
// later run() replays. Inputs are written into sample()/context()/timestep() before run().
class UNetGraph {
 public:
  UNetGraph(const CudaUNet& unet, int64_t batch, int64_t height, int64_t width, int64_t context_tokens,
            bool use_graph = true);
  UNetGraph(const UNetGraph&) = delete;
  UNetGraph& operator=(const UNetGraph&) = delete;
  ~UNetGraph();

  Act& sample() { return sample_; }
  // Write the prompt embeddings here, then call context_changed().
  Act& context() { return context_; }
  void context_changed() { context_changed_ = true; }
  float* timestep() { return timestep_.as<float>(); }
  const Act& output() const { return output_; }
  void run(Context& ctx);

 private:
  const CudaUNet& unet_;
  ActivationPool io_pool_, pool_;
  Act sample_, context_, context_kv_, output_;
  bool context_changed_ = true;
  DeviceBuffer timestep_;
  bool use_graph_;
  int runs_ = 0;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace sdrt::models::gpu
