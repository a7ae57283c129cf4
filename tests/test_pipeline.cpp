// End-to-end golden tests: sdrt's txt2img against diffusers' StableDiffusionPipeline on the tiny fixture
// models, for every scheduler, with and without negative prompts and guidance, square and non-square, seeded
// and with initial noise from a file. Images must agree within 1 level in >= 99% of pixels and 3 levels
// everywhere; the final latents (before the VAE) within 1e-4 relative.
#include <cmath>

#include <gtest/gtest.h>

#include "io/json_file.h"
#include "io/npy.h"
#include "io/png.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;

struct ImageDiff {
  int max_diff = 0;
  double within_one = 0.0;  // fraction of channel values within 1 level
};

ImageDiff compare(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  ImageDiff d;
  size_t ok = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const int diff = std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
    d.max_diff = std::max(d.max_diff, diff);
    ok += diff <= 1;
  }
  d.within_one = a.empty() ? 0.0 : static_cast<double>(ok) / static_cast<double>(a.size());
  return d;
}

class PipelineGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(PipelineGolden, MatchesDiffusers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto ref = dir / "reference";
  const auto model = Model::load(dir);
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dump());
    const GenerateOptions o = model.resolve(testing::pipeline_case_options(c, ref));
    // Stage by stage, so that the latents can be checked before the VAE.
    const Tensor context = model.encode_prompts(o);
    Sampling sampling = model.prepare_latents(o);
    const Tensor latents = model.denoise(sampling, context, o.cfg_scale);
    const Tensor want_latents = io::read_npy(ref / c["latents"].get<std::string>());
    ASSERT_EQ(latents.shape(), want_latents.shape());
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < latents.numel(); ++i) {
      worst = std::max(
          worst, static_cast<double>(std::fabs(latents.data<float>()[i] - want_latents.data<float>()[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(want_latents.data<float>()[i])));
    }
    EXPECT_LE(worst / scale, 1e-4) << "latents";

    const Image image = model.decode_latents(latents);
    const auto want = io::read_png_rgb8(ref / c["image"].get<std::string>());
    ASSERT_EQ(image.width, want.width);
    ASSERT_EQ(image.height, want.height);
    const ImageDiff d = compare(image.rgb, want.rgb8);
    EXPECT_LE(d.max_diff, 3);
    EXPECT_GE(d.within_one, 0.99);

    // The one-call API gives the same image as the stages.
    if (&c == &cases[0]) EXPECT_EQ(model.txt2img(o).rgb, image.rgb);
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, PipelineGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

// Option errors name the option at fault.
TEST(PipelineOptions, RejectsBadOptions) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  const auto expect_invalid = [&](GenerateOptions o, const std::string& needle) {
    try {
      model.resolve(o);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  GenerateOptions o;
  o.prompt = "x";
  expect_invalid(
      [&] {
        auto v = o;
        v.width = 60;
        return v;
      }(),
      "width 60");
  expect_invalid(
      [&] {
        auto v = o;
        v.height = -8;
        return v;
      }(),
      "height -8");
  expect_invalid(
      [&] {
        auto v = o;
        v.steps = 0;
        return v;
      }(),
      "steps 0");
  expect_invalid(
      [&] {
        auto v = o;
        v.scheduler = "lms";
        return v;
      }(),
      "lms");
  expect_invalid(
      [&] {
        auto v = o;
        v.karras = true;
        v.scheduler = "ddim";
        return v;
      }(),
      "karras");
  expect_invalid(
      [&] {
        auto v = o;
        v.rng = "cuda";
        return v;
      }(),
      "rng");
  expect_invalid(
      [&] {
        auto v = o;
        v.width = 64;
        v.height = 64;
        v.init_noise = Tensor({1, 4, 8, 9}, DType::kF32);
        return v;
      }(),
      "[1, 4, 8, 9]");
  const GenerateOptions resolved = model.resolve(o);
  EXPECT_EQ(resolved.width, 64);  // unet sample_size 8 × VAE factor 8
  EXPECT_EQ(resolved.height, 64);
}

TEST(PipelineOptions, GuidanceOneSkipsTheUnconditionalPass) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  GenerateOptions o;
  o.prompt = "a cat";
  o.cfg_scale = 1.0;
  EXPECT_EQ(model.encode_prompts(o).dim(0), 1);
  o.cfg_scale = 7.5;
  EXPECT_EQ(model.encode_prompts(o).dim(0), 2);
}

TEST(PipelineOptions, CallbackCancels) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  GenerateOptions o;
  o.prompt = "a cat";
  o.steps = 5;
  o.scheduler = "ddim";
  int calls = 0;
  try {
    model.txt2img(o, [&](int done, int total) {
      ++calls;
      EXPECT_EQ(total, 5);
      return done < 2;
    });
    FAIL() << "expected cancellation";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kCancelled);
  }
  EXPECT_EQ(calls, 2);
}

TEST(PipelineMetadata, ParametersTextFollowsAutomatic1111) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  GenerateOptions o;
  o.prompt = "a red circle";
  o.negative_prompt = "blurry";
  o.steps = 20;
  o.seed = 42;
  o.scheduler = "euler_a";
  o = model.resolve(o);
  EXPECT_EQ(model.parameters_text(o),
            "a red circle\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 42, "
            "Size: 64x64, Model: tiny-sd1");
  o.negative_prompt.clear();
  o.scheduler = "dpmpp_2m";
  o.karras = true;
  EXPECT_EQ(model.parameters_text(o),
            "a red circle\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 64x64, "
            "Model: tiny-sd1");
}

}  // namespace
}  // namespace sdrt
