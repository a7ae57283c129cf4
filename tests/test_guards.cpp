// The CPU NaN / Inf guards: an infinite guidance scale or a NaN weight stops generation with one kModel error
// naming the stage ("latents after step 1 contain NaN or Inf", "decoded image values ..."), and the CLI
// prints it as one error line and writes no output file.
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;
using testing::run_cli;
using testing::shell_quote;
using testing::TempDir;

// Rewrites `file` (a safetensors file, dtypes kept) with element 0 of tensor `name` set to NaN.
void poison(const fs::path& file, const std::string& name) {
  std::map<std::string, Tensor> tensors;
  {
    const auto store = io::WeightStore::from_file(file);
    ASSERT_TRUE(store.contains(name)) << name << " not in " << file;
    for (const auto& n : store.names()) {
      Tensor t = store.load(n);
      if (n == name) t.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
      tensors.emplace(n, t.to(testing::stored_dtype(store.info(n).dtype)));
    }
  }
  io::write_safetensors(file, tensors);
}

// A copy of tiny-sd1 with one NaN in `component`'s weight `name`.
fs::path poisoned_tiny_sd1(const TempDir& tmp, const std::string& component, const std::string& name) {
  const auto dir = testing::copy_fixture("tiny-sd1", tmp);
  for (const auto& entry : fs::directory_iterator(dir / component))
    if (entry.path().extension() == ".safetensors") poison(entry.path(), name);
  return dir;
}

GenerateOptions small_options() {
  GenerateOptions o;
  o.prompt = "a red circle";
  o.steps = 2;
  o.seed = 1;
  return o;
}

std::string message_of(const std::function<void()>& f, ErrorKind want_kind) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), want_kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no sdrt::Error thrown";
  return {};
}

// The CLI's failure: exactly one "sdrt: error:" line, the last on stderr, containing `needle`; nothing
// written.
void expect_cli_failure(const std::string& args, const fs::path& out, const std::string& needle) {
  const auto r = run_cli(args + " --output " + shell_quote(out.string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(out));
  size_t errors = 0;
  for (size_t pos = r.err.find("sdrt: error:"); pos != std::string::npos;
       pos = r.err.find("sdrt: error:", pos + 1))
    ++errors;
  EXPECT_EQ(errors, 1u) << r.err;
  const auto line = r.err.find("sdrt: error:");
  ASSERT_NE(line, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n', line), r.err.size() - 1) << r.err;
  EXPECT_NE(r.err.find(needle, line), std::string::npos) << r.err;
  // No temporary file of the atomic write is left behind either.
  for (const auto& entry : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(entry.path().filename().string().find(out.filename().string()), std::string::npos)
        << entry.path();
}

TEST(NanGuards, InfiniteGuidanceStopsAtTheFirstStep) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  const GenerateOptions o = model.resolve(small_options());
  const Tensor context = model.encode_prompts(o);
  Sampling sampling = model.prepare_latents(o);
  const auto msg = message_of(
      [&] { model.denoise(sampling, context, std::numeric_limits<double>::infinity()); }, ErrorKind::kModel);
  EXPECT_NE(msg.find("latents after step 1 contain NaN or Inf"), std::string::npos) << msg;
  // The options path refuses it before any work.
  auto inf = small_options();
  inf.cfg_scale = std::numeric_limits<double>::infinity();
  const auto invalid = message_of([&] { model.txt2img(inf); }, ErrorKind::kInvalidArgument);
  EXPECT_NE(invalid.find("cfg_scale"), std::string::npos) << invalid;
}

TEST(NanGuards, CliInfiniteGuidanceIsOneErrorLine) {
  TempDir tmp;
  const std::string args = "txt2img --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) +
                           " --prompt x --steps 2 --seed 1";
  expect_cli_failure(args + " --cfg-scale inf", tmp / "inf.png", "cfg_scale");
  expect_cli_failure(args + " --cfg-scale nan", tmp / "nan.png", "cfg_scale");
}

TEST(NanGuards, NanUnetWeight) {
  TempDir tmp;
  const auto dir = poisoned_tiny_sd1(tmp, "unet", "conv_out.bias");
  const auto msg = message_of([&] { Model::load(dir).txt2img(small_options()); }, ErrorKind::kModel);
  EXPECT_NE(msg.find("latents after step 1 contain NaN or Inf"), std::string::npos) << msg;
  expect_cli_failure("txt2img --model " + shell_quote(dir.string()) + " --prompt x --steps 2 --seed 1",
                     tmp / "out.png", "latents after step 1 contain NaN or Inf");
}

TEST(NanGuards, NanVaeWeight) {
  TempDir tmp;
  const auto dir = poisoned_tiny_sd1(tmp, "vae", "decoder.conv_out.bias");
  const auto msg = message_of([&] { Model::load(dir).txt2img(small_options()); }, ErrorKind::kModel);
  EXPECT_NE(msg.find("decoded image values contain NaN or Inf"), std::string::npos) << msg;
  expect_cli_failure("txt2img --model " + shell_quote(dir.string()) + " --prompt x --steps 2 --seed 1",
                     tmp / "out.png", "decoded image values contain NaN or Inf");
}

}  // namespace
}  // namespace sdrt
