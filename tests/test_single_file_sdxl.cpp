// Single-file SDXL base / refiner checkpoints (Stability's layout): the plan must give the diffusers folder's
// tensors bit for bit and its configs, and convert to a folder that holds them. Fixtures from
// `scripts/make_single_file_fixtures.py --only sdxl` (tests/fixtures/single_file/sdxl_*).
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "loaders/single_file.h"
#include "models/clip_text.h"
#include "models/unet.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"
#include "text/clip_tokenizer.h"

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using loaders::SdFamily;
using loaders::SingleFile;
using testing::TempDir;

fs::path dir() {
  return testing::fixtures_dir() / "single_file";
}

fs::path checkpoint(const std::string& model, const std::string& ext = ".safetensors") {
  return dir() / (model + ext);
}

// The reference diffusers folder, completed with what the fixtures keep once: SDXL's CLIP ViT-L is sd1's
// text encoder, the refiner shares the base's text_encoder_2 and VAE, and the tokenizers are tiny-sd1's
// (pad <|endoftext|>) and tiny-sd2's (pad "!").
fs::path reference_folder(const std::string& model, const TempDir& tmp) {
  const auto folder = tmp / model;
  fs::copy(dir() / model, folder, fs::copy_options::recursive);
  const auto copy = [&](const fs::path& from, const std::string& to) {
    fs::copy(from, folder / to, fs::copy_options::recursive | fs::copy_options::skip_existing);
  };
  if (model == "sdxl_base") {
    copy(dir() / "sd1" / "text_encoder" / "model.safetensors", "text_encoder/model.safetensors");
    copy(testing::fixtures_dir() / "tiny-sd1" / "tokenizer", "tokenizer");
  } else {
    copy(dir() / "sdxl_base" / "text_encoder_2" / "model.safetensors", "text_encoder_2/model.safetensors");
    copy(dir() / "sdxl_base" / "vae" / "diffusion_pytorch_model.safetensors",
         "vae/diffusion_pytorch_model.safetensors");
  }
  copy(testing::fixtures_dir() / "tiny-sd2" / "tokenizer", "tokenizer_2");
  return folder;
}

std::string stem_of(const std::string& component) {
  return component.starts_with("text_encoder") ? "model" : "diffusion_pytorch_model";
}

// transformers 5 saves CLIPTextModel without the "text_model." prefix (CLIPTextModelWithProjection keeps it);
// the plan uses transformers 4's names. position_ids are buffers, not weights.
std::string normalized(const std::string& name) {
  return name.starts_with("text_model.") ? name.substr(11) : name;
}

struct Stored {
  Shape shape;
  std::string dtype;
  std::vector<std::byte> bytes;
};

std::map<std::string, Stored> stored_tensors(const io::WeightStore& store) {
  std::map<std::string, Stored> out;
  for (const auto& n : store.names()) {
    if (n.ends_with("position_ids")) continue;
    const auto& info = store.info(n);
    const Tensor t = store.load(n, testing::stored_dtype(info.dtype));
    const auto* p = static_cast<const std::byte*>(t.raw_data());
    out[normalized(n)] = {t.shape(), info.dtype, std::vector<std::byte>(p, p + t.nbytes())};
  }
  return out;
}

std::map<std::string, Stored> planned_tensors(const SingleFile& file, const loaders::MappedComponent& c) {
  std::map<std::string, Stored> out;
  for (const auto& [name, t] : file.load(c)) {
    const auto* p = static_cast<const std::byte*>(t.raw_data());
    const std::string dtype = t.dtype() == DType::kF16 ? "F16" : t.dtype() == DType::kBF16 ? "BF16" : "F32";
    out[normalized(name)] = {t.shape(), dtype, std::vector<std::byte>(p, p + t.nbytes())};
  }
  return out;
}

void expect_same_tensors(const std::map<std::string, Stored>& want, const std::map<std::string, Stored>& got,
                         const std::string& what) {
  SCOPED_TRACE(what);
  std::vector<std::string> only_want, only_got;
  for (const auto& [n, t] : want)
    if (!got.count(n)) only_want.push_back(n);
  for (const auto& [n, t] : got)
    if (!want.count(n)) only_got.push_back(n);
  EXPECT_TRUE(only_want.empty()) << "not planned: " << nlohmann::json(only_want).dump();
  EXPECT_TRUE(only_got.empty()) << "not in the folder: " << nlohmann::json(only_got).dump();
  for (const auto& [n, t] : want) {
    const auto it = got.find(n);
    if (it == got.end()) continue;
    EXPECT_EQ(it->second.shape, t.shape) << n;
    EXPECT_EQ(it->second.dtype, t.dtype) << n;
    EXPECT_TRUE(it->second.bytes == t.bytes) << n << " differs";
  }
}

// Fields sdrt reads from each config (models/unet, models/clip_text, the VAE and scheduler readers), with the
// value a config without the field means. The plan must agree with the folder on every one the folder sets.
const std::map<std::string, nlohmann::json>& unet_fields() {
  static const std::map<std::string, nlohmann::json> f = {{"in_channels", 4},
                                                          {"out_channels", 4},
                                                          {"sample_size", nullptr},
                                                          {"block_out_channels", nullptr},
                                                          {"down_block_types", nullptr},
                                                          {"up_block_types", nullptr},
                                                          {"mid_block_type", "UNetMidBlock2DCrossAttn"},
                                                          {"layers_per_block", nullptr},
                                                          {"transformer_layers_per_block", 1},
                                                          {"attention_head_dim", nullptr},
                                                          {"num_attention_heads", nullptr},
                                                          {"cross_attention_dim", nullptr},
                                                          {"norm_num_groups", 32},
                                                          {"norm_eps", 1e-5},
                                                          {"flip_sin_to_cos", true},
                                                          {"freq_shift", 0},
                                                          {"use_linear_projection", false},
                                                          {"upcast_attention", false},
                                                          {"downsample_padding", 1},
                                                          {"mid_block_scale_factor", 1},
                                                          {"act_fn", "silu"},
                                                          {"resnet_time_scale_shift", "default"},
                                                          {"time_embedding_type", "positional"},
                                                          {"conv_in_kernel", 3},
                                                          {"conv_out_kernel", 3},
                                                          {"center_input_sample", false},
                                                          {"only_cross_attention", false},
                                                          {"dual_cross_attention", false},
                                                          {"class_embed_type", nullptr},
                                                          {"addition_embed_type", nullptr},
                                                          {"addition_time_embed_dim", nullptr},
                                                          {"projection_class_embeddings_input_dim", nullptr},
                                                          {"encoder_hid_dim", nullptr},
                                                          {"time_cond_proj_dim", nullptr},
                                                          {"resnet_out_scale_factor", 1.0}};
  return f;
}

const std::map<std::string, nlohmann::json>& vae_fields() {
  static const std::map<std::string, nlohmann::json> f = {{"in_channels", 3},
                                                          {"out_channels", 3},
                                                          {"latent_channels", 4},
                                                          {"block_out_channels", nullptr},
                                                          {"down_block_types", nullptr},
                                                          {"up_block_types", nullptr},
                                                          {"layers_per_block", nullptr},
                                                          {"norm_num_groups", 32},
                                                          {"act_fn", "silu"},
                                                          {"sample_size", nullptr},
                                                          {"scaling_factor", 0.18215},
                                                          {"force_upcast", true},
                                                          {"use_quant_conv", true},
                                                          {"use_post_quant_conv", true},
                                                          {"shift_factor", nullptr},
                                                          {"latents_mean", nullptr},
                                                          {"latents_std", nullptr},
                                                          {"mid_block_add_attention", true}};
  return f;
}

const std::map<std::string, nlohmann::json>& text_encoder_fields() {
  static const std::map<std::string, nlohmann::json> f = {
      {"vocab_size", nullptr},        {"hidden_size", nullptr},         {"intermediate_size", nullptr},
      {"num_hidden_layers", nullptr}, {"num_attention_heads", nullptr}, {"max_position_embeddings", nullptr},
      {"hidden_act", nullptr},        {"layer_norm_eps", 1e-5},         {"eos_token_id", 49407},
      {"bos_token_id", 49406},        {"projection_dim", nullptr},      {"architectures", nullptr}};
  return f;
}

// diffusers reads an int transformer_layers_per_block / attention_head_dim as that value for every block.
nlohmann::json per_block(const nlohmann::json& v, size_t blocks) {
  return v.is_number_integer() ? nlohmann::json(std::vector<nlohmann::json>(blocks, v)) : v;
}

void expect_same_config(const nlohmann::json& folder, const nlohmann::json& plan,
                        const std::map<std::string, nlohmann::json>& fields, const std::string& what) {
  SCOPED_TRACE(what);
  const size_t blocks = folder.contains("block_out_channels") ? folder["block_out_channels"].size() : 0;
  for (const auto& [key, absent] : fields) {
    if (!folder.contains(key)) continue;
    nlohmann::json want = folder[key], got = plan.contains(key) ? plan[key] : absent;
    if (key == "transformer_layers_per_block" || key == "attention_head_dim") {
      want = per_block(want, blocks);
      got = per_block(got, blocks);
    }
    EXPECT_EQ(got, want) << key;
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no sdrt::Error thrown";
  return {};
}

// A one-line error naming the file and the key.
void expect_error_naming(const std::string& msg, const fs::path& file, const std::string& key) {
  EXPECT_NE(msg.find(file.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"" + key + "\""), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

// The original keys a plan reads (a fused in_proj once for its three parts).
std::set<std::string> sources(const SingleFile& file) {
  std::set<std::string> out;
  for (const auto* c : file.components())
    for (const auto& [name, t] : c->tensors) out.insert(t.source);
  return out;
}

TEST(SingleFileSdxl, DetectsBaseAndRefiner) {
  const auto base = SingleFile::open(checkpoint("sdxl_base"));
  EXPECT_EQ(base.family(), SdFamily::kSdxl);
  EXPECT_STREQ(loaders::sd_family_name(base.family()), "SDXL");
  EXPECT_TRUE(loaders::is_sdxl(base.family()));
  ASSERT_TRUE(base.text_encoder() && base.text_encoder_2() && base.unet() && base.vae());
  EXPECT_EQ(base.components().size(), 4u);
  EXPECT_EQ(base.text_encoder()->class_name, "CLIPTextModel");
  EXPECT_EQ(base.text_encoder_2()->name, "text_encoder_2");
  EXPECT_EQ(base.text_encoder_2()->class_name, "CLIPTextModelWithProjection");
  EXPECT_EQ(base.prediction_type(), "epsilon");
  EXPECT_EQ(base.pipeline_config(), nlohmann::json({{"_class_name", "StableDiffusionXLPipeline"},
                                                    {"force_zeros_for_empty_prompt", true},
                                                    {"requires_aesthetics_score", false}}));
  EXPECT_EQ(base.tokenizer_config().pad_token, "<|endoftext|>");
  EXPECT_EQ(base.tokenizer_2_config().pad_token, "!");
  EXPECT_EQ(base.unet()->config["addition_time_embed_dim"], 8);  // (64 - 16 pooled) / 6 time ids
  // Extra tensors real files carry (position_ids, logit_scale, denoiser.*) are left out.
  EXPECT_EQ(base.stored_dtypes(), "F16,F32,I64");
  EXPECT_EQ(base.tensor_count(), sources(base).size() + 3);

  const auto refiner = SingleFile::open(checkpoint("sdxl_refiner"));
  EXPECT_EQ(refiner.family(), SdFamily::kSdxlRefiner);
  EXPECT_STREQ(loaders::sd_family_name(refiner.family()), "SDXL refiner");
  EXPECT_TRUE(loaders::is_sdxl(refiner.family()));
  EXPECT_FALSE(refiner.text_encoder());
  ASSERT_TRUE(refiner.text_encoder_2() && refiner.unet() && refiner.vae());
  EXPECT_EQ(refiner.components().size(), 3u);
  EXPECT_EQ(refiner.pipeline_config(), nlohmann::json({{"_class_name", "StableDiffusionXLImg2ImgPipeline"},
                                                       {"force_zeros_for_empty_prompt", false},
                                                       {"requires_aesthetics_score", true}}));
  EXPECT_EQ(refiner.unet()->config["addition_time_embed_dim"], 8);  // (56 - 16 pooled) / 5 time ids
  EXPECT_EQ(refiner.tensor_count(), sources(refiner).size());       // every tensor used

  for (const auto* f : {&base, &refiner}) {
    const auto s = f->scheduler_config();
    EXPECT_EQ(s["_class_name"], "EulerDiscreteScheduler");
    EXPECT_EQ(s["timestep_spacing"], "leading");
    EXPECT_EQ(s["steps_offset"], 1);
    EXPECT_EQ(s["use_karras_sigmas"], false);
    EXPECT_EQ(s["interpolation_type"], "linear");
    EXPECT_EQ(s["beta_schedule"], "scaled_linear");
    EXPECT_EQ(f->vae()->config["scaling_factor"], 0.13025);
    EXPECT_EQ(f->vae()->config["force_upcast"], true);
    EXPECT_EQ(f->unet()->config["sample_size"], 128);
  }
  // SD 1.x / 2.x are unchanged: one encoder, the StableDiffusionPipeline.
  const auto sd1 = SingleFile::open(checkpoint("sd1"));
  EXPECT_FALSE(loaders::is_sdxl(sd1.family()));
  EXPECT_FALSE(sd1.text_encoder_2());
  EXPECT_EQ(sd1.pipeline_config(), nlohmann::json({{"_class_name", "StableDiffusionPipeline"}}));
  EXPECT_EQ(sd1.tokenizer_config().pad_token, "<|endoftext|>");

  // text_encoder_only plans the encoders alone.
  const auto encoders = SingleFile::open(checkpoint("sdxl_base"), {.text_encoder_only = true});
  EXPECT_TRUE(encoders.text_encoder() && encoders.text_encoder_2());
  EXPECT_FALSE(encoders.unet() || encoders.vae());
}

TEST(SingleFileSdxl, TensorsMatchTheFolderBitForBit) {
  TempDir tmp;
  for (const std::string model : {"sdxl_base", "sdxl_refiner"}) {
    const auto folder = reference_folder(model, tmp);
    const auto file = SingleFile::open(checkpoint(model));
    for (const auto* c : file.components())
      expect_same_tensors(
          stored_tensors(io::WeightStore::from_component_dir(folder / c->name, stem_of(c->name))),
          planned_tensors(file, *c), model + " " + c->name);
    // The OpenCLIP specifics: q/k/v thirds of in_proj and the transposed projection.
    const auto& te2 = file.text_encoder_2()->tensors;
    const std::string pre =
        model == "sdxl_base" ? "conditioner.embedders.1.model." : "conditioner.embedders.0.model.";
    const auto& k = te2.at("text_model.encoder.layers.2.self_attn.k_proj.weight");
    EXPECT_EQ(k.source, pre + "transformer.resblocks.2.attn.in_proj_weight");
    EXPECT_EQ(k.part, 1);
    EXPECT_EQ(k.shape, (Shape{8, 8}));
    const auto& proj = te2.at("text_projection.weight");
    EXPECT_EQ(proj.source, pre + "text_projection");
    EXPECT_TRUE(proj.transpose);
    EXPECT_EQ(proj.shape, (Shape{16, 8}));
    EXPECT_EQ(file.unet()->tensors.at("add_embedding.linear_1.weight").source,
              "model.diffusion_model.label_emb.0.0.weight");
    EXPECT_EQ(file.unet()->tensors.at("add_embedding.linear_2.bias").source,
              "model.diffusion_model.label_emb.0.2.bias");
  }
}

// The refiner as a PyTorch .ckpt (zip + pickle under "state_dict"): the same plan and tensors.
TEST(SingleFileSdxl, TorchCheckpointMatches) {
  const auto ckpt = SingleFile::open(checkpoint("sdxl_refiner", ".ckpt"));
  const auto st = SingleFile::open(checkpoint("sdxl_refiner"));
  EXPECT_EQ(ckpt.family(), SdFamily::kSdxlRefiner);
  ASSERT_EQ(ckpt.components().size(), st.components().size());
  for (size_t i = 0; i < st.components().size(); ++i) {
    const auto& a = *ckpt.components()[i];
    const auto& b = *st.components()[i];
    EXPECT_EQ(a.config, b.config) << a.name;
    expect_same_tensors(planned_tensors(st, b), planned_tensors(ckpt, a), "ckpt " + a.name);
  }
}

TEST(SingleFileSdxl, ConfigsMatchTheFolder) {
  TempDir tmp;
  for (const std::string model : {"sdxl_base", "sdxl_refiner"}) {
    const auto folder = reference_folder(model, tmp);
    const auto file = SingleFile::open(checkpoint(model));
    const auto config = [&](const std::string& c) { return io::read_json_file(folder / c / "config.json"); };
    expect_same_config(config("unet"), file.unet()->config, unet_fields(), model + " unet");
    expect_same_config(config("vae"), file.vae()->config, vae_fields(), model + " vae");
    expect_same_config(config("text_encoder_2"), file.text_encoder_2()->config, text_encoder_fields(),
                       model + " text_encoder_2");
    if (file.text_encoder())
      expect_same_config(config("text_encoder"), file.text_encoder()->config, text_encoder_fields(),
                         model + " text_encoder");
    // Every scheduler field the plan sets is the folder's (diffusers writes more, all defaults).
    const auto scheduler = io::read_json_file(folder / "scheduler" / "scheduler_config.json");
    const auto planned_scheduler = file.scheduler_config();
    for (const auto& [k, v] : planned_scheduler.items()) EXPECT_EQ(scheduler.at(k), v) << model << " " << k;
    // model_index.json's pipeline fields.
    const auto index = io::read_json_file(folder / "model_index.json");
    const auto pipeline = file.pipeline_config();
    for (const auto& [k, v] : pipeline.items()) {
      if (index.contains(k)) {
        EXPECT_EQ(index[k], v) << model << " " << k;
      }
    }
    // sdrt's own readers accept the planned configs.
    const auto unet = models::UNetConfig::from_json(file.unet()->config, model + " unet");
    EXPECT_EQ(unet.transformer_layers_per_block,
              model == "sdxl_base" ? (std::vector<int64_t>{1, 2, 1}) : (std::vector<int64_t>{1, 1, 1, 2}));
    const auto te2 =
        models::ClipTextConfig::from_json(file.text_encoder_2()->config, model + " text_encoder_2");
    EXPECT_TRUE(te2.with_projection);
    EXPECT_EQ(te2.projection_dim, 16);
    EXPECT_EQ(te2.num_hidden_layers, 3);  // every resblock kept
  }
}

TEST(SingleFileSdxl, ConvertRoundTrip) {
  TempDir tmp;
  for (const std::string model : {"sdxl_base", "sdxl_refiner"}) {
    SCOPED_TRACE(model);
    const bool refiner = model == "sdxl_refiner";
    const auto file = SingleFile::open(checkpoint(model));
    const auto out = tmp / (model + "_converted");
    loaders::convert_to_diffusers(file, out);
    const auto index = io::read_json_file(out / "model_index.json");
    EXPECT_EQ(index["_class_name"],
              refiner ? "StableDiffusionXLImg2ImgPipeline" : "StableDiffusionXLPipeline");
    EXPECT_EQ(index["force_zeros_for_empty_prompt"], !refiner);
    EXPECT_EQ(index.contains("requires_aesthetics_score"), refiner);
    EXPECT_EQ(index["scheduler"], nlohmann::json({"diffusers", "EulerDiscreteScheduler"}));
    EXPECT_EQ(index["text_encoder_2"], nlohmann::json({"transformers", "CLIPTextModelWithProjection"}));
    EXPECT_EQ(index["tokenizer_2"], nlohmann::json({"transformers", "CLIPTokenizer"}));
    if (refiner) {
      EXPECT_EQ(index["text_encoder"], nlohmann::json({nullptr, nullptr}));
      EXPECT_EQ(index["tokenizer"], nlohmann::json({nullptr, nullptr}));
      EXPECT_FALSE(fs::exists(out / "text_encoder"));
      EXPECT_FALSE(fs::exists(out / "tokenizer"));
    } else {
      EXPECT_EQ(index["text_encoder"], nlohmann::json({"transformers", "CLIPTextModel"}));
    }
    // Loads back as a diffusers folder; its tensors are the reference folder's, its configs the plan's.
    const auto folder = io::DiffusersFolder::open(out);
    const auto reference = reference_folder(model, tmp);
    for (const auto* c : file.components()) {
      const auto converted = folder.component_dir(c->name);
      EXPECT_EQ(io::read_json_file(converted / "config.json"), c->config) << c->name;
      expect_same_tensors(
          stored_tensors(io::WeightStore::from_component_dir(reference / c->name, stem_of(c->name))),
          stored_tensors(io::WeightStore::from_component_dir(converted, stem_of(c->name))),
          "converted " + c->name);
    }
    EXPECT_EQ(io::read_json_file(folder.component_dir("scheduler") / "scheduler_config.json"),
              file.scheduler_config());
    // The tokenizers are those the fixtures were made with.
    const auto tok2 = text::ClipTokenizer::from_folder(folder.component_dir("tokenizer_2"));
    const auto want2 = text::ClipTokenizer::from_folder(reference / "tokenizer_2");
    EXPECT_EQ(tok2.pad_id(), want2.pad_id());
    EXPECT_EQ(tok2.encode("a red circle"), want2.encode("a red circle"));
    EXPECT_EQ(io::read_json_file(out / "tokenizer_2" / "vocab.json"),
              io::read_json_file(reference / "tokenizer_2" / "vocab.json"));
    if (!refiner) {
      const auto tok = text::ClipTokenizer::from_folder(folder.component_dir("tokenizer"));
      EXPECT_EQ(tok.pad_id(), text::ClipTokenizer::from_folder(reference / "tokenizer").pad_id());
      EXPECT_NE(tok.pad_id(), tok2.pad_id());
    }
    // `sdrt info` reads the converted folder, null components and tokenizer_2 included.
    const auto info = Model::inspect(out);
    std::vector<std::string> names;
    for (const auto& c : info.components) names.push_back(c.name);
    for (const char* want : {"text_encoder_2", "tokenizer_2", "unet", "vae", "scheduler"})
      EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
    EXPECT_EQ(std::find(names.begin(), names.end(), "text_encoder") != names.end(), !refiner);
  }
}

TEST(SingleFileSdxl, InfoListsBothEncodersAndTokenizers) {
  const auto names_of = [](const ModelInfo& info) {
    std::vector<std::string> names;
    for (const auto& c : info.components) names.push_back(c.name);
    return names;
  };
  const auto base = Model::inspect(checkpoint("sdxl_base"));
  EXPECT_EQ(base.pipeline_class, "StableDiffusionXLPipeline");
  EXPECT_EQ(names_of(base),
            (std::vector<std::string>{"checkpoint", "tokenizer", "tokenizer_2", "text_encoder",
                                      "text_encoder_2", "unet", "vae", "scheduler"}));
  std::map<std::string, std::string> family(base.components[0].details.begin(),
                                            base.components[0].details.end());
  EXPECT_EQ(family["family"], "SDXL");
  std::map<std::string, std::string> te2(base.components[4].details.begin(),
                                         base.components[4].details.end());
  EXPECT_EQ(te2["projection_dim"], "16");
  EXPECT_EQ(te2["num_hidden_layers"], "3");
  EXPECT_EQ(base.components[7].class_name, "EulerDiscreteScheduler");

  const auto refiner = Model::inspect(checkpoint("sdxl_refiner"));
  EXPECT_EQ(refiner.pipeline_class, "StableDiffusionXLImg2ImgPipeline");
  EXPECT_EQ(names_of(refiner), (std::vector<std::string>{"checkpoint", "tokenizer_2", "text_encoder_2",
                                                         "unet", "vae", "scheduler"}));

  // The CLI's JSON, and the reference folders through the folder branch.
  const auto r =
      testing::run_cli("info --json --model " + testing::shell_quote(checkpoint("sdxl_base").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["components"]["checkpoint"]["details"]["family"], "SDXL");
  EXPECT_EQ(j["components"]["tokenizer_2"]["details"]["pad_id"], "0");
  TempDir tmp;
  for (const std::string model : {"sdxl_base", "sdxl_refiner"}) {
    const auto info = Model::inspect(reference_folder(model, tmp));
    const auto names = names_of(info);
    EXPECT_NE(std::find(names.begin(), names.end(), "tokenizer_2"), names.end()) << model;
    EXPECT_EQ(std::find(names.begin(), names.end(), "tokenizer") != names.end(), model == "sdxl_base");
  }
}

// Rewrites `model`.safetensors with `edit` applied to its float tensors (return false to drop one).
fs::path rewritten(const TempDir& tmp, const std::string& model, const std::string& name,
                   const std::function<bool(const std::string&, Tensor&)>& edit) {
  const auto src = io::WeightStore::from_file(checkpoint(model));
  std::map<std::string, Tensor> tensors;
  for (const auto& n : src.names()) {
    const auto& dtype = src.info(n).dtype;
    if (dtype != "F16" && dtype != "F32" && dtype != "BF16") continue;
    Tensor t = src.load(n, testing::stored_dtype(dtype));
    if (edit(n, t)) tensors.emplace(n, std::move(t));
  }
  const auto path = tmp / name;
  io::write_safetensors(path, tensors);
  return path;
}

fs::path without(const TempDir& tmp, const std::string& model, const std::string& key) {
  return rewritten(tmp, model, "without.safetensors",
                   [&](const std::string& n, Tensor&) { return n != key; });
}

fs::path reshaped(const TempDir& tmp, const std::string& model, const std::string& key, const Shape& shape) {
  return rewritten(tmp, model, "reshaped.safetensors", [&](const std::string& n, Tensor& t) {
    if (n == key) t = Tensor::zeros(shape).to(t.dtype());
    return true;
  });
}

TEST(SingleFileSdxl, ErrorsNameTheKey) {
  TempDir tmp;
  // A missing tensor of each part, by its original key.
  for (const auto& [model, key] : std::vector<std::pair<std::string, std::string>>{
           {"sdxl_base", "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"},
           {"sdxl_base", "conditioner.embedders.1.model.text_projection"},
           {"sdxl_base", "conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc2.bias"},
           {"sdxl_base", "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"},
           {"sdxl_base", "model.diffusion_model.label_emb.0.2.bias"},
           {"sdxl_base", "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
           {"sdxl_refiner", "conditioner.embedders.0.model.ln_final.weight"},
           {"sdxl_refiner", "model.diffusion_model.label_emb.0.0.weight"},
           {"sdxl_refiner", "first_stage_model.decoder.up.0.block.1.conv2.weight"}}) {
    SCOPED_TRACE(key);
    const auto path = without(tmp, model, key);
    expect_error_naming(message_of([&] { SingleFile::open(path); }), path, key);
  }
  // A mis-shaped label_emb: its input width must be pooled (16) + time ids (6) x a width, its rows the time
  // embedding's (32).
  const std::string label = "model.diffusion_model.label_emb.0.0.weight";
  for (const Shape& shape : {Shape{32, 65}, Shape{16, 64}, Shape{32, 16}, Shape{64}}) {
    SCOPED_TRACE(shape_to_string(shape));
    const auto path = reshaped(tmp, "sdxl_base", label, shape);
    expect_error_naming(message_of([&] { SingleFile::open(path); }), path, label);
  }
  // The refiner's 56 = 16 + 5 x 8 is no base width (6 time ids): an SDXL base with the refiner's label_emb.
  const auto five = reshaped(tmp, "sdxl_base", label, Shape{32, 56});
  const auto msg = message_of([&] { SingleFile::open(five); });
  expect_error_naming(msg, five, label);
  EXPECT_NE(msg.find("6 time ids"), std::string::npos) << msg;
  // A text_projection whose rows are not the encoder's width.
  const std::string proj = "conditioner.embedders.1.model.text_projection";
  const auto bad_proj = reshaped(tmp, "sdxl_base", proj, Shape{16, 8});
  expect_error_naming(message_of([&] { SingleFile::open(bad_proj); }), bad_proj, proj);

  // An SDXL UNet without its text encoders says so.
  const auto bare = rewritten(tmp, "sdxl_base", "bare.safetensors",
                              [](const std::string& n, Tensor&) { return !n.starts_with("conditioner."); });
  const auto bare_msg = message_of([&] { SingleFile::open(bare); });
  EXPECT_NE(bare_msg.find("conditioner.embedders."), std::string::npos) << bare_msg;
  EXPECT_NE(bare_msg.find(bare.string()), std::string::npos) << bare_msg;
  // Not a checkpoint at all.
  const auto unknown = tmp / "unknown.safetensors";
  io::write_safetensors(unknown, {{"foo.weight", Tensor::zeros({2, 2})}});
  EXPECT_NE(message_of([&] { SingleFile::open(unknown); }).find("original layout"), std::string::npos);
}

}  // namespace
}  // namespace sdrt
