// One model, described once: the description of every network it has (models/*.h) and where each network's
// weights are (loaders/model_source.h). describe_model() is the single path from any source — diffusers
// folder or single file — to what the engines build from.
#pragma once

#include <optional>

#include "loaders/model_source.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"

namespace sdrt::engines {

struct ModelDescription {
  models::ClipTextDescription text_encoder;
  loaders::ComponentSource text_encoder_source;
  // Absent when only the text encoder was resolved.
  std::optional<models::UNetDescription> unet;
  std::optional<loaders::ComponentSource> unet_source;
  std::optional<models::VaeDescription> vae;  // the decoder (text-to-image needs no encoder)
  std::optional<loaders::ComponentSource> vae_source;
};

// Parses every component's config into its description and checks that the components fit together
// (tokenizer vs text encoder, context width, latent channels); errors name `source.path` and the field.
ModelDescription describe_model(const loaders::ModelSource& source);

}  // namespace sdrt::engines
