// The CPU executor of AutoencoderKL (fp32, NCHW): loads the layers a VaeDescription names (models/vae.h,
// where the architecture is described) and runs the encoder's and decoder's block plans one sample at a time.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "models/vae.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt::models::cpu {

class AutoencoderKL {
 public:
  // Loads vae/ of a diffusers folder: config.json + diffusion_pytorch_model(.fp16).safetensors.
  static AutoencoderKL from_folder(const std::filesystem::path& dir, VaeParts parts = {});
  static AutoencoderKL from_weights(const VaeConfig& config, const io::WeightStore& weights,
                                    const std::string& config_source, VaeParts parts = {});
  // The halves `description` holds, from `weights`.
  static AutoencoderKL load(const VaeDescription& description, const WeightSource& weights);
  AutoencoderKL(AutoencoderKL&&) noexcept;
  AutoencoderKL& operator=(AutoencoderKL&&) noexcept;
  ~AutoencoderKL();

  const VaeConfig& config() const;
  bool has_encoder() const;
  bool has_decoder() const;

  // latents [B, L, h, w] -> image [B, out_channels, h·f, w·f], before the pipeline's /2 + 0.5.
  Tensor decode(const Tensor& latents) const;
  // image [B, in_channels, H, W] in [-1, 1] -> moments [B, 2L, H/f, W/f] (each halving rounds down): mean
  // channels, then logvar channels.
  Tensor encode(const Tensor& image) const;

  int64_t parameter_count() const;

  struct Layers;  // defined in vae.cpp

 private:
  AutoencoderKL();
  std::unique_ptr<Layers> layers_;
};

}  // namespace sdrt::models::cpu
