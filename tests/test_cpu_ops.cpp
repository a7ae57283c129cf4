// Op-level tests in the style of ggml's test-backend-ops: every case runs an op and an independent, simple
// implementation on the same seeded random inputs and compares them by normalised mean squared error
// (NMSE = Σ(out - ref)² / Σ ref²).
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "backends/cpu/conv.h"
#include "backends/cpu/ops.h"
#include "sdrt/error.h"
#include "typed_references.h"

namespace sdrt {
namespace {

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = offset + scale * normal(rng);
  return v;
}

template <typename T>
double nmse(const std::vector<float>& out, const std::vector<T>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double err = 0.0, norm = 0.0;
  for (size_t i = 0; i < std::min(out.size(), ref.size()); ++i) {
    const double d = static_cast<double>(out[i]) - static_cast<double>(ref[i]);
    err += d * d;
    norm += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return norm > 0.0 ? err / norm : err;
}

// ---- conv2d vs conv2d_reference ---------------------------------------------------------------------------

struct ConvCase {
  std::string name;
  int64_t batch, in_channels, height, width, out_channels, kernel, stride;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  bool bias = true;

  cpu::Conv2dShape shape() const {
    cpu::Conv2dShape s;
    s.batch = batch;
    s.in_channels = in_channels;
    s.height = height;
    s.width = width;
    s.out_channels = out_channels;
    s.kernel = kernel;
    s.stride = stride;
    s.pad_top = pad_top;
    s.pad_bottom = pad_bottom;
    s.pad_left = pad_left;
    s.pad_right = pad_right;
    return s;
  }
};

std::ostream& operator<<(std::ostream& os, const ConvCase& c) {
  return os << c.name;
}

class ConvCases : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvCases, MatchesReference) {
  const ConvCase& c = GetParam();
  const cpu::Conv2dShape s = c.shape();
  const auto x = random_values(static_cast<size_t>(s.batch * s.in_channels * s.height * s.width), 1);
  // Fan-in scaled weights keep the outputs O(1), as in a trained network.
  const float w_scale = 1.0f / std::sqrt(static_cast<float>(s.in_channels * s.kernel * s.kernel));
  const auto w =
      random_values(static_cast<size_t>(s.out_channels * s.in_channels * s.kernel * s.kernel), 2, w_scale);
  const auto b = random_values(static_cast<size_t>(s.out_channels), 3, 0.1f);
  const size_t out_n = static_cast<size_t>(s.batch * s.out_channels * s.out_height() * s.out_width());
  std::vector<float> y(out_n, NAN), want(out_n, NAN);
  cpu::conv2d_reference(x.data(), w.data(), c.bias ? b.data() : nullptr, want.data(), s);
  cpu::conv2d(x.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), s);
  EXPECT_LE(nmse(y, want), 1e-9);
  // Second call: cached primitive and weights.
  std::fill(y.begin(), y.end(), NAN);
  cpu::conv2d(x.data(), w.data(), c.bias ? b.data() : nullptr, y.data(), s);
  EXPECT_LE(nmse(y, want), 1e-9);
}

// {name, batch, in, h, w, out, kernel, stride, pad top, bottom, left, right[, bias]}
INSTANTIATE_TEST_SUITE_P(
    CpuOps, ConvCases,
    ::testing::Values(ConvCase{"1x1", 1, 8, 5, 7, 16, 1, 1, 0, 0, 0, 0},
                      ConvCase{"1x1_batch2_no_bias", 2, 24, 9, 6, 8, 1, 1, 0, 0, 0, 0, false},
                      ConvCase{"3x3_rgb_in", 2, 3, 9, 11, 5, 3, 1, 1, 1, 1, 1},
                      ConvCase{"3x3_no_pad", 1, 4, 6, 6, 4, 3, 1, 0, 0, 0, 0},
                      ConvCase{"3x3_no_bias", 1, 16, 12, 10, 24, 3, 1, 1, 1, 1, 1, false},
                      ConvCase{"3x3_stride2", 1, 16, 15, 16, 24, 3, 2, 1, 1, 1, 1},
                      ConvCase{"3x3_stride2_pad_0101", 1, 16, 16, 16, 16, 3, 2, 0, 1, 0, 1},
                      ConvCase{"3x3_stride2_pad_0101_odd", 1, 8, 7, 9, 8, 3, 2, 0, 1, 0, 1},
                      ConvCase{"3x3_asymmetric_pad", 1, 8, 10, 9, 8, 3, 1, 2, 0, 1, 3},
                      ConvCase{"5x5", 1, 6, 11, 13, 7, 5, 1, 2, 2, 2, 2},
                      ConvCase{"non_square", 1, 64, 24, 40, 128, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_unet_conv_in", 1, 4, 64, 64, 320, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_unet_320", 1, 320, 64, 64, 320, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_unet_conv_out", 1, 320, 64, 64, 4, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_unet_downsample", 1, 320, 64, 64, 320, 3, 2, 1, 1, 1, 1},
                      ConvCase{"sd_unet_1280_8x8", 1, 1280, 8, 8, 1280, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_unet_shortcut_1x1", 1, 640, 32, 32, 1280, 1, 1, 0, 0, 0, 0},
                      ConvCase{"sd_vae_128_reduced", 1, 128, 128, 128, 128, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_vae_conv_out", 1, 128, 96, 64, 3, 3, 1, 1, 1, 1, 1},
                      ConvCase{"sd_vae_downsample", 1, 128, 64, 48, 128, 3, 2, 0, 1, 0, 1}),
    [](const ::testing::TestParamInfo<ConvCase>& p) { return p.param.name; });

// The cached weight layout must follow new values written at an address that already held weights (a freed
// tensor's memory reused for another layer, or weights edited in place).
TEST(CpuOps, ConvNoticesNewWeightsAtTheSameAddress) {
  cpu::Conv2dShape s;
  s.in_channels = 32, s.out_channels = 32, s.height = 40, s.width = 40;
  const auto x = random_values(32 * 40 * 40, 4);
  auto w = random_values(32 * 32 * 9, 5, 0.06f);
  std::vector<float> y(32 * 40 * 40), want(y.size());
  for (uint32_t round = 0; round < 3; ++round) {
    const auto fresh = random_values(w.size(), 10 + round, 0.06f);
    std::copy(fresh.begin(), fresh.end(), w.begin());  // same pointer, new values
    cpu::conv2d_reference(x.data(), w.data(), nullptr, want.data(), s);
    cpu::conv2d(x.data(), w.data(), nullptr, y.data(), s);
    EXPECT_LE(nmse(y, want), 1e-9) << "round " << round;
  }
}

TEST(CpuOps, ConvRejectsInvalidShapes) {
  cpu::Conv2dShape s;
  s.in_channels = 4, s.out_channels = 4, s.height = 2, s.width = 2, s.kernel = 5,
  s.pad_top = s.pad_bottom = 0;
  float dummy = 0.0f;
  EXPECT_THROW(cpu::conv2d(&dummy, &dummy, nullptr, &dummy, s), Error);
  s.kernel = 3, s.stride = 0;
  EXPECT_THROW(cpu::conv2d(&dummy, &dummy, nullptr, &dummy, s), Error);
}

// ---- group_norm vs a double-precision loop ----------------------------------------------------------------

std::vector<double> naive_group_norm(const std::vector<float>& x, const float* gamma, const float* beta,
                                     int64_t batch, int64_t channels, int64_t spatial, int64_t groups,
                                     double eps, bool silu) {
  std::vector<double> y(x.size());
  const int64_t per = channels / groups;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t begin = (b * channels + g * per) * spatial, n = per * spatial;
      double mean = 0.0, var = 0.0;
      for (int64_t i = 0; i < n; ++i) mean += x[static_cast<size_t>(begin + i)];
      mean /= static_cast<double>(n);
      for (int64_t i = 0; i < n; ++i) var += std::pow(x[static_cast<size_t>(begin + i)] - mean, 2);
      var /= static_cast<double>(n);  // biased, as torch
      for (int64_t i = 0; i < n; ++i) {
        const int64_t ch = g * per + i / spatial;
        double v = (x[static_cast<size_t>(begin + i)] - mean) / std::sqrt(var + eps);
        v = v * (gamma ? gamma[ch] : 1.0) + (beta ? beta[ch] : 0.0);
        if (silu) v = v / (1.0 + std::exp(-v));
        y[static_cast<size_t>(begin + i)] = v;
      }
    }
  }
  return y;
}

struct GroupNormCase {
  int64_t batch, channels, spatial, groups;
  float offset;  // a large common offset tests the variance computation
  bool affine;
};

TEST(CpuOps, GroupNormMatchesDoublePrecision) {
  const GroupNormCase cases[] = {{2, 64, 37, 8, 0.0f, true},       {1, 32, 3, 32, 0.0f, true},
                                 {1, 16, 100, 1, 3.0f, false},     {1, 320, 4096, 32, 0.0f, true},
                                 {1, 128, 1024, 32, 100.0f, true}, {3, 12, 25, 4, -5.0f, true}};
  for (const auto& c : cases) {
    for (bool silu : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "[" << c.batch << ", " << c.channels << ", " << c.spatial << "] groups " << c.groups
                   << " offset " << c.offset << " silu " << silu);
      const auto x = random_values(static_cast<size_t>(c.batch * c.channels * c.spatial), 7, 2.0f, c.offset);
      const auto gamma = random_values(static_cast<size_t>(c.channels), 8, 0.1f, 1.0f);
      const auto beta = random_values(static_cast<size_t>(c.channels), 9, 0.1f);
      const float* g = c.affine ? gamma.data() : nullptr;
      const float* b = c.affine ? beta.data() : nullptr;
      const auto want = naive_group_norm(x, g, b, c.batch, c.channels, c.spatial, c.groups, 1e-6, silu);
      std::vector<float> y(x.size());
      cpu::group_norm(x.data(), g, b, y.data(), c.batch, c.channels, c.spatial, c.groups, 1e-6f, silu);
      EXPECT_LE(nmse(y, want), 1e-11);
      // In place, as the VAE calls it.
      std::vector<float> inplace = x;
      cpu::group_norm(inplace.data(), g, b, inplace.data(), c.batch, c.channels, c.spatial, c.groups, 1e-6f,
                      silu);
      EXPECT_EQ(inplace, y);
    }
  }
}

// ---- upsample_nearest vs torch ----------------------------------------------------------------------------

// Source index of each output index under torch.nn.functional.interpolate(size=..., mode="nearest"), from
// tests/fixtures/typed_references.json ("upsample_nearest", made by scripts/make_typed_references.py, which
// also checks that torch's 2-D resize is these row and column indices crossed).
struct NearestCase {
  int64_t in, out;
  std::vector<int64_t> src;
};

std::vector<NearestCase> torch_nearest_cases() {
  // (in, out). 3 -> 123: torch's float scale puts output 41 on source 0 (the exact ratio would give 1).
  const std::pair<int64_t, int64_t> sizes[] = {{4, 8}, {5, 13}, {7, 3}, {6, 9}, {10, 7}, {1, 3}, {3, 123}};
  const nlohmann::json& fx = testing::typed_references().at("upsample_nearest").at("cases");
  std::vector<NearestCase> cases;
  for (const auto& [in, out] : sizes) {
    NearestCase c{in, out, {}};
    for (const auto& f : fx)
      if (f.at("in").get<int64_t>() == in && f.at("out").get<int64_t>() == out)
        c.src = f.at("src").get<std::vector<int64_t>>();
    EXPECT_EQ(c.src.size(), static_cast<size_t>(out))
        << in << " -> " << out
        << " is not in typed_references.json: add it to scripts/make_typed_references.py";
    bool valid = c.src.size() == static_cast<size_t>(out);
    for (const int64_t s : c.src) valid = valid && s >= 0 && s < in;
    EXPECT_TRUE(valid) << in << " -> " << out << ": a source index out of range";
    if (valid) cases.push_back(c);
  }
  // The 3 -> 123 case must show where torch departs from the exact ratio floor(j · in / out).
  const auto departs = [](const NearestCase& c) {
    for (int64_t j = 0; j < c.out; ++j)
      if (c.src[static_cast<size_t>(j)] != j * c.in / c.out) return true;
    return false;
  };
  EXPECT_TRUE(cases.size() == std::size(sizes) && departs(cases.back()));
  return cases;
}

TEST(CpuOps, UpsampleNearestMatchesTorch) {
  const auto cases = torch_nearest_cases();
  for (const auto& rows : cases) {
    for (const auto& cols : cases) {
      const int64_t planes = 2;
      std::vector<float> x(static_cast<size_t>(planes * rows.in * cols.in));
      for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i);
      std::vector<float> y(static_cast<size_t>(planes * rows.out * cols.out), NAN);
      cpu::upsample_nearest(x.data(), y.data(), planes, rows.in, cols.in, rows.out, cols.out);
      for (int64_t p = 0; p < planes; ++p)
        for (int64_t i = 0; i < rows.out; ++i)
          for (int64_t j = 0; j < cols.out; ++j) {
            const float want = x[static_cast<size_t>((p * rows.in + rows.src[i]) * cols.in + cols.src[j])];
            const float got = y[static_cast<size_t>((p * rows.out + i) * cols.out + j)];
            ASSERT_EQ(got, want) << rows.in << "x" << cols.in << " -> " << rows.out << "x" << cols.out
                                 << " at (" << p << ", " << i << ", " << j << ")";
          }
    }
  }
}

// ---- attention vs a double-precision loop -----------------------------------------------------------------

TEST(CpuOps, AttentionMatchesNaive) {
  struct Case {
    int64_t seq_q, seq_kv, heads, head_dim, pad;  // pad: extra floats per row (strided views)
    bool causal;
  };
  const Case cases[] = {{5, 7, 2, 8, 0, false},
                        {9, 9, 3, 16, 5, true},
                        {64, 64, 1, 512, 0, false},
                        {1, 77, 8, 40, 0, false},
                        {77, 77, 12, 64, 3, true}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "q " << c.seq_q << " kv " << c.seq_kv << " heads " << c.heads << "x"
                                      << c.head_dim << " causal " << c.causal);
    const int64_t D = c.heads * c.head_dim, stride = D + c.pad;
    const auto q = random_values(static_cast<size_t>(c.seq_q * stride), 11);
    const auto k = random_values(static_cast<size_t>(c.seq_kv * stride), 12);
    const auto v = random_values(static_cast<size_t>(c.seq_kv * stride), 13);
    std::vector<float> out(static_cast<size_t>(c.seq_q * D));
    cpu::attention({.q = q.data(),
                    .k = k.data(),
                    .v = v.data(),
                    .out = out.data(),
                    .seq_q = c.seq_q,
                    .seq_kv = c.seq_kv,
                    .heads = c.heads,
                    .head_dim = c.head_dim,
                    .q_stride = stride,
                    .k_stride = stride,
                    .v_stride = stride,
                    .out_stride = D,
                    .causal = c.causal});
    std::vector<double> want(out.size());
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int64_t i = 0; i < c.seq_q; ++i) {
        std::vector<double> p(static_cast<size_t>(c.seq_kv), 0.0);
        double mx = -INFINITY, sum = 0.0;
        const int64_t last = c.causal ? std::min(i, c.seq_kv - 1) : c.seq_kv - 1;
        for (int64_t j = 0; j <= last; ++j) {
          double dot = 0.0;
          for (int64_t d = 0; d < c.head_dim; ++d)
            dot +=
                static_cast<double>(q[i * stride + h * c.head_dim + d]) * k[j * stride + h * c.head_dim + d];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        for (int64_t j = 0; j <= last; ++j) sum += p[j] = std::exp(p[j] - mx);
        for (int64_t d = 0; d < c.head_dim; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j <= last; ++j) acc += p[j] / sum * v[j * stride + h * c.head_dim + d];
          want[i * D + h * c.head_dim + d] = acc;
        }
      }
    }
    EXPECT_LE(nmse(out, want), 1e-11);
  }
}

}  // namespace
}  // namespace sdrt
