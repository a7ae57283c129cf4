// CLIP tokenizer: ids must equal transformers' CLIPTokenizer. The expected ids are transformers' on
// tests/fixtures/tiny-sd{1,2}/tokenizer and on the altered copies the tests make: tokenizer_cases.json (made
// by scripts/make_fixtures.py) and typed_references.json's "tokenizer" section (made by
// scripts/make_typed_references.py, which alters its copies as the tests below do; the tests check that their
// config files equal the script's).
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "sdrt/error.h"
#include "test_util.h"
#include "text/clip_tokenizer.h"
#include "typed_references.h"

namespace sdrt {
namespace {

using testing::TempDir;
using testing::write_file;
using text::ClipTokenizer;
using Ids = std::vector<int32_t>;
using testing::reference_ids;
using testing::reference_special;

const nlohmann::json& references() {
  return testing::typed_references().at("tokenizer");
}

// vocab.json's id of `token` as the script read it; -1 where the vocabulary lacks it (what token_id returns).
int32_t reference_vocab_id(const std::string& token) {
  const nlohmann::json& id = references().at("vocab_ids").at(token);
  return id.is_null() ? -1 : id.get<int32_t>();
}

// Writes a file of the script's altered tokenizer folder `folder` into `dir` after checking that it equals
// `text`, the content the test means: the script's references then come from the same folder.
void write_folder_file(const std::filesystem::path& dir, const std::string& folder, const std::string& file,
                       const std::string& text) {
  EXPECT_EQ(nlohmann::json::parse(text), references().at("folders").at(folder).at(file))
      << folder << "/" << file << " differs from scripts/make_typed_references.py's FOLDERS";
  write_file(dir / file, text);
}

std::filesystem::path sd1_tokenizer() {
  return testing::fixtures_dir() / "tiny-sd1" / "tokenizer";
}
std::filesystem::path sd2_tokenizer() {
  return testing::fixtures_dir() / "tiny-sd2" / "tokenizer";
}

// Loaded once: parsing vocab.json takes a few hundred milliseconds in Debug builds.
const ClipTokenizer& sd1() {
  static const ClipTokenizer tok = ClipTokenizer::from_folder(sd1_tokenizer());
  return tok;
}
const ClipTokenizer& sd2() {
  static const ClipTokenizer tok = ClipTokenizer::from_folder(sd2_tokenizer());
  return tok;
}

// A copy of the SD 1.x tokenizer folder that a test may alter.
std::filesystem::path copy_tokenizer(const TempDir& tmp) {
  const auto dir = tmp / "tokenizer";
  std::filesystem::copy(sd1_tokenizer(), dir, std::filesystem::copy_options::recursive);
  return dir;
}

// Runs `fn`, expecting an sdrt::Error whose message names `file`.
template <typename Fn>
void expect_error_naming(Fn fn, const std::string& file) {
  try {
    fn();
    ADD_FAILURE() << "no sdrt::Error thrown; expected one naming " << file;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << "message: " << e.what();
  }
}

TEST(ClipTokenizer, BuiltinVocabulary) {
  const auto start = std::chrono::steady_clock::now();
  const ClipTokenizer tok = ClipTokenizer::builtin();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 2.0);  // ~50 ms optimised; generous for Debug and sanitizer builds

  EXPECT_EQ(tok.vocab_size(), static_cast<size_t>(reference_special("sd1", "vocab_size")));
  for (const char* token : {"a</w>", "photo</w>", "!", "<|startoftext|>", "<|endoftext|>", "not-a-token"})
    EXPECT_EQ(tok.token_id(token), reference_vocab_id(token)) << token;
  EXPECT_EQ(tok.token_id("not-a-token"), -1);
  EXPECT_EQ(tok.bos_id(), reference_special("sd1", "bos"));
  EXPECT_EQ(tok.eos_id(), reference_special("sd1", "eos"));
  EXPECT_EQ(tok.pad_id(), reference_special("sd1", "pad"));
  EXPECT_EQ(tok.max_length(), reference_special("sd1", "model_max_length"));

  // transformers: tokenizer(p, padding="max_length", max_length=77, truncation=True)["input_ids"]
  const std::string prompt = "a photo of an astronaut riding a horse on mars";
  EXPECT_EQ(tok.encode(prompt), reference_ids("encode", "sd1", prompt));
  EXPECT_EQ(tok.encode(prompt).size(), 77u);
  EXPECT_EQ(tok.encode_words("a photo"), reference_ids("encode_words", "sd1", "a photo"));
}

TEST(ClipTokenizer, BuiltinVocabularyEqualsVocabJson) {
  const ClipTokenizer tok = ClipTokenizer::builtin();
  const nlohmann::json vocab = io::read_json_file(sd1_tokenizer() / "vocab.json");
  ASSERT_EQ(vocab.size(), tok.vocab_size());
  size_t differing = 0;
  for (const auto& [token, id] : vocab.items()) {
    if (tok.token_id(token) != id.get<int32_t>() && ++differing <= 5)
      ADD_FAILURE() << "token " << token << ": vocab.json " << id << ", built-in " << tok.token_id(token);
  }
  EXPECT_EQ(differing, 0u);
}

TEST(ClipTokenizer, FixtureCases) {
  const nlohmann::json cases = io::read_json_file(testing::fixtures_dir() / "tokenizer_cases.json");
  const ClipTokenizer& sd1 = sdrt::sd1();
  const ClipTokenizer& sd2 = sdrt::sd2();
  const ClipTokenizer builtin = ClipTokenizer::builtin();
  EXPECT_EQ(sd1.pad_id(), reference_special("sd1", "pad"));
  EXPECT_EQ(sd2.pad_id(), reference_special("sd2", "pad"));
  ASSERT_GE(cases.at("cases").size(), 30u);
  for (const auto& c : cases.at("cases")) {
    const std::string prompt = c.at("prompt").get<std::string>();
    SCOPED_TRACE("prompt: " + nlohmann::json(prompt).dump());
    EXPECT_EQ(sd1.encode(prompt), c.at("sd1").get<Ids>());
    EXPECT_EQ(sd2.encode(prompt), c.at("sd2").get<Ids>());
    EXPECT_EQ(builtin.encode(prompt), c.at("sd1").get<Ids>());
  }
}

TEST(ClipTokenizer, AddedTokensFollowTheFolderConfig) {
  const ClipTokenizer& sd1 = sdrt::sd1();
  const ClipTokenizer& sd2 = sdrt::sd2();
  // SD 2.x's pad "!" is an added token matched on the raw text: every "!" becomes id 0, not
  // "!</w>"/"!!!</w>".
  for (const char* text : {"hello! world!!!", "x<|ENDOFTEXT|>y"}) {
    EXPECT_EQ(sd1.encode_words(text), reference_ids("encode_words", "sd1", text)) << text;
    EXPECT_EQ(sd2.encode_words(text), reference_ids("encode_words", "sd2", text)) << text;
  }
  const std::string bangs = "hello! world!!!";
  const Ids sd2_bangs = sd2.encode_words(bangs);
  EXPECT_EQ(std::count(sd2_bangs.begin(), sd2_bangs.end(), reference_vocab_id("!")),
            std::count(bangs.begin(), bangs.end(), '!'));
  // Their bos/eos are {"normalized": true}: matched after lower-casing, inside words too.
  const Ids sd1_eos = sd1.encode_words("x<|ENDOFTEXT|>y");
  EXPECT_EQ(sd1_eos.size(), 3u);
  EXPECT_EQ(sd1_eos.at(1), reference_special("sd1", "eos"));
  EXPECT_EQ(sd1.encode_words("İstanbul ΣΊΣΥΦΟΣ"), reference_ids("encode_words", "sd1", "İstanbul ΣΊΣΥΦΟΣ"));

  // Plain-string special tokens are matched only verbatim; other spellings go through BPE as "<|", word,
  // "|>".
  TempDir tmp;
  const auto dir = copy_tokenizer(tmp);
  std::filesystem::remove(dir / "special_tokens_map.json");
  EXPECT_TRUE(references().at("folders").at("plain").at("special_tokens_map.json").is_null());
  const std::string plain_config =
      R"({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
          "unk_token": "<|endoftext|>", "model_max_length": 77})";
  write_folder_file(dir, "plain", "tokenizer_config.json", plain_config);
  const ClipTokenizer plain = ClipTokenizer::from_folder(dir);
  for (const char* text : {"x<|ENDOFTEXT|>y", "x<|endoftext|>y"})
    EXPECT_EQ(plain.encode_words(text), reference_ids("encode_words", "plain", text)) << text;
}

TEST(ClipTokenizer, SpecialTokensMapOverridesTokenizerConfig) {
  // transformers (5.23 and later) lets special_tokens_map.json win over tokenizer_config.json.
  TempDir tmp;
  const auto dir = copy_tokenizer(tmp);
  write_folder_file(dir, "map_over_config", "tokenizer_config.json",
                    R"({"pad_token": "<|endoftext|>", "model_max_length": 77})");
  write_folder_file(dir, "map_over_config", "special_tokens_map.json", R"({"pad_token": "!"})");
  EXPECT_EQ(ClipTokenizer::from_folder(dir).pad_id(), reference_special("map_over_config", "pad"));
  EXPECT_EQ(ClipTokenizer::from_folder(dir).pad_id(), reference_vocab_id("!"));
}

TEST(ClipTokenizer, TruncationAndPadding) {
  const ClipTokenizer& sd2 = sdrt::sd2();
  std::string long_prompt;
  for (int i = 0; i < 100; ++i) long_prompt += "cat ";
  const Ids ids = sd2.encode(long_prompt);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids, reference_ids("encode", "sd2", long_prompt));
  EXPECT_EQ(ids.front(), reference_special("sd2", "bos"));
  EXPECT_EQ(ids.back(), reference_special("sd2", "eos"));
  for (size_t i = 1; i < 76; ++i) EXPECT_EQ(ids[i], reference_vocab_id("cat</w>")) << i;

  const Ids empty = sd2.encode("");
  ASSERT_EQ(empty.size(), 77u);
  EXPECT_EQ(empty, reference_ids("encode", "sd2", ""));
  EXPECT_EQ(empty[0], reference_special("sd2", "bos"));
  EXPECT_EQ(empty[1], reference_special("sd2", "eos"));
  for (size_t i = 2; i < 77; ++i) EXPECT_EQ(empty[i], reference_special("sd2", "pad"));

  TempDir tmp;
  const auto dir = copy_tokenizer(tmp);
  write_folder_file(dir, "short", "tokenizer_config.json", R"({"model_max_length": 5})");
  const ClipTokenizer short_tok = ClipTokenizer::from_folder(dir);
  EXPECT_EQ(short_tok.max_length(), 5);
  EXPECT_EQ(short_tok.max_length(), reference_special("short", "model_max_length"));
  for (const char* prompt : {"a photo of", "a"}) {
    EXPECT_EQ(short_tok.encode(prompt), reference_ids("encode", "short", prompt)) << prompt;
    EXPECT_EQ(short_tok.encode(prompt).size(), 5u) << prompt;
  }
  // transformers writes int(1e30) for "unlimited"; CLIP has 77 positions.
  write_file(dir / "tokenizer_config.json", R"({"model_max_length": 1000000000000000019884624838656})");
  EXPECT_EQ(ClipTokenizer::from_folder(dir).max_length(), 77);
  std::filesystem::remove(dir / "tokenizer_config.json");
  EXPECT_EQ(ClipTokenizer::from_folder(dir).max_length(), 77);
}

TEST(ClipTokenizer, FromFilesAndBuiltinConfig) {
  const text::ClipTokenizerConfig sd2_like{77, "!"};
  const ClipTokenizer files =
      ClipTokenizer::from_files(sd1_tokenizer() / "vocab.json", sd1_tokenizer() / "merges.txt", sd2_like);
  const ClipTokenizer builtin = ClipTokenizer::builtin(sd2_like);
  const ClipTokenizer& sd2 = sdrt::sd2();
  for (const char* prompt :
       {"hello! world!!!", "a photo of an astronaut", "cat<|endoftext|>dog <|ENDOFTEXT|>"}) {
    SCOPED_TRACE(prompt);
    EXPECT_EQ(files.encode(prompt), sd2.encode(prompt));
    EXPECT_EQ(builtin.encode(prompt), sd2.encode(prompt));
  }
  // Copies tokenise alike (each has its own BPE cache).
  const ClipTokenizer copy = files;
  EXPECT_EQ(copy.encode("astronaut astronaut"), files.encode("astronaut astronaut"));
}

TEST(ClipTokenizer, ErrorsNameTheFile) {
  TempDir tmp;
  expect_error_naming([&] { ClipTokenizer::from_folder(tmp / "no-such-tokenizer"); }, "no-such-tokenizer");

  {
    const auto dir = copy_tokenizer(tmp);
    std::filesystem::remove(dir / "merges.txt");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "merges.txt");
    std::filesystem::remove_all(dir);
  }
  {
    const auto dir = copy_tokenizer(tmp);
    std::filesystem::remove(dir / "vocab.json");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "vocab.json");
    std::filesystem::remove_all(dir);
  }
  {
    const auto dir = copy_tokenizer(tmp);
    write_file(dir / "vocab.json", R"({"a": 0, "b": )");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "vocab.json");
    write_file(dir / "vocab.json", R"({"a": 0, "b": "one"})");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "vocab.json");
    write_file(dir / "vocab.json", R"(["a", "b"])");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "vocab.json");
    std::filesystem::remove_all(dir);
  }
  {
    const auto dir = copy_tokenizer(tmp);
    write_file(dir / "merges.txt", "#version: 0.2\ni n\nt h e\n");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "merges.txt");
    write_file(dir / "merges.txt", "#version: 0.2\ni n\n\nt h\n");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "merges.txt");
    std::filesystem::remove_all(dir);
  }
  {
    const auto dir = copy_tokenizer(tmp);
    write_file(dir / "tokenizer_config.json", R"({"pad_token": "<|padding|>"})");
    std::filesystem::remove(dir / "special_tokens_map.json");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "tokenizer_config.json");
    write_file(dir / "tokenizer_config.json", R"({"model_max_length": 77, )");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "tokenizer_config.json");
    std::filesystem::remove_all(dir);
  }
  {
    const auto dir = copy_tokenizer(tmp);
    write_file(dir / "special_tokens_map.json", R"({"pad_token": "<|padding|>"})");
    expect_error_naming([&] { ClipTokenizer::from_folder(dir); }, "special_tokens_map.json");
    std::filesystem::remove_all(dir);
  }
  expect_error_naming([] { ClipTokenizer::builtin({77, "<|padding|>"}); }, "built-in CLIP vocabulary");
}

}  // namespace
}  // namespace sdrt
