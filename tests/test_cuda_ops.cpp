// Op-level tests of the CUDA norm and elementwise kernels against the CPU reference ops: every case runs the
// kernel on seeded random fp16 inputs and the reference in fp32 on exactly the same (fp16-rounded) values.
// Shapes: the real SD 1.5 UNet / VAE / CLIP ones plus tiny and odd ones that take the generic code paths
// (narrow vectors, misaligned pointers, tails, channel counts without a fixed-channel block layout).
// Every test skips when no CUDA device is usable.
#if SDRT_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/ops.h"
#include "backends/cuda/check.h"
#include "backends/cuda/elementwise.cuh"
#include "backends/cuda/norm.cuh"
#include "cuda_test_util.h"
#include "models/unet.h"

namespace sdrt {
namespace {

namespace tc = sdrt::testing::cuda;
using sdrt::cuda::DeviceBuffer;

// [batch, spatial, channels] <-> [batch, channels, spatial]
std::vector<float> nhwc_to_nchw(const std::vector<float>& x, int64_t batch, int64_t spatial,
                                int64_t channels) {
  std::vector<float> y(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t s = 0; s < spatial; ++s)
      for (int64_t c = 0; c < channels; ++c)
        y[(b * channels + c) * spatial + s] = x[(b * spatial + s) * channels + c];
  return y;
}

std::vector<float> nchw_to_nhwc(const std::vector<float>& x, int64_t batch, int64_t spatial,
                                int64_t channels) {
  std::vector<float> y(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t s = 0; s < spatial; ++s)
        y[(b * spatial + s) * channels + c] = x[(b * channels + c) * spatial + s];
  return y;
}

// Activations with per-channel mean and spread, so that every group and row has its own statistics
// (a kernel reducing over the wrong channels or rows gets visibly different numbers).
std::vector<float> channel_data(int64_t rows, int64_t channels, uint32_t seed, float scale, float mean_spread,
                                float offset) {
  const auto mu = tc::random_uniform(static_cast<size_t>(channels), seed + 1, -mean_spread, mean_spread);
  const auto sigma = tc::random_uniform(static_cast<size_t>(channels), seed + 2, 0.5f, 1.5f);
  auto x = tc::random_normal(static_cast<size_t>(rows * channels), seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < channels; ++c) {
      float& v = x[static_cast<size_t>(r * channels + c)];
      v = offset + mu[static_cast<size_t>(c)] + scale * sigma[static_cast<size_t>(c)] * v;
    }
  return tc::round_to_half(x);
}

DeviceBuffer zeroed_scratch(size_t bytes) {
  DeviceBuffer buf(bytes);
  sdrt::cuda::check(cudaMemset(buf.data(), 0, bytes), "cudaMemset");
  return buf;
}

// ---- GroupNorm
// --------------------------------------------------------------------------------------------------

struct GroupNormCase {
  const char* name;
  int64_t batch, spatial, channels, groups;
  float eps;
  bool silu, pre_bias;
  float scale = 1.0f, mean_spread = 1.0f, offset = 0.0f;
  int64_t misalign = 0;  // x and y start this many halves into their buffers
  bool in_place = false;
  int64_t pre_bias_pad = 0;  // pre_bias rows are channels + this apart (one projection for many norms)
};

TEST(CudaOps, GroupNorm) {
  SDRT_REQUIRE_CUDA();
  const GroupNormCase cases[] = {
      // SD 1.5 UNet ResNet norms (eps 1e-5, SiLU, the time embedding as pre_bias for norm2)
      {"unet_down0", 2, 4096, 320, 32, 1e-5f, true, false},
      {"unet_down0_temb", 2, 4096, 320, 32, 1e-5f, true, true},
      {"unet_down1", 2, 1024, 640, 32, 1e-5f, true, true},
      {"unet_down2", 2, 256, 1280, 32, 1e-5f, true, false},
      {"unet_mid", 2, 64, 1280, 32, 1e-5f, true, true},
      {"unet_up_concat_640", 2, 4096, 640, 32, 1e-5f, true, false},
      {"unet_up_concat_960", 2, 4096, 960, 32, 1e-5f, true, false},
      {"unet_up_concat_1920", 2, 1024, 1920, 32, 1e-5f, true, false},
      {"unet_up_concat_2560", 2, 256, 2560, 32, 1e-5f, true, false},
      {"unet_up_concat_2560_8x8", 2, 64, 2560, 32, 1e-5f, true, false},
      // Transformer input norm: eps 1e-6, no SiLU
      {"unet_transformer_norm", 2, 4096, 320, 32, 1e-6f, false, false},
      // VAE (eps 1e-6), batch 1
      {"vae_mid_64x64x512", 1, 64 * 64, 512, 32, 1e-6f, true, false},
      {"vae_up_512x512x128", 1, 512 * 512, 128, 32, 1e-6f, true, false},
      // numerics: a large common offset (naive E[x²] − E[x]² in fp32 fails), a tiny variance next to eps
      // (dropping or misplacing eps fails), a large eps
      {"large_mean", 2, 1024, 320, 32, 1e-5f, false, true, 1.0f, 0.5f, 300.0f},
      {"tiny_variance", 2, 1024, 320, 32, 1e-5f, false, false, 0.004f, 0.0f, 0.0f},
      {"large_eps", 2, 256, 640, 32, 0.5f, true, true},
      // tiny test models and odd shapes
      {"tiny_c32_g32", 2, 5 * 8, 32, 32, 1e-5f, true, true},
      {"tiny_c32_g16", 2, 5 * 8, 32, 16, 1e-5f, false, true},
      {"tiny_c64_g32", 1, 7, 64, 32, 1e-6f, true, false},
      {"tiny_c64_g4", 3, 9 * 9, 64, 4, 1e-5f, false, false},
      {"one_row", 2, 1, 320, 32, 1e-5f, true, true},
      {"c6_g3_v2", 3, 5, 6, 3, 1e-5f, true, true},
      {"c74_generic_path", 2, 33, 74, 2, 1e-5f, true, true},
      {"c3_g1", 2, 17, 3, 1, 1e-5f, false, false},
      // misaligned activations (4-byte and 2-byte aligned: half2 and scalar fixed-channel paths)
      {"misaligned_by_2", 2, 256, 320, 32, 1e-5f, true, true, 1.0f, 1.0f, 0.0f, 2},
      {"misaligned_by_1", 2, 256, 320, 32, 1e-5f, true, true, 1.0f, 1.0f, 0.0f, 1},
      // rows that do not split evenly over a cluster's blocks
      {"rows_not_multiple", 2, 37 * 29, 320, 32, 1e-5f, true, true},
      // the time embedding as a slice of one wide projection: pre_bias rows 20160 apart
      {"pre_bias_strided", 2, 1024, 640, 32, 1e-5f, true, true, 1.0f, 1.0f, 0.0f, 0, false, 20160 - 640},
      // y aliases x
      {"in_place", 2, 1024, 640, 32, 1e-5f, true, true, 1.0f, 1.0f, 0.0f, 0, true},
  };
  uint32_t seed = 100;
  for (const auto& tcase : cases) {
    SCOPED_TRACE(tcase.name);
    seed += 10;
    const int64_t B = tcase.batch, S = tcase.spatial, C = tcase.channels;
    const size_t n = static_cast<size_t>(B * S * C);
    const auto x = channel_data(B * S, C, seed, tcase.scale, tcase.mean_spread, tcase.offset);
    const auto gamma = tc::random_normal(static_cast<size_t>(C), seed + 3, 0.2f, 1.0f);
    const auto beta = tc::random_normal(static_cast<size_t>(C), seed + 4, 0.2f);
    auto pre_bias = tc::random_normal(static_cast<size_t>(B * C), seed + 5);
    tc::round_to_half(pre_bias);

    // Reference: (x + pre_bias) in NCHW through cpu::group_norm.
    std::vector<float> xin = x;
    if (tcase.pre_bias)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s)
          for (int64_t c = 0; c < C; ++c)
            xin[static_cast<size_t>((b * S + s) * C + c)] += pre_bias[b * C + c];
    auto xin_nchw = nhwc_to_nchw(xin, B, S, C);
    std::vector<float> ref_nchw(n);
    cpu::group_norm(xin_nchw.data(), gamma.data(), beta.data(), ref_nchw.data(), B, C, S, tcase.groups,
                    tcase.eps, tcase.silu);
    const auto ref = nchw_to_nhwc(ref_nchw, B, S, C);

    // Both kernels: the single-pass cluster kernel (where the shape and GPU allow) and the two-pass one.
    for (const bool single_pass : {true, false}) {
      SCOPED_TRACE(single_pass ? "single pass" : "two pass");
      const int64_t off = tcase.misalign;
      std::vector<float> x_padded(n + static_cast<size_t>(off), 0.0f);
      std::copy(x.begin(), x.end(), x_padded.begin() + off);
      DeviceBuffer d_x = tc::to_device_half(x_padded);
      DeviceBuffer d_y(sizeof(__half) * (n + static_cast<size_t>(off)));
      DeviceBuffer d_gamma = tc::to_device(gamma), d_beta = tc::to_device(beta);
      // pre_bias with rows pre_bias_pad apart; the gaps hold values that must not be read.
      const int64_t pb_stride = C + tcase.pre_bias_pad;
      std::vector<float> pb_rows(static_cast<size_t>(B * pb_stride), 1000.0f);
      for (int64_t b = 0; b < B; ++b)
        std::copy_n(pre_bias.begin() + b * C, C, pb_rows.begin() + b * pb_stride);
      DeviceBuffer d_pb = tc::to_device_half(pb_rows);
      DeviceBuffer scratch = zeroed_scratch(sdrt::cuda::group_norm_scratch_bytes(B, S, C, tcase.groups));

      sdrt::cuda::GroupNormArgs args{};
      args.x = d_x.as<__half>() + off;
      args.y = tcase.in_place ? d_x.as<__half>() + off : d_y.as<__half>() + off;
      args.gamma = d_gamma.as<float>();
      args.beta = d_beta.as<float>();
      args.pre_bias = tcase.pre_bias ? d_pb.as<__half>() : nullptr;
      args.batch = B;
      args.spatial = S;
      args.channels = C;
      args.groups = tcase.groups;
      args.pre_bias_stride = tcase.pre_bias_pad ? pb_stride : 0;
      args.eps = tcase.eps;
      args.silu = tcase.silu;
      args.scratch = scratch.data();
      args.single_pass = single_pass;
      // On sm_90+, every aligned shape whose rows fit 8 blocks' 96 KiB tiles takes one pass.
      const int64_t slice = std::lcm<int64_t>(C / tcase.groups, 8);
      const bool fits = (S + 7) / 8 * slice * 2 <= 96 * 1024;
      if (single_pass && off == 0 && C % 8 == 0 && tc::context().sm_version() >= 90 && fits) {
        EXPECT_TRUE(sdrt::cuda::group_norm_single_pass(args))
            << "the single-pass kernel should take this shape";
      }
      ASSERT_NO_THROW(sdrt::cuda::launch_group_norm(args, tc::stream()));
      const DeviceBuffer& out = tcase.in_place ? d_x : d_y;
      auto got_padded = tc::from_device_half(out, n + static_cast<size_t>(off));
      std::vector<float> got(got_padded.begin() + off, got_padded.end());
      EXPECT_TRUE(tc::expect_close(got, ref, {1e-6, 2e-3, 2e-3}));

      // A second launch (on the same scratch, whose counters must have been re-zeroed) gives the same bits.
      if (!tcase.in_place) {
        ASSERT_NO_THROW(sdrt::cuda::launch_group_norm(args, tc::stream()));
        auto again = tc::from_device_half(d_y, n + static_cast<size_t>(off));
        EXPECT_EQ(0, std::memcmp(again.data(), got_padded.data(), again.size() * sizeof(float)))
            << "second launch differs";
      }
    }
  }
}

// Shapes with different shared-memory needs in turn (large, small, large again): a launch must not depend on
// the order in which shapes were first seen.
TEST(CudaOps, GroupNormShapesInAnyOrder) {
  SDRT_REQUIRE_CUDA();
  struct Shape {
    int64_t spatial, channels;
  };
  const Shape shapes[] = {{4096, 960}, {64, 320}, {4096, 960}, {1024, 640}, {64, 320}};
  // Each launch is compared with the CPU reference, and a shape seen again gives the same bits as the first
  // time (the launch must not depend on what ran before).
  std::map<std::pair<int64_t, int64_t>, std::vector<float>> first_result;
  int checked = 0;
  for (const auto& sh : shapes) {
    SCOPED_TRACE(sh.channels);
    const int64_t B = 2, S = sh.spatial, C = sh.channels, groups = 32;
    const size_t n = static_cast<size_t>(B * S * C);
    const auto x = channel_data(B * S, C, 7, 1.0f, 1.0f, 0.0f);
    const auto gamma = tc::random_normal(static_cast<size_t>(C), 8, 0.2f, 1.0f);
    const auto beta = tc::random_normal(static_cast<size_t>(C), 9, 0.2f);
    auto x_nchw = nhwc_to_nchw(x, B, S, C);
    std::vector<float> ref_nchw(n);
    cpu::group_norm(x_nchw.data(), gamma.data(), beta.data(), ref_nchw.data(), B, C, S, groups, 1e-5f, true);
    const auto ref = nchw_to_nhwc(ref_nchw, B, S, C);

    DeviceBuffer d_x = tc::to_device_half(x);
    DeviceBuffer d_y(sizeof(__half) * n);
    DeviceBuffer d_gamma = tc::to_device(gamma), d_beta = tc::to_device(beta);
    DeviceBuffer scratch = zeroed_scratch(sdrt::cuda::group_norm_scratch_bytes(B, S, C, groups));
    sdrt::cuda::GroupNormArgs args{};
    args.x = d_x.as<__half>();
    args.y = d_y.as<__half>();
    args.gamma = d_gamma.as<float>();
    args.beta = d_beta.as<float>();
    args.batch = B;
    args.spatial = S;
    args.channels = C;
    args.groups = groups;
    args.eps = 1e-5f;
    args.silu = true;
    args.scratch = scratch.data();
    ASSERT_NO_THROW(sdrt::cuda::launch_group_norm(args, tc::stream()));
    ASSERT_NO_THROW(tc::context().synchronize());
    const auto got = tc::from_device_half(d_y, n);
    EXPECT_TRUE(tc::expect_close(got, ref, {1e-6, 2e-3, 2e-3}));
    const auto [seen, inserted] = first_result.emplace(std::make_pair(S, C), got);
    if (!inserted) {
      EXPECT_EQ(seen->second, got) << "a repeated shape gives different numbers";
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5);
  EXPECT_EQ(first_result.size(), 3u);
}

// ---- LayerNorm
// --------------------------------------------------------------------------------------------------

struct LayerNormCase {
  const char* name;
  int64_t rows, dim;
  float eps;
  float scale = 1.0f, offset = 0.0f;
  bool in_place = false;
  int64_t misalign = 0;
};

TEST(CudaOps, LayerNorm) {
  SDRT_REQUIRE_CUDA();
  const LayerNormCase cases[] = {
      {"unet_320", 2 * 4096, 320, 1e-5f},
      {"unet_640", 2 * 1024, 640, 1e-5f},
      {"unet_1280", 2 * 256, 1280, 1e-5f},
      {"unet_1280_8x8", 2 * 64, 1280, 1e-5f},
      {"clip_l_768", 2 * 77, 768, 1e-5f},
      {"clip_h_1024", 2 * 77, 1024, 1e-5f},
      {"tiny_32", 10, 32, 1e-5f},
      {"dim40", 7, 40, 1e-5f},
      {"dim6_half2", 5, 6, 1e-5f},
      {"dim7_scalar", 3, 7, 1e-5f},
      {"dim4104_block_fallback", 4, 4104, 1e-5f},
      {"dim5000_block_fallback", 3, 5000, 1e-5f},
      {"large_mean", 256, 768, 1e-5f, 1.0f, 200.0f},
      {"tiny_variance", 256, 320, 1e-5f, 0.004f, 0.0f},
      {"large_eps", 64, 320, 0.5f},
      {"in_place", 512, 640, 1e-5f, 1.0f, 0.0f, true},
      {"misaligned_by_1", 64, 320, 1e-5f, 1.0f, 0.0f, false, 1},
  };
  uint32_t seed = 500;
  for (const auto& tcase : cases) {
    SCOPED_TRACE(tcase.name);
    seed += 10;
    const size_t n = static_cast<size_t>(tcase.rows * tcase.dim);
    // Per-row offsets, so that a kernel mixing rows fails.
    auto x = tc::random_normal(n, seed, tcase.scale, tcase.offset);
    const auto row_mean = tc::random_uniform(static_cast<size_t>(tcase.rows), seed + 1, -1.0f, 1.0f);
    for (int64_t r = 0; r < tcase.rows; ++r)
      for (int64_t i = 0; i < tcase.dim; ++i)
        x[static_cast<size_t>(r * tcase.dim + i)] += row_mean[r] * tcase.scale;
    tc::round_to_half(x);
    const auto gamma = tc::random_normal(static_cast<size_t>(tcase.dim), seed + 2, 0.2f, 1.0f);
    const auto beta = tc::random_normal(static_cast<size_t>(tcase.dim), seed + 3, 0.2f);
    std::vector<float> ref(n);
    cpu::layer_norm(x.data(), gamma.data(), beta.data(), ref.data(), tcase.rows, tcase.dim, tcase.eps);

    const int64_t off = tcase.misalign;
    std::vector<float> x_padded(n + static_cast<size_t>(off), 0.0f);
    std::copy(x.begin(), x.end(), x_padded.begin() + off);
    DeviceBuffer d_x = tc::to_device_half(x_padded);
    DeviceBuffer d_y(sizeof(__half) * (n + static_cast<size_t>(off)));
    DeviceBuffer d_gamma = tc::to_device(gamma), d_beta = tc::to_device(beta);
    __half* y = tcase.in_place ? d_x.as<__half>() + off : d_y.as<__half>() + off;
    ASSERT_NO_THROW(sdrt::cuda::launch_layer_norm(d_x.as<__half>() + off, y, d_gamma.as<float>(),
                                                  d_beta.as<float>(), tcase.rows, tcase.dim, tcase.eps,
                                                  tc::stream()));
    auto got_padded = tc::from_device_half(tcase.in_place ? d_x : d_y, n + static_cast<size_t>(off));
    std::vector<float> got(got_padded.begin() + off, got_padded.end());
    EXPECT_TRUE(tc::expect_close(got, ref, {1e-6, 2e-3, 2e-3}));
  }
}

// ---- flat elementwise ops
// -----------------------------------------------------------------------------------

TEST(CudaOps, Add) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t n, misalign;
  };
  for (const Case tcase :
       {Case{2 * 4096 * 320, 0}, Case{1001, 0}, Case{1001, 1}, Case{4098, 2}, Case{3, 0}}) {
    SCOPED_TRACE("n=" + std::to_string(tcase.n) + " misalign=" + std::to_string(tcase.misalign));
    const size_t n = static_cast<size_t>(tcase.n), off = static_cast<size_t>(tcase.misalign);
    auto a = tc::random_normal(n + off, 1, 2.0f), b = tc::random_normal(n + off, 2, 2.0f);
    tc::round_to_half(a);
    tc::round_to_half(b);
    std::vector<float> ref(n);
    cpu::add(a.data() + off, b.data() + off, ref.data(), tcase.n);
    DeviceBuffer d_a = tc::to_device_half(a), d_b = tc::to_device_half(b);
    DeviceBuffer d_y(sizeof(__half) * (n + off));
    sdrt::cuda::launch_add(d_a.as<__half>() + off, d_b.as<__half>() + off, d_y.as<__half>() + off, tcase.n,
                           tc::stream());
    auto got = tc::from_device_half(d_y, n + off);
    got.erase(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(off));
    EXPECT_TRUE(tc::expect_close(got, ref, {1e-6, 1e-3, 1e-3}));
    // In place: y aliases a.
    sdrt::cuda::launch_add(d_a.as<__half>() + off, d_b.as<__half>() + off, d_a.as<__half>() + off, tcase.n,
                           tc::stream());
    auto got_inplace = tc::from_device_half(d_a, n + off);
    got_inplace.erase(got_inplace.begin(), got_inplace.begin() + static_cast<std::ptrdiff_t>(off));
    EXPECT_TRUE(tc::expect_close(got_inplace, ref, {1e-6, 1e-3, 1e-3}));
  }
}

TEST(CudaOps, Activations) {
  SDRT_REQUIRE_CUDA();
  enum class Op { kSilu, kGelu, kQuickGelu };
  struct Case {
    const char* name;
    Op op;
    int64_t n, misalign;
  };
  const Case cases[] = {
      {"silu_unet", Op::kSilu, 2 * 4096 * 320, 0},
      {"silu_tail", Op::kSilu, 1001, 0},
      {"silu_misaligned", Op::kSilu, 1001, 1},
      {"gelu_clip_mlp", Op::kGelu, 2 * 77 * 3072, 0},
      {"gelu_tail", Op::kGelu, 999, 2},
      {"quick_gelu_clip_mlp", Op::kQuickGelu, 2 * 77 * 3072, 0},
      {"quick_gelu_misaligned", Op::kQuickGelu, 1003, 1},
  };
  for (const auto& tcase : cases) {
    SCOPED_TRACE(tcase.name);
    const size_t n = static_cast<size_t>(tcase.n), off = static_cast<size_t>(tcase.misalign);
    auto x = tc::random_normal(n + off, 7, 3.0f);  // wide enough for both tails of the activations
    if (n > 4) {
      x[off] = -60000.0f;  // far tails: silu/gelu -> -0, and no NaN from the fast intrinsics
      x[off + 1] = 60000.0f;
      x[off + 2] = -100.0f;
      x[off + 3] = 0.0f;
    }
    tc::round_to_half(x);
    std::vector<float> ref(x.begin() + static_cast<std::ptrdiff_t>(off), x.end());
    const auto act = tcase.op == Op::kSilu   ? cpu::Activation::kSilu
                     : tcase.op == Op::kGelu ? cpu::Activation::kGelu
                                             : cpu::Activation::kQuickGelu;
    cpu::activate(ref.data(), tcase.n, act);
    DeviceBuffer d_x = tc::to_device_half(x);
    __half* p = d_x.as<__half>() + off;
    if (tcase.op == Op::kSilu) {
      sdrt::cuda::launch_silu(p, tcase.n, tc::stream());
    } else {
      sdrt::cuda::launch_gelu(p, tcase.n, tcase.op == Op::kQuickGelu, tc::stream());
    }
    auto got = tc::from_device_half(d_x, n + off);
    got.erase(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(off));
    EXPECT_TRUE(tc::expect_close(got, ref, {1e-6, 1e-3, 2e-3}));
  }
}

TEST(CudaOps, Geglu) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t rows, inner;
  };
  for (const Case tcase : {Case{2 * 4096, 1280}, Case{2 * 1024, 2560}, Case{2 * 64, 5120}, Case{10, 128},
                           Case{7, 6}, Case{5, 5}}) {
    SCOPED_TRACE("rows=" + std::to_string(tcase.rows) + " inner=" + std::to_string(tcase.inner));
    const int64_t R = tcase.rows, I = tcase.inner;
    auto x = tc::random_normal(static_cast<size_t>(R * 2 * I), 11, 2.0f);
    tc::round_to_half(x);
    std::vector<float> gate(static_cast<size_t>(R * I)), ref(static_cast<size_t>(R * I));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < I; ++i) gate[r * I + i] = x[r * 2 * I + I + i];
    cpu::activate(gate.data(), R * I, cpu::Activation::kGelu);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < I; ++i) ref[r * I + i] = x[r * 2 * I + i] * gate[r * I + i];
    DeviceBuffer d_x = tc::to_device_half(x);
    DeviceBuffer d_y(sizeof(__half) * static_cast<size_t>(R * I));
    sdrt::cuda::launch_geglu(d_x.as<__half>(), d_y.as<__half>(), R, I, tc::stream());
    EXPECT_TRUE(
        tc::expect_close(tc::from_device_half(d_y, static_cast<size_t>(R * I)), ref, {1e-6, 2e-3, 2e-3}));
  }
}

// ---- data movement (exact)
// ----------------------------------------------------------------------------------

TEST(CudaOps, UpsampleNearest2x) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t batch, h, w, channels;
  };
  for (const Case tcase : {Case{2, 8, 8, 1280}, Case{2, 16, 16, 1280}, Case{2, 32, 32, 640},
                           Case{1, 64, 64, 512}, Case{1, 3, 5, 6}, Case{2, 2, 3, 3}}) {
    SCOPED_TRACE("b=" + std::to_string(tcase.batch) + " h=" + std::to_string(tcase.h) +
                 " w=" + std::to_string(tcase.w) + " c=" + std::to_string(tcase.channels));
    const int64_t B = tcase.batch, H = tcase.h, W = tcase.w, C = tcase.channels;
    auto x = tc::random_normal(static_cast<size_t>(B * H * W * C), 13);
    tc::round_to_half(x);
    // Reference through the NCHW CPU op.
    auto planes = nhwc_to_nchw(x, B, H * W, C);
    std::vector<float> up(static_cast<size_t>(B * C * 4 * H * W));
    cpu::upsample_nearest(planes.data(), up.data(), B * C, H, W, 2 * H, 2 * W);
    const auto ref = nchw_to_nhwc(up, B, 4 * H * W, C);
    DeviceBuffer d_x = tc::to_device_half(x);
    DeviceBuffer d_y(sizeof(__half) * ref.size());
    sdrt::cuda::launch_upsample_nearest2x(d_x.as<__half>(), d_y.as<__half>(), B, H, W, C, tc::stream());
    EXPECT_TRUE(tc::expect_close(tc::from_device_half(d_y, ref.size()), ref, {0.0, 0.0, 0.0}));
  }
}

TEST(CudaOps, UpsampleNearestAnySize) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t batch, h, w, out_h, out_w, channels;
  };
  // Odd latent sizes: the up-sampler's target is the skip connection's (e.g. 5×5 -> 9×9 for a 72-pixel side).
  for (const Case tcase : {Case{2, 5, 5, 9, 9, 1280}, Case{2, 12, 9, 24, 17, 640}, Case{1, 4, 6, 8, 12, 320},
                           Case{1, 3, 3, 7, 5, 6}, Case{2, 2, 3, 3, 7, 3}}) {
    SCOPED_TRACE("h=" + std::to_string(tcase.h) + " w=" + std::to_string(tcase.w) + " -> " +
                 std::to_string(tcase.out_h) + "x" + std::to_string(tcase.out_w) +
                 " c=" + std::to_string(tcase.channels));
    const int64_t B = tcase.batch, H = tcase.h, W = tcase.w, OH = tcase.out_h, OW = tcase.out_w,
                  C = tcase.channels;
    auto x = tc::random_normal(static_cast<size_t>(B * H * W * C), 15);
    tc::round_to_half(x);
    auto planes = nhwc_to_nchw(x, B, H * W, C);
    std::vector<float> up(static_cast<size_t>(B * C * OH * OW));
    cpu::upsample_nearest(planes.data(), up.data(), B * C, H, W, OH, OW);
    const auto ref = nchw_to_nhwc(up, B, OH * OW, C);
    DeviceBuffer d_x = tc::to_device_half(x);
    DeviceBuffer d_y(sizeof(__half) * ref.size());
    sdrt::cuda::launch_upsample_nearest(d_x.as<__half>(), d_y.as<__half>(), B, H, W, OH, OW, C, tc::stream());
    EXPECT_TRUE(tc::expect_close(tc::from_device_half(d_y, ref.size()), ref, {0.0, 0.0, 0.0}));
  }
}

TEST(CudaOps, ConcatChannels) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t rows, ca, cb;
  };
  for (const Case tcase : {Case{2 * 4096, 320, 320}, Case{2 * 1024, 640, 320}, Case{2 * 256, 1280, 640},
                           Case{2 * 64, 1280, 1280}, Case{10, 2, 4}, Case{10, 3, 5}, Case{4, 8, 2}}) {
    SCOPED_TRACE("rows=" + std::to_string(tcase.rows) + " ca=" + std::to_string(tcase.ca) +
                 " cb=" + std::to_string(tcase.cb));
    const int64_t R = tcase.rows, A = tcase.ca, Bc = tcase.cb;
    auto a = tc::random_normal(static_cast<size_t>(R * A), 17),
         b = tc::random_normal(static_cast<size_t>(R * Bc), 19);
    tc::round_to_half(a);
    tc::round_to_half(b);
    std::vector<float> ref(static_cast<size_t>(R * (A + Bc)));
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t c = 0; c < A; ++c) ref[r * (A + Bc) + c] = a[r * A + c];
      for (int64_t c = 0; c < Bc; ++c) ref[r * (A + Bc) + A + c] = b[r * Bc + c];
    }
    DeviceBuffer d_a = tc::to_device_half(a), d_b = tc::to_device_half(b);
    DeviceBuffer d_y(sizeof(__half) * ref.size());
    sdrt::cuda::launch_concat_channels(d_a.as<__half>(), d_b.as<__half>(), d_y.as<__half>(), R, A, Bc,
                                       tc::stream());
    EXPECT_TRUE(tc::expect_close(tc::from_device_half(d_y, ref.size()), ref, {0.0, 0.0, 0.0}));
  }
}

TEST(CudaOps, LayoutConversions) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t batch, channels, spatial;
  };
  for (const Case tcase : {Case{2, 4, 64 * 64}, Case{1, 512, 64 * 64}, Case{1, 3, 5}, Case{2, 37, 33}}) {
    SCOPED_TRACE("b=" + std::to_string(tcase.batch) + " c=" + std::to_string(tcase.channels) +
                 " s=" + std::to_string(tcase.spatial));
    const int64_t B = tcase.batch, C = tcase.channels, S = tcase.spatial;
    const size_t n = static_cast<size_t>(B * C * S);
    const float scale = 0.18215f;
    // NCHW fp32 -> NHWC fp16 (scaled)
    const auto x = tc::random_normal(n, 23, 5.0f);
    auto scaled = x;
    for (auto& v : scaled) v *= scale;
    tc::round_to_half(scaled);
    const auto ref_nhwc = nchw_to_nhwc(scaled, B, S, C);
    DeviceBuffer d_x = tc::to_device(x);
    DeviceBuffer d_h(sizeof(__half) * n);
    sdrt::cuda::launch_nchw_f32_to_nhwc_f16(d_x.as<float>(), d_h.as<__half>(), B, C, S, scale, tc::stream());
    const auto got_nhwc = tc::from_device_half(d_h, n);
    EXPECT_TRUE(tc::expect_close(got_nhwc, ref_nhwc, {0.0, 0.0, 0.0}));
    // ... and back to NCHW fp32: exactly the rounded values.
    DeviceBuffer d_back(sizeof(float) * n);
    sdrt::cuda::launch_nhwc_f16_to_nchw_f32(d_h.as<__half>(), d_back.as<float>(), B, C, S, tc::stream());
    EXPECT_TRUE(tc::expect_close(tc::from_device<float>(d_back, n), scaled, {0.0, 0.0, 0.0}));
  }
}

TEST(CudaOps, GuidanceCombine) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    int64_t batch, channels, spatial;
    float scale;
  };
  for (const Case tcase : {Case{1, 4, 64 * 64, 7.5f}, Case{2, 4, 96 * 64, 3.0f}, Case{3, 5, 37, 1.0f}}) {
    SCOPED_TRACE("b=" + std::to_string(tcase.batch) + " s=" + std::to_string(tcase.spatial));
    const int64_t B = tcase.batch, C = tcase.channels, S = tcase.spatial;
    auto eps = tc::random_normal(static_cast<size_t>(2 * B * S * C), 29);
    tc::round_to_half(eps);
    std::vector<float> ref(static_cast<size_t>(B * C * S));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < S; ++s)
        for (int64_t c = 0; c < C; ++c) {
          const float u = eps[(b * S + s) * C + c], t = eps[((B + b) * S + s) * C + c];
          ref[(b * C + c) * S + s] = u + tcase.scale * (t - u);
        }
    DeviceBuffer d_eps = tc::to_device_half(eps);
    DeviceBuffer d_out(sizeof(float) * ref.size());
    sdrt::cuda::launch_guidance_combine(d_eps.as<__half>(), d_out.as<float>(), B, C, S, tcase.scale,
                                        tc::stream());
    EXPECT_TRUE(tc::expect_close(tc::from_device<float>(d_out, ref.size()), ref, {1e-12, 1e-6, 1e-6}));
  }
}

TEST(CudaOps, DtypeConversions) {
  SDRT_REQUIRE_CUDA();
  for (int64_t n : {int64_t{2 * 4 * 4096}, int64_t{1001}, int64_t{3}}) {
    for (size_t off : {size_t{0}, size_t{1}, size_t{2}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " misalign=" + std::to_string(off));
      const size_t un = static_cast<size_t>(n);
      auto x = tc::random_normal(un + off, 31, 4.0f);
      x[off] = 1e6f;  // fp16 overflow -> inf, as torch's .half()
      auto rounded = x;
      for (auto& v : rounded) v = __half2float(__float2half_rn(v));
      DeviceBuffer d_x = tc::to_device(x);
      DeviceBuffer d_h(sizeof(__half) * (un + off));
      sdrt::cuda::launch_f32_to_f16(d_x.as<float>() + off, d_h.as<__half>() + off, n, tc::stream());
      const auto h = tc::from_device<__half>(d_h, un + off);
      size_t mismatches = 0;
      for (size_t i = off; i < un + off; ++i) {
        uint16_t got_bits, ref_bits;
        const __half ref_h = __float2half_rn(x[i]);
        std::memcpy(&got_bits, &h[i], 2);
        std::memcpy(&ref_bits, &ref_h, 2);
        mismatches += got_bits != ref_bits;
      }
      EXPECT_EQ(mismatches, 0u) << "f32_to_f16";
      DeviceBuffer d_f(sizeof(float) * (un + off));
      sdrt::cuda::launch_f16_to_f32(d_h.as<__half>() + off, d_f.as<float>() + off, n, tc::stream());
      const auto f = tc::from_device<float>(d_f, un + off);
      mismatches = 0;
      for (size_t i = off; i < un + off; ++i)
        mismatches += std::memcmp(&f[i], &rounded[i], sizeof(float)) != 0;
      EXPECT_EQ(mismatches, 0u) << "f16_to_f32";
    }
  }
}

// ---- timestep embedding
// -------------------------------------------------------------------------------------

TEST(CudaOps, TimestepEmbedding) {
  SDRT_REQUIRE_CUDA();
  struct Case {
    float t;
    int64_t batch, dim;
    bool flip;
    float shift;
  };
  for (const Case tcase :
       {Case{999.0f, 2, 320, true, 0.0f}, Case{1.0f, 2, 320, true, 0.0f}, Case{500.5f, 1, 320, false, 1.0f},
        Case{37.0f, 3, 7, true, 0.0f}, Case{0.0f, 2, 32, true, 0.0f}}) {
    SCOPED_TRACE("t=" + std::to_string(tcase.t) + " dim=" + std::to_string(tcase.dim));
    const auto one = models::timestep_embedding(tcase.t, tcase.dim, tcase.flip, tcase.shift);
    std::vector<float> ref;
    for (int64_t b = 0; b < tcase.batch; ++b) ref.insert(ref.end(), one.begin(), one.end());
    DeviceBuffer d_t = tc::to_device(std::vector<float>{tcase.t});
    DeviceBuffer d_y(sizeof(__half) * ref.size());
    sdrt::cuda::launch_timestep_embedding(d_t.as<float>(), d_y.as<__half>(), tcase.batch, tcase.dim,
                                          tcase.flip, tcase.shift, tc::stream());
    // fp16 output: |err| ≤ half an ulp of 1 (2.4e-4) plus sin/exp differences for t·freq ≈ 1000 (~1e-4).
    EXPECT_TRUE(tc::expect_close(tc::from_device_half(d_y, ref.size()), ref, {1e-6, 6e-4, 0.0}));
  }
}

// ---- non-finite count
// ---------------------------------------------------------------------------------------

TEST(CudaOps, CountNonfinite) {
  SDRT_REQUIRE_CUDA();
  for (int64_t n : {int64_t{100003}, int64_t{2 * 4 * 4096}, int64_t{7}}) {
    for (size_t off : {size_t{0}, size_t{1}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " misalign=" + std::to_string(off));
      const size_t un = static_cast<size_t>(n);
      auto x = tc::random_normal(un + off, 37, 1000.0f);
      x[off] = 65504.0f;  // largest finite fp16
      std::vector<size_t> planted = {off + 1, off + un / 2, off + un - 1};
      const float specials[] = {std::nanf(""), INFINITY, -INFINITY};
      for (size_t k = 0; k < planted.size(); ++k) x[planted[k]] = specials[k];
      DeviceBuffer d_f32 = tc::to_device(x);
      DeviceBuffer d_f16 = tc::to_device_half(x);
      DeviceBuffer d_count = tc::to_device(std::vector<int>{0, 0});
      // Accumulates: count f16 twice into slot 0, f32 once into slot 1.
      sdrt::cuda::launch_count_nonfinite_f16(d_f16.as<__half>() + off, n, d_count.as<int>(), tc::stream());
      sdrt::cuda::launch_count_nonfinite_f16(d_f16.as<__half>() + off, n, d_count.as<int>(), tc::stream());
      sdrt::cuda::launch_count_nonfinite_f32(d_f32.as<float>() + off, n, d_count.as<int>() + 1, tc::stream());
      const auto counts = tc::from_device<int>(d_count, 2);
      EXPECT_EQ(counts[0], 2 * 3);
      EXPECT_EQ(counts[1], 3);
    }
  }
}

// n == 0 launches are no-ops (null pointers are never touched).
TEST(CudaOps, EmptyLaunches) {
  SDRT_REQUIRE_CUDA();
  cudaStream_t s = tc::stream();
  EXPECT_NO_THROW(sdrt::cuda::launch_add(nullptr, nullptr, nullptr, 0, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_silu(nullptr, 0, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_gelu(nullptr, 0, true, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_geglu(nullptr, nullptr, 0, 1280, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_layer_norm(nullptr, nullptr, nullptr, nullptr, 0, 320, 1e-5f, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_count_nonfinite_f16(nullptr, 0, nullptr, s));
  EXPECT_NO_THROW(sdrt::cuda::launch_f32_to_f16(nullptr, nullptr, 0, s));
  sdrt::cuda::GroupNormArgs args{};
  args.batch = 2;
  args.spatial = 0;
  args.channels = 320;
  args.groups = 32;
  EXPECT_NO_THROW(sdrt::cuda::launch_group_norm(args, s));
  EXPECT_NO_THROW(tc::context().synchronize());
}

}  // namespace
}  // namespace sdrt

#endif  // SDRT_HAVE_CUDA
