// AutoencoderKL decoder on CUDA (fp16 weights, NHWC fp16 activations), mirroring the CPU decoder in
// src/models/vae.h: post_quant_conv -> conv_in -> mid block (resnet, single-head attention, resnet) -> up
// blocks (resnets, nearest ×2 + conv but the last) -> GroupNorm + SiLU -> conv_out.
#pragma once

#include <memory>

#include "models/cuda/layers.h"
#include "models/vae.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::gpu {

class CudaVaeDecoder {
 public:
  static CudaVaeDecoder load(Context& ctx, const VaeConfig& config, const io::WeightStore& weights,
                             const std::string& config_source);
  CudaVaeDecoder(CudaVaeDecoder&&) noexcept;
  CudaVaeDecoder& operator=(CudaVaeDecoder&&) noexcept;
  ~CudaVaeDecoder();
  const VaeConfig& config() const { return config_; }

  // z [B, h, w, latent] (already divided by scaling_factor) -> image [B, h·f, w·f, out_channels]
  Act decode(Context& ctx, ActivationPool& pool, const Act& z) const;

  struct Blocks;

 private:
  CudaVaeDecoder();
  VaeConfig config_;
  std::unique_ptr<Blocks> blocks_;
};

}  // namespace sdrt::models::gpu
