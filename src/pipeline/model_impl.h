// What sdrt::Model holds (shared by the pipeline's translation units, not part of the public API): the
// tokenizer, the model's configs the pipeline reads (sizes, latent scaling, scheduler) and the engine that
// runs the networks.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engines/engine.h"
#include "loaders/model_source.h"
#include "models/unet.h"
#include "models/vae.h"
#include "schedulers/scheduler.h"
#include "sdrt/model.h"
#include "text/clip_tokenizer.h"

namespace sdrt {

struct Model::Impl {
  std::filesystem::path path;
  std::string name;
  std::vector<text::ClipTokenizer> tokenizers;  // one per text encoder, in the engine's order
  loaders::PipelineConfig pipeline;
  int64_t time_id_count = 0;  // SDXL: 6, the refiner 5; 0 for SD 1.x / 2.x
  std::unique_ptr<engines::Engine> engine;
  // Absent when loaded with text_encoder_only.
  std::optional<models::UNetConfig> unet_config;
  std::optional<models::VaeConfig> vae_config;
  std::optional<schedulers::SchedulerConfig> scheduler_config;
  std::vector<std::string> warnings;  // Model::warnings
  Device device = Device::kHost;
};

}  // namespace sdrt
