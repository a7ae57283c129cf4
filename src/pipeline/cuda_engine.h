// The CUDA side of a Model: UNet and VAE decoder in fp16 on the GPU, the UNet step replayed as a CUDA graph.
// This header has no CUDA types, so the pipeline compiles the same with or without the CUDA backend; without
// it, CudaEngine::create throws kUnsupported.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "schedulers/scheduler.h"
#include "sdrt/tensor.h"

namespace sdrt::io {
class WeightStore;
}

namespace sdrt {

class CudaEngine {
 public:
  struct Sources {
    const models::UNetConfig& unet_config;
    const io::WeightStore& unet_weights;
    std::string unet_label;
    const models::VaeConfig& vae_config;
    const io::WeightStore& vae_weights;
    std::string vae_label;
    // Optional: the text encoder's layers on the GPU too (the host still does the embedding lookup).
    const models::ClipTextConfig* text_config = nullptr;
    const io::WeightStore* text_weights = nullptr;
    std::string text_prefix, text_label;
  };
  // Uploads the weights (fp16) to the first GPU.
  static std::unique_ptr<CudaEngine> create(const Sources& sources);
  virtual ~CudaEngine() = default;

  // "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
  virtual std::string device_name() const = 0;
  // The text encoder's layers on input embeddings [1, S, D] -> last_hidden_state [1, S, D] fp32; throws
  // kInternal when the engine was created without a text encoder.
  virtual Tensor encode_text(const Tensor& embeddings) = 0;
  // Sets the prompt embeddings for the following steps: context [B, S, D] (B = 2: unconditional first).
  virtual void set_context(const Tensor& context) = 0;

  // ---- the denoising loop with the latents on the GPU ----
  // The latents, the guided noise prediction and the scheduler's state buffers stay on the device; each step
  // sends the timestep and the scheduler's step plan, plus for ancestral schedulers the noise the host
  // generator draws (so that it stays torch's), and reads back one count.
  //
  // Uploads the initial latents [1, C, h, w] for a loop of `scheduler` (after its set_timesteps).
  virtual void begin_sampling(const Tensor& latents, const schedulers::Scheduler& scheduler) = 0;
  // Step `step_index` of that loop: the UNet on latents / scheduler.model_input_divisor(step_index) with the
  // context of set_context, guidance with `cfg_scale` when the context holds [uncond; cond], then
  // scheduler.plan_step(step_index) run on the device (noise from `rng` when the plan asks). Returns how many
  // values of the new latents are NaN or infinite.
  virtual int64_t sampling_step(schedulers::Scheduler& scheduler, size_t step_index, float cfg_scale,
                                schedulers::TorchGenerator& rng) = 0;
  // The current latents [1, C, h, w] fp32 (a download).
  virtual Tensor sampling_latents() = 0;

  // The raw UNet on a batch: sample [B, C, h, w] fp32, context [B, S, D] -> [B, C, h, w] fp32 (parity tests).
  virtual Tensor unet_forward(const Tensor& sample, double timestep, const Tensor& context) = 0;
  // Latents already divided by scaling_factor [1, L, h, w] -> image [1, 3, H, W] fp32 in [-1, 1].
  virtual Tensor decode(const Tensor& z) = 0;
  // Median milliseconds of one UNet step (graph replay) over `iterations`, after warm-up, on the shape of the
  // last set_context/sampling_step call; and of one VAE decode of latents [1, L, h, w].
  virtual double time_unet_step_ms(int64_t batch, int64_t height, int64_t width, int iterations) = 0;
  virtual double time_vae_decode_ms(int64_t height, int64_t width, int iterations) = 0;
  // GPU milliseconds per op family ("conv", "gemm", "attention", "group_norm", ...) of one eager UNet step
  // (events around every op; "total" is the whole eager step) — where the time goes.
  virtual std::map<std::string, double> profile_unet_step(int64_t batch, int64_t height, int64_t width) = 0;
  // Seconds each part of create() took: "context" (CUDA, cuBLASLt, cuDNN handles), "unet", "vae",
  // "text_encoder" (reading, converting and uploading weights).
  virtual std::map<std::string, double> load_breakdown() const = 0;
  // Bytes of device memory in use by this process (weights + activations + library workspaces).
  virtual double device_memory_gib() const = 0;
};

}  // namespace sdrt
