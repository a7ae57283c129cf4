#include "models/clip_text.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models {

ClipTextConfig ClipTextConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(io::read_json_file(path), path.string());
}

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j, const std::string& what) {
  ClipTextConfig c;
  // CLIPModel configs nest the text part under "text_config"; CLIPTextModel configs are flat.
  const auto& t = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
  c.vocab_size = io::get_int(t, "vocab_size", c.vocab_size, what);
  c.hidden_size = io::get_int(t, "hidden_size", c.hidden_size, what);
  c.intermediate_size = io::get_int(t, "intermediate_size", c.intermediate_size, what);
  c.num_hidden_layers = io::get_int(t, "num_hidden_layers", c.num_hidden_layers, what);
  c.num_attention_heads = io::get_int(t, "num_attention_heads", c.num_attention_heads, what);
  c.max_position_embeddings = io::get_int(t, "max_position_embeddings", c.max_position_embeddings, what);
  c.layer_norm_eps = static_cast<float>(io::get_number(t, "layer_norm_eps", c.layer_norm_eps, what));
  c.eos_token_id = io::get_int(t, "eos_token_id", c.eos_token_id, what);
  c.hidden_act_name = io::get_string(t, "hidden_act", c.hidden_act_name, what);
  if (const auto it = j.find("architectures"); it != j.end() && it->is_array())
    for (const auto& a : *it)
      if (a.is_string() && a.get<std::string>() == "CLIPTextModelWithProjection") c.with_projection = true;
  if (c.with_projection) c.projection_dim = io::get_int(t, "projection_dim", 512, what);
  if (c.hidden_act_name == "quick_gelu") {
    c.hidden_act = Activation::kQuickGelu;
  } else if (c.hidden_act_name == "gelu") {
    c.hidden_act = Activation::kGelu;
  } else if (c.hidden_act_name == "gelu_new" || c.hidden_act_name == "gelu_pytorch_tanh") {
    c.hidden_act = Activation::kGeluTanh;
  } else {
    throw Error(
        ErrorKind::kUnsupported,
        fmt::format("{}: hidden_act \"{}\" is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)",
                    what, c.hidden_act_name));
  }
  const auto positive = [&](int64_t v, const char* field) {
    if (v <= 0 || v > (int64_t{1} << 20))
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" = {} is out of range", what, field, v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.with_projection) positive(c.projection_dim, "projection_dim");
  if (!(c.layer_norm_eps > 0.0f && std::isfinite(c.layer_norm_eps)))
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"layer_norm_eps\" = {} must be a positive number",
                                                what, c.layer_norm_eps));
  if (c.hidden_size % c.num_attention_heads != 0)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {}", what,
                            c.hidden_size, c.num_attention_heads));
  return c;
}

std::string clip_text_key_prefix(const io::WeightStore& weights) {
  if (weights.contains("text_model.embeddings.token_embedding.weight")) return "text_model.";
  if (weights.contains("embeddings.token_embedding.weight")) return "";
  throw Error(
      ErrorKind::kModel,
      fmt::format("{}: no CLIP text encoder weights (neither \"embeddings.token_embedding.weight\" nor "
                  "\"text_model.embeddings.token_embedding.weight\")",
                  weights.source().string()));
}

ClipTextDescription describe_clip_text(const ClipTextConfig& config) {
  ClipTextDescription d;
  d.config = config;
  const int64_t D = config.hidden_size, I = config.intermediate_size;
  const float eps = config.layer_norm_eps;
  d.token_embedding = {"embeddings.token_embedding.weight", {config.vocab_size, D}};
  d.position_embedding = {"embeddings.position_embedding.weight", {config.max_position_embeddings, D}};
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = fmt::format("encoder.layers.{}.", i);
    d.layers.push_back({{p + "layer_norm1", D, eps},
                        {p + "self_attn.q_proj", D, D},
                        {p + "self_attn.k_proj", D, D},
                        {p + "self_attn.v_proj", D, D},
                        {p + "self_attn.out_proj", D, D},
                        {p + "layer_norm2", D, eps},
                        {p + "mlp.fc1", D, I},
                        {p + "mlp.fc2", I, D}});
  }
  d.final_layer_norm = {"final_layer_norm", D, eps};
  if (config.with_projection)
    d.text_projection = LinearSpec{"text_projection", D, config.projection_dim, false};
  return d;
}

std::vector<WeightSpec> ClipTextDescription::weights() const {
  std::vector<WeightSpec> w{token_embedding, position_embedding};
  for (const auto& l : layers) {
    append_weights(w, l.layer_norm1);
    for (const auto* p : {&l.q_proj, &l.k_proj, &l.v_proj, &l.out_proj}) append_weights(w, *p);
    append_weights(w, l.layer_norm2);
    append_weights(w, l.fc1);
    append_weights(w, l.fc2);
  }
  append_weights(w, final_layer_norm);
  if (text_projection) append_weights(w, *text_projection);
  return w;
}

}  // namespace sdrt::models
