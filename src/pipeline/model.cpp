#include "sdrt/model.h"

#include <fmt/format.h>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/single_file.h"
#include "pipeline/model_impl.h"
#include "sdrt/error.h"

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

// The VAE to swap in (LoadOptions::vae): a single file in either layout.
models::AutoencoderKL load_vae_file(const std::filesystem::path& file) {
  const auto vae = io::SingleFile::open_vae(file);
  const auto label = file.string() + " (vae)";
  return models::AutoencoderKL::from_weights(models::VaeConfig::from_json(vae.vae()->config, label),
                                             vae.store(*vae.vae()), label, {.encoder = false});
}

// Checks that the components agree with each other (both load paths).
void check_components(const Model::Impl& m, const std::filesystem::path& path) {
  if (m.tokenizer.max_length() > m.text_encoder.config().max_position_embeddings)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer max length {} exceeds the text encoder's max_position_embeddings {}",
                    path.string(), m.tokenizer.max_length(),
                    m.text_encoder.config().max_position_embeddings));
  if (static_cast<int64_t>(m.tokenizer.vocab_size()) > m.text_encoder.config().vocab_size)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer vocabulary ({} entries) is larger than the text encoder's vocab_size {}",
                    path.string(), m.tokenizer.vocab_size(), m.text_encoder.config().vocab_size));
  if (!m.unet_config) return;
  const auto& unet = *m.unet_config;
  if (unet.cross_attention_dim != m.text_encoder.config().hidden_size)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                    path.string(), unet.cross_attention_dim, m.text_encoder.config().hidden_size));
  if (unet.in_channels != m.vae_config->latent_channels)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: unet in_channels {} does not match the vae's latent_channels {}",
                            path.string(), unet.in_channels, m.vae_config->latent_channels));
}

// A single-file checkpoint: every component from one file, configs derived by io::SingleFile.
Model::Impl load_single_file(const std::filesystem::path& path, const LoadOptions& options) {
  const auto file = io::SingleFile::open(
      path, {.prediction_type = options.prediction_type, .text_encoder_only = options.text_encoder_only});
  const auto label = [&](const char* component) { return fmt::format("{} ({})", path.string(), component); };
  auto tokenizer = text::ClipTokenizer::builtin(file.tokenizer_config());
  const auto& te = *file.text_encoder();
  auto text_encoder =
      models::ClipTextModel::from_weights(models::ClipTextConfig::from_json(te.config, label("text_encoder")),
                                          file.store(te), "text_model.", label("text_encoder"));
  Model::Impl m{path, path.stem().string(), std::move(tokenizer), std::move(text_encoder), {}, {}, {}, {}};
  if (options.text_encoder_only) return m;
  const auto& unet = *file.unet();
  const auto unet_config = models::UNetConfig::from_json(unet.config, label("unet"));
  if (options.device == Device::kCuda) {
    if (!options.vae.empty())
      throw Error(ErrorKind::kUnsupported, "--vae with --device cuda is not supported yet");
    const auto& vae = *file.vae();
    const auto vae_config = models::VaeConfig::from_json(vae.config, label("vae"));
    const auto vae_store = file.store(vae);
    m.cuda = CudaEngine::create(
        {unet_config, file.store(unet), label("unet"), vae_config, vae_store, label("vae")});
    m.unet_config = unet_config;
    m.vae_config = vae_config;
    m.load_cpu_vae = [path, vae_config, label] {
      const auto again = io::SingleFile::open(path, {});
      return models::AutoencoderKL::from_weights(vae_config, again.store(*again.vae()), label("vae"),
                                                 {.encoder = false});
    };
  } else {
    m.unet.emplace(models::UNet::from_weights(unet_config, file.store(unet), label("unet")));
    if (options.vae.empty()) {
      const auto& vae = *file.vae();
      m.vae.emplace(
          models::AutoencoderKL::from_weights(models::VaeConfig::from_json(vae.config, label("vae")),
                                              file.store(vae), label("vae"), {.encoder = false}));
    } else {
      m.vae.emplace(load_vae_file(options.vae));
    }
    m.unet_config = m.unet->config();
    m.vae_config = m.vae->config();
  }
  m.scheduler_config =
      schedulers::SchedulerConfig::from_json_text(file.scheduler_config().dump(), label("scheduler"));
  return m;
}

}  // namespace

Model Model::load(const std::filesystem::path& path, const LoadOptions& options) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    auto impl = std::make_unique<Impl>(load_single_file(path, options));
    check_components(*impl, path);
    return Model(std::move(impl));
  }
  const auto folder = io::DiffusersFolder::open(path);
  auto tokenizer = text::ClipTokenizer::from_folder(folder.component_dir("tokenizer"));
  // With the CUDA engine the GPU runs the text encoder's layers; the host keeps only the embedding tables.
  auto text_encoder = models::ClipTextModel::from_folder(
      folder.component_dir("text_encoder"), options.device == Device::kCuda && !options.text_encoder_only);
  if (tokenizer.max_length() > text_encoder.config().max_position_embeddings)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer max length {} exceeds the text encoder's max_position_embeddings {}",
                    path.string(), tokenizer.max_length(), text_encoder.config().max_position_embeddings));
  if (static_cast<int64_t>(tokenizer.vocab_size()) > text_encoder.config().vocab_size)
    throw Error(
        ErrorKind::kModel,
        fmt::format("{}: tokenizer vocabulary ({} entries) is larger than the text encoder's vocab_size {}",
                    path.string(), tokenizer.vocab_size(), text_encoder.config().vocab_size));
  auto impl = std::unique_ptr<Impl>(new Impl{path,
                                             std::filesystem::absolute(path).filename().string(),
                                             std::move(tokenizer),
                                             std::move(text_encoder),
                                             {},
                                             {},
                                             {},
                                             {}});
  if (impl->name.empty()) impl->name = std::filesystem::absolute(path).parent_path().filename().string();
  if (!options.text_encoder_only) {
    if (options.device == Device::kCuda) {
      if (!options.vae.empty())
        throw Error(ErrorKind::kUnsupported, "--vae with --device cuda is not supported yet");
      const auto unet_dir = folder.component_dir("unet"), vae_dir = folder.component_dir("vae");
      const auto unet_config = models::UNetConfig::from_json_file(unet_dir / "config.json");
      const auto vae_config = models::VaeConfig::from_json_file(vae_dir / "config.json");
      const auto unet_store = io::WeightStore::from_component_dir(unet_dir, "diffusion_pytorch_model", true);
      const auto vae_store = io::WeightStore::from_component_dir(vae_dir, "diffusion_pytorch_model", true);
      const auto text_dir = folder.component_dir("text_encoder");
      const auto text_store = io::WeightStore::from_component_dir(text_dir, "model", true);
      CudaEngine::Sources sources{unet_config, unet_store, (unet_dir / "config.json").string(),
                                  vae_config,  vae_store,  (vae_dir / "config.json").string()};
      sources.text_config = &impl->text_encoder.config();
      sources.text_weights = &text_store;
      sources.text_prefix = models::clip_text_key_prefix(text_store);
      sources.text_label = (text_dir / "config.json").string();
      impl->cuda = CudaEngine::create(sources);
      impl->cuda_text_encoder = true;
      impl->unet_config = unet_config;
      impl->vae_config = vae_config;
      impl->load_cpu_vae = [vae_dir] {
        return models::AutoencoderKL::from_folder(vae_dir, {.encoder = false});
      };
    } else {
      impl->unet.emplace(models::UNet::from_folder(folder.component_dir("unet")));
      if (options.vae.empty())
        impl->vae.emplace(
            models::AutoencoderKL::from_folder(folder.component_dir("vae"), {.encoder = false}));
      else
        impl->vae.emplace(load_vae_file(options.vae));
      impl->unet_config = impl->unet->config();
      impl->vae_config = impl->vae->config();
    }
    impl->scheduler_config_path = folder.component_dir("scheduler") / "scheduler_config.json";
    impl->scheduler_config = schedulers::SchedulerConfig::from_json_file(impl->scheduler_config_path);
    if (options.prediction_type)
      impl->scheduler_config->prediction_type = parse_prediction(*options.prediction_type);
    const auto& unet = *impl->unet_config;
    if (unet.cross_attention_dim != impl->text_encoder.config().hidden_size)
      throw Error(
          ErrorKind::kModel,
          fmt::format("{}: unet cross_attention_dim {} does not match the text encoder's hidden_size {}",
                      path.string(), unet.cross_attention_dim, impl->text_encoder.config().hidden_size));
    if (unet.in_channels != impl->vae_config->latent_channels)
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: unet in_channels {} does not match the vae's latent_channels {}",
                              path.string(), unet.in_channels, impl->vae_config->latent_channels));
  }
  return Model(std::move(impl));
}

const std::string& Model::name() const {
  return impl_->name;
}

std::vector<int32_t> Model::tokenize(std::string_view prompt) const {
  return impl_->tokenizer.encode(prompt);
}

PromptEncoding Model::encode_ids(const std::vector<int32_t>& ids) const {
  auto out = impl_->text_encoder.forward(ids, /*keep_hidden_states=*/true);
  return {std::move(out.last_hidden_state), std::move(out.hidden_states), std::move(out.pooler_output)};
}

PromptEncoding Model::encode_prompt_full(std::string_view prompt) const {
  return encode_ids(tokenize(prompt));
}

Tensor Model::encode_prompt(std::string_view prompt) const {
  if (impl_->cuda && impl_->cuda_text_encoder)
    return impl_->cuda->encode_text(impl_->text_encoder.embed(tokenize(prompt)));
  return impl_->text_encoder.forward(tokenize(prompt)).last_hidden_state;
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
  const auto file = io::SingleFile::open(path);
  ModelInfo info{path.string(), "StableDiffusionPipeline", {}};
  info.components.push_back({"checkpoint",
                             "single file",
                             {{"family", io::sd_family_name(file.family())},
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
