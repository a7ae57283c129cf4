// Golden tests: sdrt's AutoencoderKL against diffusers (fp32) on the tiny fixture VAEs made by
// scripts/make_fixtures.py, plus the errors for damaged folders and diffusers' 8-bit postprocess.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/npy.h"
#include "models/cpu/vae.h"
#include "sdrt/error.h"
#include "test_util.h"
#include "typed_references.h"

namespace sdrt {
namespace {

using models::cpu::AutoencoderKL;
using testing::copy_fixture;
using testing::fixtures_dir;
using testing::TempDir;

// max |got - want| / max |want|
double relative_max_error(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return INFINITY;
  double err = 0.0, ref = 0.0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(want.data<float>()[i])));
  }
  return err / ref;
}

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
  testing::write_file(path, j.dump());
}

class VaeGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(VaeGolden, MatchesDiffusers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto vae = AutoencoderKL::from_folder(dir / "vae");
  const auto ref = dir / "reference";
  const auto cases = io::read_json_file(ref / "vae_cases.json")["cases"];
  ASSERT_GE(cases.size(), 2u);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    const Tensor latents = io::read_npy(ref / cases[i]["latents"].get<std::string>());
    const Tensor want_image = io::read_npy(ref / cases[i]["image"].get<std::string>());
    const Tensor want_moments = io::read_npy(ref / cases[i]["moments"].get<std::string>());

    const Tensor image = vae.decode(latents);
    const double decode_err = relative_max_error(image, want_image);
    EXPECT_LE(decode_err, 1e-4);

    // The reference encoded diffusers' own decoded image, clamped to [-1, 1].
    Tensor input = want_image.to(DType::kF32);
    for (int64_t k = 0; k < input.numel(); ++k)
      input.data<float>()[k] = std::clamp(input.data<float>()[k], -1.0f, 1.0f);
    const Tensor moments = vae.encode(input);
    const double encode_err = relative_max_error(moments, want_moments);
    EXPECT_LE(encode_err, 1e-4);
    std::printf("[ vae      ] %s case %zu %s: decode %.2e, encode %.2e (max abs error / max |ref|)\n",
                GetParam().c_str(), i, shape_to_string(latents.shape()).c_str(), decode_err, encode_err);
  }
}

INSTANTIATE_TEST_SUITE_P(Vae, VaeGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

TEST(Vae, ConfigFields) {
  const auto vae = AutoencoderKL::from_folder(fixtures_dir() / "tiny-sd1" / "vae", {.encoder = false});
  const auto& c = vae.config();
  EXPECT_EQ(c.block_out_channels, (std::vector<int64_t>{16, 16, 32, 32}));
  EXPECT_EQ(c.layers_per_block, 1);
  EXPECT_EQ(c.norm_num_groups, 8);
  EXPECT_EQ(c.latent_channels, 4);
  EXPECT_DOUBLE_EQ(c.scaling_factor, 0.18215);
  EXPECT_FALSE(c.shift_factor.has_value());
  EXPECT_TRUE(c.use_quant_conv);
  EXPECT_TRUE(c.use_post_quant_conv);
  EXPECT_EQ(c.downscale_factor(), 8);
  EXPECT_TRUE(vae.has_decoder());
  EXPECT_FALSE(vae.has_encoder());
  expect_error([&] { vae.encode(Tensor::zeros({1, 3, 16, 16})); }, ErrorKind::kInvalidArgument, {"encoder"});
}

// A batch decodes as its samples one by one.
TEST(Vae, BatchMatchesSingleSamples) {
  const auto dir = fixtures_dir() / "tiny-sd1";
  const auto vae = AutoencoderKL::from_folder(dir / "vae");
  const Tensor a = io::read_npy(dir / "reference" / "vae0_latents.npy");  // [1, 4, 8, 8]
  Tensor batch({2, 4, 8, 8}, DType::kF32);
  for (int64_t i = 0; i < a.numel(); ++i) {
    batch.data<float>()[i] = a.data<float>()[i];
    batch.data<float>()[a.numel() + i] = -0.5f * a.data<float>()[i];
  }
  Tensor b = Tensor::zeros({1, 4, 8, 8});
  for (int64_t i = 0; i < a.numel(); ++i) b.data<float>()[i] = -0.5f * a.data<float>()[i];
  const Tensor both = vae.decode(batch), first = vae.decode(a), second = vae.decode(b);
  ASSERT_EQ(both.shape(), (Shape{2, 3, 64, 64}));
  const int64_t n = first.numel();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(both.data<float>()[i], first.data<float>()[i]);
    ASSERT_EQ(both.data<float>()[n + i], second.data<float>()[i]);
  }
  const Tensor moments = vae.encode(Tensor::zeros({2, 3, 64, 40}));
  EXPECT_EQ(moments.shape(), (Shape{2, 8, 8, 5}));
}

TEST(Vae, UnknownUpBlockType) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  edit_json(dir / "config.json", [](auto& j) { j["up_block_types"][2] = "AttnUpDecoderBlock2D"; });
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kUnsupported,
               {(dir / "config.json").string(), "up_block_types", "AttnUpDecoderBlock2D"});
}

TEST(Vae, UnknownDownBlockType) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  edit_json(dir / "config.json", [](auto& j) { j["down_block_types"][0] = "AttnDownEncoderBlock2D"; });
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kUnsupported,
               {(dir / "config.json").string(), "down_block_types"});
}

TEST(Vae, MalformedConfig) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  edit_json(dir / "config.json", [](auto& j) { j["norm_num_groups"] = 5; });
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kFormat,
               {(dir / "config.json").string(), "norm_num_groups"});
  edit_json(dir / "config.json", [](auto& j) {
    j["norm_num_groups"] = 8;
    j["block_out_channels"] = {16, 32, 32};
  });
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kFormat, {"down_block_types", "3"});
  edit_json(dir / "config.json", [](auto& j) {
    j["block_out_channels"] = {16, 16, 32, 32};
    j["act_fn"] = "gelu";
  });
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kUnsupported, {"act_fn", "gelu"});
}

// config.json says 8 latent channels, the checkpoint has 4: the error names tensor, file and both shapes.
TEST(Vae, WeightShapeDisagreesWithConfig) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  edit_json(dir / "config.json", [](auto& j) { j["latent_channels"] = 8; });
  expect_error([&] { AutoencoderKL::from_folder(dir, {.encoder = false}); }, ErrorKind::kModel,
               {"decoder.conv_in.weight", (dir / "diffusion_pytorch_model.safetensors").string(),
                (dir / "config.json").string(), "[32, 4, 3, 3]", "[32, 8, 3, 3]"});
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kModel,
               {"encoder.conv_out.weight", "[8, 32, 3, 3]", "[16, 32, 3, 3]"});
}

TEST(Vae, MissingWeightsFile) {
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  std::filesystem::remove(dir / "diffusion_pytorch_model.safetensors");
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kIo,
               {dir.string(), "diffusion_pytorch_model.safetensors"});
}

TEST(Vae, MissingFolderAndConfig) {
  expect_error([] { AutoencoderKL::from_folder("/nonexistent/sdrt-vae"); }, ErrorKind::kIo,
               {"/nonexistent/sdrt-vae"});
  TempDir tmp;
  const auto dir = copy_fixture("tiny-sd1", tmp) / "vae";
  std::filesystem::remove(dir / "config.json");
  expect_error([&] { AutoencoderKL::from_folder(dir); }, ErrorKind::kIo, {(dir / "config.json").string()});
}

TEST(Vae, BadInputShapes) {
  const auto vae = AutoencoderKL::from_folder(fixtures_dir() / "tiny-sd2" / "vae");
  expect_error(
      [&] {
        vae.decode(Tensor::zeros({1, 3, 8, 8}));
      },
      ErrorKind::kInvalidArgument, {"[1, 3, 8, 8]"});
  expect_error([&] { vae.decode(Tensor::zeros({4, 8, 8})); }, ErrorKind::kInvalidArgument, {"decode"});
  expect_error([&] { vae.encode(Tensor::zeros({1, 4, 64, 64})); }, ErrorKind::kInvalidArgument, {"encode"});
  expect_error([&] { vae.encode(Tensor::zeros({1, 3, 4, 64})); }, ErrorKind::kInvalidArgument, {"too small"});
}

// diffusers' VaeImageProcessor.postprocess + numpy_to_pil. The expected byte of each input is diffusers' own,
// from tests/fixtures/typed_references.json ("postprocess", made by scripts/make_typed_references.py on the
// same [1, 3, 1, n] image built here).
TEST(Vae, ImageToRgb8MatchesDiffusersPostprocess) {
  const float inputs[] = {-0x1.f9f9fap-2f,
                          -0x1.f9f9f8p-2f,
                          -0x1.f1f1f2p-2f,
                          0x1.c1c1c4p-4f,
                          0x1.c1c1c0p-4f,
                          0x1.e1e1e2p-4f,
                          0x1.fdfdfep-1f,
                          0x1.fdfe00p-1f,
                          0x1.fdfdfcp-1f,
                          -1.0f,
                          1.0f,
                          0.0f,
                          -2.5f,
                          3.0f,
                          0.5f,
                          -0.25f,
                          0x1.ff7ceep-1f,
                          -0x1.ff7ceep-1f};
  // The first nine land exactly on k + 0.5 after · 255, where numpy rounds half to even (the fixture's
  // "tie").
  const size_t kTies = 9;
  const nlohmann::json& fx = testing::typed_references().at("postprocess").at("cases");
  std::vector<std::pair<float, int>> cases;  // input, diffusers' byte (-1: not in the fixture)
  for (size_t i = 0; i < std::size(inputs); ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(inputs[i]);
    int byte = -1;
    for (const auto& c : fx) {
      if (c.at("bits").get<uint32_t>() != bits) continue;
      byte = c.at("byte").get<int>();
      if (i < kTies) {
        EXPECT_TRUE(c.at("tie").get<bool>()) << "x = " << inputs[i];
      }
    }
    EXPECT_NE(byte, -1) << "x = " << inputs[i] << " is not in typed_references.json: add it to "
                        << "scripts/make_typed_references.py and re-run it";
    cases.emplace_back(inputs[i], byte);
  }
  const auto n = static_cast<int64_t>(cases.size());
  Tensor image({1, 3, 1, n}, DType::kF32);
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < n; ++i)
      image.data<float>()[c * n + (i + c) % n] = cases[static_cast<size_t>(i)].first;
  const auto rgb = models::image_to_rgb8(image);
  ASSERT_EQ(rgb.size(), static_cast<size_t>(3 * n));
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(rgb[static_cast<size_t>(((i + c) % n) * 3 + c)], cases[static_cast<size_t>(i)].second)
          << "x = " << cases[static_cast<size_t>(i)].first;
  EXPECT_THROW(models::image_to_rgb8(Tensor::zeros({2, 3, 4, 4})), Error);
  EXPECT_THROW(models::image_to_rgb8(Tensor::zeros({1, 4, 4, 4})), Error);
}

}  // namespace
}  // namespace sdrt
