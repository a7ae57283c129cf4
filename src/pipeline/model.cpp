#include "sdrt/model.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "engines/model_description.h"
#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "loaders/model_source.h"
#include "loaders/single_file.h"
#include "pipeline/model_impl.h"
#include "sdrt/error.h"
#include "text/unicode.h"

namespace sdrt {

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;
Model::~Model() = default;

namespace {

schedulers::PredictionType parse_prediction(const std::string& name) {
  if (name == "epsilon") return schedulers::PredictionType::kEpsilon;
  if (name == "v_prediction") return schedulers::PredictionType::kVPrediction;
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("prediction type \"{}\": expected epsilon or v_prediction", name));
}

// A folder's VAE config that switches a quant conv off while its weights hold one: diffusers would skip
// those weights (with its own warning), and so does sdrt, but the model was most likely meant to use them.
// Single files derive these switches from the tensors, so only configs read from a file can disagree.
std::vector<std::string> source_warnings(const loaders::ModelSource& source) {
  std::vector<std::string> warnings;
  if (!source.vae) return warnings;
  const auto& config = source.vae->config;
  std::vector<std::string> off;
  for (const char* key : {"use_quant_conv", "use_post_quant_conv"}) {
    const auto it = config.find(key);
    if (it != config.end() && it->is_boolean() && !it->get<bool>()) off.emplace_back(key);
  }
  if (off.empty()) return warnings;
  const auto weights = source.vae->open_weights();
  for (const auto& key : off) {
    const std::string tensor = key == "use_quant_conv" ? "quant_conv.weight" : "post_quant_conv.weight";
    if (weights.contains(tensor))
      warnings.push_back(fmt::format("{}: field \"{}\" is false but the weights hold \"{}\" (not used)",
                                     source.vae->config_label, key, tensor));
  }
  return warnings;
}

}  // namespace

Model Model::load(const std::filesystem::path& path, const LoadOptions& options) {
  // One path for every source and device: resolve the folder or file, describe its networks, build the
  // engine. A text-encoder-only model always runs on the CPU (it serves tokenize / encode).
  const Device device = options.text_encoder_only ? Device::kHost : options.device;
  auto source = loaders::resolve_model(path, {.text_encoder_only = options.text_encoder_only,
                                              .prediction_type = options.prediction_type,
                                              .vae = options.vae,
                                              .prefer_fp16 = device == Device::kCuda});
  const engines::ModelDescription description = engines::describe_model(source);
  auto impl =
      std::unique_ptr<Impl>(new Impl{source.path, source.name, std::move(source.tokenizer), {}, {}, {}, {}});
  if (description.unet) {
    impl->unet_config = description.unet->config;
    impl->vae_config = description.vae->config;
    impl->scheduler_config =
        schedulers::SchedulerConfig::from_json_text(*source.scheduler_config, source.scheduler_label);
    if (options.prediction_type)
      impl->scheduler_config->prediction_type = parse_prediction(*options.prediction_type);
  }
  impl->device = device;
  impl->warnings = source_warnings(source);
  impl->engine = engines::create_engine(device, description);
  return Model(std::move(impl));
}

const std::string& Model::name() const {
  return impl_->name;
}

void validate_prompt(std::string_view text, std::string_view what) {
  const size_t at = text::invalid_utf8_offset(text);
  if (at != std::string_view::npos)
    throw Error(ErrorKind::kInvalidArgument, fmt::format("{} is not valid UTF-8 (byte 0x{:02x} at offset {})",
                                                         what, static_cast<unsigned char>(text[at]), at));
}

std::vector<int32_t> Model::tokenize(std::string_view prompt) const {
  validate_prompt(prompt);
  return impl_->tokenizer.encode(prompt);
}

int Model::dropped_tokens(std::string_view prompt) const {
  validate_prompt(prompt);
  const size_t words = impl_->tokenizer.encode_words(prompt).size();
  const size_t window = static_cast<size_t>(std::max(impl_->tokenizer.max_length() - 2, 0));
  return words > window ? static_cast<int>(words - window) : 0;
}

const std::vector<std::string>& Model::warnings() const {
  return impl_->warnings;
}

PromptEncoding Model::encode_ids(const std::vector<int32_t>& ids) const {
  auto out = impl_->engine->encode_text_full(ids);
  return {std::move(out.last_hidden_state), std::move(out.hidden_states), std::move(out.pooler_output)};
}

PromptEncoding Model::encode_prompt_full(std::string_view prompt) const {
  return encode_ids(tokenize(prompt));
}

Tensor Model::encode_prompt(std::string_view prompt) const {
  Tensor out = impl_->engine->encode_text(tokenize(prompt));
  const float* d = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i)
    if (!std::isfinite(d[i]))
      throw Error(ErrorKind::kModel,
                  fmt::format("text encoder output contains NaN or Inf (value {} at index {})", d[i], i));
  return out;
}

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
