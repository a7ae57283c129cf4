// Single-file SD 1.x / 2.x checkpoints (original CompVis / Stability layout): they must give diffusers' image
// for the same weights as a diffusers folder, and convert to a folder that gives it too. Fixtures from
// scripts/make_single_file_fixtures.py (tests/fixtures/single_file/).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "loaders/single_file.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"
#include "typed_references.h"

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

fs::path dir() {
  return testing::fixtures_dir() / "single_file";
}

nlohmann::json reference_case(const std::string& model) {
  const auto reference = io::read_json_file(dir() / "reference.json");
  for (const auto& c : reference["cases"])
    if (c["model"] == model) return c;
  ADD_FAILURE() << "no reference case for " << model;
  return {};
}

GenerateOptions options_of(const nlohmann::json& c) {
  GenerateOptions o;
  o.prompt = c["prompt"];
  o.negative_prompt = c["negative_prompt"];
  o.cfg_scale = c["guidance"];
  o.steps = c["steps"];
  o.width = c["width"];
  o.height = c["height"];
  o.seed = c["seed"];
  return o;
}

// diffusers' image within 1 level in 99% of values and 3 everywhere.
void expect_reference_image(const Image& image, const nlohmann::json& c) {
  const auto want = io::read_png_rgb8(dir() / c["image"].get<std::string>());
  ASSERT_EQ(image.width, want.width);
  ASSERT_EQ(image.height, want.height);
  ASSERT_EQ(image.rgb.size(), want.rgb8.size());
  int worst = 0;
  size_t within_one = 0;
  for (size_t i = 0; i < image.rgb.size(); ++i) {
    const int d = std::abs(int{image.rgb[i]} - int{want.rgb8[i]});
    worst = std::max(worst, d);
    within_one += d <= 1;
  }
  EXPECT_LE(worst, 3);
  EXPECT_GE(static_cast<double>(within_one) / static_cast<double>(image.rgb.size()), 0.99);
}

// The reference diffusers folder, completed with the tokenizer it was made with (kept once, in tiny-sdN).
fs::path reference_folder(const std::string& model, const TempDir& tmp) {
  const auto folder = tmp / model;
  fs::copy(dir() / model, folder, fs::copy_options::recursive);
  fs::copy(testing::fixtures_dir() / (model == "sd1" ? "tiny-sd1" : "tiny-sd2") / "tokenizer",
           folder / "tokenizer", fs::copy_options::recursive);
  return folder;
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

class SingleFileGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(SingleFileGolden, MatchesTheDiffusersFolder) {
  const std::string name = GetParam();
  const auto c = reference_case(name);
  const auto o = options_of(c);
  const auto model = Model::load(dir() / (name + ".safetensors"));
  const Image image = model.txt2img(o);
  expect_reference_image(image, c);
  // The folder with the same weights through sdrt's folder path.
  TempDir tmp;
  const auto folder = Model::load(reference_folder(name, tmp));
  expect_reference_image(folder.txt2img(o), c);
  EXPECT_EQ(model.tokenize("a cat"), folder.tokenize("a cat"));
}

// The same tensors saved by torch.save as a .ckpt (zip + pickle, nested under "state_dict").
TEST_P(SingleFileGolden, TorchCheckpointMatchesToo) {
  const std::string name = GetParam();
  const auto c = reference_case(name);
  const auto model = Model::load(dir() / (name + ".ckpt"));
  expect_reference_image(model.txt2img(options_of(c)), c);
}

TEST_P(SingleFileGolden, ConvertRoundTrip) {
  const std::string name = GetParam();
  const auto c = reference_case(name);
  TempDir tmp;
  const auto out = tmp / "converted";
  const auto r =
      testing::run_cli("convert --model " + testing::shell_quote((dir() / (name + ".safetensors")).string()) +
                       " --output " + testing::shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* f :
       {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  const auto o = options_of(c);
  const Image converted = Model::load(out).txt2img(o);
  expect_reference_image(converted, c);
  EXPECT_EQ(converted.rgb, Model::load(dir() / (name + ".safetensors")).txt2img(o).rgb);
  // The tokenizer folder is the one transformers wrote for the fixtures.
  const auto tiny = testing::fixtures_dir() / (name == "sd1" ? "tiny-sd1" : "tiny-sd2") / "tokenizer";
  EXPECT_EQ(io::read_json_file(out / "tokenizer" / "vocab.json"), io::read_json_file(tiny / "vocab.json"));
  EXPECT_EQ(testing::read_file(out / "tokenizer" / "merges.txt"), testing::read_file(tiny / "merges.txt"));
  // A second convert into the now non-empty folder is refused.
  const auto again =
      testing::run_cli("convert --model " + testing::shell_quote((dir() / (name + ".safetensors")).string()) +
                       " --output " + testing::shell_quote(out.string()));
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("not empty"), std::string::npos) << again.err;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, SingleFileGolden, ::testing::Values("sd1", "sd2"));

TEST(SingleFileDetect, FamilyPredictionAndConfigs) {
  const auto sd1 = loaders::SingleFile::open(dir() / "sd1.safetensors");
  EXPECT_EQ(sd1.family(), loaders::SdFamily::kSd1);
  EXPECT_EQ(sd1.prediction_type(), "epsilon");
  EXPECT_EQ(sd1.unet()->config["attention_head_dim"], 8);
  EXPECT_EQ(sd1.unet()->config["use_linear_projection"], false);
  EXPECT_EQ(sd1.unet()->config["block_out_channels"], nlohmann::json({8, 8, 16, 16}));
  EXPECT_EQ(sd1.unet()->config["layers_per_block"], 2);
  EXPECT_EQ(sd1.unet()->config["down_block_types"],
            nlohmann::json(
                {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}));
  EXPECT_EQ(sd1.text_encoder()->config["hidden_act"], "quick_gelu");
  EXPECT_EQ(sd1.tokenizer_config().pad_token, "<|endoftext|>");
  EXPECT_EQ(sd1.vae()->config["scaling_factor"], 0.18215);

  const auto sd2 = loaders::SingleFile::open(dir() / "sd2.safetensors");
  EXPECT_EQ(sd2.family(), loaders::SdFamily::kSd2);
  EXPECT_EQ(sd2.prediction_type(), "v_prediction");  // from sd2.yaml
  EXPECT_EQ(sd2.prediction_source(), (dir() / "sd2.yaml").string());
  EXPECT_EQ(sd2.unet()->config["use_linear_projection"], true);
  EXPECT_EQ(sd2.unet()->config["attention_head_dim"],
            nlohmann::json({1, 1, 1, 1}));  // width / 64, at least 1
  EXPECT_EQ(sd2.text_encoder()->config["hidden_act"], "gelu");
  EXPECT_EQ(sd2.text_encoder()->config["num_hidden_layers"], 2);  // 3 resblocks: the penultimate layer
  EXPECT_EQ(sd2.tokenizer_config().pad_token, "!");
  EXPECT_EQ(Model::load(dir() / "sd2.safetensors", {.text_encoder_only = true}).tokenize("a")[3],
            testing::reference_special("sd2", "pad"));  // transformers' pad id (typed_references.json)
  EXPECT_EQ(sd2.scheduler_config()["_class_name"], "PNDMScheduler");

  // The option wins over the yaml; without a yaml SD 2.x defaults to epsilon.
  EXPECT_EQ(
      loaders::SingleFile::open(dir() / "sd2.safetensors", {.prediction_type = "epsilon"}).prediction_type(),
      "epsilon");
  TempDir tmp;
  fs::copy_file(dir() / "sd2.safetensors", tmp / "plain.safetensors");
  EXPECT_EQ(loaders::SingleFile::open(tmp / "plain.safetensors").prediction_type(), "epsilon");
  EXPECT_EQ(loaders::SingleFile::open(tmp / "plain.safetensors", {.prediction_type = "v_prediction"})
                .scheduler_config()["prediction_type"],
            "v_prediction");
  EXPECT_NE(message_of([&] {
              loaders::SingleFile::open(tmp / "plain.safetensors", {.prediction_type = "x0"});
            }).find("x0"),
            std::string::npos);

  const auto info = Model::inspect(dir() / "sd2.safetensors");
  ASSERT_FALSE(info.components.empty());
  EXPECT_EQ(info.components[0].name, "checkpoint");
  bool family_shown = false;
  for (const auto& [k, v] : info.components[0].details) family_shown |= k == "family" && v == "SD 2.x";
  EXPECT_TRUE(family_shown);
  const auto r =
      testing::run_cli("info --json --model " + testing::shell_quote((dir() / "sd1.safetensors").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["components"]["checkpoint"]["details"]["family"], "SD 1.x");
  EXPECT_EQ(j["components"]["unet"]["details"]["parameters"], std::to_string(sd1.unet()->parameter_count()));
}

TEST(SingleFileEma, PrefersEmaWeights) {
  // sd1.safetensors stores the real UNet weights as EMA and perturbed ones under model.diffusion_model.*.
  const auto ema = loaders::SingleFile::open(dir() / "sd1.safetensors");
  const auto live = loaders::SingleFile::open(dir() / "sd1.safetensors", {.prefer_ema = false});
  EXPECT_TRUE(ema.uses_ema());
  EXPECT_FALSE(live.uses_ema());
  const std::string key = "down_blocks.0.resnets.0.conv1.weight";
  EXPECT_EQ(ema.unet()->tensors.at(key).source, "model_ema.diffusion_modelinput_blocks10in_layers2weight");
  EXPECT_EQ(live.unet()->tensors.at(key).source, "model.diffusion_model.input_blocks.1.0.in_layers.2.weight");
  const auto folder = io::WeightStore::from_component_dir(dir() / "sd1" / "unet", "diffusion_pytorch_model");
  const Tensor want = folder.load(key);
  const Tensor got_ema = ema.store(*ema.unet()).load(key), got_live = live.store(*live.unet()).load(key);
  ASSERT_EQ(got_ema.numel(), want.numel());
  int ema_equal = 0, live_equal = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    ema_equal += got_ema.data<float>()[i] == want.data<float>()[i];
    live_equal += got_live.data<float>()[i] == want.data<float>()[i];
  }
  EXPECT_EQ(ema_equal, want.numel());
  EXPECT_LT(live_equal, want.numel());
}

TEST(SingleFileVae, SwapsInAVaeFileOfEitherLayout) {
  const auto c = reference_case("sd1");
  for (const auto& vae :
       {dir() / "sd1_vae_ldm.safetensors", dir() / "sd1" / "vae" / "diffusion_pytorch_model.safetensors"}) {
    LoadOptions options;
    options.vae = vae;
    expect_reference_image(Model::load(dir() / "sd1.safetensors", options).txt2img(options_of(c)), c);
  }
}

// Rewrites sd2.safetensors without the tensors `drop` names (or with only `keep`).
fs::path rewritten(const TempDir& tmp, const std::string& name,
                   const std::function<bool(const std::string&)>& keep) {
  const auto src = io::WeightStore::from_file(dir() / "sd2.safetensors");
  std::map<std::string, Tensor> tensors;
  for (const auto& n : src.names())
    if (keep(n)) tensors.emplace(n, src.load(n, DType::kBF16));
  const auto path = tmp / name;
  io::write_safetensors(path, tensors);
  return path;
}

TEST(SingleFileErrors, UnknownLayoutAndMissingTensors) {
  TempDir tmp;
  const auto unknown = tmp / "unknown.safetensors";
  io::write_safetensors(unknown, {{"foo.weight", Tensor::zeros({2, 2})}});
  auto msg = message_of([&] { Model::load(unknown); });
  EXPECT_NE(msg.find(unknown.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("original layout"), std::string::npos) << msg;

  const std::string gone = "first_stage_model.decoder.up.0.block.1.conv2.weight";
  const auto no_vae_tensor = rewritten(tmp, "a.safetensors", [&](const std::string& n) { return n != gone; });
  msg = message_of([&] { Model::load(no_vae_tensor); });
  EXPECT_NE(msg.find(gone), std::string::npos) << msg;
  EXPECT_NE(msg.find("a.safetensors"), std::string::npos) << msg;

  const std::string qkv = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_bias";
  const auto no_qkv = rewritten(tmp, "b.safetensors", [&](const std::string& n) { return n != qkv; });
  msg = message_of([&] { Model::load(no_qkv, {.text_encoder_only = true}); });
  EXPECT_NE(msg.find(qkv), std::string::npos) << msg;

  // A VAE alone is not a whole model, and --vae refuses a file that is not a VAE.
  msg = message_of([&] { Model::load(dir() / "sd1_vae_ldm.safetensors"); });
  EXPECT_NE(msg.find("sd1_vae_ldm.safetensors"), std::string::npos) << msg;
  LoadOptions options;
  options.vae = unknown;
  msg = message_of([&] { Model::load(dir() / "sd1.safetensors", options); });
  EXPECT_NE(msg.find("not a VAE"), std::string::npos) << msg;
}

}  // namespace
}  // namespace sdrt
