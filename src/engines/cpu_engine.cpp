// The CPU engine: the fp32 executors of models/cpu/ (the reference every other engine is tested against), and
// the denoising loop as diffusers' StableDiffusionPipeline.__call__ runs it: scale_model_input, the UNet on
// [uncond; cond], guidance uncond + g · (cond - uncond), scheduler.step.
#include <cmath>
#include <cstring>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <omp.h>

#include "engines/engine.h"
#include "models/cpu/clip_text.h"
#include "models/cpu/unet.h"
#include "models/cpu/vae.h"
#include "sdrt/error.h"

namespace sdrt::engines {
namespace {

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(const ModelDescription& d) {
    for (const auto& te : d.text_encoders) {
      const auto weights = te.source.open_weights();
      text_.push_back(models::cpu::ClipTextModel::load(
          te.model, {weights, te.source.config_label, models::clip_text_key_prefix(weights)}));
    }
    if (d.unet) {
      const auto unet_weights = d.unet_source->open_weights();
      unet_.emplace(models::cpu::UNet::load(*d.unet, {unet_weights, d.unet_source->config_label}));
      const auto vae_weights = d.vae_source->open_weights();
      vae_.emplace(models::cpu::AutoencoderKL::load(*d.vae, {vae_weights, d.vae_source->config_label}));
    }
  }

  std::string device_name() const override { return fmt::format("CPU ({} threads)", omp_get_max_threads()); }

  Tensor encode_text(std::span<const int32_t> ids) override {
    return text_.at(0).forward(ids).last_hidden_state;
  }

  TextEncoding encode_text_full(std::span<const int32_t> ids, const TextRequest& request) override {
    if (request.encoder >= text_.size())
      throw Error(ErrorKind::kInternal, fmt::format("CpuEngine: no text encoder {}", request.encoder));
    auto out = text_[request.encoder].forward(ids, /*keep_hidden_states=*/true);
    TextEncoding e;
    e.last_hidden_state = std::move(out.last_hidden_state);
    e.penultimate_hidden_state = out.hidden_states.at(out.hidden_states.size() - 2);
    if (request.all_hidden_states) e.hidden_states = std::move(out.hidden_states);
    e.pooler_output = std::move(out.pooler_output);
    e.text_embeds = std::move(out.text_embeds);
    return e;
  }

  void set_context(const Tensor& context, const Tensor& add_embeds) override {
    context_ = context.to(DType::kF32);
    add_embeds_ = add_embeds.empty() ? Tensor() : add_embeds.to(DType::kF32);
  }

  void begin_sampling(const Tensor& latents, const schedulers::Scheduler&) override {
    require_unet();
    latents_ = latents.to(DType::kF32);
  }

  int64_t sampling_step(schedulers::Scheduler& scheduler, size_t i, float cfg_scale,
                        schedulers::TorchGenerator& rng) override {
    require_unet();
    if (latents_.empty()) throw Error(ErrorKind::kInternal, "CpuEngine: begin_sampling first");
    if (context_.empty()) throw Error(ErrorKind::kInternal, "CpuEngine: set_context first");
    const bool guidance = context_.dim(0) == 2;
    const Tensor scaled = scheduler.scale_model_input(latents_, i);  // [1, C, h, w]
    Tensor input = scaled;
    if (guidance) {  // [uncond; cond] share the same latents
      input = Tensor({2, scaled.dim(1), scaled.dim(2), scaled.dim(3)}, DType::kF32);
      std::memcpy(input.data<float>(), scaled.data<float>(), scaled.nbytes());
      std::memcpy(input.data<float>() + scaled.numel(), scaled.data<float>(), scaled.nbytes());
    }
    const Tensor out = unet_->forward(input, scheduler.timesteps().at(i), context_, add_embeds_);
    Tensor noise_pred = out;
    if (guidance) {  // uncond + g · (cond - uncond)
      noise_pred = Tensor(scaled.shape(), DType::kF32);
      const float* uncond = out.data<float>();
      const float* cond = uncond + scaled.numel();
      float* p = noise_pred.data<float>();
      for (int64_t k = 0; k < scaled.numel(); ++k) p[k] = uncond[k] + cfg_scale * (cond[k] - uncond[k]);
    }
    latents_ = scheduler.step(noise_pred, i, latents_, rng);
    int64_t nonfinite = 0;
    const float* d = latents_.data<float>();
    for (int64_t k = 0; k < latents_.numel(); ++k) nonfinite += !std::isfinite(d[k]);
    return nonfinite;
  }

  Tensor sampling_latents() override { return latents_; }

  Tensor decode(const Tensor& z) override {
    require_unet();
    return vae_->decode(z);
  }

 private:
  void require_unet() const {
    if (!unet_) throw Error(ErrorKind::kInternal, "model was loaded for text encoding only");
  }

  std::vector<models::cpu::ClipTextModel> text_;
  std::optional<models::cpu::UNet> unet_;
  std::optional<models::cpu::AutoencoderKL> vae_;
  Tensor context_, add_embeds_, latents_;
};

}  // namespace

std::unique_ptr<Engine> create_cpu_engine(const ModelDescription& model) {
  return std::make_unique<CpuEngine>(model);
}

std::unique_ptr<Engine> create_engine(Device device, const ModelDescription& model) {
  return device == Device::kCuda ? create_cuda_engine(model) : create_cpu_engine(model);
}

}  // namespace sdrt::engines
