// A1111 emphasis parsing: every case of tests/fixtures/prompt_attention_cases.json (written by
// scripts/a1111_prompt_reference.py), plus sdrt's own bounds.
#include <chrono>
#include <cmath>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sdrt/error.h"
#include "test_util.h"
#include "text/prompt_attention.h"

namespace sdrt::text {
namespace {

using Pieces = std::vector<WeightedText>;

ErrorKind error_kind_of(std::string_view prompt) {
  try {
    parse_prompt_attention(prompt);
  } catch (const Error& e) {
    return e.kind();
  }
  return ErrorKind::kInternal;  // "did not throw"
}

TEST(PromptAttention, MatchesA1111Reference) {
  const auto cases =
      nlohmann::json::parse(testing::read_file(testing::fixtures_dir() / "prompt_attention_cases.json"));
  ASSERT_GE(cases["cases"].size(), 100u);
  for (const auto& c : cases["cases"]) {
    const std::string prompt = c["prompt"];
    SCOPED_TRACE("prompt: " + prompt.substr(0, 120));
    if (c.contains("sdrt_error")) {
      EXPECT_EQ(error_kind_of(prompt), ErrorKind::kInvalidArgument);
      continue;
    }
    const Pieces got = parse_prompt_attention(prompt);
    const auto& want = c["a1111"];
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      const std::string text = want[i][0];
      const double weight = want[i][1];
      EXPECT_EQ(got[i].text, text) << "piece " << i;
      if (text == "BREAK" && weight == -1) {
        EXPECT_TRUE(got[i].is_break) << "piece " << i;
        EXPECT_EQ(got[i].weight, 1.0);
      } else {
        EXPECT_FALSE(got[i].is_break) << "piece " << i;
        EXPECT_NEAR(got[i].weight, weight, 1e-6 * std::fabs(weight)) << "piece " << i;
      }
    }
  }
}

TEST(PromptAttention, DocstringExampleIsBitExact) {
  // Merging compares weights exactly, so the multiplications must round as A1111's do.
  const Pieces got = parse_prompt_attention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).");
  ASSERT_EQ(got.size(), 9u);
  EXPECT_EQ(got[1].weight, 1.5730000000000004);
  EXPECT_EQ(got[7].weight, 1.4641000000000006);
  // 1.1 * (1 / 1.1) rounds to exactly 1.0, so A1111 merges these.
  EXPECT_EQ(parse_prompt_attention("[(a)]b"), (Pieces{{"ab", 1.0, false}}));
}

TEST(PromptAttention, Break) {
  EXPECT_EQ(parse_prompt_attention("a BREAK b"),
            (Pieces{{"a", 1.0, false}, {"BREAK", 1.0, true}, {"b", 1.0, false}}));
  EXPECT_EQ(parse_prompt_attention("a,BREAK\u3000b"),
            (Pieces{{"a,", 1.0, false}, {"BREAK", 1.0, true}, {"b", 1.0, false}}));
  EXPECT_EQ(parse_prompt_attention("aBREAK BREAKs break"), (Pieces{{"aBREAK BREAKs break", 1.0, false}}));
  // Inside brackets the marker's weight is no longer -1: A1111 encodes the word instead of breaking.
  const Pieces inside = parse_prompt_attention("(a BREAK b)");
  ASSERT_EQ(inside.size(), 3u);
  EXPECT_FALSE(inside[1].is_break);
  EXPECT_NEAR(inside[1].weight, -1.1, 1e-12);
}

TEST(PromptAttention, WeightBound) {
  EXPECT_EQ(parse_prompt_attention("(x:100)"), (Pieces{{"x", 100.0, false}}));
  EXPECT_EQ(parse_prompt_attention("(x:-100)"), (Pieces{{"x", -100.0, false}}));
  for (const char* prompt : {"(x:100.5)", "(x:-101)", "(((((((((((((((((((((((((((((((((((((((((((((((((x"}) {
    SCOPED_TRACE(prompt);
    try {
      parse_prompt_attention(prompt);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("is beyond ±100"), std::string::npos) << e.what();
    }
  }
  // "1e999" is not A1111's number syntax: literal text, closed with x1.1.
  EXPECT_EQ(parse_prompt_attention("(x:1e999)"), (Pieces{{"x:1e999", 1.1, false}}));
  EXPECT_EQ(error_kind_of("(x:" + std::string(400, '9') + ")"), ErrorKind::kInvalidArgument);  // inf
  EXPECT_EQ(error_kind_of("(x:1.2.3)"), ErrorKind::kInvalidArgument);
}

TEST(PromptAttention, DeepNestingIsFast) {
  const auto start = std::chrono::steady_clock::now();
  // 100,000 unclosed "(": 1.1^100000 is inf, beyond the bound.
  EXPECT_EQ(error_kind_of(std::string(100000, '(') + "x"), ErrorKind::kInvalidArgument);
  EXPECT_EQ(parse_prompt_attention(std::string(100000, '(')), (Pieces{{"", 1.0, false}}));
  EXPECT_EQ(parse_prompt_attention(std::string(100000, ')')),
            (Pieces{{std::string(100000, ')'), 1.0, false}}));
  // Alternating brackets keep the weight near 1, so this one succeeds.
  std::string balanced;
  for (int i = 0; i < 50000; ++i) balanced += "([";
  balanced += "x";
  for (int i = 0; i < 50000; ++i) balanced += "])";
  const Pieces got = parse_prompt_attention(balanced);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NEAR(got[0].weight, 1.0, 1e-9);
  // Text at every one of 100,000 levels would need 5e9 multiplications (A1111: quadratic): refused.
  std::string text_everywhere;
  for (int i = 0; i < 100000; ++i) text_everywhere += "([a";
  EXPECT_EQ(error_kind_of(text_everywhere), ErrorKind::kInvalidArgument);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);  // generous for sanitizer builds; quadratic would take hours
}

TEST(PromptAttention, LargePromptIsLinear) {
  std::string prompt;
  while (prompt.size() < (1u << 20)) prompt += "a (b:1.2) [c] \\(d\\) e:f BREAK ((g)) \xc3\xa9 ";
  const auto start = std::chrono::steady_clock::now();
  const Pieces got = parse_prompt_attention(prompt);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GT(got.size(), 20000u);
  EXPECT_LT(seconds, 5.0);
}

TEST(PromptAttention, InvalidUtf8PassesThrough) {
  EXPECT_EQ(parse_prompt_attention("(\xff\xc3:1.5)\xe2\x80"),
            (Pieces{{"\xff\xc3", 1.5, false}, {"\xe2\x80", 1.0, false}}));
  EXPECT_EQ(parse_prompt_attention("\xc3 BREAK\xa9"),
            (Pieces{{"\xc3", 1.0, false}, {"BREAK", 1.0, true}, {"\xa9", 1.0, false}}));
}

}  // namespace
}  // namespace sdrt::text
