// The CUDA executor of the AutoencoderKL decoder (fp16 weights, NHWC fp16 activations): built from the
// decoder half of a VaeDescription (src/models/vae.h, where the architecture is described) and running its
// block plan.
#pragma once

#include <memory>

#include "models/cuda/layers.h"
#include "models/vae.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::cuda {

class VaeDecoder {
 public:
  // The decoder `description` holds, streamed from `weights` to the device.
  static VaeDecoder load(Context& ctx, const VaeDescription& description, const WeightSource& weights);
  VaeDecoder(VaeDecoder&&) noexcept;
  VaeDecoder& operator=(VaeDecoder&&) noexcept;
  ~VaeDecoder();
  const VaeConfig& config() const;

  // z [B, h, w, latent] (already divided by scaling_factor) -> image [B, h·f, w·f, out_channels]
  Act decode(Context& ctx, ActivationPool& pool, const Act& z) const;

  struct Layers;

 private:
  VaeDecoder();
  std::unique_ptr<Layers> layers_;
};

}  // namespace sdrt::models::cuda
