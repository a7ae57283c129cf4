// What benchmarks, parity checks and profilers ask of an engine, kept off the product path
// (Engine::diagnostics() returns this for the engines that have it: the CUDA one).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "sdrt/tensor.h"

namespace sdrt::engines {

class Diagnostics {
 public:
  virtual ~Diagnostics() = default;

  // The raw UNet on a batch: sample [B, C, h, w] fp32, context [B, S, D] (and SDXL's add_embeds [B, P]) ->
  // [B, C, h, w] fp32 (parity).
  virtual Tensor unet_forward(const Tensor& sample, double timestep, const Tensor& context,
                              const Tensor& add_embeds = {}) = 0;
  // The text encoder's layers on input embeddings [B, S, D] -> last_hidden_state [B, S, D] fp32.
  virtual Tensor encode_embeddings(const Tensor& embeddings) = 0;
  // Median milliseconds of one UNet step (graph replay) over `iterations`, after warm-up, with the context of
  // the last set_context; and of one VAE decode of latents [1, L, h, w].
  virtual double time_unet_step_ms(int64_t batch, int64_t height, int64_t width, int iterations) = 0;
  virtual double time_vae_decode_ms(int64_t height, int64_t width, int iterations) = 0;
  // Device milliseconds per op family ("conv", "gemm", "attention", "group_norm", ...) of one eager UNet step
  // ("total" is the whole eager step) — where the time goes.
  virtual std::map<std::string, double> profile_unet_step(int64_t batch, int64_t height, int64_t width) = 0;
  // Seconds each part of loading took ("context", "unet", "vae", "text_encoder").
  virtual std::map<std::string, double> load_breakdown() const = 0;
  // Bytes of device memory in use by this process, in GiB.
  virtual double device_memory_gib() const = 0;
};

}  // namespace sdrt::engines
