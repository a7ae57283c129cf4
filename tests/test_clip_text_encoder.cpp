// Golden tests: sdrt's CLIP text encoder against transformers' CLIPTextModel (fp32) on the tiny fixture
// models made by scripts/make_fixtures.py.
#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/npy.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float worst = 0.0f;
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i)
    worst = std::max(worst, std::fabs(pa[i] - pb[i]));
  return worst;
}

class ClipTextEncoderGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(ClipTextEncoderGolden, MatchesTransformers) {
  const auto dir = fixtures_dir() / GetParam();
  const auto model = Model::load(dir);
  const auto cases = io::read_json_file(dir / "reference" / "text_encoder_cases.json");
  ASSERT_GE(cases["cases"].size(), 3u);
  for (const auto& c : cases["cases"]) {
    const std::string prompt = c["prompt"];
    SCOPED_TRACE("prompt: \"" + prompt + "\"");
    const auto ids = model.tokenize(prompt);
    ASSERT_EQ(ids, c["ids"].get<std::vector<int32_t>>());

    const auto enc = model.encode_prompt_full(prompt);
    const Tensor want_last = io::read_npy(dir / "reference" / c["last_hidden_state"].get<std::string>());
    EXPECT_LE(max_abs_diff(enc.last_hidden_state, want_last), 1e-4f);

    const Tensor want_pooled = io::read_npy(dir / "reference" / c["pooler_output"].get<std::string>());
    EXPECT_LE(max_abs_diff(enc.pooler_output, want_pooled), 1e-4f);

    // hidden_states: [layers + 1, 1, 77, hidden] in one file
    const Tensor want_hidden = io::read_npy(dir / "reference" / c["hidden_states"].get<std::string>());
    ASSERT_EQ(static_cast<int64_t>(enc.hidden_states.size()), want_hidden.dim(0));
    const int64_t per_layer = want_hidden.numel() / want_hidden.dim(0);
    for (size_t layer = 0; layer < enc.hidden_states.size(); ++layer) {
      const float* want = want_hidden.data<float>() + static_cast<int64_t>(layer) * per_layer;
      const Tensor got = enc.hidden_states[layer];
      ASSERT_EQ(got.numel(), per_layer);
      float worst = 0.0f;
      for (int64_t i = 0; i < per_layer; ++i)
        worst = std::max(worst, std::fabs(got.data<float>()[i] - want[i]));
      EXPECT_LE(worst, 1e-4f) << "hidden state " << layer;
    }

    // encode_prompt is the last hidden state alone.
    EXPECT_EQ(max_abs_diff(model.encode_prompt(prompt), enc.last_hidden_state), 0.0f);
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, ClipTextEncoderGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

// The golden test would pass vacuously if the outputs were near zero; make sure they carry signal.
TEST(ClipTextEncoder, OutputsDependOnThePrompt) {
  const auto model = Model::load(fixtures_dir() / "tiny-sd1");
  const Tensor a = model.encode_prompt("a red circle");
  const Tensor b = model.encode_prompt("a blue square");
  EXPECT_GT(max_abs_diff(a, b), 0.1f);
}

}  // namespace
}  // namespace sdrt
