// End-to-end tests of the sdrt command line: outputs equal the library's (and hence transformers'), and bad
// input gives exactly one error line on stderr, a non-zero exit and no output file.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/npy.h"
#include "io/png.h"
#include "test_util.h"
#include "typed_references.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;
using testing::run_cli;
using testing::shell_quote;
using testing::TempDir;

int count_lines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

// The failure is reported as exactly one "sdrt: error: ..." line, and that line is all of stderr: stage
// timings and progress go to stdout (issue 13 item 7: an error must be the only stderr line, so that a caller
// can show stderr as is), where the timings of stages that completed before the failure may be.
void expect_one_error_line(const testing::CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.err.rfind("sdrt: error: ", 0), 0u) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' not in: " << r.err;
  EXPECT_EQ(r.out.find("sdrt: error"), std::string::npos) << r.out;
}

TEST(Cli, TokenizeMatchesTransformersOnEveryFixturePrompt) {
  const auto cases = io::read_json_file(fixtures_dir() / "tokenizer_cases.json")["cases"];
  ASSERT_GE(cases.size(), 30u);
  for (const char* model : {"tiny-sd1", "tiny-sd2"}) {
    const std::string key = model == std::string("tiny-sd1") ? "sd1" : "sd2";
    for (const auto& c : cases) {
      const std::string prompt = c["prompt"];
      const auto r = run_cli("tokenize --model " + shell_quote((fixtures_dir() / model).string()) +
                             " --prompt " + shell_quote(prompt));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_EQ(nlohmann::json::parse(r.out), c[key]) << model << " prompt: " << prompt;
    }
  }
}

TEST(Cli, EncodeWritesTheLastHiddenState) {
  TempDir tmp;
  const auto dir = fixtures_dir() / "tiny-sd2";
  const auto cases = io::read_json_file(dir / "reference" / "text_encoder_cases.json")["cases"];
  const std::string prompt = cases[0]["prompt"];
  const auto out = tmp / "emb.npy";
  const auto r = run_cli("encode --model " + shell_quote(dir.string()) + " --prompt " + shell_quote(prompt) +
                         " --output " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Stage timings go to stdout (stderr carries only an error line: issue 13 item 7).
  EXPECT_EQ(r.err, "");
  EXPECT_NE(r.out.find("Function load_model took"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Function encode_prompt took"), std::string::npos) << r.out;
  const Tensor got = io::read_npy(out);
  const Tensor want = io::read_npy(dir / "reference" / cases[0]["last_hidden_state"].get<std::string>());
  ASSERT_EQ(got.shape(), (Shape{1, 77, 32}));
  for (int64_t i = 0; i < got.numel(); ++i)
    ASSERT_NEAR(got.data<float>()[i], want.data<float>()[i], 1e-4) << i;
}

TEST(Cli, InfoListsComponents) {
  const auto r = run_cli("info --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("text_encoder (CLIPTextModel)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokenizer (CLIPTokenizer)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hidden_act: quick_gelu"), std::string::npos) << r.out;
  // Pad ids: transformers' (typed_references.json, scripts/make_typed_references.py).
  EXPECT_NE(r.out.find("pad_id: " + std::to_string(testing::reference_special("sd1", "pad"))),
            std::string::npos)
      << r.out;

  const auto j = run_cli("info --json --model " + shell_quote((fixtures_dir() / "tiny-sd2").string()));
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const auto info = nlohmann::json::parse(j.out);
  EXPECT_EQ(info["components"]["tokenizer"]["details"]["pad_id"],
            std::to_string(testing::reference_special("sd2", "pad")));
  EXPECT_EQ(info["components"]["text_encoder"]["details"]["hidden_act"], "gelu");
}

TEST(Cli, HelpEverywhere) {
  for (const char* sub : {"", "tokenize ", "encode ", "info "}) {
    const auto r = run_cli(std::string(sub) + "--help");
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("--"), std::string::npos) << sub;
  }
}

TEST(Cli, UnknownFlagIsAnError) {
  const auto r = run_cli("tokenize --model x --prompt y --frobnicate");
  expect_one_error_line(r, "--frobnicate");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, MissingRequiredOption) {
  expect_one_error_line(run_cli("encode --prompt y --output /tmp/x.npy"), "--model");
}

TEST(Cli, NoSubcommand) {
  EXPECT_NE(run_cli("").exit_code, 0);
}

TEST(Cli, UnknownSubcommand) {
  expect_one_error_line(run_cli("paint --model x"), "paint");
}

TEST(Cli, MissingModelFolder) {
  expect_one_error_line(run_cli("tokenize --model /nonexistent/model --prompt hi"), "/nonexistent/model");
}

TEST(Cli, BadModelLeavesNoOutputFile) {
  TempDir tmp;
  const auto out = tmp / "emb.npy";
  testing::write_file(tmp / "model_index.json", "not json");
  const auto r = run_cli("encode --model " + shell_quote(tmp.path().string()) + " --prompt hi --output " +
                         shell_quote(out.string()));
  expect_one_error_line(r, "model_index.json");
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Cli, OutputFolderMissing) {
  TempDir tmp;
  const auto out = tmp / "no-such-folder" / "emb.npy";
  const auto r = run_cli("encode --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) +
                         " --prompt hi --output " + shell_quote(out.string()));
  expect_one_error_line(r, "no-such-folder");
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Cli, FailedWriteKeepsTheOldFile) {
  TempDir tmp;
  const auto out = tmp / "emb.npy";
  testing::write_file(out, "previous good output");
  testing::write_file(tmp / "model_index.json", "{}");  // a model folder with no components
  const auto r = run_cli("encode --model " + shell_quote(tmp.path().string()) + " --prompt hi --output " +
                         shell_quote(out.string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(testing::read_file(out), "previous good output");
}

// ---- txt2img

std::string tiny_txt2img(const std::string& extra) {
  return "txt2img --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) +
         " --prompt 'a red circle' " + extra;
}

TEST(CliTxt2Img, WritesTheDiffusersImageWithMetadata) {
  TempDir tmp;
  const auto ref = fixtures_dir() / "tiny-sd1" / "reference";
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  const auto& c = cases[0];  // the model's own scheduler, default guidance
  const auto out = tmp / "out.png";
  const auto r =
      run_cli("txt2img --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) + " --prompt " +
              shell_quote(c["prompt"]) + " --steps " + std::to_string(c["steps"].get<int>()) + " --seed " +
              std::to_string(c["seed"].get<int>()) + " --output " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Timings and progress on stdout, nothing on stderr (issue 13 item 7: stderr is for the error line only).
  EXPECT_EQ(r.err, "");
  for (const char* stage : {"load_model", "encode_prompt", "prepare_latents", "unet_infer", "decode_latents"})
    EXPECT_NE(r.out.find(std::string("Function ") + stage + " took"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("it/s"), std::string::npos) << r.out;
  const auto got = io::read_png_rgb8(out);
  const auto want = io::read_png_rgb8(ref / c["image"].get<std::string>());
  ASSERT_EQ(got.rgb8.size(), want.rgb8.size());
  int worst = 0;
  for (size_t i = 0; i < got.rgb8.size(); ++i) worst = std::max(worst, std::abs(got.rgb8[i] - want.rgb8[i]));
  EXPECT_LE(worst, 3);
  ASSERT_EQ(got.text.size(), 1u);
  EXPECT_EQ(got.text[0].first, "parameters");
  EXPECT_EQ(got.text[0].second,
            std::string(c["prompt"]) + "\nSteps: " + std::to_string(c["steps"].get<int>()) +
                ", Sampler: PNDM, CFG scale: 7.5, Seed: " + std::to_string(c["seed"].get<int>()) +
                ", Size: 64x64, Model: tiny-sd1");
}

TEST(CliTxt2Img, BadOptionsFailWithoutWritingAnything) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const std::string o = " --output " + shell_quote(out.string());
  expect_one_error_line(run_cli(tiny_txt2img("--width 100" + o)), "width 100");
  expect_one_error_line(run_cli(tiny_txt2img("--height 12" + o)), "height 12");
  expect_one_error_line(run_cli(tiny_txt2img("--steps 0" + o)), "steps 0");
  expect_one_error_line(run_cli(tiny_txt2img("--scheduler lms" + o)), "lms");
  expect_one_error_line(run_cli(tiny_txt2img("--steps many" + o)), "--steps");
  expect_one_error_line(run_cli(tiny_txt2img("--device tpu" + o)), "tpu");
  expect_one_error_line(
      run_cli(tiny_txt2img("--output " + shell_quote((tmp / "missing" / "x.png").string()))), "missing");
  // Initial noise of the wrong shape, and of the wrong dtype.
  io::write_npy(tmp / "noise.npy", Tensor({1, 4, 8, 7}, DType::kF32));
  expect_one_error_line(
      run_cli(tiny_txt2img("--init-noise " + shell_quote((tmp / "noise.npy").string()) + o)), "[1, 4, 8, 7]");
  std::string f64 = "\x93NUMPY\x01";
  f64 += '\0';
  const std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 4, 8, 8), }";
  f64 += static_cast<char>(header.size());
  f64 += '\0';
  f64 += header + std::string(8 * 256, '\0');
  testing::write_file(tmp / "noise64.npy", f64);
  expect_one_error_line(
      run_cli(tiny_txt2img("--init-noise " + shell_quote((tmp / "noise64.npy").string()) + o)),
      "noise64.npy");
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace sdrt
