// Loading diffusers folders: the good fixtures load, and every kind of damage gives one clear sdrt::Error
// that names the file or field at fault.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::copy_fixture;
using testing::TempDir;
using testing::write_file;

// Runs `fn`, expecting an sdrt::Error of `kind` whose message contains every string in `needles`.
template <typename Fn>
void expect_error(Fn fn, ErrorKind kind, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an sdrt::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), kind) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "message must be one line: " << msg;
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

void edit_json(const std::filesystem::path& path, const std::function<void(nlohmann::json&)>& edit) {
  auto j = io::read_json_file(path);
  edit(j);
  write_file(path, j.dump());
}

TEST(ModelLoading, InspectListsComponents) {
  const auto info = Model::inspect(testing::fixtures_dir() / "tiny-sd2");
  EXPECT_EQ(info.pipeline_class, "StableDiffusionPipeline");
  ASSERT_EQ(info.components.size(), 5u);  // scheduler, text_encoder, tokenizer, unet, vae
  bool saw_encoder = false;
  for (const auto& c : info.components) {
    if (c.name != "text_encoder") continue;
    saw_encoder = true;
    EXPECT_EQ(c.class_name, "CLIPTextModel");
    std::map<std::string, std::string> d(c.details.begin(), c.details.end());
    EXPECT_EQ(d["hidden_size"], "32");
    EXPECT_EQ(d["num_hidden_layers"], "3");
    EXPECT_EQ(d["hidden_act"], "gelu");
    EXPECT_EQ(d["dtype"], "BF16");
  }
  EXPECT_TRUE(saw_encoder);
}

TEST(ModelLoading, MissingFolder) {
  expect_error([] { Model::load("/nonexistent/sdrt-model"); }, ErrorKind::kIo, {"/nonexistent/sdrt-model"});
}

TEST(ModelLoading, FolderWithoutModelIndex) {
  TempDir tmp;
  expect_error([&] { Model::load(tmp.path()); }, ErrorKind::kIo, {tmp.path().string(), "model_index.json"});
}

TEST(ModelLoading, MalformedModelIndex) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  write_file(dir / "model_index.json", "{\"_class_name\": \"StableDiffusionPipeline\", ");
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat, {"model_index.json", "malformed JSON"});
}

TEST(ModelLoading, ComponentEntryNotAPair) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  edit_json(dir / "model_index.json", [](auto& j) { j["text_encoder"] = {"transformers"}; });
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat, {"model_index.json", "text_encoder"});
}

TEST(ModelLoading, MissingTokenizerFolder) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  std::filesystem::remove_all(dir / "tokenizer");
  expect_error([&] { Model::load(dir); }, ErrorKind::kIo, {"tokenizer"});
}

TEST(ModelLoading, MissingTextEncoderConfig) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  std::filesystem::remove(dir / "text_encoder" / "config.json");
  expect_error([&] { Model::load(dir); }, ErrorKind::kIo, {"text_encoder/config.json"});
}

TEST(ModelLoading, MalformedTextEncoderConfig) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  write_file(dir / "text_encoder" / "config.json", "{\"hidden_size\": 32,, }");
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat, {"text_encoder/config.json", "malformed JSON"});
}

// A number too large for a double is a JSON error naming the file, for every JSON the loader reads (found by
// the tokenizer fuzzer: nlohmann throws out_of_range, not parse_error, for "1e309").
TEST(ModelLoading, NumberTooLargeForADouble) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  write_file(dir / "text_encoder" / "config.json", "{\"layer_norm_eps\": 1e309}");
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat, {"text_encoder/config.json", "1e309"});
  const auto dir2 = copy_fixture("tiny-sd2", tmp);
  write_file(dir2 / "scheduler" / "scheduler_config.json", "{\"beta_end\": 1e309}");
  expect_error([&] { Model::load(dir2); }, ErrorKind::kFormat, {"scheduler_config.json", "1e309"});
}

TEST(ModelLoading, ConfigFieldOfWrongType) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  edit_json(dir / "text_encoder" / "config.json", [](auto& j) { j["num_hidden_layers"] = "three"; });
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat,
               {"text_encoder/config.json", "num_hidden_layers"});
}

TEST(ModelLoading, UnknownActivation) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  edit_json(dir / "text_encoder" / "config.json", [](auto& j) { j["hidden_act"] = "swish_v9"; });
  expect_error([&] { Model::load(dir); }, ErrorKind::kUnsupported, {"text_encoder/config.json", "swish_v9"});
}

TEST(ModelLoading, HeadsDoNotDivideHiddenSize) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  edit_json(dir / "text_encoder" / "config.json", [](auto& j) { j["num_attention_heads"] = 5; });
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat,
               {"text_encoder/config.json", "num_attention_heads"});
}

TEST(ModelLoading, WeightShapeDisagreesWithConfig) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  edit_json(dir / "text_encoder" / "config.json", [](auto& j) { j["intermediate_size"] = 64; });
  expect_error(
      [&] { Model::load(dir); }, ErrorKind::kModel,
      {"model.fp16.safetensors", "encoder.layers.0.mlp.fc1.weight", "[37, 32]", "[64, 32]", "config.json"});
}

TEST(ModelLoading, ConfigAsksForMoreLayersThanTheWeightsHave) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd2", tmp);
  edit_json(dir / "text_encoder" / "config.json", [](auto& j) { j["num_hidden_layers"] = 4; });
  expect_error([&] { Model::load(dir); }, ErrorKind::kModel,
               {"model.safetensors", "text_model.encoder.layers.3.layer_norm1.weight"});
}

TEST(ModelLoading, MissingWeights) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  std::filesystem::remove(dir / "text_encoder" / "model.fp16.safetensors");
  expect_error([&] { Model::load(dir); }, ErrorKind::kIo, {"text_encoder"});
}

TEST(ModelLoading, TruncatedWeights) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  const auto file = dir / "text_encoder" / "model.fp16.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);
  expect_error([&] { Model::load(dir); }, ErrorKind::kFormat, {"model.fp16.safetensors"});
}

TEST(ModelLoading, WeightsWithoutClipTensors) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp);
  // A valid safetensors file holding one unrelated tensor.
  const std::string header = R"({"foo":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header + std::string(4, '\0');
  write_file(dir / "text_encoder" / "model.fp16.safetensors", bytes);
  expect_error([&] { Model::load(dir); }, ErrorKind::kModel,
               {"model.fp16.safetensors", "embeddings.token_embedding.weight"});
}

}  // namespace
}  // namespace sdrt
