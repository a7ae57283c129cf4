// Golden tests: one UNet2DConditionModel call on the tiny fixture models against diffusers (fp32, CPU),
// square and non-square latents (the non-square ones exercise the odd-size upsampling path).
#include <cmath>

#include <gtest/gtest.h>

#include "io/json_file.h"
#include "io/npy.h"
#include "models/cpu/unet.h"
#include "sdrt/error.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;

// max |a - b| / max |b|
double relative_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double worst = 0.0, scale = 0.0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b.data<float>()[i])));
  }
  return worst / std::max(scale, 1e-12);
}

class UNetGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetGolden, MatchesDiffusers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto unet = models::cpu::UNet::from_folder(dir / "unet");
  const auto cases = io::read_json_file(dir / "reference" / "unet_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    const Tensor sample = io::read_npy(dir / "reference" / c["sample"].get<std::string>());
    const Tensor context = io::read_npy(dir / "reference" / c["context"].get<std::string>());
    const Tensor want = io::read_npy(dir / "reference" / c["out"].get<std::string>());
    const Tensor got = unet.forward(sample, c["timestep"].get<double>(), context);
    const double err = relative_error(got, want);
    EXPECT_LE(err, 1e-4) << "sample " << shape_to_string(sample.shape()) << " t=" << c["timestep"];
    RecordProperty("relative_error_" + c["out"].get<std::string>(), std::to_string(err));
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, UNetGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

TEST(UNetConfig, ReadsDiffusersHeadConvention) {
  const auto sd1 = models::UNetConfig::from_json_file(fixtures_dir() / "tiny-sd1" / "unet" / "config.json");
  EXPECT_EQ(sd1.num_attention_heads, (std::vector<int64_t>{4, 4, 4}));  // "attention_head_dim": 4 = heads
  EXPECT_FALSE(sd1.use_linear_projection);
  const auto sd2 = models::UNetConfig::from_json_file(fixtures_dir() / "tiny-sd2" / "unet" / "config.json");
  EXPECT_EQ(sd2.num_attention_heads, (std::vector<int64_t>{2, 4, 4}));
  EXPECT_TRUE(sd2.use_linear_projection);
  EXPECT_TRUE(sd2.upcast_attention);
}

TEST(UNetConfig, RefusesUnsupportedVariants) {
  testing::TempDir tmp;
  auto config = io::read_json_file(fixtures_dir() / "tiny-sd1" / "unet" / "config.json");
  config["addition_embed_type"] = "image";  // SDXL's "text_time" is supported; Kandinsky's are not
  testing::write_file(tmp / "config.json", config.dump());
  try {
    models::UNetConfig::from_json_file(tmp / "config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("addition_embed_type"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
  }
}

TEST(UNetConfig, TextTimeEmbeddingNeedsItsWidths) {
  testing::TempDir tmp;
  auto config = io::read_json_file(fixtures_dir() / "tiny-sd1" / "unet" / "config.json");
  config["addition_embed_type"] = "text_time";  // without addition_time_embed_dim
  testing::write_file(tmp / "config.json", config.dump());
  try {
    models::UNetConfig::from_json_file(tmp / "config.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("addition_time_embed_dim"), std::string::npos) << e.what();
  }
}

TEST(UNetLoading, WeightShapeDisagreesWithConfig) {
  testing::TempDir tmp;
  const auto dir = testing::copy_fixture("tiny-sd1", tmp);
  auto config = io::read_json_file(dir / "unet" / "config.json");
  config["cross_attention_dim"] = 48;
  testing::write_file(dir / "unet" / "config.json", config.dump());
  try {
    models::cpu::UNet::from_folder(dir / "unet");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kModel);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("attn2.to_k.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[32, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[32, 48]"), std::string::npos) << msg;
  }
}

TEST(TimestepEmbedding, MatchesClosedForm) {
  // dim 8, flip: [cos(t·f0..f3), sin(t·f0..f3)] with f_i = exp(-ln(10000)·i/4)
  const auto e = models::timestep_embedding(10.0, 8, true, 0.0);
  for (int i = 0; i < 4; ++i) {
    const double f = std::exp(-std::log(10000.0) * i / 4.0);
    EXPECT_NEAR(e[i], std::cos(10.0 * f), 1e-5);
    EXPECT_NEAR(e[4 + i], std::sin(10.0 * f), 1e-5);
  }
}

}  // namespace
}  // namespace sdrt
