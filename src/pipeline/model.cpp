#include "sdrt/model.h"

#include <fmt/format.h>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "pipeline/model_impl.h"
#include "sdrt/error.h"

namespace sdrt {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

Model Model::load(const std::filesystem::path& path, const LoadOptions& options) {
  const auto folder = io::DiffusersFolder::open(path);
  auto tokenizer = text::ClipTokenizer::from_folder(folder.component_dir("tokenizer"));
  auto text_encoder = models::ClipTextModel::from_folder(folder.component_dir("text_encoder"));
  if (tokenizer.max_length() > text_encoder.config().max_position_embeddings)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: tokenizer max length {} exceeds the text encoder's max_position_embeddings {}",
                            path.string(), tokenizer.max_length(), text_encoder.config().max_position_embeddings));
  if (static_cast<int64_t>(tokenizer.vocab_size()) > text_encoder.config().vocab_size)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: tokenizer vocabulary ({} entries) is larger than the text encoder's vocab_size {}",
                            path.string(), tokenizer.vocab_size(), text_encoder.config().vocab_size));
  auto impl = std::unique_ptr<Impl>(new Impl{path, std::filesystem::absolute(path).filename().string(),
                                             std::move(tokenizer), std::move(text_encoder), {}, {}, {}, {}});
  if (impl->name.empty()) impl->name = std::filesystem::absolute(path).parent_path().filename().string();
  if (!options.text_encoder_only) {
    impl->unet.emplace(models::UNet::from_folder(folder.component_dir("unet")));
    impl->vae.emplace(models::AutoencoderKL::from_folder(folder.component_dir("vae"), {.encoder = false}));
    impl->scheduler_config_path = folder.component_dir("scheduler") / "scheduler_config.json";
    impl->scheduler_config = schedulers::SchedulerConfig::from_json_file(impl->scheduler_config_path);
    const auto& unet = impl->unet->config();
    if (unet.cross_attention_dim != impl->text_encoder.config().hidden_size)
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                              path.string(), unet.cross_attention_dim, impl->text_encoder.config().hidden_size));
    if (unet.in_channels != impl->vae->config().latent_channels)
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: unet in_channels {} does not match the vae's latent_channels {}", path.string(),
                              unet.in_channels, impl->vae->config().latent_channels));
  }
  return Model(std::move(impl));
}

const std::string& Model::name() const { return impl_->name; }

std::vector<int32_t> Model::tokenize(std::string_view prompt) const { return impl_->tokenizer.encode(prompt); }

PromptEncoding Model::encode_ids(const std::vector<int32_t>& ids) const {
  auto out = impl_->text_encoder.forward(ids, /*keep_hidden_states=*/true);
  return {std::move(out.last_hidden_state), std::move(out.hidden_states), std::move(out.pooler_output)};
}

PromptEncoding Model::encode_prompt_full(std::string_view prompt) const { return encode_ids(tokenize(prompt)); }

Tensor Model::encode_prompt(std::string_view prompt) const {
  return impl_->text_encoder.forward(tokenize(prompt)).last_hidden_state;
}

namespace {

std::string join_json(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Key config values of a component, read from its config file (no weights loaded).
void add_config_details(ComponentInfo& info, const nlohmann::json& config, const std::vector<std::string>& keys) {
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

ModelInfo Model::inspect(const std::filesystem::path& path) {
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
      add_config_details(c, cfg, {"_class_name", "prediction_type", "beta_schedule", "beta_start", "beta_end",
                                  "num_train_timesteps", "timestep_spacing", "steps_offset"});
    } else {
      const auto config_path = dir / "config.json";
      const auto cfg = io::read_json_file(config_path);
      if (component.name == "text_encoder" || component.name == "text_encoder_2") {
        const auto parsed = models::ClipTextConfig::from_json_file(config_path);
        (void)parsed;  // validates the architecture fields
        add_config_details(c, cfg, {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                    "hidden_act", "max_position_embeddings", "vocab_size"});
        add_weight_details(c, dir, "model");
      } else {
        add_config_details(c, cfg, {"sample_size", "in_channels", "out_channels", "latent_channels",
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
