// What sdrt::Model holds (shared by the pipeline's translation units, not part of the public API).
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "schedulers/scheduler.h"
#include "sdrt/model.h"
#include "text/clip_tokenizer.h"

namespace sdrt {

struct Model::Impl {
  std::filesystem::path path;
  std::string name;
  text::ClipTokenizer tokenizer;
  models::ClipTextModel text_encoder;
  // Absent when loaded with text_encoder_only.
  std::optional<models::UNet> unet;
  std::optional<models::AutoencoderKL> vae;
  std::optional<schedulers::SchedulerConfig> scheduler_config;
  std::filesystem::path scheduler_config_path;
};

}  // namespace sdrt
