// SDXL on the CPU against diffusers (references by scripts/make_sdxl_fixtures.py on the tiny SDXL base and
// refiner folders): the two-encoder conditioning (penultimate hidden states side by side, the pooled
// projection, tokenizer_2's "!" padding, zeros for an absent negative prompt), the UNet with its text_time
// embedding, and whole pipelines for every scheduler, sizes, size conditioning and base + refiner. Images
// within 1 level in >= 99% of pixels and 3 anywhere; tensors within 1e-4 relative.
#include <cmath>

#include <gtest/gtest.h>

#include "io/json_file.h"
#include "io/npy.h"
#include "io/png.h"
#include "models/cpu/unet.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"
#if SDRT_HAVE_CUDA
#include "cuda_test_util.h"
#include "engines/diagnostics.h"
#include "engines/engine.h"
#include "engines/model_description.h"
#endif
#include "text/clip_tokenizer.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;

// max |a - b| / max |b| over the whole tensor.
double relative_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return INFINITY;
  const Tensor a = got.to(DType::kF32), b = want.to(DType::kF32);
  double worst = 0.0, scale = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b.data<float>()[i])));
  }
  return scale == 0.0 ? worst : worst / scale;
}

// Row `r` of a [B, ...] tensor as [1, ...].
Tensor row(const Tensor& t, int64_t r) {
  Shape shape = t.shape();
  shape[0] = 1;
  Tensor out(shape, DType::kF32);
  std::memcpy(out.data<float>(), t.data<float>() + r * out.numel(), out.nbytes());
  return out;
}

bool all_zero(const Tensor& t) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (t.data<float>()[i] != 0.0f) return false;
  return true;
}

std::vector<int32_t> ids_of(const nlohmann::json& j) {
  return j.get<std::vector<int32_t>>();
}

const std::filesystem::path kBase = "tiny-sdxl";
const std::filesystem::path kRefiner = "tiny-sdxl-refiner";

TEST(SdxlConditioning, MatchesDiffusersEncodePrompt) {
  const auto dir = fixtures_dir() / kBase;
  const auto ref = dir / "reference";
  const auto model = Model::load(dir);
  const auto tokenizer_2 = text::ClipTokenizer::from_folder(dir / "tokenizer_2");
  const auto cases = io::read_json_file(ref / "encode_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["prompt"].get<std::string>());
    const std::string prompt = c["prompt"], negative = c["negative_prompt"];
    EXPECT_EQ(model.tokenize(prompt), ids_of(c["ids"]));
    EXPECT_EQ(tokenizer_2.encode(prompt), ids_of(c["ids_2"]));  // padded with "!" (id 0)
    const auto ids = ids_of(c["ids"]);
    if (ids[ids.size() - 2] == 49407) {  // padded: a short prompt
      EXPECT_EQ(ids_of(c["ids_2"]).back(), 0);
    }
    GenerateOptions o;
    o.prompt = prompt;
    o.negative_prompt = negative;
    o.cfg_scale = 5.0;
    o.width = o.height = 64;
    const Conditioning cond = model.encode_conditioning(o);
    ASSERT_EQ(cond.context.shape(), (Shape{2, 77, 64}));
    ASSERT_EQ(cond.text_embeds.shape(), (Shape{2, 32}));
    ASSERT_EQ(cond.time_ids.shape(), (Shape{2, 6}));
    const auto read = [&](const char* key) { return io::read_npy(ref / c[key].get<std::string>()); };
    EXPECT_LE(relative_error(row(cond.context, 1), read("prompt_embeds")), 1e-4);
    EXPECT_LE(relative_error(row(cond.text_embeds, 1), read("pooled_prompt_embeds")), 1e-4);
    if (!negative.empty()) {
      EXPECT_LE(relative_error(row(cond.context, 0), read("negative_prompt_embeds")), 1e-4);
      EXPECT_LE(relative_error(row(cond.text_embeds, 0), read("negative_pooled_prompt_embeds")), 1e-4);
    } else {
      // No negative prompt: force_zeros_for_empty_prompt (diffusers' negative_prompt=None).
      EXPECT_TRUE(all_zero(row(cond.context, 0)));
      EXPECT_TRUE(all_zero(row(cond.text_embeds, 0)));
      if (c["negative_prompt_is_none"].get<bool>()) {
        EXPECT_TRUE(all_zero(read("negative_prompt_embeds")));  // what diffusers did, too
      }
    }
  }
}

class SdxlUNetGolden : public ::testing::TestWithParam<std::filesystem::path> {};

TEST_P(SdxlUNetGolden, MatchesDiffusers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto ref = dir / "reference";
  const auto unet = models::cpu::UNet::from_folder(dir / "unet");
  const auto cases = io::read_json_file(ref / "unet_cases.json")["cases"];
  ASSERT_GE(cases.size(), 1u);
  for (const auto& c : cases) {
    const auto read = [&](const char* key) { return io::read_npy(ref / c[key].get<std::string>()); };
    const Tensor add = models::text_time_add_embeds(unet.config(), read("text_embeds"), read("time_ids"));
    const Tensor out = unet.forward(read("sample"), c["timestep"].get<double>(), read("context"), add);
    EXPECT_LE(relative_error(out, read("out")), 1e-4) << c.dump();
  }
}

INSTANTIATE_TEST_SUITE_P(BaseAndRefiner, SdxlUNetGolden, ::testing::Values(kBase, kRefiner));

GenerateOptions case_options(const nlohmann::json& c) {
  // The SD fields as for every pipeline case ("" negative prompt where diffusers was given None), then
  // SDXL's.
  GenerateOptions o = testing::pipeline_case_options(c, {});
  if (c["size_conditioning_explicit"].get<bool>()) {
    o.original_height = c["original_size_hw"][0];
    o.original_width = c["original_size_hw"][1];
    o.crop_top = c["crops_coords_top_left_yx"][0];
    o.crop_left = c["crops_coords_top_left_yx"][1];
    o.target_height = c["target_size_hw"][0];
    o.target_width = c["target_size_hw"][1];
  }
  if (c.contains("aesthetic_score")) {
    o.aesthetic_score = c["aesthetic_score"];
    o.negative_aesthetic_score = c["negative_aesthetic_score"];
  }
  return o;
}

void expect_image_matches(const Image& image, const std::filesystem::path& png, int levels = 1,
                          int max_levels = 3) {
  const auto want = io::read_png_rgb8(png);
  ASSERT_EQ(image.width, want.width);
  ASSERT_EQ(image.height, want.height);
  int max_diff = 0;
  size_t within_one = 0;
  for (size_t i = 0; i < image.rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(image.rgb[i]) - static_cast<int>(want.rgb8[i]));
    max_diff = std::max(max_diff, d);
    within_one += d <= levels;
  }
  EXPECT_LE(max_diff, max_levels);
  EXPECT_GE(static_cast<double>(within_one) / static_cast<double>(image.rgb.size()), 0.99);
}

TEST(SdxlPipelineGolden, MatchesDiffusers) {
  const auto dir = fixtures_dir() / kBase;
  const auto ref = dir / "reference";
  const auto model = Model::load(dir);
  const auto refiner = Model::load(fixtures_dir() / kRefiner);
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 10u);
  int refined = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const GenerateOptions o = model.resolve(case_options(c));
    const Conditioning cond = model.encode_conditioning(o);
    // The time ids the UNet got in diffusers, row for row ([negative; prompt] with guidance).
    const auto want_ids = c["time_ids"];
    ASSERT_EQ(cond.time_ids.dim(0), static_cast<int64_t>(want_ids.size()));
    for (size_t r = 0; r < want_ids.size(); ++r)
      for (size_t k = 0; k < want_ids[r].size(); ++k)
        EXPECT_EQ(cond.time_ids.data<float>()[r * want_ids[r].size() + k], want_ids[r][k].get<float>());
    Sampling sampling = model.prepare_latents(o);
    Tensor latents;
    if (!c["refiner"].get<bool>()) {
      latents = model.denoise(sampling, cond, o.cfg_scale);
      const Image image = model.decode_latents(latents);
      EXPECT_LE(relative_error(latents, io::read_npy(ref / c["latents"].get<std::string>())), 1e-4);
      expect_image_matches(image, ref / c["image"].get<std::string>());
      continue;
    }
    ++refined;
    const double switch_at = c["refiner_denoising_start"];
    model.end_sampling_at(sampling, switch_at);
    const Tensor handoff = model.denoise(sampling, cond, o.cfg_scale);
    EXPECT_LE(relative_error(handoff, io::read_npy(ref / c["handoff_latents"].get<std::string>())), 1e-4);
    const Conditioning refiner_cond = refiner.encode_conditioning(o);
    const auto want_refiner_ids = c["refiner_time_ids"];
    for (size_t r = 0; r < want_refiner_ids.size(); ++r)
      for (size_t k = 0; k < want_refiner_ids[r].size(); ++k)
        EXPECT_EQ(refiner_cond.time_ids.data<float>()[r * 5 + k], want_refiner_ids[r][k].get<float>());
    Sampling refining = refiner.continue_sampling(std::move(sampling), o, switch_at);
    EXPECT_EQ(refining.steps(), static_cast<int>(c["refiner_timesteps"].size()));
    latents = refiner.denoise(refining, refiner_cond, o.cfg_scale);
    EXPECT_LE(relative_error(latents, io::read_npy(ref / c["latents"].get<std::string>())), 1e-4);
    const Image image = refiner.decode_latents(latents);
    expect_image_matches(image, ref / c["image"].get<std::string>());
    // The one-call form draws the same picture.
    EXPECT_EQ(model.txt2img(o, refiner, switch_at).rgb, image.rgb);
  }
  EXPECT_EQ(refined, 2);
}

TEST(SdxlErrors, RefinerAndBaseRoles) {
  const auto base = Model::load(fixtures_dir() / kBase);
  const auto refiner = Model::load(fixtures_dir() / kRefiner);
  const auto sd1 = Model::load(fixtures_dir() / "tiny-sd1");
  GenerateOptions o;
  o.prompt = "x";
  o.steps = 2;
  o.width = o.height = 64;
  const auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  EXPECT_TRUE(refiner.is_refiner());
  EXPECT_FALSE(base.is_refiner());
  expect_error([&] { refiner.txt2img(o); }, "is an SDXL refiner");
  expect_error([&] { refiner.txt2img(o, base, 0.8); }, "needs an SDXL base model");
  expect_error([&] { sd1.txt2img(o, refiner, 0.8); }, "needs an SDXL base model");
  expect_error([&] { base.txt2img(o, sd1, 0.8); }, "is not an SDXL model");
  expect_error([&] { base.txt2img(o, refiner, 1.5); }, "refiner switch 1.5");
  // An SDXL model needs its pooled embeddings and time ids, not just a context.
  Sampling s = base.prepare_latents(o);
  expect_error([&] { base.denoise(s, base.encode_prompts(o), 5.0); }, "time ids");
  auto bad = o;
  bad.original_width = -64;
  expect_error([&] { base.resolve(bad); }, "original_width -64");
}

#if SDRT_HAVE_CUDA

// The fp16 CUDA engine on the same cases: within 2 levels in >= 99% of pixels (the fp16 bar; the maximum is
// bounded loosely, as fp16 rounding can move a few pixels of a tiny random model further).
TEST(SdxlCuda, PipelineMatchesDiffusers) {
  SDRT_REQUIRE_CUDA();
  const auto dir = fixtures_dir() / kBase;
  const auto ref = dir / "reference";
  const auto model = Model::load(dir, {.device = Device::kCuda});
  const auto refiner = Model::load(fixtures_dir() / kRefiner, {.device = Device::kCuda});
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 10u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const GenerateOptions o = model.resolve(case_options(c));
    const Image image = c["refiner"].get<bool>()
                            ? model.txt2img(o, refiner, c["refiner_denoising_start"].get<double>())
                            : model.txt2img(o);
    expect_image_matches(image, ref / c["image"].get<std::string>(), 2, 24);
  }
}

// The UNet with its text_time embedding in fp16 against diffusers' fp32 output.
TEST(SdxlCuda, UNetMatchesDiffusers) {
  SDRT_REQUIRE_CUDA();
  for (const auto& name : {kBase, kRefiner}) {
    const auto dir = fixtures_dir() / name;
    const auto ref = dir / "reference";
    const auto engine = engines::create_cuda_engine(engines::describe_model(loaders::resolve_model(dir)));
    const auto unet = models::cpu::UNet::from_folder(dir / "unet");
    for (const auto& c : io::read_json_file(ref / "unet_cases.json")["cases"]) {
      const auto read = [&](const char* key) { return io::read_npy(ref / c[key].get<std::string>()); };
      const Tensor add = models::text_time_add_embeds(unet.config(), read("text_embeds"), read("time_ids"));
      const Tensor out = engine->diagnostics()->unet_forward(read("sample"), c["timestep"].get<double>(),
                                                             read("context"), add);
      EXPECT_LE(relative_error(out, read("out")), 1e-2) << name << " " << c.dump();
    }
  }
}

#endif

}  // namespace
}  // namespace sdrt
