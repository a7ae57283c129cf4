#include "engines/model_description.h"

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::engines {

ModelDescription describe_model(const loaders::ModelSource& source) {
  const std::string path = source.path.string();
  const auto& te = source.text_encoder;
  ModelDescription d{
      models::describe_clip_text(models::ClipTextConfig::from_json(te.config, te.config_label)),
      te,
      {},
      {},
      {},
      {}};
  const auto& text = d.text_encoder.config;
  const auto& tokenizer = source.tokenizer;
  if (tokenizer.max_length() > text.max_position_embeddings)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer max length {} exceeds the text encoder's max_position_embeddings {}", path,
                    tokenizer.max_length(), text.max_position_embeddings));
  if (static_cast<int64_t>(tokenizer.vocab_size()) > text.vocab_size)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer vocabulary ({} entries) is larger than the text encoder's vocab_size {}",
                    path, tokenizer.vocab_size(), text.vocab_size));
  if (!source.unet || !source.vae) return d;

  d.unet =
      models::describe_unet(models::UNetConfig::from_json(source.unet->config, source.unet->config_label));
  d.unet_source = source.unet;
  d.vae = models::describe_vae(models::VaeConfig::from_json(source.vae->config, source.vae->config_label),
                               {.encoder = false, .decoder = true});
  d.vae_source = source.vae;
  const auto& unet = d.unet->config;
  if (unet.cross_attention_dim != text.hidden_size)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: unet cross_attention_dim {} does not match the text encoder's hidden_size {}", path,
                    unet.cross_attention_dim, text.hidden_size));
  if (unet.in_channels != d.vae->config.latent_channels)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: unet in_channels {} does not match the vae's latent_channels {}", path,
                            unet.in_channels, d.vae->config.latent_channels));
  return d;
}

}  // namespace sdrt::engines
