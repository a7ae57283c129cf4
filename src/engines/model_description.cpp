#include "engines/model_description.h"

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::engines {

bool is_sdxl(const ModelDescription& d) {
  return d.unet && d.unet->config.text_time_embedding;
}

int64_t time_id_count(const ModelDescription& d) {
  if (!is_sdxl(d)) return 0;
  return d.pipeline.requires_aesthetics_score ? 5 : 6;
}

ModelDescription describe_model(const loaders::ModelSource& source) {
  const std::string path = source.path.string();
  ModelDescription d;
  d.pipeline = source.pipeline;
  int64_t context_width = 0;
  for (const auto& te : source.text_encoders) {
    d.text_encoders.push_back({models::describe_clip_text(models::ClipTextConfig::from_json(
                                   te.encoder.config, te.encoder.config_label)),
                               te.encoder});
    const auto& text = d.text_encoders.back().model.config;
    const auto& tokenizer = te.tokenizer;
    if (tokenizer.max_length() > text.max_position_embeddings)
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: tokenizer max length {} exceeds the {}'s max_position_embeddings {}", path,
                              tokenizer.max_length(), te.encoder.name, text.max_position_embeddings));
    if (static_cast<int64_t>(tokenizer.vocab_size()) > text.vocab_size)
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: tokenizer vocabulary ({} entries) is larger than the {}'s vocab_size {}",
                              path, tokenizer.vocab_size(), te.encoder.name, text.vocab_size));
    context_width += text.hidden_size;
  }
  if (d.text_encoders.empty()) throw Error(ErrorKind::kModel, fmt::format("{}: no text encoder", path));
  if (!source.unet || !source.vae) return d;

  d.unet =
      models::describe_unet(models::UNetConfig::from_json(source.unet->config, source.unet->config_label));
  d.unet_source = source.unet;
  d.vae = models::describe_vae(models::VaeConfig::from_json(source.vae->config, source.vae->config_label),
                               {.encoder = false, .decoder = true});
  d.vae_source = source.vae;
  const auto& unet = d.unet->config;
  if (unet.cross_attention_dim != context_width)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: unet cross_attention_dim {} does not match the text encoders' hidden_size {}", path,
                    unet.cross_attention_dim, context_width));
  if (unet.in_channels != d.vae->config.latent_channels)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: unet in_channels {} does not match the vae's latent_channels {}", path,
                            unet.in_channels, d.vae->config.latent_channels));
  if (unet.text_time_embedding) {
    // diffusers: text_embeds come from the last text encoder's projection.
    const auto& last = d.text_encoders.back();
    if (!last.model.text_projection)
      throw Error(
          ErrorKind::kModel,
          fmt::format("{}: the unet takes pooled text embeddings (addition_embed_type \"text_time\") but "
                      "{} is not a CLIPTextModelWithProjection",
                      path, last.source.config_label));
    const int64_t want = last.model.config.projection_dim + time_id_count(d) * unet.addition_time_embed_dim;
    if (want != unet.projection_class_embeddings_input_dim)
      throw Error(
          ErrorKind::kModel,
          fmt::format("{}: projection_class_embeddings_input_dim {} is not the pooled width {} + {} time "
                      "ids x {} (requires_aesthetics_score {}); a refiner given as a base model, or the "
                      "reverse?",
                      source.unet->config_label, unet.projection_class_embeddings_input_dim,
                      last.model.config.projection_dim, time_id_count(d), unet.addition_time_embed_dim,
                      d.pipeline.requires_aesthetics_score));
  }
  return d;
}

}  // namespace sdrt::engines
