// group_norm, layer_norm and attention.
//
// group_norm  canonical: x [B, C, H*W], gamma/beta [C] fp32, pre_bias [B, C] (the ResNet time embedding,
//             added before the statistics); CUDA: x/y [B, H*W, C] fp16, gamma/beta fp32, pre_bias fp16.
// layer_norm  canonical and CUDA: x/y [rows, dim], gamma/beta [dim] fp32.
// attention   canonical: q [B, Sq, H*D], k/v [B, Skv, H*D]; CUDA: the same rows, as separate buffers or as
//             column slices of one fused QKV (stride 3C) / KV (stride 2C) projection, as the UNet has them.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend_ops/op_util.h"
#include "backends/cpu/ops.h"

#if SDRT_HAVE_CUDA
#include "backends/cuda/attention.cuh"
#include "backends/cuda/norm.cuh"
#endif

namespace sdrt::backend_ops {
namespace {

double silu(double v) {
  return v / (1.0 + std::exp(-v));
}

// Activations with a per-channel mean and spread, so a kernel reducing over the wrong channels or rows gets
// visibly different numbers. x [outer, channels, inner]: NCHW with outer = batch and inner = spatial, or
// rows (as channels) of `inner` values.
Host channel_data(int64_t outer, int64_t channels, int64_t inner, uint32_t seed, float scale, float offset) {
  const Host mu = random_uniform(static_cast<size_t>(channels), seed + 1, -1.0f, 1.0f);
  const Host sigma = random_uniform(static_cast<size_t>(channels), seed + 2, 0.5f, 1.5f);
  Host x = random_normal(static_cast<size_t>(outer * channels * inner), seed);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        float& v = x[(o * channels + c) * inner + i];
        v = round_to_f16(offset + mu[c] * scale + scale * sigma[c] * v);
      }
  return x;
}

// ---- group_norm -------------------------------------------------------------------------------------------

struct GroupNormParams {
  int64_t batch, channels, h, w, groups;
  float eps;
  bool silu = true, pre_bias = false;
  bool two_pass = false;  // CUDA: keep the single-pass (cluster) kernel off
  float scale = 1.0f, offset = 0.0f;
};

class GroupNormCase : public Case {
 public:
  GroupNormCase(std::string name, GroupNormParams p, Tolerance tol) : Case(std::move(name), tol), p_(p) {}

  Inputs make_inputs(uint32_t seed) const override {
    const auto& p = p_;
    const auto C = static_cast<size_t>(p.channels);
    return {channel_data(p.batch, p.channels, p.h * p.w, seed, p.scale, p.offset),
            random_normal(C, seed + 3, 0.2f, 1.0f), random_normal(C, seed + 4, 0.2f),
            p.pre_bias ? random_normal(static_cast<size_t>(p.batch) * C, seed + 5) : Host{}};
  }

  std::vector<double> reference(const Inputs& in) const override {
    const auto& p = p_;
    const int64_t S = p.h * p.w, per = p.channels / p.groups;
    std::vector<double> y(in[0].size());
    std::vector<double> v(static_cast<size_t>(per * S));  // one group's x + pre_bias
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t g = 0; g < p.groups; ++g) {
        const int64_t base = (b * p.channels + g * per) * S;  // a group is `per` consecutive planes
        for (int64_t i = 0; i < per * S; ++i)
          v[i] = static_cast<double>(in[0][base + i]) +
                 (p.pre_bias ? in[3][b * p.channels + g * per + i / S] : 0.0);
        double mean = 0, var = 0;
        for (const double x : v) mean += x;
        mean /= static_cast<double>(v.size());
        for (const double x : v) var += (x - mean) * (x - mean);
        var /= static_cast<double>(v.size());
        const double inv = 1.0 / std::sqrt(var + p.eps);
        for (int64_t i = 0; i < per * S; ++i) {
          const int64_t c = g * per + i / S;
          const double n = (v[i] - mean) * inv * in[1][c] + in[2][c];
          y[base + i] = p.silu ? silu(n) : n;
        }
      }
    return y;
  }

  std::unique_ptr<Run> prepare_cpu(const Inputs& in) const override {
    struct State {
      Inputs in;
      Host y;
    };
    auto s = std::make_shared<State>();
    s->in = in;
    s->y.resize(in[0].size());
    const GroupNormParams p = p_;
    return make_run(
        [s, p] {
          const int64_t S = p.h * p.w;
          const float* x = s->in[0].data();
          if (p.pre_bias) {  // as the CPU ResNet block: the projected time embedding added to every plane
            for (int64_t bc = 0; bc < p.batch * p.channels; ++bc)
              for (int64_t i = 0; i < S; ++i) s->y[bc * S + i] = s->in[0][bc * S + i] + s->in[3][bc];
            x = s->y.data();
          }
          cpu::group_norm(x, s->in[1].data(), s->in[2].data(), s->y.data(), p.batch, p.channels, S, p.groups,
                          p.eps, p.silu);
        },
        [s] { return s->y; });
  }

#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    const GroupNormParams p = p_;
    const int64_t S = p.h * p.w;
    struct State {
      cuda::DeviceBuffer x, y, gamma, beta, pre_bias;
      cuda::GroupNormArgs args;
    };
    auto s = std::make_shared<State>();
    s->x = upload_f16(ctx, nchw_to_nhwc(in[0], p.batch, p.channels, S));
    s->y = cuda::DeviceBuffer(in[0].size() * sizeof(__half));
    s->gamma = upload_f32(ctx, in[1]);
    s->beta = upload_f32(ctx, in[2]);
    if (p.pre_bias) s->pre_bias = upload_f16(ctx, in[3]);
    s->args = {.x = s->x.as<__half>(),
               .y = s->y.as<__half>(),
               .gamma = s->gamma.as<float>(),
               .beta = s->beta.as<float>(),
               .pre_bias = p.pre_bias ? s->pre_bias.as<__half>() : nullptr,
               .batch = p.batch,
               .spatial = S,
               .channels = p.channels,
               .groups = p.groups,
               .pre_bias_stride = 0,
               .eps = p.eps,
               .silu = p.silu,
               .scratch = nullptr,
               .single_pass = !p.two_pass};
    cuda::Context* c = &ctx;
    return make_run(
        [s, c, p, S] {
          // The context's scratch, as the models use it; asked for at each launch, as it may have grown.
          s->args.scratch =
              c->zeroed_scratch(cuda::group_norm_scratch_bytes(p.batch, S, p.channels, p.groups));
          cuda::launch_group_norm(s->args, c->stream());
        },
        [s, c, p, S] {
          const size_t n = static_cast<size_t>(p.batch * S * p.channels);
          return nhwc_to_nchw(download_f16(*c, s->y, n), p.batch, p.channels, S);
        });
  }
#endif

  Cost cost() const override {
    const auto& p = p_;
    const double n = d(p.batch * p.channels * p.h * p.w);
    return traffic(0, 2 * n + (p.pre_bias ? d(p.batch * p.channels) : 0), 2 * d(p.channels));
  }

 private:
  GroupNormParams p_;
};

// ---- layer_norm -------------------------------------------------------------------------------------------

struct LayerNormParams {
  int64_t rows, dim;
  float eps = 1e-5f;
  float scale = 1.0f, offset = 0.0f;
};

class LayerNormCase : public Case {
 public:
  LayerNormCase(std::string name, LayerNormParams p, Tolerance tol) : Case(std::move(name), tol), p_(p) {}

  Inputs make_inputs(uint32_t seed) const override {
    const auto& p = p_;
    // Per-row offsets (rows as the "channels" of channel_data) so that a kernel mixing rows fails.
    return {channel_data(1, p.rows, p.dim, seed, p.scale, p.offset),
            random_normal(static_cast<size_t>(p.dim), seed + 3, 0.2f, 1.0f),
            random_normal(static_cast<size_t>(p.dim), seed + 4, 0.2f)};
  }

  std::vector<double> reference(const Inputs& in) const override {
    const auto& p = p_;
    std::vector<double> y(in[0].size());
    for (int64_t r = 0; r < p.rows; ++r) {
      const float* x = in[0].data() + r * p.dim;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < p.dim; ++i) mean += x[i];
      mean /= static_cast<double>(p.dim);
      for (int64_t i = 0; i < p.dim; ++i) var += (x[i] - mean) * (x[i] - mean);
      var /= static_cast<double>(p.dim);
      const double inv = 1.0 / std::sqrt(var + p.eps);
      for (int64_t i = 0; i < p.dim; ++i) y[r * p.dim + i] = (x[i] - mean) * inv * in[1][i] + in[2][i];
    }
    return y;
  }

  std::unique_ptr<Run> prepare_cpu(const Inputs& in) const override {
    auto s = std::make_shared<std::pair<Inputs, Host>>(in, Host(in[0].size()));
    const LayerNormParams p = p_;
    return make_run(
        [s, p] {
          cpu::layer_norm(s->first[0].data(), s->first[1].data(), s->first[2].data(), s->second.data(),
                          p.rows, p.dim, p.eps);
        },
        [s] { return s->second; });
  }

#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    const LayerNormParams p = p_;
    struct State {
      cuda::DeviceBuffer x, y, gamma, beta;
    };
    auto s = std::make_shared<State>();
    s->x = upload_f16(ctx, in[0]);
    s->y = cuda::DeviceBuffer(in[0].size() * sizeof(__half));
    s->gamma = upload_f32(ctx, in[1]);
    s->beta = upload_f32(ctx, in[2]);
    cuda::Context* c = &ctx;
    return make_run(
        [s, c, p] {
          cuda::launch_layer_norm(s->x.as<__half>(), s->y.as<__half>(), s->gamma.as<float>(),
                                  s->beta.as<float>(), p.rows, p.dim, p.eps, c->stream());
        },
        [s, c, p] { return download_f16(*c, s->y, static_cast<size_t>(p.rows * p.dim)); });
  }
#endif

  Cost cost() const override {
    return traffic(0, 2 * d(p_.rows * p_.dim), 2 * d(p_.dim));
  }

 private:
  LayerNormParams p_;
};

// ---- attention --------------------------------------------------------------------------------------------

enum class Layout {
  kSeparate,  // q, k, v each [B, S, C]
  kFusedQkv,  // one [B, S, 3C] buffer: q | k | v (self-attention)
  kFusedKv,   // q [B, Sq, C]; one [B, Skv, 2C] buffer: k | v (cross-attention)
};

struct AttentionParams {
  int64_t batch, heads, seq_q, seq_kv, head_dim;
  Layout layout;
  bool causal = false;
  bool fallback = false;  // CUDA: force the cuBLASLt fallback instead of cuDNN's fused attention
};

class AttentionCase : public Case {
 public:
  AttentionCase(std::string name, AttentionParams p, Tolerance tol) : Case(std::move(name), tol), p_(p) {}

  Inputs make_inputs(uint32_t seed) const override {
    const auto& p = p_;
    const int64_t C = p.heads * p.head_dim;
    // Scores q·k/√D with a spread of about 1.5: the softmax is peaked enough for a wrong scale to show.
    return {random_normal(static_cast<size_t>(p.batch * p.seq_q * C), seed, 1.5f),
            random_normal(static_cast<size_t>(p.batch * p.seq_kv * C), seed + 1),
            random_normal(static_cast<size_t>(p.batch * p.seq_kv * C), seed + 2)};
  }

  std::vector<double> reference(const Inputs& in) const override {
    const auto& p = p_;
    const int64_t C = p.heads * p.head_dim, D = p.head_dim;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    std::vector<double> out(static_cast<size_t>(p.batch * p.seq_q * C)), w(static_cast<size_t>(p.seq_kv));
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.heads; ++h)
        for (int64_t i = 0; i < p.seq_q; ++i) {
          const float* q = in[0].data() + (b * p.seq_q + i) * C + h * D;
          const int64_t keys = p.causal ? std::min(i + 1, p.seq_kv) : p.seq_kv;
          double mx = -1e300, sum = 0;
          for (int64_t j = 0; j < keys; ++j) {
            const float* k = in[1].data() + (b * p.seq_kv + j) * C + h * D;
            double s = 0;
            for (int64_t e = 0; e < D; ++e) s += static_cast<double>(q[e]) * k[e];
            w[j] = s * scale;
            mx = std::max(mx, w[j]);
          }
          for (int64_t j = 0; j < keys; ++j) sum += (w[j] = std::exp(w[j] - mx));
          double* o = out.data() + (b * p.seq_q + i) * C + h * D;
          for (int64_t j = 0; j < keys; ++j) {
            const float* v = in[2].data() + (b * p.seq_kv + j) * C + h * D;
            for (int64_t e = 0; e < D; ++e) o[e] += w[j] / sum * v[e];
          }
        }
    return out;
  }

  std::unique_ptr<Run> prepare_cpu(const Inputs& in) const override {
    auto s = std::make_shared<std::pair<Inputs, Host>>(in, Host(in[0].size()));
    const AttentionParams p = p_;
    return make_run(
        [s, p] {
          const int64_t C = p.heads * p.head_dim;
          for (int64_t b = 0; b < p.batch; ++b) {
            cpu::AttentionArgs a{s->first[0].data() + b * p.seq_q * C,
                                 s->first[1].data() + b * p.seq_kv * C,
                                 s->first[2].data() + b * p.seq_kv * C,
                                 s->second.data() + b * p.seq_q * C,
                                 p.seq_q,
                                 p.seq_kv,
                                 p.heads,
                                 p.head_dim,
                                 C,
                                 C,
                                 C,
                                 C,
                                 p.causal};
            cpu::attention(a);
          }
        },
        [s] { return s->second; });
  }

#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    const AttentionParams p = p_;
    const int64_t C = p.heads * p.head_dim;
    // Interleaves column blocks: rows of `parts` tensors [rows, C] -> one [rows, parts·C] buffer.
    const auto fuse = [C](const std::vector<const Host*>& parts, int64_t rows) {
      const auto n = static_cast<int64_t>(parts.size());
      Host y(static_cast<size_t>(rows * n * C));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t t = 0; t < n; ++t) std::copy_n(parts[t]->data() + r * C, C, y.data() + (r * n + t) * C);
      return y;
    };
    struct State {
      cuda::DeviceBuffer a, b, c, out;
      const __half *q = nullptr, *k = nullptr, *v = nullptr;
      cuda::AttentionShape shape;
    };
    auto s = std::make_shared<State>();
    int64_t qs = C, ks = C;
    switch (p.layout) {
      case Layout::kSeparate:
        s->a = upload_f16(ctx, in[0]), s->b = upload_f16(ctx, in[1]), s->c = upload_f16(ctx, in[2]);
        s->q = s->a.as<__half>(), s->k = s->b.as<__half>(), s->v = s->c.as<__half>();
        break;
      case Layout::kFusedQkv:
        s->a = upload_f16(ctx, fuse({&in[0], &in[1], &in[2]}, p.batch * p.seq_q));
        s->q = s->a.as<__half>(), s->k = s->q + C, s->v = s->q + 2 * C;
        qs = ks = 3 * C;
        break;
      case Layout::kFusedKv:
        s->a = upload_f16(ctx, in[0]);
        s->b = upload_f16(ctx, fuse({&in[1], &in[2]}, p.batch * p.seq_kv));
        s->q = s->a.as<__half>(), s->k = s->b.as<__half>(), s->v = s->k + C;
        ks = 2 * C;
        break;
    }
    s->out = cuda::DeviceBuffer(in[0].size() * sizeof(__half));
    s->shape = {p.batch, p.heads, p.seq_q, p.seq_kv, p.head_dim,
                qs,      ks,      ks,      C,        1.0f / std::sqrt(static_cast<float>(p.head_dim)),
                p.causal};
    cuda::Context* c = &ctx;
    const size_t n = in[0].size();
    return make_run(
        [s, c, p] {
          cuda::attention_force_fallback(p.fallback);
          try {
            cuda::attention(*c, s->shape, s->q, s->k, s->v, s->out.as<__half>());
          } catch (...) {
            cuda::attention_force_fallback(false);
            throw;
          }
          cuda::attention_force_fallback(false);
        },
        [s, c, n] { return download_f16(*c, s->out, n); });
  }
#endif

  Cost cost() const override {
    const auto& p = p_;
    // Query-key pairs the softmax sees: all of them, or the lower triangle for causal attention.
    double pairs = d(p.seq_q) * d(p.seq_kv);
    if (p.causal) {
      pairs = 0;
      for (int64_t i = 0; i < p.seq_q; ++i) pairs += d(std::min(i + 1, p.seq_kv));
    }
    const double flop = 4.0 * d(p.batch * p.heads * p.head_dim) * pairs;  // Q·Kᵀ and P·V
    const int64_t C = p.heads * p.head_dim;
    return traffic(flop, d(p.batch * C) * (2 * d(p.seq_q) + 2 * d(p.seq_kv)));
  }

 private:
  AttentionParams p_;
};

// CPU: statistics in double, normalisation in fp32; with a large common offset x·scale − mean·scale cancels
// in fp32 (NMSE ~1e-10 at an offset of 300). CUDA: fp16 output rounding (~1e-7) and fp32 statistics.
constexpr Tolerance kNormTol{1e-9, 2e-6};

}  // namespace

Op group_norm_op() {
  Op op{"group_norm", {}};
  const auto add = [&](const std::string& name, const GroupNormParams& p) {
    op.cases.push_back(std::make_shared<GroupNormCase>(name, p, kNormTol));
  };
  // SD 1.5 UNet ResNets (eps 1e-5, SiLU; norm2 gets the time embedding as pre-bias), transformer input norm
  add("sd15_norm1_320_64", {2, 320, 64, 64, 32, 1e-5f});
  add("sd15_norm2_temb_320_64", {2, 320, 64, 64, 32, 1e-5f, true, true});
  add("sd15_norm2_temb_640_32", {2, 640, 32, 32, 32, 1e-5f, true, true});
  add("sd15_up_concat_960_64", {2, 960, 64, 64, 32, 1e-5f});
  add("sd15_up_concat_2560_8", {2, 2560, 8, 8, 32, 1e-5f});
  add("sd15_mid_temb_1280_8", {2, 1280, 8, 8, 32, 1e-5f, true, true});
  add("sd15_transformer_norm_320_64", {2, 320, 64, 64, 32, 1e-6f, false});
  add("sd15_norm1_1280_16_two_pass", {2, 1280, 16, 16, 32, 1e-5f, true, false, true});
  add("sd15_norm2_temb_320_64_two_pass", {2, 320, 64, 64, 32, 1e-5f, true, true, true});
  // SDXL at 128×128 latents, SD 2.1 at 96×96
  add("sdxl_norm1_320_128", {2, 320, 128, 128, 32, 1e-5f});
  add("sd21_norm2_temb_320_96", {2, 320, 96, 96, 32, 1e-5f, true, true});
  // VAE decoder (batch 1, eps 1e-6)
  add("vae_512_64", {1, 512, 64, 64, 32, 1e-6f});
  add("vae_512_256", {1, 512, 256, 256, 32, 1e-6f});
  add("vae_128_512", {1, 128, 512, 512, 32, 1e-6f});
  add("vae_attention_norm_512_64", {1, 512, 64, 64, 32, 1e-6f, false});
  // Real channel counts on small latents, and numerics: a large common offset (E[x²] − E[x]² in fp32 fails),
  // a tiny variance next to eps, a large eps
  add("c320_8x8_temb", {2, 320, 8, 8, 32, 1e-5f, true, true});
  add("c640_4x4_two_pass", {1, 640, 4, 4, 32, 1e-5f, true, true, true});
  add("large_mean", {2, 320, 16, 16, 32, 1e-5f, false, true, false, 1.0f, 300.0f});
  add("tiny_variance", {2, 320, 16, 16, 32, 1e-5f, false, false, false, 0.004f});
  add("large_eps", {2, 64, 8, 8, 32, 0.5f, true, true});
  // Tiny and odd: 1×1 spatial, few channels per group, channels not a multiple of 8
  add("one_pixel_c320", {2, 320, 1, 1, 32, 1e-5f, true, true});
  add("tiny_c32_g32_5x8", {2, 32, 5, 8, 32, 1e-5f, true, true});
  add("tiny_c64_g4_9x9", {3, 64, 9, 9, 4, 1e-5f, false});
  add("odd_c6_g3", {3, 6, 1, 5, 3, 1e-5f, true, true});
  add("odd_c74_g2", {2, 74, 3, 11, 2, 1e-5f, true, true});
  add("odd_c3_g1", {2, 3, 17, 1, 1, 1e-5f, false});
  add("odd_rows_37x29_c320", {2, 320, 37, 29, 32, 1e-5f, true, true});
  return op;
}

Op layer_norm_op() {
  Op op{"layer_norm", {}};
  const auto add = [&](const std::string& name, const LayerNormParams& p) {
    op.cases.push_back(std::make_shared<LayerNormCase>(name, p, kNormTol));
  };
  // UNet transformer blocks (batch 2 at 64×64 latents), text encoders (2 × 77 tokens), SD 2.1 / SDXL widths
  add("sd15_320_8192", {8192, 320});
  add("sd15_640_2048", {2048, 640});
  add("sd15_1280_512", {512, 1280});
  add("sd15_1280_128", {128, 1280});
  add("clip_l_768_154", {154, 768});
  add("clip_h_1024_154", {154, 1024});
  add("clip_bigg_1280_154", {154, 1280});
  add("sd21_320_18432", {18432, 320});
  add("sdxl_640_8192", {8192, 640});
  add("sdxl_1280_2048", {2048, 1280});
  // Numerics and odd widths (vector tails, the block fallback past 4096)
  add("large_mean_768", {64, 768, 1e-5f, 1.0f, 200.0f});
  add("tiny_variance_320", {64, 320, 1e-5f, 0.004f});
  add("large_eps_320", {16, 320, 0.5f});
  add("one_row_320", {1, 320});
  add("tiny_32", {10, 32});
  add("odd_dim40", {7, 40});
  add("odd_dim6", {5, 6});
  add("odd_dim7", {3, 7});
  add("wide_dim5000", {3, 5000});
  return op;
}

Op attention_op() {
  Op op{"attention", {}};
  const auto add = [&](const std::string& name, const AttentionParams& p) {
    op.cases.push_back(std::make_shared<AttentionCase>(name, p, Tolerance{1e-10, 1e-5}));
  };
  using L = Layout;
  // SD 1.5 UNet at 64×64 latents, batch 2: 8 heads; self-attention over H·W tokens, cross over 77
  add("sd15_self_4096_d40", {2, 8, 4096, 4096, 40, L::kFusedQkv});
  add("sd15_cross_4096x77_d40", {2, 8, 4096, 77, 40, L::kFusedKv});
  add("sd15_self_1024_d80", {2, 8, 1024, 1024, 80, L::kFusedQkv});
  add("sd15_cross_1024x77_d80", {2, 8, 1024, 77, 80, L::kFusedKv});
  add("sd15_self_256_d160", {2, 8, 256, 256, 160, L::kFusedQkv});
  add("sd15_cross_256x77_d160", {2, 8, 256, 77, 160, L::kFusedKv});
  add("sd15_self_64_d160", {2, 8, 64, 64, 160, L::kFusedQkv});
  add("sd15_cross_64x77_d160", {2, 8, 64, 77, 160, L::kFusedKv});
  // SD 2.1: head dim 64 (5 / 10 / 20 heads), 96×96 latents at 768²
  add("sd21_self_9216_d64", {2, 5, 9216, 9216, 64, L::kFusedQkv});
  add("sd21_cross_9216x77_d64", {2, 5, 9216, 77, 64, L::kFusedKv});
  add("sd21_self_2304_d64", {2, 10, 2304, 2304, 64, L::kFusedQkv});
  // SDXL at 1024²: 640 channels (10 heads) at 64×64, 1280 (20 heads) at 32×32
  add("sdxl_self_4096_d64", {2, 10, 4096, 4096, 64, L::kFusedQkv});
  add("sdxl_cross_4096x77_d64", {2, 10, 4096, 77, 64, L::kFusedKv});
  add("sdxl_self_1024_d64", {2, 20, 1024, 1024, 64, L::kFusedQkv});
  add("sdxl_cross_1024x77_d64", {2, 20, 1024, 77, 64, L::kFusedKv});
  // Text encoders (causal): CLIP ViT-L 12 heads, OpenCLIP ViT-H 16 heads
  add("clip_l_causal_77_d64", {2, 12, 77, 77, 64, L::kFusedQkv, true});
  add("clip_h_causal_77_d64", {2, 16, 77, 77, 64, L::kSeparate, true});
  // VAE mid-block: one head of 512 channels over 64×64 latents
  add("vae_mid_4096_d512", {1, 1, 4096, 4096, 512, L::kFusedQkv});
  // The cuBLASLt fallback path on SD shapes
  add("sd15_cross_1024x77_d80_fallback", {2, 8, 1024, 77, 80, L::kFusedKv, false, true});
  add("sd15_self_256_d160_fallback", {2, 8, 256, 256, 160, L::kFusedQkv, false, true});
  add("clip_l_causal_77_d64_fallback", {2, 12, 77, 77, 64, L::kFusedQkv, true, true});
  // Tiny and odd: head_dim not a multiple of 8, single query / key (1×1 latents), odd sequence lengths
  add("tiny_self_16_d8", {1, 2, 16, 16, 8, L::kFusedQkv});
  add("tiny_cross_16x77_d8", {2, 2, 16, 77, 8, L::kFusedKv});
  add("tiny_causal_77_d8", {1, 2, 77, 77, 8, L::kFusedQkv, true});
  add("tiny_self_64_d16_separate", {2, 2, 64, 64, 16, L::kSeparate});
  add("one_token_self_d40", {2, 8, 1, 1, 40, L::kFusedQkv});
  add("one_token_cross_1x77_d40", {2, 8, 1, 77, 40, L::kFusedKv});
  add("odd_d20_33x50", {2, 3, 33, 50, 20, L::kSeparate});
  add("odd_d12_causal_45", {1, 2, 45, 45, 12, L::kFusedQkv, true});
  return op;
}

}  // namespace sdrt::backend_ops
