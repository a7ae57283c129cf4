// CUDA attention (src/backends/cuda/attention.cu) against the CPU reference sdrt::cpu::attention, on the same
// fp16-rounded inputs, for both paths (cuDNN SDPA where the GPU supports the shape, and the forced fallback).
// Shapes are the ones Stable Diffusion 1.5 runs (UNet self/cross attention, CLIP's causal attention, the
// VAE's single-head head_dim-512 attention) plus tiny-model and awkward ones, with q/k/v laid out as the UNet
// does: column slices of one fused QKV (stride 3C) or KV (stride 2C) projection. Outputs go to a padded
// buffer so a wrong output stride or a write past the row shows up. Skipped without a GPU.
#if SDRT_HAVE_CUDA

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/ops.h"
#include "backends/cuda/attention.cuh"
#include "backends/cuda/context.h"
#include "sdrt/error.h"

namespace sdrt::cuda {
namespace {

enum class Layout {
  kSeparate,  // q, k, v each [B, S, C] with stride C
  kFusedQkv,  // one [B, S, 3C] buffer: q = +0, k = +C, v = +2C, stride 3C (self-attention)
  kFusedKv,   // q [B, Sq, C]; one [B, Skv, 2C] buffer: k = +0, v = +C, stride 2C (cross-attention)
};

struct Case {
  const char* name;
  int64_t batch, heads, seq_q, seq_kv, head_dim;
  bool causal;
  Layout layout;
  bool expect_sdpa;          // cuDNN should take this shape on sm80+ (the SD shapes: the fast path matters)
  float scale_factor = 1.f;  // scale = scale_factor / sqrt(head_dim)
  int64_t misalign = 0;      // offset every pointer by this many elements (breaks 16-byte alignment)
  int64_t out_pad = 8;       // out_stride = C + out_pad
};

// Device buffer of halves with a host mirror of its fp16-rounded values as floats.
struct HalfBuffer {
  std::vector<float> host;
  DeviceBuffer device;
  HalfBuffer(size_t n, std::mt19937& rng, float amplitude) : host(n) {
    std::uniform_real_distribution<float> dist(-amplitude, amplitude);
    std::vector<__half> h(n);
    for (size_t i = 0; i < n; ++i) {
      h[i] = __float2half_rn(dist(rng));
      host[i] = __half2float(h[i]);
    }
    device = DeviceBuffer(n * sizeof(__half));
    check_cuda(cudaMemcpy(device.data(), h.data(), n * sizeof(__half), cudaMemcpyHostToDevice));
  }
  static void check_cuda(cudaError_t status) { ASSERT_EQ(status, cudaSuccess) << cudaGetErrorString(status); }
  __half* ptr(int64_t offset) const { return device.as<__half>() + offset; }
};

// Columns [col0, col0 + width) of rows [B·S, stride] as a dense [B·S, width] float array, times `factor`.
std::vector<float> gather(const std::vector<float>& src, int64_t rows, int64_t stride, int64_t col0,
                          int64_t width, float factor = 1.0f) {
  std::vector<float> out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < width; ++c) out[r * width + c] = src[r * stride + col0 + c] * factor;
  return out;
}

struct Result {
  double max_abs_err = 0, max_ref = 0, nmse = 0;
  bool padding_intact = true;
  std::string note;  // path and, for the fallback, why
};

class CudaAttention : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (device_available()) ctx_ = std::make_unique<Context>();
  }
  static void TearDownTestSuite() {
    if (ctx_) attention_release_plans(*ctx_);
    ctx_.reset();
  }
  void SetUp() override {
    if (!ctx_) GTEST_SKIP() << "no CUDA device: " << device_description();
  }
  void TearDown() override { attention_force_fallback(false); }

  // Runs `c` on the GPU (scale multiplied by `gpu_scale_error` to prove the comparison can fail) and compares
  // with the CPU reference. `timing` prints the mean time of a few repeated calls.
  Result run(const Case& c, bool fallback, const char** path_out = nullptr, float gpu_scale_error = 1.0f) {
    attention_force_fallback(fallback);
    Context& ctx = *ctx_;
    const int64_t B = c.batch, H = c.heads, Sq = c.seq_q, Skv = c.seq_kv, D = c.head_dim, C = H * D;
    const float scale = c.scale_factor / std::sqrt(static_cast<float>(D));
    std::mt19937 rng(1234 + static_cast<uint32_t>(Sq * 7 + Skv * 13 + D * 17 + H));
    const int64_t m = c.misalign;

    // Inputs. q is larger than k/v so the softmax is peaked enough for a wrong scale to show.
    std::unique_ptr<HalfBuffer> qbuf, kbuf, vbuf;
    int64_t q_stride = C, k_stride = C, v_stride = C;
    const __half *q = nullptr, *k = nullptr, *v = nullptr;
    std::vector<float> q_ref, k_ref, v_ref;
    const float qa = 3.0f, ka = 1.0f, va = 1.0f;
    switch (c.layout) {
      case Layout::kSeparate:
        qbuf = std::make_unique<HalfBuffer>(B * Sq * C + m, rng, qa);
        kbuf = std::make_unique<HalfBuffer>(B * Skv * C + m, rng, ka);
        vbuf = std::make_unique<HalfBuffer>(B * Skv * C + m, rng, va);
        q = qbuf->ptr(m), k = kbuf->ptr(m), v = vbuf->ptr(m);
        q_ref = gather({qbuf->host.begin() + m, qbuf->host.end()}, B * Sq, C, 0, C);
        k_ref = gather({kbuf->host.begin() + m, kbuf->host.end()}, B * Skv, C, 0, C);
        v_ref = gather({vbuf->host.begin() + m, vbuf->host.end()}, B * Skv, C, 0, C);
        break;
      case Layout::kFusedQkv: {
        EXPECT_EQ(Sq, Skv);
        qbuf = std::make_unique<HalfBuffer>(B * Sq * 3 * C + m, rng, 1.0f);
        // Give the q columns their larger amplitude on the host mirror and device alike: regenerate per
        // column.
        std::vector<__half> h(qbuf->host.size());
        std::uniform_real_distribution<float> dq(-qa, qa), dk(-ka, ka);
        for (int64_t r = 0; r < B * Sq; ++r)
          for (int64_t col = 0; col < 3 * C; ++col) {
            const size_t i = static_cast<size_t>(m + r * 3 * C + col);
            h[i] = __float2half_rn(col < C ? dq(rng) : dk(rng));
            qbuf->host[i] = __half2float(h[i]);
          }
        HalfBuffer::check_cuda(
            cudaMemcpy(qbuf->device.data(), h.data(), h.size() * sizeof(__half), cudaMemcpyHostToDevice));
        q_stride = k_stride = v_stride = 3 * C;
        q = qbuf->ptr(m), k = qbuf->ptr(m + C), v = qbuf->ptr(m + 2 * C);
        const std::vector<float> rows(qbuf->host.begin() + m, qbuf->host.end());
        q_ref = gather(rows, B * Sq, 3 * C, 0, C);
        k_ref = gather(rows, B * Sq, 3 * C, C, C);
        v_ref = gather(rows, B * Sq, 3 * C, 2 * C, C);
        break;
      }
      case Layout::kFusedKv: {
        qbuf = std::make_unique<HalfBuffer>(B * Sq * C + m, rng, qa);
        kbuf = std::make_unique<HalfBuffer>(B * Skv * 2 * C + m, rng, ka);
        k_stride = v_stride = 2 * C;
        q = qbuf->ptr(m), k = kbuf->ptr(m), v = kbuf->ptr(m + C);
        q_ref = gather({qbuf->host.begin() + m, qbuf->host.end()}, B * Sq, C, 0, C);
        const std::vector<float> rows(kbuf->host.begin() + m, kbuf->host.end());
        k_ref = gather(rows, B * Skv, 2 * C, 0, C);
        v_ref = gather(rows, B * Skv, 2 * C, C, C);
        break;
      }
    }

    // Output: padded rows pre-filled with a sentinel the attention must not overwrite.
    const int64_t out_stride = C + c.out_pad;
    const size_t out_elems = static_cast<size_t>(B * Sq * out_stride + m);
    const __half sentinel = __float2half_rn(-7.0f);
    std::vector<__half> out_host(out_elems, sentinel);
    DeviceBuffer out_dev(out_elems * sizeof(__half));
    HalfBuffer::check_cuda(
        cudaMemcpy(out_dev.data(), out_host.data(), out_elems * sizeof(__half), cudaMemcpyHostToDevice));
    __half* out = out_dev.as<__half>() + m;

    AttentionShape shape{
        B, H, Sq, Skv, D, q_stride, k_stride, v_stride, out_stride, scale * gpu_scale_error, c.causal};
    const char* path = attention_path(ctx, shape);
    if (path_out) *path_out = path;
    attention(ctx, shape, q, k, v, out);
    ctx.synchronize();
    HalfBuffer::check_cuda(
        cudaMemcpy(out_host.data(), out_dev.data(), out_elems * sizeof(__half), cudaMemcpyDeviceToHost));

    // Timing (a handful of calls; informative only).
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    constexpr int kReps = 5;
    cudaEventRecord(start, ctx.stream());
    for (int i = 0; i < kReps; ++i) attention(ctx, shape, q, k, v, out);
    cudaEventRecord(stop, ctx.stream());
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    Result r;
    r.note = attention_plan_note(ctx, shape);
    std::printf("[ attention ] %-22s %-9s -> %-10s %8.3f ms  (%s)\n", c.name, fallback ? "fallback" : "auto",
                path, ms / kReps, r.note.c_str());

    // CPU reference (fixed scale 1/sqrt(D): fold the factor into q).
    std::vector<float> ref(static_cast<size_t>(B * Sq * C));
    for (auto& x : q_ref) x *= c.scale_factor;
    for (int64_t b = 0; b < B; ++b) {
      cpu::AttentionArgs args{q_ref.data() + b * Sq * C,
                              k_ref.data() + b * Skv * C,
                              v_ref.data() + b * Skv * C,
                              ref.data() + b * Sq * C,
                              Sq,
                              Skv,
                              H,
                              D,
                              C,
                              C,
                              C,
                              C,
                              c.causal};
      cpu::attention(args);
    }

    double err2 = 0, ref2 = 0;
    for (int64_t row = 0; row < B * Sq; ++row) {
      for (int64_t col = 0; col < out_stride; ++col) {
        const float got = __half2float(out_host[static_cast<size_t>(m + row * out_stride + col)]);
        if (col >= C) {
          if (got != -7.0f) r.padding_intact = false;
          continue;
        }
        const double want = ref[row * C + col];
        const double e = std::isfinite(got) ? std::abs(got - want) : INFINITY;
        r.max_abs_err = std::max(r.max_abs_err, e);
        r.max_ref = std::max(r.max_ref, std::abs(want));
        err2 += e * e;
        ref2 += want * want;
      }
    }
    for (int64_t i = 0; i < m; ++i)
      if (__half2float(out_host[static_cast<size_t>(i)]) != -7.0f) r.padding_intact = false;
    r.nmse = ref2 > 0 ? err2 / ref2 : err2;
    return r;
  }

  static void expect_close(const Result& r, const std::string& what) {
    EXPECT_TRUE(r.padding_intact) << what << ": wrote outside the output rows";
    EXPECT_LE(r.max_abs_err, 2e-3 * std::max(r.max_ref, 1e-2)) << what << " (max |ref| " << r.max_ref << ")";
    EXPECT_LE(r.nmse, 1e-5) << what;
  }

  static std::unique_ptr<Context> ctx_;
};

std::unique_ptr<Context> CudaAttention::ctx_;

const Case kCases[] = {
    // Tiny test models (head_dim 8 / 16, 16..64 tokens, 77 text tokens).
    {"tiny_self_d8", 1, 2, 16, 16, 8, false, Layout::kFusedQkv, true},
    {"tiny_self_d16", 2, 2, 64, 64, 16, false, Layout::kFusedQkv, true},
    {"tiny_cross_d8", 2, 2, 16, 77, 8, false, Layout::kFusedKv, true},
    {"tiny_cross_d16", 2, 4, 64, 77, 16, false, Layout::kFusedKv, true},
    {"tiny_self_separate", 2, 2, 32, 32, 16, false, Layout::kSeparate, true},
    // SD 1.5 UNet at 512x512 (batch 2; batch 1 for the 4096-token self-attention to keep the reference
    // quick).
    {"sd_self_4096_d40", 1, 8, 4096, 4096, 40, false, Layout::kFusedQkv, true},
    {"sd_cross_4096_d40", 2, 8, 4096, 77, 40, false, Layout::kFusedKv, true},
    {"sd_self_1024_d80", 2, 8, 1024, 1024, 80, false, Layout::kFusedQkv, true},
    {"sd_cross_1024_d80", 2, 8, 1024, 77, 80, false, Layout::kFusedKv, true},
    {"sd_self_256_d160", 2, 8, 256, 256, 160, false, Layout::kFusedQkv, true},
    {"sd_cross_256_d160", 2, 8, 256, 77, 160, false, Layout::kFusedKv, true},
    {"sd_self_64_d160", 2, 8, 64, 64, 160, false, Layout::kFusedQkv, true},
    {"sd_cross_64_d160", 2, 8, 64, 77, 160, false, Layout::kFusedKv, true},
    // CLIP ViT-L/14 text encoder: causal.
    {"clip_causal", 2, 12, 77, 77, 64, true, Layout::kFusedQkv, true},
    {"clip_causal_separate", 1, 12, 77, 77, 64, true, Layout::kSeparate, true},
    {"tiny_causal_d8", 1, 2, 77, 77, 8, true, Layout::kFusedQkv, true},
    // VAE mid-block: one head of 512 channels over 64x64 latents (cuDNN may or may not take it).
    {"vae_mid_d512", 1, 1, 4096, 4096, 512, false, Layout::kFusedQkv, false},
    // Awkward: head_dim not a multiple of 8, odd sequence lengths, custom scale, misaligned pointers.
    {"odd_d20", 2, 3, 33, 50, 20, false, Layout::kSeparate, false},
    {"odd_d12_causal", 1, 2, 45, 45, 12, true, Layout::kFusedQkv, false},
    {"custom_scale", 2, 4, 64, 77, 16, false, Layout::kFusedKv, true, 0.5f},
    {"misaligned_ptrs", 1, 2, 40, 40, 16, false, Layout::kSeparate, false, 1.0f, 1},
    {"unpadded_out", 2, 8, 64, 77, 40, false, Layout::kFusedKv, true, 1.0f, 0, 0},
};

TEST_F(CudaAttention, MatchesCpuReferenceAutoPath) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const char* path = nullptr;
    const Result r = run(c, /*fallback=*/false, &path);
    expect_close(r, std::string(c.name) + " via " + path);
    if (c.expect_sdpa && ctx_->sm_version() >= 80) {
      EXPECT_STREQ(path, "cudnn-sdpa") << c.name << ": " << r.note;
    }
  }
}

TEST_F(CudaAttention, MatchesCpuReferenceFallbackPath) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const char* path = nullptr;
    const Result r = run(c, /*fallback=*/true, &path);
    EXPECT_STREQ(path, "fallback");
    expect_close(r, std::string(c.name) + " via fallback");
  }
}

// The comparison must be able to fail: a 10% scale error on the GPU side is caught on both paths.
TEST_F(CudaAttention, ToleranceCatchesWrongScale) {
  const Case c{"wrong_scale", 2, 8, 256, 77, 40, false, Layout::kFusedKv, true};
  for (bool fallback : {false, true}) {
    const Result r = run(c, fallback, nullptr, 1.1f);
    EXPECT_TRUE(r.max_abs_err > 2e-3 * std::max(r.max_ref, 1e-2) || r.nmse > 1e-5)
        << (fallback ? "fallback" : "auto") << ": max err " << r.max_abs_err << " nmse " << r.nmse;
  }
}

TEST_F(CudaAttention, PathReportingAndForcing) {
  const AttentionShape sd{2,    8, 1024, 1024, 80, 3 * 640, 3 * 640, 3 * 640, 640, 1.0f / std::sqrt(80.0f),
                          false};
  attention_force_fallback(true);
  EXPECT_STREQ(attention_path(*ctx_, sd), "fallback");
  attention_force_fallback(false);
  if (ctx_->sm_version() >= 80) {
    EXPECT_STREQ(attention_path(*ctx_, sd), "cudnn-sdpa") << attention_plan_note(*ctx_, sd);
  }
  // head_dim not a multiple of 8: cuDNN cannot run it.
  const AttentionShape odd{1, 2, 16, 16, 12, 24, 24, 24, 24, 0.3f, false};
  EXPECT_STREQ(attention_path(*ctx_, odd), "fallback");
}

TEST_F(CudaAttention, RejectsInvalidShapes) {
  const AttentionShape bad{1, 2, 16, 16, 8, 8, 16, 16, 16, 0.35f, false};  // q_stride < heads·head_dim
  EXPECT_THROW(attention_path(*ctx_, bad), sdrt::Error);
}

}  // namespace
}  // namespace sdrt::cuda

#endif  // SDRT_HAVE_CUDA
