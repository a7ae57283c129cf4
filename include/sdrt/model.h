// sdrt::Model — a Stable Diffusion checkpoint loaded for inference, the stage calls on it, and one-call
// txt2img.
//
//   auto model = sdrt::Model::load("models/sd15");               // diffusers folder
//   sdrt::GenerateOptions o;  o.prompt = "a red circle";  o.seed = 42;
//   sdrt::Image image = model.txt2img(o);                         // 8-bit RGB, o.width × o.height
//
// or stage by stage (what txt2img does):
//   Tensor context = model.encode_prompts(o);                     // [1 or 2, 77, D]  (unconditional first)
//   Sampling s = model.prepare_latents(o);                         // scheduler + generator + initial latents
//   Tensor latents = model.denoise(s, context, o.cfg_scale, callback);  // the UNet loop
//   Image image = model.decode_latents(latents);
//
// Errors are thrown as sdrt::Error with a message naming the file, tensor or field at fault.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt {

struct LoadOptions {
  bool text_encoder_only = false;  // tokenizer + text encoder (for tokenize / encode)
  // "epsilon" | "v_prediction": overrides the scheduler's (single files cannot tell SD 2.x 768-v models
  // apart).
  std::optional<std::string> prediction_type;
  // A VAE file (original or diffusers layout) used instead of the model's own (on either device).
  std::filesystem::path vae;
  Device device = Device::kHost;  // kCuda: text encoder, UNet and VAE decoder in fp16 on the GPU
};

// What `sdrt info` shows: the components found and their key configuration values.
struct ComponentInfo {
  std::string name;                                          // "text_encoder"
  std::string class_name;                                    // "CLIPTextModel"
  std::vector<std::pair<std::string, std::string>> details;  // ("hidden_size", "768"), ...
};
struct ModelInfo {
  std::string path;
  std::string pipeline_class;
  std::vector<ComponentInfo> components;
};

struct PromptEncoding {
  Tensor last_hidden_state;  // [1, 77, hidden] — what the UNet cross-attends to
  std::vector<Tensor>
      hidden_states;     // every layer's output [1, 77, hidden] (embeddings first), for clip skip
  Tensor pooler_output;  // [1, hidden] at the end-of-text token
};

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int width = 0, height = 0;  // 0: the model's default (unet sample_size × VAE factor, 512 for SD 1.5)
  int steps = 50;
  double cfg_scale = 7.5;  // > 1 runs classifier-free guidance (unconditional + conditional in one batch)
  std::string scheduler;   // "", "pndm", "ddim", "euler", "euler_a", "dpmpp_2m"; "" = the model's own
  bool karras = false;     // Karras sigmas (euler, euler_a, dpmpp_2m)
  uint64_t seed = 0;
  std::string rng = "cpu";           // "cpu": torch.Generator("cpu").manual_seed(seed) draws
  std::optional<Tensor> init_noise;  // [1, 4, height/8, width/8] float32, instead of the seeded draw
  // SDXL's size conditioning (diffusers' original_size, crops_coords_top_left, target_size), in pixels;
  // 0 = the default: the generated size for original and target, (0, 0) for the crop.
  int original_width = 0, original_height = 0;
  int crop_left = 0, crop_top = 0;
  int target_width = 0, target_height = 0;
  // The SDXL refiner's aesthetic-score conditioning (diffusers' defaults).
  double aesthetic_score = 6.0, negative_aesthetic_score = 2.5;
};

// What the UNet is conditioned on; rows are (negative prompt, prompt) with guidance, else (prompt).
struct Conditioning {
  Tensor context;      // [B, S, D]: the text encoders' hidden states (SDXL: both encoders side by side)
  Tensor text_embeds;  // SDXL: [B, P] pooled, projected text embeddings; empty for SD 1.x / 2.x
  Tensor time_ids;     // SDXL: [B, 6] (original h, w, crop top, left, target h, w) or the refiner's [B, 5]
};

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height · width · 3, row-major
};

struct StageTimes {  // seconds
  double encode_prompt = 0, prepare_latents = 0, unet_infer = 0, decode_latents = 0;
};

// The checks that need no model (sizes multiples of 8, steps >= 1, known scheduler and rng names), so that a
// caller can fail before loading anything; Model::resolve repeats them against the model.
void validate_options(const GenerateOptions& options);

// Throws kInvalidArgument when a prompt is not well-formed UTF-8, naming `what` ("prompt", "negative
// prompt") and the offset of the first bad byte. validate_options checks both prompts with it, and
// Model::tokenize (so every path from text to the encoder: txt2img, tokenize, encode) calls it again.
void validate_prompt(std::string_view text, std::string_view what = "prompt");

// Called after every denoising step with (steps done, total steps); return false to cancel (the call then
// throws sdrt::Error of kind kCancelled).
using StepCallback = std::function<bool(int, int)>;

// The state of one sampling run: scheduler with its timesteps, the random generator, the current latents.
class Sampling {
 public:
  Sampling(Sampling&&) noexcept;
  Sampling& operator=(Sampling&&) noexcept;
  ~Sampling();
  const Tensor& latents() const;
  int steps() const;
  const std::vector<double>& timesteps() const;

 private:
  friend class Model;
  struct State;
  explicit Sampling(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class Model {
 public:
  // Loads a diffusers folder: tokenizer, text encoder, and (unless text_encoder_only) unet, vae, scheduler;
  // or a single-file SD 1.x / 2.x checkpoint in the original layout (.safetensors / .ckpt;
  // loaders/single_file.h).
  static Model load(const std::filesystem::path& path, const LoadOptions& options = {});
  // Describes a model without loading its weights (reads configs and safetensors headers only).
  static ModelInfo inspect(const std::filesystem::path& path);

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  const std::string& name() const;  // the folder's name, for metadata

  // ---- text
  // The text encoder's input: BOS, ids, EOS, truncated and padded to 77 with the model's pad token.
  std::vector<int32_t> tokenize(std::string_view prompt) const;
  // How many of the prompt's tokens fall outside the text encoder's window (77 with BOS and EOS) and are
  // dropped by tokenize: 0 when the prompt fits.
  int dropped_tokens(std::string_view prompt) const;
  // Things about the model worth a warning that do not stop it from running (a config switch that
  // disagrees with the tensors present, weights the networks do not use), one line each.
  const std::vector<std::string>& warnings() const;
  // last_hidden_state of the text encoder for one prompt: [1, 77, hidden], float32 (checked finite: NaN or
  // Inf in the output is a kModel error).
  Tensor encode_prompt(std::string_view prompt) const;
  PromptEncoding encode_prompt_full(std::string_view prompt) const;
  PromptEncoding encode_ids(const std::vector<int32_t>& ids) const;

  // ---- image generation stages
  // Checks options against the model (sizes, steps, scheduler, noise shape) and fills in defaults
  // (width/height); throws kInvalidArgument naming the option at fault.
  GenerateOptions resolve(const GenerateOptions& options) const;
  // [2, 77, D] = (negative prompt, prompt) when guidance is on, else [1, 77, D].
  Tensor encode_prompts(const GenerateOptions& options) const;
  // The whole conditioning: the context and, for SDXL, the pooled text embeddings and time ids (an empty
  // negative prompt is zeros where the model's force_zeros_for_empty_prompt says so).
  Conditioning encode_conditioning(const GenerateOptions& options) const;
  Sampling prepare_latents(const GenerateOptions& options) const;
  // Runs the UNet loop; returns the final latents [1, 4, h, w]. The Tensor form is SD 1.x / 2.x's context
  // only.
  Tensor denoise(Sampling& sampling, const Conditioning& conditioning, double cfg_scale,
                 const StepCallback& on_step = nullptr) const;
  Tensor denoise(Sampling& sampling, const Tensor& context, double cfg_scale,
                 const StepCallback& on_step = nullptr) const;
  // latents -> 8-bit RGB through the VAE decoder (diffusers' postprocess).
  Image decode_latents(const Tensor& latents) const;

  // All of the above.
  Image txt2img(const GenerateOptions& options, const StepCallback& on_step = nullptr,
                StageTimes* times = nullptr) const;

  // ---- SDXL base + refiner (AUTOMATIC1111's refiner_switch_at; diffusers' denoising_end / denoising_start)
  // Ends this base model's loop where the refiner takes over: only the steps whose timestep is at or above
  // round((1 - switch_at) · num_train_timesteps) run.
  void end_sampling_at(Sampling& sampling, double switch_at) const;
  // The refiner's loop on this model: its own scheduler over the same number of steps, started at
  // denoising_start = switch_at, on the base's latents with the base's random generator (moved out of
  // `base`); no noise is added.
  Sampling continue_sampling(Sampling&& base, const GenerateOptions& options, double switch_at) const;
  // txt2img with the base's steps up to switch_at, then `refiner`'s (its own prompt encoding, with the
  // aesthetic-score time ids) on the same latents, decoded by the refiner's VAE.
  Image txt2img(const GenerateOptions& options, const Model& refiner, double switch_at,
                const StepCallback& on_step = nullptr, StageTimes* times = nullptr) const;
  // SDXL's refiner (StableDiffusionXLImg2ImgPipeline with aesthetic-score time ids), which refines a base's
  // latents rather than generating from noise.
  bool is_refiner() const;

  // AUTOMATIC1111-style "parameters" text for PNG metadata.
  std::string parameters_text(const GenerateOptions& resolved) const;

  struct Impl;

 private:
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdrt
