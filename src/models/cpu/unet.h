// The CPU executor of the UNet (fp32, NCHW) — the reference every other backend is tested against. It loads
// the layers a UNetDescription names (models/unet.h, where the architecture is described) and runs its block
// plan.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "models/unet.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::cpu {

class UNet {
 public:
  // unet/ of a diffusers folder: config.json + diffusion_pytorch_model(.fp16).safetensors (or sharded).
  static UNet from_folder(const std::filesystem::path& dir);
  // From weights already opened, keyed by diffusers' names; `config_source` names the config in errors.
  static UNet from_weights(const UNetConfig& config, const io::WeightStore& weights,
                           const std::string& config_source);
  // The layers `description` names, from `weights`.
  static UNet load(const UNetDescription& description, const WeightSource& weights);
  UNet(UNet&&) noexcept;
  UNet& operator=(UNet&&) noexcept;
  ~UNet();

  const UNetConfig& config() const;
  int64_t parameter_count() const;

  // sample [B, in, h, w], context [B, S, cross_attention_dim] -> [B, out, h, w]. One timestep for the batch.
  // add_embeds [B, P]: SDXL's text_time input (models::text_time_add_embeds), required exactly when the
  // config has a text_time embedding.
  Tensor forward(const Tensor& sample, double timestep, const Tensor& context,
                 const Tensor& add_embeds = {}) const;

  struct Layers;  // defined in unet.cpp

 private:
  UNet();
  std::unique_ptr<Layers> layers_;
};

}  // namespace sdrt::models::cpu
