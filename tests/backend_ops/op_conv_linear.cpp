// conv2d and linear: the ops that hold nearly all of a UNet step's FLOPs.
//
// conv2d  canonical: x [B, in, H, W], weight [out, in, k, k] (torch), bias [out], residual [B, out, OH, OW].
//         CUDA: x [B, H, W, in] fp16; weight [out, k, k, in] fp16, permuted on the device by the loader's
//         kernel (launch_conv_weight_to_ohwi_f16 from the fp32 torch layout); NHWC residual and output.
// linear  canonical and CUDA: x [rows, in] (CUDA: optionally a column slice of wider rows), weight [out, in],
//         bias [out], residual [rows, out]; y = act(x * weight^T + bias) + residual.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend_ops/op_util.h"
#include "backends/cpu/conv.h"
#include "backends/cpu/ops.h"

#if SDRT_HAVE_CUDA
#include "backends/cuda/conv.cuh"
#include "backends/cuda/gemm.cuh"
#include "backends/cuda/weight_upload.cuh"
#endif

namespace sdrt::backend_ops {
namespace {

// ---- conv2d -----------------------------------------------------------------------------------------------

struct ConvParams {
  int64_t batch, in, h, w, out, kernel, stride;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  bool bias = true, residual = false;

  int64_t out_h() const { return (h + pad_top + pad_bottom - kernel) / stride + 1; }
  int64_t out_w() const { return (w + pad_left + pad_right - kernel) / stride + 1; }
  ConvParams& with_residual() {
    residual = true;
    return *this;
  }
  ConvParams& no_bias() {
    bias = false;
    return *this;
  }
  // torch's (left, right, top, bottom) order, as F.pad and diffusers' Downsample2D write it.
  ConvParams& pad(int64_t left, int64_t right, int64_t top, int64_t bottom) {
    pad_left = left, pad_right = right, pad_top = top, pad_bottom = bottom;
    return *this;
  }
};

// Conv2d(in, out, kernel, stride, padding = kernel / 2) on [batch, in, h, w].
ConvParams conv(int64_t batch, int64_t in, int64_t h, int64_t w, int64_t out, int64_t kernel = 3,
                int64_t stride = 1) {
  const int64_t p = kernel / 2;
  return {batch, in, h, w, out, kernel, stride, p, p, p, p};
}

class ConvCase : public Case {
 public:
  ConvCase(std::string name, ConvParams p, Tolerance tol) : Case(std::move(name), tol), p_(p) {}

  Inputs make_inputs(uint32_t seed) const override {
    const auto& p = p_;
    const float w_scale = 1.0f / std::sqrt(static_cast<float>(p.in * p.kernel * p.kernel));
    return {random_normal(static_cast<size_t>(p.batch * p.in * p.h * p.w), seed),
            random_normal(static_cast<size_t>(p.out * p.in * p.kernel * p.kernel), seed + 1, w_scale),
            p.bias ? random_normal(static_cast<size_t>(p.out), seed + 2, 0.5f) : Host{},
            p.residual ? random_normal(static_cast<size_t>(out_elems()), seed + 3) : Host{}};
  }

  std::vector<double> reference(const Inputs& in) const override {
    const auto& p = p_;
    const int64_t oh = p.out_h(), ow = p.out_w(), k = p.kernel;
    const Host &x = in[0], &w = in[1], &bias = in[2], &res = in[3];
    std::vector<double> y(static_cast<size_t>(out_elems()));
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t o = 0; o < p.out; ++o)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            double acc = p.bias ? bias[o] : 0.0;
            for (int64_t c = 0; c < p.in; ++c)
              for (int64_t kh = 0; kh < k; ++kh) {
                const int64_t ih = i * p.stride + kh - p.pad_top;
                if (ih < 0 || ih >= p.h) continue;
                for (int64_t kw = 0; kw < k; ++kw) {
                  const int64_t iw = j * p.stride + kw - p.pad_left;
                  if (iw < 0 || iw >= p.w) continue;
                  acc += static_cast<double>(x[((b * p.in + c) * p.h + ih) * p.w + iw]) *
                         w[((o * p.in + c) * k + kh) * k + kw];
                }
              }
            const size_t at = static_cast<size_t>(((b * p.out + o) * oh + i) * ow + j);
            y[at] = acc + (p.residual ? res[at] : 0.0);
          }
    return y;
  }

  std::unique_ptr<Run> prepare_cpu(const Inputs& in) const override {
    struct State {
      Inputs in;
      Host y;
      cpu::Conv2dShape shape;
    };
    auto s = std::make_shared<State>();
    s->in = in;
    s->y.resize(static_cast<size_t>(out_elems()));
    s->shape = {p_.batch,  p_.in,      p_.h,          p_.w,        p_.out,      p_.kernel,
                p_.stride, p_.pad_top, p_.pad_bottom, p_.pad_left, p_.pad_right};
    const bool bias = p_.bias, residual = p_.residual;
    return make_run(
        [s, bias, residual] {
          cpu::conv2d(s->in[0].data(), s->in[1].data(), bias ? s->in[2].data() : nullptr, s->y.data(),
                      s->shape);
          // The CPU ResNet blocks add the skip connection in a separate pass.
          if (residual)
            cpu::add(s->y.data(), s->in[3].data(), s->y.data(), static_cast<int64_t>(s->y.size()));
        },
        [s] { return s->y; });
  }

#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    const auto& p = p_;
    const int64_t oh = p.out_h(), ow = p.out_w();
    struct State {
      cuda::DeviceBuffer x, w, bias, residual, y;
      cuda::ConvArgs args;
    };
    auto s = std::make_shared<State>();
    s->x = upload_f16(ctx, nchw_to_nhwc(in[0], p.batch, p.in, p.h * p.w));
    // The loader's path: torch-layout weights arrive as stored (fp32 here) and are permuted on the device.
    const cuda::DeviceBuffer w_torch = upload_f32(ctx, in[1]);
    s->w = cuda::DeviceBuffer(in[1].size() * sizeof(__half));
    cuda::launch_conv_weight_to_ohwi_f16(w_torch.data(), cuda::StoredType::kF32, s->w.as<__half>(), p.out,
                                         p.in, p.kernel * p.kernel, ctx.stream());
    ctx.synchronize();  // w_torch is freed on return
    if (p.bias) s->bias = upload_f16(ctx, in[2]);
    if (p.residual) s->residual = upload_f16(ctx, nchw_to_nhwc(in[3], p.batch, p.out, oh * ow));
    s->y = cuda::DeviceBuffer(static_cast<size_t>(out_elems()) * sizeof(__half));
    s->args = {.x = s->x.as<__half>(),
               .weight = s->w.as<__half>(),
               .bias = p.bias ? s->bias.as<__half>() : nullptr,
               .residual = p.residual ? s->residual.as<__half>() : nullptr,
               .y = s->y.as<__half>(),
               .batch = p.batch,
               .h = p.h,
               .w = p.w,
               .in = p.in,
               .out = p.out,
               .kernel = p.kernel,
               .stride = p.stride,
               .pad_top = p.pad_top,
               .pad_bottom = p.pad_bottom,
               .pad_left = p.pad_left,
               .pad_right = p.pad_right};
    cuda::Context* c = &ctx;
    const int64_t batch = p.batch, out = p.out, n = out_elems();
    return make_run([s, c] { cuda::conv2d(*c, s->args); },
                    [s, c, batch, out, oh, ow, n] {
                      return nhwc_to_nchw(download_f16(*c, s->y, static_cast<size_t>(n)), batch, out,
                                          oh * ow);
                    });
  }
#endif

  Cost cost() const override {
    const auto& p = p_;
    const double flop = 2.0 * d(out_elems()) * d(p.in * p.kernel * p.kernel);
    const double elems = d(p.batch * p.in * p.h * p.w) + d(p.out * p.in * p.kernel * p.kernel) +
                         d(out_elems()) * (p.residual ? 2 : 1) + (p.bias ? d(p.out) : 0);
    return traffic(flop, elems);
  }

 private:
  int64_t out_elems() const {
    return p_.batch * p_.out * p_.out_h() * p_.out_w();
  }
  ConvParams p_;
};

// ---- linear -----------------------------------------------------------------------------------------------

struct LinearParams {
  int64_t rows, in, out;
  bool bias = false, gelu = false, residual = false;
  bool residual_in_place = false;  // CUDA: residual aliases y (the transformer's in-place skip connections)
  int64_t x_stride = 0;            // CUDA: x is columns [0, in) of rows x_stride wide (q of a fused QKV)
};

LinearParams lin(int64_t rows, int64_t in, int64_t out, bool bias = false) {
  return {rows, in, out, bias};
}
LinearParams with_residual(LinearParams p, bool in_place = false) {
  p.residual = true;
  p.residual_in_place = in_place;
  return p;
}
LinearParams with_gelu(LinearParams p) {
  p.gelu = true;
  return p;
}
LinearParams strided(LinearParams p, int64_t x_stride) {
  p.x_stride = x_stride;
  return p;
}

class LinearCase : public Case {
 public:
  LinearCase(std::string name, LinearParams p, Tolerance tol) : Case(std::move(name), tol), p_(p) {}

  Inputs make_inputs(uint32_t seed) const override {
    const auto& p = p_;
    return {random_normal(static_cast<size_t>(p.rows * p.in), seed),
            random_normal(static_cast<size_t>(p.out * p.in), seed + 1,
                          1.0f / std::sqrt(static_cast<float>(p.in))),
            p.bias ? random_normal(static_cast<size_t>(p.out), seed + 2, 0.5f) : Host{},
            p.residual ? random_normal(static_cast<size_t>(p.rows * p.out), seed + 3) : Host{}};
  }

  std::vector<double> reference(const Inputs& in) const override {
    const auto& p = p_;
    std::vector<double> y(static_cast<size_t>(p.rows * p.out));
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t o = 0; o < p.out; ++o) {
        double acc = p.bias ? in[2][o] : 0.0;
        for (int64_t i = 0; i < p.in; ++i)
          acc += static_cast<double>(in[0][r * p.in + i]) * in[1][o * p.in + i];
        if (p.gelu) acc = 0.5 * acc * (1.0 + std::erf(acc / std::sqrt(2.0)));
        y[r * p.out + o] = acc + (p.residual ? in[3][r * p.out + o] : 0.0);
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
    s->y.resize(static_cast<size_t>(p_.rows * p_.out));
    const LinearParams p = p_;
    return make_run(
        [s, p] {
          cpu::linear(s->in[0].data(), s->in[1].data(), p.bias ? s->in[2].data() : nullptr, s->y.data(),
                      p.rows, p.in, p.out);
          const int64_t n = p.rows * p.out;
          if (p.gelu) cpu::activate(s->y.data(), n, cpu::Activation::kGelu);
          if (p.residual) cpu::add(s->y.data(), s->in[3].data(), s->y.data(), n);
        },
        [s] { return s->y; });
  }

#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    const LinearParams p = p_;
    struct State {
      cuda::DeviceBuffer x, w, bias, residual, y;
      cuda::LinearArgs args;
    };
    auto s = std::make_shared<State>();
    const int64_t ld = p.x_stride ? p.x_stride : p.in;
    // Columns past `in` hold large values: reading them would show.
    Host x(static_cast<size_t>(p.rows * ld), 1000.0f);
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t i = 0; i < p.in; ++i) x[r * ld + i] = in[0][r * p.in + i];
    s->x = upload_f16(ctx, x);
    s->w = upload_f16(ctx, in[1]);
    if (p.bias) s->bias = upload_f16(ctx, in[2]);
    if (p.residual_in_place) {
      s->y = upload_f16(ctx, in[3]);
    } else {
      if (p.residual) s->residual = upload_f16(ctx, in[3]);
      s->y = cuda::DeviceBuffer(static_cast<size_t>(p.rows * p.out) * sizeof(__half));
    }
    s->args = {.x = s->x.as<__half>(),
               .weight = s->w.as<__half>(),
               .bias = p.bias ? s->bias.as<__half>() : nullptr,
               .residual = p.residual_in_place ? s->y.as<__half>()
                           : p.residual        ? s->residual.as<__half>()
                                               : nullptr,
               .y = s->y.as<__half>(),
               .rows = p.rows,
               .in = p.in,
               .out = p.out,
               .x_stride = p.x_stride,
               .epilogue = p.gelu ? cuda::GemmEpilogue::kGelu : cuda::GemmEpilogue::kNone};
    cuda::Context* c = &ctx;
    return make_run([s, c] { cuda::linear(*c, s->args); },
                    [s, c, p] { return download_f16(*c, s->y, static_cast<size_t>(p.rows * p.out)); });
  }
#endif

  Cost cost() const override {
    const auto& p = p_;
    const double elems = d(p.rows * p.in) + d(p.in * p.out) + d(p.rows * p.out) * (p.residual ? 2 : 1) +
                         (p.bias ? d(p.out) : 0);
    return traffic(2.0 * d(p.rows) * d(p.in) * d(p.out), elems);
  }

 private:
  LinearParams p_;
};

}  // namespace

// fp16 inputs are exact, accumulation is fp32 on both backends: what remains is the fp16 rounding of the
// output (NMSE ≈ 1e-7, twice that with a separately rounded residual) and the order of the fp32 sums.
constexpr Tolerance kMatmulTol{1e-9, 1e-5};

Op conv2d_op() {
  Op op{"conv2d", {}};
  const auto add = [&](const std::string& name, const ConvParams& p) {
    op.cases.push_back(std::make_shared<ConvCase>(name, p, kMatmulTol));
  };
  // SD 1.5 UNet, 512² (64×64 latents), batch 2 (classifier-free guidance)
  add("sd15_conv_in_4to320_64", conv(2, 4, 64, 64, 320));
  add("sd15_res_320_64", conv(2, 320, 64, 64, 320));
  add("sd15_res_320_64_residual", conv(2, 320, 64, 64, 320).with_residual());
  add("sd15_down_320_64_s2", conv(2, 320, 64, 64, 320, 3, 2));
  add("sd15_res_320to640_32", conv(2, 320, 32, 32, 640));
  add("sd15_shortcut_1x1_320to640_32", conv(2, 320, 32, 32, 640, 1));
  add("sd15_res_640_32_residual", conv(2, 640, 32, 32, 640).with_residual());
  add("sd15_res_1280_16", conv(2, 1280, 16, 16, 1280));
  add("sd15_res_1280_8_residual", conv(2, 1280, 8, 8, 1280).with_residual());
  add("sd15_up_2560to1280_8", conv(2, 2560, 8, 8, 1280));
  add("sd15_up_1920to640_32", conv(2, 1920, 32, 32, 640));
  add("sd15_up_conv_1280_32", conv(2, 1280, 32, 32, 1280));
  add("sd15_conv_out_320to4_64", conv(2, 320, 64, 64, 4));
  // SD 2.1, 768² (96×96 latents)
  add("sd21_res_320_96_residual", conv(2, 320, 96, 96, 320).with_residual());
  add("sd21_down_640_48_s2", conv(2, 640, 48, 48, 640, 3, 2));
  // SDXL, 1024² (128×128 latents): 320 / 640 / 1280 channels at 128 / 64 / 32
  add("sdxl_res_320_128", conv(2, 320, 128, 128, 320));
  add("sdxl_res_640_64_residual", conv(2, 640, 64, 64, 640).with_residual());
  add("sdxl_res_1280_32", conv(2, 1280, 32, 32, 1280));
  add("sdxl_down_640_64_s2", conv(2, 640, 64, 64, 640, 3, 2));
  // VAE decoder (batch 1) 64 -> 512 px, and the encoder's asymmetric-pad downsampler (Downsample2D
  // padding=0: F.pad(0, 1, 0, 1) then a stride-2 conv without padding)
  add("vae_post_quant_1x1_4to4_64", conv(1, 4, 64, 64, 4, 1));
  add("vae_conv_in_4to512_64", conv(1, 4, 64, 64, 512));
  add("vae_512_64_residual", conv(1, 512, 64, 64, 512).with_residual());
  add("vae_512_128", conv(1, 512, 128, 128, 512));
  add("vae_512_256", conv(1, 512, 256, 256, 512));
  add("vae_512to256_256", conv(1, 512, 256, 256, 256));
  add("vae_shortcut_1x1_512to256_256", conv(1, 512, 256, 256, 256, 1));
  add("vae_128_512_residual", conv(1, 128, 512, 512, 128).with_residual());
  add("vae_conv_out_128to3_512", conv(1, 128, 512, 512, 3));
  add("vae_enc_conv_in_3to128_512", conv(1, 3, 512, 512, 128));
  add("vae_enc_down_128_512_asym", conv(1, 128, 512, 512, 128, 3, 2).pad(0, 1, 0, 1));
  // Real channel counts on tiny latents (cheap enough for the CPU check)
  add("c320_4x4", conv(1, 320, 4, 4, 320));
  add("c64_16x16_residual", conv(2, 64, 16, 16, 64).with_residual());
  add("c64_16x16_s2_asym", conv(2, 64, 16, 16, 64, 3, 2).pad(0, 1, 0, 1));
  // Tiny and odd: 1×1 spatial, channels not a multiple of 8, odd sizes with stride 2, 1×1 kernels, no bias
  add("tiny_1x1_spatial", conv(2, 8, 1, 1, 16));
  add("tiny_1x1_spatial_s2", conv(1, 16, 1, 1, 8, 3, 2));
  add("tiny_c3to5_7x9_residual", conv(2, 3, 7, 9, 5).with_residual());
  add("tiny_c4to4_5x5", conv(1, 4, 5, 5, 4));
  add("tiny_c16to8_9x9_s2", conv(2, 16, 9, 9, 8, 3, 2));
  add("tiny_c8_8x8_s2_asym", conv(1, 8, 8, 8, 8, 3, 2).pad(0, 1, 0, 1));
  add("tiny_c8_7x7_s2_asym", conv(2, 8, 7, 7, 8, 3, 2).pad(0, 1, 0, 1));
  add("tiny_c12to20_5x6_k1_nobias", conv(1, 12, 5, 6, 20, 1).no_bias());
  add("tiny_c16_6x6_nobias_residual", conv(1, 16, 6, 6, 16).no_bias().with_residual());
  add("tiny_c32_8x8_residual", conv(2, 32, 8, 8, 32).with_residual());
  return op;
}

Op linear_op() {
  Op op{"linear", {}};
  const auto add = [&](const std::string& name, const LinearParams& p) {
    op.cases.push_back(std::make_shared<LinearCase>(name, p, kMatmulTol));
  };
  // SD 1.5 UNet, batch 2 at 64×64 latents: 2·4096 tokens of 320, 2·1024 of 640, 2·256 / 2·64 of 1280
  add("sd15_q_8192x320to320", lin(8192, 320, 320));
  add("sd15_qkv_8192x320to960", lin(8192, 320, 960));
  add("sd15_to_out_8192x320_residual", with_residual(lin(8192, 320, 320, true), true));
  add("sd15_geglu_proj_8192x320to2560", lin(8192, 320, 2560, true));
  add("sd15_ff_out_8192x1280to320_residual", with_residual(lin(8192, 1280, 320, true), true));
  add("sd15_proj_in_2048x640", lin(2048, 640, 640, true));
  add("sd15_geglu_proj_512x1280to10240", lin(512, 1280, 10240, true));
  add("sd15_to_out_128x1280_residual", with_residual(lin(128, 1280, 1280, true)));
  add("sd15_cross_kv_154x768to640", lin(154, 768, 640));
  add("sd15_time_linear_2x320to1280", lin(2, 320, 1280, true));
  add("sd15_time_emb_proj_2x1280to320", lin(2, 1280, 320, true));
  // Text encoders: CLIP ViT-L (768, quick GELU applied separately), OpenCLIP ViT-H (1024, exact GELU)
  add("clip_l_fc1_154x768to3072", lin(154, 768, 3072, true));
  add("clip_h_fc1_154x1024to4096_gelu", with_gelu(lin(154, 1024, 4096, true)));
  add("clip_h_fc2_154x4096to1024_residual", with_residual(lin(154, 4096, 1024, true), true));
  // SD 2.1 (768², 96×96 latents; 1024-wide context)
  add("sd21_q_18432x320", lin(18432, 320, 320));
  add("sd21_cross_kv_154x1024to640", lin(154, 1024, 640));
  // SDXL (1024², 2048-wide context, 640 / 1280 channels at 64×64 / 32×32)
  add("sdxl_cross_kv_154x2048to1280", lin(154, 2048, 1280));
  add("sdxl_cross_kv_154x2048to2560", lin(154, 2048, 2560));
  add("sdxl_geglu_proj_8192x640to5120", lin(8192, 640, 5120, true));
  add("sdxl_ff_out_2048x5120to1280_residual", with_residual(lin(2048, 5120, 1280, true), true));
  add("sdxl_add_embedding_2x2816to1280", lin(2, 2816, 1280, true));
  // VAE mid-block attention (batch 1, 64×64): fused q/k/v of 512 channels
  add("vae_qkv_4096x512to1536", lin(4096, 512, 1536, true));
  // Small and odd: one row, GELU with and without bias, strided input, in-place residual, odd sizes
  add("c320_64x320", lin(64, 320, 320, true));
  add("tiny_1x8to16", lin(1, 8, 16));
  add("tiny_gelu_5x16to24", with_gelu(lin(5, 16, 24, true)));
  add("tiny_gelu_nobias_7x32to40", with_gelu(lin(7, 32, 40)));
  add("tiny_strided_x_10x32_of_96", strided(lin(10, 32, 32), 96));
  add("tiny_residual_in_place_9x24to16", with_residual(lin(9, 24, 16, true), true));
  add("tiny_residual_9x24to16", with_residual(lin(9, 24, 16)));
  add("odd_13x7to5_bias", lin(13, 7, 5, true));
  add("odd_3x33to17_residual", with_residual(lin(3, 33, 17, true)));
  return op;
}

}  // namespace sdrt::backend_ops
