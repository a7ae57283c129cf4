// One model, described once: the description of every network it has (models/*.h) and where each network's
// weights are (loaders/model_source.h). describe_model() is the single path from any source — diffusers
// folder or single file — to what the engines build from.
#pragma once

#include <optional>
#include <vector>

#include "loaders/model_source.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"

namespace sdrt::engines {

struct TextEncoderDescription {
  models::ClipTextDescription model;
  loaders::ComponentSource source;
};

struct ModelDescription {
  loaders::PipelineConfig pipeline;
  // In the pipeline's order (loaders::ModelSource::text_encoders); the context is their penultimate
  // (SDXL) or last (SD 1.x / 2.x) hidden states side by side.
  std::vector<TextEncoderDescription> text_encoders;
  // Absent when only the text encoder was resolved.
  std::optional<models::UNetDescription> unet;
  std::optional<loaders::ComponentSource> unet_source;
  std::optional<models::VaeDescription> vae;  // the decoder (text-to-image needs no encoder)
  std::optional<loaders::ComponentSource> vae_source;
};

// SDXL's conditioning: two text encoders (or the refiner's one) and a UNet with the text_time embedding.
bool is_sdxl(const ModelDescription& d);
// The number of time ids the UNet's text_time embedding takes: 6 (sizes and crop), 5 for the refiner
// (aesthetic score instead of the target size); 0 without one.
int64_t time_id_count(const ModelDescription& d);

// Parses every component's config into its description and checks that the components fit together
// (tokenizer vs text encoder, context width, latent channels); errors name `source.path` and the field.
ModelDescription describe_model(const loaders::ModelSource& source);

}  // namespace sdrt::engines
