// An Engine runs one model's networks on one device: the text encoder, the denoising loop (UNet, guidance and
// the scheduler's step, with the latents kept on the device) and the VAE decoder. The pipeline
// (src/pipeline/) drives every engine the same way; create_engine() builds the CPU or the CUDA one from a
// ModelDescription.
//
//   auto engine = create_engine(Device::kCuda, describe_model(loaders::resolve_model(path, options)));
//   Tensor context = ...;                              // [1 or 2, 77, D] from encode_text
//   engine->set_context(context);
//   engine->begin_sampling(latents, scheduler);
//   for (i ...) if (engine->sampling_step(scheduler, i, cfg, rng) > 0) /* NaN / Inf */;
//   Tensor image = engine->decode(engine->sampling_latents() / scaling_factor);
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engines/model_description.h"
#include "schedulers/scheduler.h"
#include "schedulers/torch_rng.h"
#include "sdrt/tensor.h"

namespace sdrt::engines {

class Diagnostics;

struct TextEncoding {
  Tensor last_hidden_state;           // [1, S, D]
  Tensor penultimate_hidden_state;    // [1, S, D]: hidden_states[-2], the input of the last layer (SDXL)
  std::vector<Tensor> hidden_states;  // embeddings, then every layer's output [1, S, D] (when asked)
  Tensor pooler_output;               // [1, D] at the end-of-text token
  Tensor text_embeds;                 // [1, P]: text_projection(pooler_output), with a projection only
};

struct TextRequest {
  size_t encoder = 0;              // index into ModelDescription::text_encoders
  bool all_hidden_states = false;  // fill TextEncoding::hidden_states (the CPU engine only)
};

class Engine {
 public:
  virtual ~Engine() = default;

  // "CPU (2 threads)", "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
  virtual std::string device_name() const = 0;

  // ---- text encoder
  // Token ids [S] -> the first text encoder's last_hidden_state [1, S, D] float32. Throws naming the token
  // when an id is outside the vocabulary.
  virtual Tensor encode_text(std::span<const int32_t> ids) = 0;
  // One text encoder's outputs: last and penultimate hidden states, pooled output and text_embeds (all
  // float32); every hidden state when asked (kUnsupported where the engine does not keep them).
  virtual TextEncoding encode_text_full(std::span<const int32_t> ids, const TextRequest& request = {}) = 0;

  // ---- the denoising loop
  // The prompt embeddings for the following steps: context [B, S, D] (B = 2: unconditional first), and for
  // SDXL the UNet's add_embeds [B, P] (models::text_time_add_embeds; empty for SD 1.x / 2.x).
  virtual void set_context(const Tensor& context, const Tensor& add_embeds = {}) = 0;
  // The initial latents [1, C, h, w] of a loop of `scheduler` (after its set_timesteps).
  virtual void begin_sampling(const Tensor& latents, const schedulers::Scheduler& scheduler) = 0;
  // Step `step_index`: the UNet on the scaled latents with the context, guidance with `cfg_scale` when the
  // context holds [uncond; cond], then the scheduler's step (noise from `rng` when it asks, so that it stays
  // torch's). Returns how many values of the new latents are NaN or infinite.
  virtual int64_t sampling_step(schedulers::Scheduler& scheduler, size_t step_index, float cfg_scale,
                                schedulers::TorchGenerator& rng) = 0;
  // The current latents [1, C, h, w] float32.
  virtual Tensor sampling_latents() = 0;

  // ---- VAE
  // Latents already divided by scaling_factor [1, L, h, w] -> image [1, 3, H, W] float32 in about [-1, 1].
  virtual Tensor decode(const Tensor& z) = 0;

  // Device memory free for activations (bytes): the CUDA engine's free GPU memory; the CPU engine's is
  // infinite (the pipeline checks host memory itself).
  virtual double free_memory_bytes() const { return INFINITY; }

  // Benchmark and profiling hooks, or null where the engine has none.
  virtual Diagnostics* diagnostics() { return nullptr; }
};

// The CPU engine (fp32, the reference) or the CUDA one (fp16; throws kUnsupported when sdrt was built without
// CUDA or no GPU is usable). A description without a UNet gives a text-encoder-only engine.
std::unique_ptr<Engine> create_engine(Device device, const ModelDescription& model);
std::unique_ptr<Engine> create_cpu_engine(const ModelDescription& model);
std::unique_ptr<Engine> create_cuda_engine(const ModelDescription& model);

}  // namespace sdrt::engines
