// TorchGenerator against torch.Generator("cpu") + torch.randn (tests/fixtures/schedulers/rng.json, made by
// scripts/make_scheduler_fixtures.py): bit-exact values for SD latent shapes, odd and small sizes, seeds up
// to 2^63 - 1, and consecutive calls on one generator.
#include <bit>
#include <cstdint>
#include <random>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "schedulers/torch_rng.h"
#include "test_util.h"

namespace sdrt::schedulers {
namespace {

nlohmann::json rng_fixture() {
  return io::read_json_file(testing::fixtures_dir() / "schedulers" / "rng.json");
}

std::string fnv1a64(const float* v, int64_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(v[i]);
    for (int b = 0; b < 4; ++b) {
      h ^= (bits >> (8 * b)) & 0xffU;
      h *= 0x100000001b3ULL;
    }
  }
  return fmt::format("{:016x}", h);
}

// Compares one randn call with its fixture record; returns the number of mismatching values.
int compare_call(const Tensor& t, const nlohmann::json& call) {
  const float* v = t.data<float>();
  const int64_t n = t.numel();
  int bad = 0;
  const auto check = [&](int64_t i, uint32_t want) {
    if (std::bit_cast<uint32_t>(v[i]) != want) {
      if (++bad <= 5)
        ADD_FAILURE() << "value " << i << ": got " << v[i] << ", torch " << std::bit_cast<float>(want);
    }
  };
  if (call.contains("bits")) {
    EXPECT_EQ(static_cast<int64_t>(call["bits"].size()), n);
    for (int64_t i = 0; i < n && i < static_cast<int64_t>(call["bits"].size()); ++i)
      check(i, call["bits"][static_cast<size_t>(i)].get<uint32_t>());
  } else {
    for (int64_t i = 0; i < 8; ++i) check(i, call["head"][static_cast<size_t>(i)].get<uint32_t>());
    for (int64_t i = 0; i < 8; ++i) check(n - 8 + i, call["tail"][static_cast<size_t>(i)].get<uint32_t>());
    const std::string hash = fnv1a64(v, n);
    if (hash != call["fnv1a64"].get<std::string>()) {
      ++bad;
      ADD_FAILURE() << "hash of all " << n << " values differs from torch's";
    }
  }
  return bad;
}

TEST(TorchRng, EngineIsMt19937SeededWithLow32Bits) {
  for (uint64_t seed : {0ULL, 1ULL, 42ULL, (1ULL << 32) + 5, (1ULL << 63) - 1}) {
    TorchGenerator g(seed);
    std::mt19937 ref(static_cast<uint32_t>(seed & 0xffffffffU));
    for (int i = 0; i < 2000; ++i) ASSERT_EQ(g.random(), ref()) << "seed " << seed << " draw " << i;
  }
}

TEST(TorchRng, Random64TakesTheFirstDrawAsHighWord) {
  TorchGenerator a(3), b(3);
  for (int i = 0; i < 10; ++i) {
    const uint64_t hi = b.random();
    const uint64_t lo = b.random();
    EXPECT_EQ(a.random64(), (hi << 32) | lo);
  }
}

TEST(TorchRng, RandnMatchesTorchBitForBit) {
  const nlohmann::json fx = rng_fixture();
  int cases = 0;
  for (const auto& c : fx["cases"]) {
    const uint64_t seed = c["seed"].get<uint64_t>();
    const Shape shape = c["shape"].get<Shape>();
    SCOPED_TRACE(fmt::format("seed {} shape {}", seed, shape_to_string(shape)));
    TorchGenerator g(seed);
    for (const auto& call : c["calls"]) {
      const Tensor t = g.randn(shape);
      ASSERT_EQ(t.shape(), shape);
      EXPECT_EQ(compare_call(t, call), 0);
    }
    ++cases;
  }
  EXPECT_GE(cases, 60);
}

TEST(TorchRng, CachedScalarSampleCarriesAcrossCallsOfMixedSizes) {
  const nlohmann::json seq = rng_fixture()["mixed_sequence"];
  TorchGenerator g(seq["seed"].get<uint64_t>());
  for (const auto& call : seq["calls"]) {
    const Shape shape = call["shape"].get<Shape>();
    SCOPED_TRACE("shape " + shape_to_string(shape));
    EXPECT_EQ(compare_call(g.randn(shape), call), 0);
  }
}

TEST(TorchRng, FillRandnMatchesRandn) {
  TorchGenerator a(99), b(99);
  for (int64_t n : {1, 7, 16, 40, 1000}) {
    const Tensor t = a.randn({n});
    std::vector<float> v(static_cast<size_t>(n));
    b.fill_randn(v.data(), n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(t.data<float>()[i]),
                std::bit_cast<uint32_t>(v[static_cast<size_t>(i)]));
  }
}

TEST(TorchRng, EmptyTensorDrawsNothing) {
  TorchGenerator a(5), b(5);
  EXPECT_EQ(a.randn({2, 0, 3}).numel(), 0);
  const Tensor x = a.randn({20});
  const Tensor y = b.randn({20});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(x.data<float>()[i], y.data<float>()[i]);
}

TEST(TorchRng, ValuesLookNormal) {
  TorchGenerator g(2024);
  const Tensor t = g.randn({1, 4, 128, 128});
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.data<float>()[i];
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sq += v * v;
  }
  const double mean = sum / static_cast<double>(t.numel());
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(sq / static_cast<double>(t.numel()) - mean * mean, 1.0, 0.02);
}

}  // namespace
}  // namespace sdrt::schedulers
