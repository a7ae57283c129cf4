// Where a model comes from, resolved: a diffusers folder or a single-file checkpoint (and an optional VAE
// file) become one ModelSource — each component's config (what config.json holds, or what the single file
// implies), a label naming that config in errors, and a way to open its weights under diffusers' names.
// Everything above this layer (the model descriptions, the engines) is the same whatever the source was.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "text/clip_tokenizer.h"

namespace sdrt::loaders {

struct ComponentSource {
  std::string name;          // "unet"
  nlohmann::json config;     // what the component's config.json holds
  std::string config_label;  // ".../unet/config.json", or "<file> (unet)" for a single file
  // Opens the component's weights (again, if called again: the CUDA engine re-reads the VAE for an fp32
  // retry). Tensors are keyed by diffusers' names.
  std::function<io::WeightStore()> open_weights;
};

// One text encoder and the tokenizer that feeds it.
struct TextEncoderSource {
  text::ClipTokenizer tokenizer;
  ComponentSource encoder;  // "text_encoder" or "text_encoder_2"
};

// What model_index.json says about the pipeline beyond its components (a single file implies the same).
struct PipelineConfig {
  std::string class_name = "StableDiffusionPipeline";  // or StableDiffusionXL[Img2Img]Pipeline
  bool force_zeros_for_empty_prompt = false;  // SDXL base: an empty negative prompt conditions on zeros
  bool requires_aesthetics_score = false;     // SDXL refiner: 5 time ids (sizes, crop, aesthetic score)
};

struct ModelSource {
  std::filesystem::path path;
  std::string name;  // the folder's or file's name, for metadata
  PipelineConfig pipeline;
  // In the pipeline's order: SD 1.x / 2.x text_encoder; SDXL text_encoder, text_encoder_2; the SDXL
  // refiner text_encoder_2 alone. Their outputs are concatenated along the feature axis.
  std::vector<TextEncoderSource> text_encoders;
  std::optional<ComponentSource> unet, vae;     // absent when only the text encoders were asked for
  std::optional<std::string> scheduler_config;  // scheduler_config.json's text (diffusers may write Infinity)
  std::string scheduler_label;
};

struct SourceOptions {
  bool text_encoder_only = false;
  // "epsilon" | "v_prediction" for single files (which cannot tell); folders apply it after parsing.
  std::optional<std::string> prediction_type;
  std::filesystem::path vae;  // a VAE file (original or diffusers layout) instead of the model's own
  bool prefer_fp16 = false;   // read a folder's .fp16 weight variants first (the GPU converts to fp16 anyway)
};

// Resolves `path` (a diffusers folder or a .safetensors / .ckpt single file). Throws sdrt::Error naming the
// file or folder at fault.
ModelSource resolve_model(const std::filesystem::path& path, const SourceOptions& options = {});

}  // namespace sdrt::loaders
