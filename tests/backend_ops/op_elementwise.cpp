// Elementwise and data-movement ops: geglu, gelu, quick_gelu, silu, add, upsample_nearest, concat_channels,
// timestep_embedding, guidance_combine.
//
// geglu               x [rows, 2·inner] = [value | gate] -> [rows, inner] = value · gelu(gate) (same on both)
// gelu / quick_gelu / silu / add   flat arrays (CUDA in place for the activations, as the engine runs them)
// upsample_nearest    canonical [B, C, H, W]; CUDA [B, H, W, C] (the ×2 kernel, or the any-size one)
// concat_channels     canonical a [B, Ca, H, W], b [B, Cb, H, W]; CUDA [B·H·W, Ca] + [B·H·W, Cb]
// timestep_embedding  one timestep -> [B, dim] (CUDA reads the timestep from device memory)
// guidance_combine    canonical eps [2B, C, H·W] = [uncond; cond] -> [B, C, H·W] fp32; CUDA reads NHWC fp16
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend_ops/op_util.h"
#include "backends/cpu/ops.h"
#include "models/unet.h"

#if SDRT_HAVE_CUDA
#include "backends/cuda/elementwise.cuh"
#endif

namespace sdrt::backend_ops {
namespace {

double gelu(double v) {
  return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
}

// An op given as functions of its inputs (the ops below need a handful of lines each).
struct SimpleOp {
  std::function<Inputs(uint32_t)> inputs;
  std::function<std::vector<double>(const Inputs&)> reference;
  std::function<Host(const Inputs&)> cpu;  // one execution, returning the canonical output
  Cost cost;
#if SDRT_HAVE_CUDA
  // Uploads the inputs in the CUDA layout, allocates the output into `out` (setting its element count, and
  // f32 when it is fp32 rather than fp16) and returns the launch.
  using Launch = std::function<void()>;
  std::function<Launch(cuda::Context&, const Inputs&, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
                       bool& f32)>
      cuda;
  // The downloaded output -> the canonical layout.
  std::function<Host(const Host&)> from_cuda = [](const Host& h) { return h; };
#endif
};

class SimpleCase : public Case {
 public:
  SimpleCase(std::string name, SimpleOp op, Tolerance tol) : Case(std::move(name), tol), op_(std::move(op)) {}

  Inputs make_inputs(uint32_t seed) const override { return op_.inputs(seed); }
  std::vector<double> reference(const Inputs& in) const override { return op_.reference(in); }
  std::unique_ptr<Run> prepare_cpu(const Inputs& in) const override {
    auto s = std::make_shared<std::pair<Inputs, Host>>(in, Host{});
    auto fn = op_.cpu;
    return make_run([s, fn] { s->second = fn(s->first); }, [s] { return s->second; });
  }
#if SDRT_HAVE_CUDA
  std::unique_ptr<Run> prepare_cuda(cuda::Context& ctx, const Inputs& in) const override {
    auto out = std::make_shared<cuda::DeviceBuffer>();
    size_t count = 0;
    bool f32 = false;
    std::function<void()> launch = op_.cuda(ctx, in, out, count, f32);
    cuda::Context* c = &ctx;
    auto back = op_.from_cuda;
    return make_run(std::move(launch), [c, out, count, f32, back] {
      return back(f32 ? download_f32(*c, *out, count) : download_f16(*c, *out, count));
    });
  }
#endif
  Cost cost() const override {
    return op_.cost;
  }

 private:
  SimpleOp op_;
};

void add_case(Op& op, const std::string& name, SimpleOp s, Tolerance tol) {
  op.cases.push_back(std::make_shared<SimpleCase>(name, std::move(s), tol));
}

// ---- activations ------------------------------------------------------------------------------------------

enum class Act { kGelu, kQuickGelu, kSilu };

double act_ref(Act a, double v) {
  switch (a) {
    case Act::kGelu:
      return gelu(v);
    case Act::kQuickGelu:
      return v / (1.0 + std::exp(-1.702 * v));
    case Act::kSilu:
      return v / (1.0 + std::exp(-v));
  }
  return 0;
}

// `far_tails`: the first values are ±60000, ±1000, −100, 0 (no NaN from fast intrinsics at the far ends);
// they dominate Σref², so only that case carries them.
SimpleOp activation(Act a, int64_t n, bool far_tails = false) {
  SimpleOp s;
  s.inputs = [n, far_tails](uint32_t seed) {
    Host x = random_normal(static_cast<size_t>(n), seed, 3.0f);  // wide enough for both tails
    if (far_tails && n >= 6) {
      const float tails[] = {-60000.0f, 60000.0f, -1000.0f, 1000.0f, -100.0f, 0.0f};
      std::copy(std::begin(tails), std::end(tails), x.begin());
    }
    return Inputs{x};
  };
  s.reference = [a](const Inputs& in) {
    std::vector<double> y(in[0].size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = act_ref(a, in[0][i]);
    return y;
  };
  const cpu::Activation cpu_act = a == Act::kGelu        ? cpu::Activation::kGelu
                                  : a == Act::kQuickGelu ? cpu::Activation::kQuickGelu
                                                         : cpu::Activation::kSilu;
  s.cpu = [cpu_act](const Inputs& in) {
    Host y = in[0];
    cpu::activate(y.data(), static_cast<int64_t>(y.size()), cpu_act);
    return y;
  };
  s.cost = traffic(0, 2 * d(n));
#if SDRT_HAVE_CUDA
  s.cuda = [a, n](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out,
                  size_t& count, bool&) -> std::function<void()> {
    *out = upload_f16(ctx, in[0]);  // in place, as the engine runs them
    count = static_cast<size_t>(n);
    __half* x = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    if (a == Act::kSilu) return [x, n, stream] { cuda::launch_silu(x, n, stream); };
    return [x, n, stream, a] { cuda::launch_gelu(x, n, a == Act::kQuickGelu, stream); };
  };
#endif
  return s;
}

// ---- geglu ------------------------------------------------------------------------------------------------

SimpleOp geglu(int64_t rows, int64_t inner) {
  SimpleOp s;
  s.inputs = [rows, inner](uint32_t seed) {
    return Inputs{random_normal(static_cast<size_t>(rows * 2 * inner), seed, 2.0f)};
  };
  s.reference = [rows, inner](const Inputs& in) {
    std::vector<double> y(static_cast<size_t>(rows * inner));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < inner; ++i)
        y[r * inner + i] = in[0][r * 2 * inner + i] * gelu(in[0][r * 2 * inner + inner + i]);
    return y;
  };
  s.cpu = [rows, inner](const Inputs& in) {
    // The CPU transformer block: value · gelu(gate) with the exact-erf GELU.
    Host gate(static_cast<size_t>(rows * inner)), y(gate.size());
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(in[0].data() + r * 2 * inner + inner, inner, gate.data() + r * inner);
    cpu::activate(gate.data(), rows * inner, cpu::Activation::kGelu);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < inner; ++i) y[r * inner + i] = in[0][r * 2 * inner + i] * gate[r * inner + i];
    return y;
  };
  s.cost = traffic(0, 3 * d(rows * inner));
#if SDRT_HAVE_CUDA
  s.cuda = [rows, inner](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out,
                         size_t& count, bool&) -> std::function<void()> {
    auto x = std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, in[0]));
    count = static_cast<size_t>(rows * inner);
    *out = cuda::DeviceBuffer(count * sizeof(__half));
    __half* y = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    return [x, y, rows, inner, stream] { cuda::launch_geglu(x->as<__half>(), y, rows, inner, stream); };
  };
#endif
  return s;
}

// ---- add --------------------------------------------------------------------------------------------------

SimpleOp add(int64_t n) {
  SimpleOp s;
  s.inputs = [n](uint32_t seed) {
    return Inputs{random_normal(static_cast<size_t>(n), seed, 2.0f),
                  random_normal(static_cast<size_t>(n), seed + 1, 2.0f)};
  };
  s.reference = [](const Inputs& in) {
    std::vector<double> y(in[0].size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = static_cast<double>(in[0][i]) + in[1][i];
    return y;
  };
  s.cpu = [n](const Inputs& in) {
    Host y(in[0].size());
    cpu::add(in[0].data(), in[1].data(), y.data(), n);
    return y;
  };
  s.cost = traffic(0, 3 * d(n));
#if SDRT_HAVE_CUDA
  s.cuda = [n](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
               bool&) -> std::function<void()> {
    auto a = std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, in[0]));
    auto b = std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, in[1]));
    count = static_cast<size_t>(n);
    *out = cuda::DeviceBuffer(count * sizeof(__half));
    __half* y = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    return [a, b, y, n, stream] { cuda::launch_add(a->as<__half>(), b->as<__half>(), y, n, stream); };
  };
#endif
  return s;
}

// ---- upsample_nearest -------------------------------------------------------------------------------------

// `any_size`: run the ×2 resize through the any-size CUDA kernel too.
SimpleOp upsample(int64_t batch, int64_t channels, int64_t h, int64_t w, int64_t oh, int64_t ow,
                  [[maybe_unused]] bool any_size = false) {
  SimpleOp s;
  s.inputs = [=](uint32_t seed) {
    return Inputs{random_normal(static_cast<size_t>(batch * channels * h * w), seed)};
  };
  s.reference = [=](const Inputs& in) {
    // torch's F.interpolate(mode="nearest"): source index floor(dst · (in / out)) with the ratio in fp32.
    const float sh = static_cast<float>(h) / static_cast<float>(oh),
                sw = static_cast<float>(w) / static_cast<float>(ow);
    std::vector<double> y(static_cast<size_t>(batch * channels * oh * ow));
    for (int64_t p = 0; p < batch * channels; ++p)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const auto si = std::min(static_cast<int64_t>(std::floor(static_cast<float>(i) * sh)), h - 1);
          const auto sj = std::min(static_cast<int64_t>(std::floor(static_cast<float>(j) * sw)), w - 1);
          y[(p * oh + i) * ow + j] = in[0][(p * h + si) * w + sj];
        }
    return y;
  };
  s.cpu = [=](const Inputs& in) {
    Host y(static_cast<size_t>(batch * channels * oh * ow));
    cpu::upsample_nearest(in[0].data(), y.data(), batch * channels, h, w, oh, ow);
    return y;
  };
  s.cost = traffic(0, d(batch * channels) * d(h * w + oh * ow));
#if SDRT_HAVE_CUDA
  s.cuda = [=](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
               bool&) -> std::function<void()> {
    auto x =
        std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, nchw_to_nhwc(in[0], batch, channels, h * w)));
    count = static_cast<size_t>(batch * channels * oh * ow);
    *out = cuda::DeviceBuffer(count * sizeof(__half));
    __half* y = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    if (oh == 2 * h && ow == 2 * w && !any_size)
      return [=] { cuda::launch_upsample_nearest2x(x->as<__half>(), y, batch, h, w, channels, stream); };
    return [=] { cuda::launch_upsample_nearest(x->as<__half>(), y, batch, h, w, oh, ow, channels, stream); };
  };
  s.from_cuda = [=](const Host& y) { return nhwc_to_nchw(y, batch, channels, oh * ow); };
#endif
  return s;
}

// ---- concat_channels --------------------------------------------------------------------------------------

SimpleOp concat(int64_t batch, int64_t ca, int64_t cb, int64_t h, int64_t w) {
  SimpleOp s;
  const int64_t S = h * w;
  s.inputs = [=](uint32_t seed) {
    return Inputs{random_normal(static_cast<size_t>(batch * ca * S), seed),
                  random_normal(static_cast<size_t>(batch * cb * S), seed + 1)};
  };
  s.reference = [=](const Inputs& in) {
    std::vector<double> y;
    for (int64_t b = 0; b < batch; ++b) {
      y.insert(y.end(), in[0].begin() + b * ca * S, in[0].begin() + (b + 1) * ca * S);
      y.insert(y.end(), in[1].begin() + b * cb * S, in[1].begin() + (b + 1) * cb * S);
    }
    return y;
  };
  s.cpu = [=](const Inputs& in) {
    // The CPU models' concat_channels: whole NCHW planes per batch item (it has no backends/cpu op).
    Host y(static_cast<size_t>(batch * (ca + cb) * S));
    for (int64_t b = 0; b < batch; ++b) {
      std::memcpy(y.data() + b * (ca + cb) * S, in[0].data() + b * ca * S, sizeof(float) * ca * S);
      std::memcpy(y.data() + (b * (ca + cb) + ca) * S, in[1].data() + b * cb * S, sizeof(float) * cb * S);
    }
    return y;
  };
  s.cost = traffic(0, 2 * d(batch * (ca + cb) * S));
#if SDRT_HAVE_CUDA
  s.cuda = [=](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
               bool&) -> std::function<void()> {
    auto a = std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, nchw_to_nhwc(in[0], batch, ca, S)));
    auto b = std::make_shared<cuda::DeviceBuffer>(upload_f16(ctx, nchw_to_nhwc(in[1], batch, cb, S)));
    count = static_cast<size_t>(batch * (ca + cb) * S);
    *out = cuda::DeviceBuffer(count * sizeof(__half));
    __half* y = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    return
        [=] { cuda::launch_concat_channels(a->as<__half>(), b->as<__half>(), y, batch * S, ca, cb, stream); };
  };
  s.from_cuda = [=](const Host& y) { return nhwc_to_nchw(y, batch, ca + cb, S); };
#endif
  return s;
}

// ---- timestep_embedding -----------------------------------------------------------------------------------

SimpleOp timestep(int64_t batch, int64_t dim, float t, bool flip, float shift) {
  SimpleOp s;
  s.inputs = [t](uint32_t) { return Inputs{Host{t}}; };
  s.reference = [=](const Inputs& in) {
    // diffusers' get_timestep_embedding: exp(−ln(10000)·i / (half − shift)) · t, [sin | cos] (flipped:
    // [cos | sin]), a zero column when dim is odd.
    const int64_t half = dim / 2;
    std::vector<double> one(static_cast<size_t>(dim), 0.0), y;
    for (int64_t i = 0; i < half; ++i) {
      const double arg = in[0][0] * std::exp(-std::log(10000.0) * static_cast<double>(i) / (half - shift));
      one[i] = flip ? std::cos(arg) : std::sin(arg);
      one[half + i] = flip ? std::sin(arg) : std::cos(arg);
    }
    for (int64_t b = 0; b < batch; ++b) y.insert(y.end(), one.begin(), one.end());
    return y;
  };
  s.cpu = [=](const Inputs& in) {
    const std::vector<float> one = models::timestep_embedding(in[0][0], dim, flip, shift);
    Host y;
    for (int64_t b = 0; b < batch; ++b) y.insert(y.end(), one.begin(), one.end());
    return y;
  };
  s.cost = traffic(0, d(batch * dim), 1);
#if SDRT_HAVE_CUDA
  s.cuda = [=](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
               bool&) -> std::function<void()> {
    auto tb = std::make_shared<cuda::DeviceBuffer>(upload_f32(ctx, in[0]));
    count = static_cast<size_t>(batch * dim);
    *out = cuda::DeviceBuffer(count * sizeof(__half));
    __half* y = out->as<__half>();
    cudaStream_t stream = ctx.stream();
    return [=] { cuda::launch_timestep_embedding(tb->as<float>(), y, batch, dim, flip, shift, stream); };
  };
#endif
  return s;
}

// ---- guidance_combine -------------------------------------------------------------------------------------

SimpleOp guidance(int64_t batch, int64_t channels, int64_t spatial, float scale) {
  SimpleOp s;
  const int64_t n = batch * channels * spatial;  // one half of eps
  s.inputs = [=](uint32_t seed) { return Inputs{random_normal(static_cast<size_t>(2 * n), seed)}; };
  s.reference = [=](const Inputs& in) {
    std::vector<double> y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) y[i] = in[0][i] + static_cast<double>(scale) * (in[0][n + i] - in[0][i]);
    return y;
  };
  s.cpu = [=](const Inputs& in) {
    // The CPU denoising loop's guidance (txt2img.cpp), on the NCHW UNet output [uncond; cond].
    Host y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) y[i] = in[0][i] + scale * (in[0][n + i] - in[0][i]);
    return y;
  };
  s.cost = traffic(0, 2 * d(n), d(n));
#if SDRT_HAVE_CUDA
  s.cuda = [=](cuda::Context& ctx, const Inputs& in, std::shared_ptr<cuda::DeviceBuffer>& out, size_t& count,
               bool& f32) -> std::function<void()> {
    auto eps = std::make_shared<cuda::DeviceBuffer>(
        upload_f16(ctx, nchw_to_nhwc(in[0], 2 * batch, channels, spatial)));
    count = static_cast<size_t>(n);
    f32 = true;
    *out = cuda::DeviceBuffer(count * sizeof(float));
    float* y = out->as<float>();
    cudaStream_t stream = ctx.stream();
    return
        [=] { cuda::launch_guidance_combine(eps->as<__half>(), y, batch, channels, spatial, scale, stream); };
  };
#endif
  return s;
}

// fp16 rounding of an O(1) output is NMSE ≈ 1e-7; data movement is exact.
constexpr Tolerance kElementwiseTol{1e-11, 1e-6};
constexpr Tolerance kExact{0.0, 0.0};

}  // namespace

Op geglu_op() {
  Op op{"geglu", {}};
  const auto c = [&](const std::string& name, int64_t rows, int64_t inner) {
    add_case(op, name, geglu(rows, inner), kElementwiseTol);
  };
  c("sd15_8192x1280", 8192, 1280);  // 2·4096 tokens, inner 4·320
  c("sd15_2048x2560", 2048, 2560);
  c("sd15_512x5120", 512, 5120);
  c("sd15_128x5120", 128, 5120);
  c("sdxl_8192x2560", 8192, 2560);
  c("sdxl_2048x5120", 2048, 5120);
  c("tiny_10x128", 10, 128);
  c("odd_7x6", 7, 6);
  c("odd_5x5", 5, 5);
  c("one_row_1x8", 1, 8);
  return op;
}

Op gelu_op() {
  Op op{"gelu", {}};
  add_case(op, "clip_h_mlp_154x4096", activation(Act::kGelu, 154 * 4096), kElementwiseTol);
  add_case(op, "tail_999", activation(Act::kGelu, 999), kElementwiseTol);
  add_case(op, "tiny_7", activation(Act::kGelu, 7), kElementwiseTol);
  add_case(op, "far_tails_4096", activation(Act::kGelu, 4096, true), kElementwiseTol);
  return op;
}

Op quick_gelu_op() {
  Op op{"quick_gelu", {}};
  add_case(op, "clip_l_mlp_154x3072", activation(Act::kQuickGelu, 154 * 3072), kElementwiseTol);
  add_case(op, "tail_1003", activation(Act::kQuickGelu, 1003), kElementwiseTol);
  add_case(op, "tiny_5", activation(Act::kQuickGelu, 5), kElementwiseTol);
  add_case(op, "far_tails_4096", activation(Act::kQuickGelu, 4096, true), kElementwiseTol);
  return op;
}

Op silu_op() {
  Op op{"silu", {}};
  add_case(op, "sd15_unet_2x4096x320", activation(Act::kSilu, 2 * 4096 * 320), kElementwiseTol);
  add_case(op, "sdxl_unet_2x16384x320", activation(Act::kSilu, 2 * 16384 * 320), kElementwiseTol);
  add_case(op, "temb_2x1280", activation(Act::kSilu, 2 * 1280), kElementwiseTol);
  add_case(op, "tail_1001", activation(Act::kSilu, 1001), kElementwiseTol);
  add_case(op, "tiny_3", activation(Act::kSilu, 3), kElementwiseTol);
  add_case(op, "far_tails_4096", activation(Act::kSilu, 4096, true), kElementwiseTol);
  return op;
}

Op add_op() {
  Op op{"add", {}};
  // fp16 rounding of the sum
  add_case(op, "sd15_2x4096x320", add(2 * 4096 * 320), kElementwiseTol);
  add_case(op, "vae_512x64x64", add(512 * 64 * 64), kElementwiseTol);
  add_case(op, "tail_1001", add(1001), kElementwiseTol);
  add_case(op, "tiny_3", add(3), kElementwiseTol);
  return op;
}

Op upsample_nearest_op() {
  Op op{"upsample_nearest", {}};
  const auto c = [&](const std::string& name, SimpleOp s) { add_case(op, name, std::move(s), kExact); };
  // SD 1.5 UNet up-samplers (batch 2) and the VAE decoder's (batch 1)
  c("sd15_1280_8to16", upsample(2, 1280, 8, 8, 16, 16));
  c("sd15_1280_16to32", upsample(2, 1280, 16, 16, 32, 32));
  c("sd15_640_32to64", upsample(2, 640, 32, 32, 64, 64));
  c("sdxl_640_64to128", upsample(2, 640, 64, 64, 128, 128));
  c("vae_512_64to128", upsample(1, 512, 64, 64, 128, 128));
  c("vae_512_128to256", upsample(1, 512, 128, 128, 256, 256));
  c("vae_256_256to512", upsample(1, 256, 256, 256, 512, 512));
  // Odd latent sizes: the target is the skip connection's size (e.g. 5×5 -> 9×9 for a 72-pixel side)
  c("odd_1280_5to9", upsample(2, 1280, 5, 5, 9, 9));
  c("odd_640_12x9to24x17", upsample(2, 640, 12, 9, 24, 17));
  c("any_size_kernel_320_8to16", upsample(2, 320, 8, 8, 16, 16, true));
  c("tiny_c6_1x1to2x2", upsample(1, 6, 1, 1, 2, 2));
  c("tiny_c6_3x5", upsample(1, 6, 3, 5, 6, 10));
  c("tiny_c3_2x3to3x7", upsample(2, 3, 2, 3, 3, 7));
  return op;
}

Op concat_channels_op() {
  Op op{"concat_channels", {}};
  const auto c = [&](const std::string& name, SimpleOp s) { add_case(op, name, std::move(s), kExact); };
  // SD 1.5 UNet up blocks: the skip connection joins along channels (batch 2)
  c("sd15_320+320_64", concat(2, 320, 320, 64, 64));
  c("sd15_640+320_64", concat(2, 640, 320, 64, 64));
  c("sd15_1280+640_16", concat(2, 1280, 640, 16, 16));
  c("sd15_1280+1280_8", concat(2, 1280, 1280, 8, 8));
  c("sdxl_320+320_128", concat(2, 320, 320, 128, 128));
  c("one_pixel_1280+1280", concat(2, 1280, 1280, 1, 1));
  c("tiny_2+4_3x3", concat(2, 2, 4, 3, 3));
  c("odd_3+5_3x5", concat(1, 3, 5, 3, 5));
  c("odd_8+2_2x2", concat(1, 8, 2, 2, 2));
  return op;
}

Op timestep_embedding_op() {
  Op op{"timestep_embedding", {}};
  // fp32 sin/exp of arguments up to ~1000 differ by ~1e-4 between implementations; fp16 output on CUDA.
  const Tolerance tol{1e-7, 1e-6};
  add_case(op, "sd15_t999_320", timestep(2, 320, 999.0f, true, 0.0f), tol);
  add_case(op, "sd15_t1_320", timestep(2, 320, 1.0f, true, 0.0f), tol);
  add_case(op, "no_flip_shift1_t500.5", timestep(1, 320, 500.5f, false, 1.0f), tol);
  add_case(op, "sdxl_time_ids_256_t1024", timestep(2, 256, 1024.0f, true, 0.0f), tol);
  add_case(op, "odd_dim7_t37", timestep(3, 7, 37.0f, true, 0.0f), tol);
  add_case(op, "t0_dim32", timestep(2, 32, 0.0f, true, 0.0f), tol);
  return op;
}

Op guidance_combine_op() {
  Op op{"guidance_combine", {}};
  const Tolerance tol{1e-12, 1e-12};  // fp32 arithmetic on fp16-exact inputs on both backends
  add_case(op, "sd15_4x64x64_g7.5", guidance(1, 4, 64 * 64, 7.5f), tol);
  add_case(op, "sd21_4x96x96_g9", guidance(1, 4, 96 * 96, 9.0f), tol);
  add_case(op, "sdxl_4x128x128_g5", guidance(1, 4, 128 * 128, 5.0f), tol);
  add_case(op, "batch2_4x96x64_g3", guidance(2, 4, 96 * 64, 3.0f), tol);
  add_case(op, "odd_b3_c5_s37_g1", guidance(3, 5, 37, 1.0f), tol);
  return op;
}

}  // namespace sdrt::backend_ops
