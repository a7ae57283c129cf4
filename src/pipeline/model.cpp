#include "sdrt/model.h"

#include <algorithm>
#include <cmath>
#include <set>

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

// Tensors a component's checkpoint holds that its network never reads (by name: the shapes of the ones it
// reads are checked at load). Buffers transformers writes (position_ids) are not weights.
std::vector<std::string> unused_tensors(const io::WeightStore& store,
                                        const std::vector<models::WeightSpec>& specs,
                                        const std::string& prefix) {
  std::set<std::string> known;
  for (const auto& w : specs)
    for (const auto& key : {w.key, w.legacy_key})
      if (!key.empty()) {
        known.insert(key);
        known.insert(prefix + key);
      }
  std::vector<std::string> unused;
  for (const auto& name : store.names())
    if (!known.count(name) && !name.ends_with("position_ids")) unused.push_back(name);
  return unused;
}

// One warning line per component whose checkpoint holds tensors its config does not describe. Only for the
// files of a diffusers folder (opening one maps it): a single file's plan takes exactly the tensors the
// networks need, and opening it would convert every tensor a second time.
void warn_unused_tensors(std::vector<std::string>& warnings, const engines::ModelDescription& d,
                         bool vae_from_folder) {
  const auto check = [&](const loaders::ComponentSource& source, const std::vector<models::WeightSpec>& specs,
                         bool text_encoder) {
    const auto store = source.open_weights();
    auto unused = unused_tensors(store, specs, text_encoder ? models::clip_text_key_prefix(store) : "");
    // A VAE whose quant-conv switch is off while the weights hold one has its own warning (source_warnings).
    std::erase_if(unused, [&](const std::string& name) {
      for (const char* key : {"quant_conv", "post_quant_conv"}) {
        const auto it = source.config.find(std::string("use_") + key);
        if (it != source.config.end() && *it == false && name.starts_with(std::string(key) + "."))
          return true;
      }
      return false;
    });
    if (!unused.empty())
      warnings.push_back(fmt::format(
          "{}: {} tensor{} the {} does not use (first: \"{}\"); does the config "
          "describe these weights?",
          source.config_label, unused.size(), unused.size() == 1 ? "" : "s", source.name, unused.front()));
  };
  for (const auto& te : d.text_encoders) check(te.source, te.model.weights(), true);
  if (d.unet) check(*d.unet_source, d.unet->weights(), false);
  if (d.vae && vae_from_folder)
    check(*d.vae_source, models::describe_vae(d.vae->config, {.encoder = true, .decoder = true}).weights(),
          false);
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
  auto impl = std::unique_ptr<Impl>(new Impl{source.path,
                                             source.name,
                                             {},
                                             source.pipeline,
                                             engines::time_id_count(description),
                                             {},
                                             {},
                                             {},
                                             {},
                                             {}});
  for (auto& te : source.text_encoders) impl->tokenizers.push_back(std::move(te.tokenizer));
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
  if (std::filesystem::is_directory(path))
    warn_unused_tensors(impl->warnings, description, /*vae_from_folder=*/options.vae.empty());
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
  return impl_->tokenizers.front().encode(prompt);
}

int Model::dropped_tokens(std::string_view prompt) const {
  validate_prompt(prompt);
  const size_t words = impl_->tokenizers.front().encode_words(prompt).size();
  const size_t window = static_cast<size_t>(std::max(impl_->tokenizers.front().max_length() - 2, 0));
  return words > window ? static_cast<int>(words - window) : 0;
}

const std::vector<std::string>& Model::warnings() const {
  return impl_->warnings;
}

PromptEncoding Model::encode_ids(const std::vector<int32_t>& ids) const {
  auto out = impl_->engine->encode_text_full(ids, {.all_hidden_states = true});
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

}  // namespace sdrt
