// What sdrt::Model holds (shared by the pipeline's translation units, not part of the public API).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "models/clip_text.h"
#include "models/unet.h"
#include "models/vae.h"
#include "pipeline/cuda_engine.h"
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
  // Set whenever the UNet / VAE are loaded, on either device.
  std::optional<models::UNetConfig> unet_config;
  std::optional<models::VaeConfig> vae_config;
  // Loaded with Device::kCuda: the UNet and VAE decoder live on the GPU (unet/vae above stay empty) and the
  // CPU decoder is loaded on demand for the fp32 retry of a decode that overflowed in fp16.
  std::shared_ptr<CudaEngine> cuda;
  bool cuda_text_encoder = false;  // the engine also runs the text encoder's layers
  std::function<models::AutoencoderKL()> load_cpu_vae;
};

}  // namespace sdrt
