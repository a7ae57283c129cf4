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

// A single file: the family and prediction type it was read as, then the components it maps to.
ModelInfo inspect_single_file(const std::filesystem::path& path) {
  const auto file = loaders::SingleFile::open(path);
  ModelInfo info{path.string(), "StableDiffusionPipeline", {}};
  info.components.push_back({"checkpoint",
                             "single file",
                             {{"family", loaders::sd_family_name(file.family())},
                              {"prediction_type", file.prediction_type()},
                              {"prediction_source", file.prediction_source()},
                              {"ema", file.uses_ema() ? "yes" : "no"},
                              {"tensors", std::to_string(file.tensor_count())},
                              {"dtype", file.stored_dtypes()}}});
  const auto tok = text::ClipTokenizer::builtin(file.tokenizer_config());
  info.components.push_back({"tokenizer",
                             "CLIPTokenizer",
                             {{"vocab", "built-in"},
                              {"vocab_size", std::to_string(tok.vocab_size())},
                              {"max_length", std::to_string(tok.max_length())},
                              {"pad_id", std::to_string(tok.pad_id())}}});
  for (const auto* c : {&*file.text_encoder(), &*file.unet(), &*file.vae()}) {
    ComponentInfo ci{c->name, c->class_name, {}};
    add_config_details(
        ci, c->config,
        {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
         "max_position_embeddings", "vocab_size", "sample_size", "in_channels", "out_channels",
         "latent_channels", "block_out_channels", "layers_per_block", "cross_attention_dim",
         "attention_head_dim", "use_linear_projection", "scaling_factor"});
    ci.details.emplace_back("tensors", std::to_string(c->tensors.size()));
    ci.details.emplace_back("parameters", std::to_string(c->parameter_count()));
    info.components.push_back(std::move(ci));
  }
  ComponentInfo sched{"scheduler", "PNDMScheduler", {}};
  add_config_details(sched, file.scheduler_config(),
                     {"_class_name", "prediction_type", "beta_schedule", "beta_start", "beta_end",
                      "num_train_timesteps", "timestep_spacing", "steps_offset"});
  info.components.push_back(std::move(sched));
  return info;
}

}  // namespace

ModelInfo Model::inspect(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return inspect_single_file(path);
  const auto folder = io::DiffusersFolder::open(path);
  ModelInfo info{path.string(), folder.pipeline_class(), {}};
  for (const auto& component : folder.components()) {
    ComponentInfo c{component.name, component.class_name, {}};
    const auto dir = folder.component_dir(component.name);
    if (component.name == "tokenizer") {
      const auto tok = text::ClipTokenizer::from_folder(dir);
      c.details.emplace_back("vocab_size", std::to_string(tok.vocab_size()));
      c.details.emplace_back("max_length", std::to_string(tok.max_length()));
      c.details.emplace_back("pad_id", std::to_string(tok.pad_id()));
    } else if (component.name == "scheduler") {
      const auto cfg = io::read_json_file(dir / "scheduler_config.json");
      add_config_details(c, cfg,
                         {"_class_name", "prediction_type", "beta_schedule", "beta_start", "beta_end",
                          "num_train_timesteps", "timestep_spacing", "steps_offset"});
    } else {
      const auto config_path = dir / "config.json";
      const auto cfg = io::read_json_file(config_path);
      if (component.name == "text_encoder" || component.name == "text_encoder_2") {
        const auto parsed = models::ClipTextConfig::from_json_file(config_path);
        (void)parsed;  // validates the architecture fields
        add_config_details(c, cfg,
                           {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                            "hidden_act", "max_position_embeddings", "vocab_size"});
        add_weight_details(c, dir, "model");
      } else {
        add_config_details(c, cfg,
                           {"sample_size", "in_channels", "out_channels", "latent_channels",
                            "block_out_channels", "layers_per_block", "cross_attention_dim",
                            "attention_head_dim", "use_linear_projection", "scaling_factor"});
        add_weight_details(c, dir, "diffusion_pytorch_model");
      }
    }
    info.components.push_back(std::move(c));
  }
  return info;
}

}  // namespace sdrt
