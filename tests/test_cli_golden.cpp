// The CLI golden suite: every diffusers-made pipeline reference run through the `sdrt` binary with real flags
// (--prompt, --negative-prompt, --cfg-scale, --steps, --scheduler, --karras, --width/--height, --seed/--rng,
// --init-noise, --device), single-file checkpoints with --prediction and --vae, and `convert` (with and
// without
// --prediction) followed by txt2img from the converted folder. Each PNG must match diffusers' image under the
// usual bar (within 1 level in >= 99% of values, 3 levels everywhere), so a flag bound to the wrong option
// fails here: every case sets every generation flag, and the cases differ in each of them.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "test_util.h"

#if SDRT_HAVE_CUDA
#include "backends/cuda/context.h"
#endif

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;
using testing::run_cli;
using testing::shell_quote;
using testing::TempDir;

// The generation flags of one case of a pipeline_cases.json / single_file reference.json (as in
// testing::pipeline_case_options, but as command-line flags). Every flag is given, defaults included, so that
// two swapped bindings see each other's values.
std::string case_flags(const nlohmann::json& c, const fs::path& ref, const std::string& device = "cpu") {
  std::string f = " --prompt " + shell_quote(c["prompt"].get<std::string>()) + " --negative-prompt " +
                  shell_quote(c["negative_prompt"].get<std::string>()) + " --cfg-scale " +
                  c["guidance"].dump() + " --steps " + c["steps"].dump() + " --width " + c["width"].dump() +
                  " --height " + c["height"].dump() + " --seed " + c["seed"].dump() + " --rng cpu --device " +
                  device;
  if (c.contains("scheduler") && c["scheduler"] != "default")
    f += " --scheduler " + c["scheduler"].get<std::string>();
  if (c.value("karras", false)) f += " --karras";
  if (c.contains("init_noise"))
    f += " --init-noise " + shell_quote((ref / c["init_noise"].get<std::string>()).string());
  return f;
}

// Runs `sdrt txt2img --model MODEL <flags> --output OUT` and returns the image it wrote.
io::PngImage txt2img(const fs::path& model, const std::string& flags, const fs::path& out) {
  const auto r = run_cli("txt2img --model " + shell_quote(model.string()) + flags + " --output " +
                         shell_quote(out.string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0 || !fs::exists(out)) return {};
  return io::read_png_rgb8(out);
}

struct ImageDiff {
  int max_diff = 255;
  double within_one = 0.0;  // fraction of channel values within 1 level
};

ImageDiff compare(const io::PngImage& got, const io::PngImage& want) {
  ImageDiff d;
  if (got.width != want.width || got.height != want.height || got.rgb8.size() != want.rgb8.size() ||
      want.rgb8.empty())
    return d;
  d.max_diff = 0;
  size_t ok = 0;
  for (size_t i = 0; i < got.rgb8.size(); ++i) {
    const int diff = std::abs(int{got.rgb8[i]} - int{want.rgb8[i]});
    d.max_diff = std::max(d.max_diff, diff);
    ok += diff <= 1;
  }
  d.within_one = static_cast<double>(ok) / static_cast<double>(got.rgb8.size());
  return d;
}

void expect_reference(const io::PngImage& got, const fs::path& want_png) {
  const auto want = io::read_png_rgb8(want_png);
  EXPECT_EQ(got.width, want.width);
  EXPECT_EQ(got.height, want.height);
  const ImageDiff d = compare(got, want);
  EXPECT_LE(d.max_diff, 3) << want_png;
  EXPECT_GE(d.within_one, 0.99) << want_png;
}

// The PNG's parameters chunk says what was asked for (AUTOMATIC1111's layout).
void expect_parameters(const io::PngImage& got, const nlohmann::json& c) {
  ASSERT_EQ(got.text.size(), 1u);
  const std::string& p = got.text[0].second;
  EXPECT_EQ(p.rfind(c["prompt"].get<std::string>() + "\n", 0), 0u) << p;
  const std::string negative = c["negative_prompt"];
  if (!negative.empty()) {
    EXPECT_NE(p.find("\nNegative prompt: " + negative + "\n"), std::string::npos) << p;
  }
  EXPECT_NE(p.find("Steps: " + c["steps"].dump() + ","), std::string::npos) << p;
  EXPECT_NE(p.find("Seed: " + c["seed"].dump() + ","), std::string::npos) << p;
  EXPECT_NE(p.find("Size: " + c["width"].dump() + "x" + c["height"].dump()), std::string::npos) << p;
}

// ---- the diffusers pipeline references of the tiny folders

class CliGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CliGolden, EveryPipelineCaseMatchesDiffusers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto ref = dir / "reference";
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 10u);
  TempDir tmp;
  int index = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dump());
    const auto out = tmp / ("case" + std::to_string(index++) + ".png");
    const auto got = txt2img(dir, case_flags(c, ref), out);
    expect_reference(got, ref / c["image"].get<std::string>());
    expect_parameters(got, c);
  }
  EXPECT_EQ(index, 10);
}

INSTANTIATE_TEST_SUITE_P(TinyModels, CliGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

// SDXL (scripts/make_sdxl_fixtures.py): every case with the size-conditioning flags always given (W,H and
// X,Y orders: diffusers' (h, w) / (top, left) pairs reversed), and the base + refiner cases with --refiner.
TEST(CliGoldenSdxl, EveryPipelineCaseMatchesDiffusers) {
  const auto dir = fixtures_dir() / "tiny-sdxl";
  const auto ref = dir / "reference";
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 10u);
  TempDir tmp;
  int index = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dump());
    const auto pair = [&](const char* key) { return c[key][1].dump() + "," + c[key][0].dump(); };
    std::string flags = case_flags(c, ref) + " --original-size " + pair("original_size_hw") +
                        " --crop-top-left " + pair("crops_coords_top_left_yx") + " --target-size " +
                        pair("target_size_hw");
    if (c["refiner"].get<bool>())
      flags += " --refiner " +
               shell_quote((fixtures_dir() / c["refiner_model"].get<std::string>()).string()) +
               " --refiner-switch " + c["refiner_denoising_start"].dump();
    const auto out = tmp / ("case" + std::to_string(index++) + ".png");
    const auto got = txt2img(dir, flags, out);
    expect_reference(got, ref / c["image"].get<std::string>());
    expect_parameters(got, c);
  }
  EXPECT_EQ(index, 10);
}

// ---- single-file checkpoints (tests/fixtures/single_file, scripts/make_single_file_fixtures.py)

// An SDXL single file (Stability layout, scripts/make_single_file_fixtures.py --only sdxl) draws diffusers'
// images, and the folder `convert` makes of it draws the same ones.
TEST(CliGoldenSdxl, SingleFileAndItsConvertedFolder) {
  const auto dir = fixtures_dir() / "single_file";
  const auto cases = io::read_json_file(dir / "reference_sdxl.json")["cases"];
  TempDir tmp;
  const auto converted = tmp / "converted";
  const auto r = run_cli("convert --model " + shell_quote((dir / "sdxl_base.safetensors").string()) +
                         " --output " + shell_quote(converted.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int checked = 0;
  for (const auto& c : cases) {
    if (c["model"] != "sdxl_base") continue;  // the refiner's case is img2img
    SCOPED_TRACE(c.dump());
    const auto from_file = txt2img(dir / "sdxl_base.safetensors", case_flags(c, dir), tmp / "file.png");
    expect_reference(from_file, dir / c["image"].get<std::string>());
    const auto from_folder = txt2img(converted, case_flags(c, dir), tmp / "folder.png");
    EXPECT_EQ(from_folder.rgb8, from_file.rgb8);
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

fs::path single_dir() {
  return fixtures_dir() / "single_file";
}

nlohmann::json single_case(const std::string& model) {
  const auto cases = io::read_json_file(single_dir() / "reference.json")["cases"];
  EXPECT_EQ(cases.size(), 2u);
  for (const auto& c : cases)
    if (c["model"] == model) return c;
  ADD_FAILURE() << "no reference case for " << model;
  return {};
}

// sd1.{safetensors,ckpt} and sd2.{safetensors,ckpt} (v-prediction from sd2.yaml), as files.
TEST(CliGoldenSingleFile, CheckpointsMatchDiffusers) {
  TempDir tmp;
  for (const char* name : {"sd1", "sd2"}) {
    const auto c = single_case(name);
    for (const char* ext : {".safetensors", ".ckpt"}) {
      SCOPED_TRACE(std::string(name) + ext);
      const auto out = tmp / (std::string(name) + ext + ".png");
      const auto got = txt2img(single_dir() / (std::string(name) + ext), case_flags(c, single_dir()), out);
      expect_reference(got, single_dir() / c["image"].get<std::string>());
      expect_parameters(got, c);
    }
  }
}

// An SD 2.x file without its .yaml needs --prediction v_prediction; without it (epsilon) the image differs.
TEST(CliGoldenSingleFile, PredictionFlag) {
  TempDir tmp;
  const auto c = single_case("sd2");
  const auto plain = tmp / "plain.safetensors";
  fs::copy_file(single_dir() / "sd2.safetensors", plain);
  const auto want = single_dir() / c["image"].get<std::string>();
  expect_reference(txt2img(plain, case_flags(c, single_dir()) + " --prediction v_prediction", tmp / "v.png"),
                   want);
  const auto eps = txt2img(plain, case_flags(c, single_dir()) + " --prediction epsilon", tmp / "eps.png");
  EXPECT_GT(compare(eps, io::read_png_rgb8(want)).max_diff, 3);
  // The flag wins over the sidecar .yaml.
  const auto yaml_eps = txt2img(single_dir() / "sd2.safetensors",
                                case_flags(c, single_dir()) + " --prediction epsilon", tmp / "yaml_eps.png");
  EXPECT_EQ(yaml_eps.rgb8, eps.rgb8);
}

// --vae swaps in a VAE file: the same VAE in the original layout gives diffusers' image, a changed one does
// not.
TEST(CliGoldenSingleFile, VaeFlag) {
  TempDir tmp;
  const auto c = single_case("sd1");
  const auto want = single_dir() / c["image"].get<std::string>();
  const auto vae = single_dir() / "sd1_vae_ldm.safetensors";
  const auto flags = case_flags(c, single_dir());
  expect_reference(txt2img(single_dir() / "sd1.safetensors", flags + " --vae " + shell_quote(vae.string()),
                           tmp / "vae.png"),
                   want);
  // The same VAE with its decoder's output bias shifted: the image is brighter everywhere.
  const auto store = io::WeightStore::from_file(vae);
  std::map<std::string, Tensor> tensors;
  bool shifted = false;
  for (const auto& n : store.names()) {
    Tensor t = store.load(n);
    if (n.ends_with("conv_out.bias") && n.find("decoder") != std::string::npos) {
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] += 0.5f;
      shifted = true;
    }
    tensors.emplace(n, t.to(testing::stored_dtype(store.info(n).dtype)));
  }
  ASSERT_TRUE(shifted);
  const auto brighter = tmp / "brighter_vae.safetensors";
  io::write_safetensors(brighter, tensors);
  const auto got = txt2img(single_dir() / "sd1.safetensors",
                           flags + " --vae " + shell_quote(brighter.string()), tmp / "brighter.png");
  EXPECT_GT(compare(got, io::read_png_rgb8(want)).max_diff, 3);
}

// `convert` of a .safetensors and of a .ckpt, then txt2img from the folder; `convert --prediction` of an
// SD 2.x file without its .yaml.
TEST(CliGoldenSingleFile, ConvertThenTxt2Img) {
  TempDir tmp;
  const auto plain = tmp / "plain.safetensors";
  fs::copy_file(single_dir() / "sd2.safetensors", plain);
  struct Conversion {
    fs::path file;
    std::string extra, model;
  };
  const Conversion conversions[] = {{single_dir() / "sd1.safetensors", "", "sd1"},
                                    {single_dir() / "sd1.ckpt", "", "sd1"},
                                    {single_dir() / "sd2.ckpt", "", "sd2"},
                                    {plain, " --prediction v_prediction", "sd2"}};
  int index = 0;
  for (const auto& conv : conversions) {
    SCOPED_TRACE(conv.file.string() + conv.extra);
    const auto folder = tmp / ("converted" + std::to_string(index++));
    const auto r = run_cli("convert --model " + shell_quote(conv.file.string()) + " --output " +
                           shell_quote(folder.string()) + conv.extra);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto c = single_case(conv.model);
    expect_reference(txt2img(folder, case_flags(c, single_dir()), folder.string() + ".png"),
                     single_dir() / c["image"].get<std::string>());
  }
  // Without --prediction the plain SD 2.x file converts as epsilon: the folder says so.
  const auto eps = tmp / "converted_eps";
  ASSERT_EQ(
      run_cli("convert --model " + shell_quote(plain.string()) + " --output " + shell_quote(eps.string()))
          .exit_code,
      0);
  EXPECT_EQ(io::read_json_file(eps / "scheduler" / "scheduler_config.json")["prediction_type"], "epsilon");
  EXPECT_EQ(io::read_json_file(tmp / "converted3" / "scheduler" / "scheduler_config.json")["prediction_type"],
            "v_prediction");
}

// ---- each option's bad value is reported against that option (so that options taking the same kind of
// value, e.g. --rng and --device, cannot be swapped unnoticed)

TEST(CliGoldenOptions, BadValuesNameTheirOption) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const std::string base = "txt2img --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) +
                           " --prompt x --steps 2 --output " + shell_quote(out.string());
  const struct {
    std::string flag, needle;
  } bad[] = {{"--rng mt19937", "rng"},
             {"--device tpu", "device"},
             {"--scheduler lms", "scheduler"},
             {"--prediction x0", "x0"},
             {"--width 100", "width"},
             {"--height 100", "height"},
             {"--steps 0", "steps"},
             {"--cfg-scale nan", "cfg"},
             {"--vae /nonexistent/vae.safetensors", "/nonexistent/vae.safetensors"},
             {"--init-noise /nonexistent/noise.npy", "/nonexistent/noise.npy"}};
  for (const auto& b : bad) {
    const auto r = run_cli(base + " " + b.flag);
    EXPECT_NE(r.exit_code, 0) << b.flag;
    EXPECT_NE(r.err.find(b.needle), std::string::npos) << b.flag << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << b.flag;
  }
}

// SDXL's options: size conditioning that is not a pair of positive integers, a refiner switch outside (0, 1),
// a refiner given as the base, an SD 1.x model as the refiner or as the base of one: one error line naming
// the option or the model, non-zero exit, no output.
TEST(CliGoldenOptions, SdxlBadValuesNameTheirOption) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const auto model = [](const char* name) { return shell_quote((fixtures_dir() / name).string()); };
  const std::string sdxl =
      "txt2img --model " + model("tiny-sdxl") + " --prompt x --steps 2 --width 64 --height 64";
  const struct {
    std::string args, needle;
  } bad[] = {
      {sdxl + " --original-size 0,64", "--original-size"},
      {sdxl + " --original-size 64", "--original-size"},
      {sdxl + " --target-size 64,1.5", "--target-size"},
      {sdxl + " --crop-top-left -8,0", "--crop-top-left"},
      {sdxl + " --target-size 64,99999", "--target-size"},
      {sdxl + " --refiner " + model("tiny-sdxl-refiner") + " --refiner-switch 1.5", "--refiner-switch"},
      {sdxl + " --refiner " + model("tiny-sd1"), "is not an SDXL model"},
      {"txt2img --model " + model("tiny-sdxl-refiner") + " --prompt x --steps 2", "is an SDXL refiner"},
      {"txt2img --model " + model("tiny-sd1") + " --prompt x --steps 2 --refiner " +
           model("tiny-sdxl-refiner"),
       "needs an SDXL base model"}};
  for (const auto& b : bad) {
    const auto r = run_cli(b.args + " --output " + shell_quote(out.string()));
    EXPECT_NE(r.exit_code, 0) << b.args;
    EXPECT_NE(r.err.find(b.needle), std::string::npos) << b.args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(out)) << b.args;
  }
}

// ---- --device cuda in every build

// Compiled in every build. Without the CUDA backend (or without a usable GPU), --device cuda is one clear
// error line naming CUDA, and nothing is written; with a GPU it runs (tests/test_cuda_* check its numbers).
TEST(CliDevice, DeviceFlagInEveryBuild) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const auto r =
      run_cli("txt2img --model " + shell_quote((fixtures_dir() / "tiny-sd1").string()) +
              " --prompt x --steps 2 --seed 1 --device cuda --output " + shell_quote(out.string()));
#if SDRT_HAVE_CUDA
  if (r.exit_code == 0) GTEST_SKIP() << "a CUDA device is present and ran it";
#endif
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(r.out.empty()) << r.out;
  size_t errors = 0;
  for (size_t pos = r.err.find("sdrt: error:"); pos != std::string::npos;
       pos = r.err.find("sdrt: error:", pos + 1))
    ++errors;
  EXPECT_EQ(errors, 1u) << r.err;
  const auto line_start = r.err.find("sdrt: error:");
  ASSERT_NE(line_start, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n', line_start), r.err.size() - 1) << "the error is the last line: " << r.err;
  const std::string line = r.err.substr(line_start);
  EXPECT_NE(line.find("CUDA"), std::string::npos) << line;
#if !SDRT_HAVE_CUDA
  // ErrorKind::kUnsupported: the build, not the input, is what is missing.
  EXPECT_TRUE(line.find("unsupported") != std::string::npos ||
              line.find("without the CUDA backend") != std::string::npos)
      << line;
#endif
}

// On a GPU: the CLI's --device cuda on the tiny SD 1.x / 2.x folders (every case) and a single file, against
// diffusers. fp16 UNet and VAE: within 2 levels in >= 99% of values (as tests/test_cuda_models.cpp), and a
// maximum-difference bound. Skips without the CUDA backend or a usable GPU (CliDevice covers that path).
TEST(CliGoldenCuda, DeviceCudaMatchesDiffusers) {
#if SDRT_HAVE_CUDA
  if (!cuda::device_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda::device_description();
#else
  GTEST_SKIP() << "built without the CUDA backend";
#endif
  constexpr int kMaxDiff = 24;  // fp16 outliers; the printed worst case shows the margin
  TempDir tmp;
  const auto check = [&](const fs::path& model, const nlohmann::json& c, const fs::path& ref,
                         const fs::path& want_png, const std::string& label) {
    SCOPED_TRACE(label + " " + c.dump());
    const auto got = txt2img(model, case_flags(c, ref, "cuda"), tmp / (label + ".png"));
    const auto want = io::read_png_rgb8(want_png);
    ASSERT_EQ(got.rgb8.size(), want.rgb8.size());
    size_t within_two = 0;
    int worst = 0;
    for (size_t i = 0; i < got.rgb8.size(); ++i) {
      const int d = std::abs(int{got.rgb8[i]} - int{want.rgb8[i]});
      within_two += d <= 2;
      worst = std::max(worst, d);
    }
    const double fraction = static_cast<double>(within_two) / static_cast<double>(got.rgb8.size());
    std::printf("[ cli cuda  ] %s: %.4f within 2 levels, max %d\n", label.c_str(), fraction, worst);
    EXPECT_GE(fraction, 0.99);
    EXPECT_LE(worst, kMaxDiff);
  };
  int ran = 0;
  for (const char* name : {"tiny-sd1", "tiny-sd2"}) {
    const auto ref = fixtures_dir() / name / "reference";
    const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
    ASSERT_EQ(cases.size(), 10u);
    for (size_t i = 0; i < cases.size(); ++i, ++ran)
      check(fixtures_dir() / name, cases[i], ref, ref / cases[i]["image"].get<std::string>(),
            std::string(name) + "_" + std::to_string(i));
  }
  const auto c = single_case("sd2");
  check(single_dir() / "sd2.safetensors", c, single_dir(), single_dir() / c["image"].get<std::string>(),
        "single_file_sd2");
  EXPECT_EQ(ran + 1, 21);
}

}  // namespace
}  // namespace sdrt
