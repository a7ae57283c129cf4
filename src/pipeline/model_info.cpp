// `sdrt info`: what a model folder or single file holds, read from configs and tensor headers only (no
// weights are loaded).
#include <filesystem>

#include <fmt/format.h>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "loaders/single_file.h"
#include "models/clip_text.h"
#include "sdrt/model.h"
#include "text/clip_tokenizer.h"

namespace sdrt {

namespace {

std::string join_json(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Key config values of a component, read from its config file (no weights loaded).
void add_config_details(ComponentInfo& info, const nlohmann::json& config,
                        const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    auto it = config.find(key);
    if (it != config.end() && !it->is_null()) info.details.emplace_back(key, join_json(*it));
  }
}

void add_weight_details(ComponentInfo& info, const std::filesystem::path& dir, const std::string& stem) {
  const auto weights = io::WeightStore::from_component_dir(dir, stem);
  int64_t params = 0;
  std::string dtypes;
  for (const auto& name : weights.names()) {
    const auto& t = weights.info(name);
    params += shape_numel(t.shape);
    if (dtypes.find(t.dtype) == std::string::npos) dtypes += (dtypes.empty() ? "" : ",") + t.dtype;
  }
  info.details.emplace_back("weights", weights.source().filename().string());
  info.details.emplace_back("tensors", std::to_string(weights.names().size()));
  info.details.emplace_back("parameters", std::to_string(params));
  info.details.emplace_back("dtype", dtypes);
}

}  // namespace

namespace {

// Config keys shown for a text encoder, a UNet / VAE and a scheduler, whether planned or read from a folder.
const std::vector<std::string> kTextEncoderKeys = {
    "hidden_size", "num_hidden_layers",       "num_attention_heads", "intermediate_size",
    "hidden_act",  "max_position_embeddings", "vocab_size",          "projection_dim"};
const std::vector<std::string> kDiffusersKeys = {"sample_size",
                                                 "in_channels",
                                                 "out_channels",
                                                 "latent_channels",
                                                 "block_out_channels",
                                                 "layers_per_block",
                                                 "transformer_layers_per_block",
                                                 "cross_attention_dim",
                                                 "attention_head_dim",
                                                 "use_linear_projection",
                                                 "addition_embed_type",
                                                 "addition_time_embed_dim",
                                                 "projection_class_embeddings_input_dim",
                                                 "scaling_factor",
                                                 "force_upcast"};
const std::vector<std::string> kSchedulerKeys = {"_class_name",      "prediction_type", "beta_schedule",
                                                 "beta_start",       "beta_end",        "num_train_timesteps",
                                                 "timestep_spacing", "steps_offset"};

bool is_text_encoder(const std::string& name) {
  return name == "text_encoder" || name == "text_encoder_2";
}

// Text encoders list projection_dim only when they apply the projection (CLIPTextModelWithProjection).
void add_text_encoder_details(ComponentInfo& info, const nlohmann::json& config) {
  auto keys = kTextEncoderKeys;
  if (info.class_name != "CLIPTextModelWithProjection") keys.pop_back();
  add_config_details(info, config, keys);
}

ComponentInfo tokenizer_info(const std::string& name, const text::ClipTokenizer& tok, bool builtin) {
  ComponentInfo c{name, "CLIPTokenizer", {}};
  if (builtin) c.details.emplace_back("vocab", "built-in");
  c.details.emplace_back("vocab_size", std::to_string(tok.vocab_size()));
  c.details.emplace_back("max_length", std::to_string(tok.max_length()));
  c.details.emplace_back("pad_id", std::to_string(tok.pad_id()));
  return c;
}

// A single file: the family and prediction type it was read as, then the components it maps to.
ModelInfo inspect_single_file(const std::filesystem::path& path) {
  const auto file = loaders::SingleFile::open(path);
  ModelInfo info{path.string(), file.pipeline_config().at("_class_name").get<std::string>(), {}};
  info.components.push_back({"checkpoint",
                             "single file",
                             {{"family", loaders::sd_family_name(file.family())},
                              {"prediction_type", file.prediction_type()},
                              {"prediction_source", file.prediction_source()},
                              {"ema", file.uses_ema() ? "yes" : "no"},
                              {"tensors", std::to_string(file.tensor_count())},
                              {"dtype", file.stored_dtypes()}}});
  // The tokenizers of the encoders present: SDXL's refiner has only tokenizer_2.
  if (file.text_encoder())
    info.components.push_back(
        tokenizer_info("tokenizer", text::ClipTokenizer::builtin(file.tokenizer_config()), true));
  if (file.text_encoder_2())
    info.components.push_back(
        tokenizer_info("tokenizer_2", text::ClipTokenizer::builtin(file.tokenizer_2_config()), true));
  for (const auto* c : file.components()) {
    ComponentInfo ci{c->name, c->class_name, {}};
    if (is_text_encoder(c->name))
      add_text_encoder_details(ci, c->config);
    else
      add_config_details(ci, c->config, kDiffusersKeys);
    ci.details.emplace_back("tensors", std::to_string(c->tensors.size()));
    ci.details.emplace_back("parameters", std::to_string(c->parameter_count()));
    info.components.push_back(std::move(ci));
  }
  const auto scheduler = file.scheduler_config();
  ComponentInfo sched{"scheduler", scheduler.at("_class_name").get<std::string>(), {}};
  add_config_details(sched, scheduler, kSchedulerKeys);
  info.components.push_back(std::move(sched));
  return info;
}

}  // namespace

ModelInfo Model::inspect(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return inspect_single_file(path);
  const auto folder = io::DiffusersFolder::open(path);
  ModelInfo info{path.string(), folder.pipeline_class(), {}};
  // Components listed as [null, null] (the SDXL refiner's text_encoder / tokenizer) are not there to show.
  for (const auto& component : folder.components()) {
    ComponentInfo c{component.name, component.class_name, {}};
    const auto dir = folder.component_dir(component.name);
    if (component.name == "tokenizer" || component.name == "tokenizer_2") {
      c = tokenizer_info(component.name, text::ClipTokenizer::from_folder(dir), false);
      c.class_name = component.class_name;
    } else if (component.name == "scheduler") {
      add_config_details(c, io::read_json_file(dir / "scheduler_config.json"), kSchedulerKeys);
    } else {
      const auto config_path = dir / "config.json";
      const auto cfg = io::read_json_file(config_path);
      if (is_text_encoder(component.name)) {
        const auto parsed = models::ClipTextConfig::from_json_file(config_path);
        (void)parsed;  // validates the architecture fields
        add_text_encoder_details(c, cfg);
        add_weight_details(c, dir, "model");
      } else {
        add_config_details(c, cfg, kDiffusersKeys);
        add_weight_details(c, dir, "diffusion_pytorch_model");
      }
    }
    info.components.push_back(std::move(c));
  }
  return info;
}

}  // namespace sdrt
