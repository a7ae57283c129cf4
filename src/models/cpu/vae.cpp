#include "models/cpu/vae.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/safetensors.h"
#include "models/cpu/layers.h"
#include "sdrt/error.h"

namespace sdrt::models::cpu {

namespace ops = sdrt::cpu;

// ---- Forward ----------------------------------------------------------------------------------------------

namespace {

// Reusable activation buffers. A 512x512 decode allocates ~40 activations of up to 256 MB; fresh pages each
// time would cost seconds of page faults, so finished buffers go back to the pool and are handed out again.
class BufferPool {
 public:
  class Handle {
   public:
    Handle() = default;
    Handle(BufferPool* pool, size_t slot) : pool_(pool), slot_(slot) {}
    Handle(Handle&& o) noexcept : pool_(std::exchange(o.pool_, nullptr)), slot_(o.slot_) {}
    Handle& operator=(Handle&& o) noexcept {
      if (this != &o) {
        release();
        pool_ = std::exchange(o.pool_, nullptr);
        slot_ = o.slot_;
      }
      return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle() { release(); }
    float* data() const { return pool_->slots_[slot_].data.get(); }
    void release() {
      if (pool_) pool_->slots_[slot_].in_use = false;
      pool_ = nullptr;
    }

   private:
    BufferPool* pool_ = nullptr;
    size_t slot_ = 0;
  };

  Handle get(int64_t n) {
    const auto count = static_cast<size_t>(n);
    // The smallest free buffer that fits; otherwise grow the largest free one (its contents are dead).
    size_t best = slots_.size(), largest = slots_.size();
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.in_use) continue;
      if (s.size >= count && (best == slots_.size() || s.size < slots_[best].size)) best = i;
      if (largest == slots_.size() || s.size > slots_[largest].size) largest = i;
    }
    if (best == slots_.size()) {
      if (largest == slots_.size()) {
        slots_.emplace_back();
        largest = slots_.size() - 1;
      }
      Slot& s = slots_[largest];
      s.data.reset();
      s.data.reset(new float[count]);  // uninitialised: every user writes before reading
      s.size = count;
      best = largest;
    }
    slots_[best].in_use = true;
    return Handle(this, best);
  }

 private:
  struct Slot {
    std::unique_ptr<float[]> data;
    size_t size = 0;
    bool in_use = false;
  };
  std::vector<Slot> slots_;
};

// One sample's activation [c, h, w].
struct Act {
  BufferPool::Handle buf;
  int64_t c = 0, h = 0, w = 0;
  float* data() const { return buf.data(); }
  int64_t numel() const { return c * h * w; }
};

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace

namespace {

// VaeAttentionSpec's layers.
struct Attention {
  GroupNorm group_norm;
  Linear to_q, to_k, to_v, to_out;
  static Attention load(const WeightSource& w, const VaeAttentionSpec& spec) {
    return {GroupNorm::load(w, spec.group_norm), Linear::load(w, spec.to_q), Linear::load(w, spec.to_k),
            Linear::load(w, spec.to_v), Linear::load(w, spec.to_out)};
  }
};

// The layers of one VaeCoderSpec.
struct Coder {
  Conv2d conv_in;
  std::vector<ResnetBlock> resnets;
  std::vector<Attention> attentions;
  std::vector<Conv2d> samplers;
  GroupNorm norm_out;
  Conv2d conv_out;
  std::optional<Conv2d> quant_conv;

  static Coder load(const WeightSource& w, const VaeCoderSpec& spec) {
    Coder c;
    c.conv_in = Conv2d::load(w, spec.conv_in);
    for (const auto& r : spec.resnets) c.resnets.push_back(ResnetBlock::load(w, r));
    for (const auto& a : spec.attentions) c.attentions.push_back(Attention::load(w, a));
    for (const auto& s : spec.samplers) c.samplers.push_back(Conv2d::load(w, s));
    c.norm_out = GroupNorm::load(w, spec.norm_out);
    c.conv_out = Conv2d::load(w, spec.conv_out);
    if (spec.quant_conv) c.quant_conv = Conv2d::load(w, *spec.quant_conv);
    return c;
  }

  int64_t parameter_count() const {
    int64_t n = 0;
    const auto conv = [&](const Conv2d& c) { n += c.weight.numel() + c.bias.numel(); };
    const auto norm = [&](const GroupNorm& g) { n += g.weight.numel() + g.bias.numel(); };
    const auto linear = [&](const Linear& l) { n += l.weight.numel() + l.bias.numel(); };
    conv(conv_in), conv(conv_out), norm(norm_out);
    if (quant_conv) conv(*quant_conv);
    for (const auto& r : resnets) {
      norm(r.norm1), norm(r.norm2), conv(r.conv1), conv(r.conv2);
      if (r.conv_shortcut) conv(*r.conv_shortcut);
    }
    for (const auto& a : attentions) {
      norm(a.group_norm);
      for (const Linear* l : {&a.to_q, &a.to_k, &a.to_v, &a.to_out}) linear(*l);
    }
    for (const auto& s : samplers) conv(s);
    return n;
  }
};

// Runs a coder's block plan on one sample at a time: diffusers' GroupNorm and attention are per sample, so
// batching buys nothing but memory.
class Runner {
 public:
  // x [c, h, w] (any memory) -> y [out, h', w'] at `dst`, or in a pool buffer when dst is null.
  Act conv(const Conv2d& cv, const float* x, int64_t h, int64_t w, float* dst = nullptr) {
    ops::Conv2dShape s = cv.shape;
    s.height = h;
    s.width = w;
    Act y;
    y.c = s.out_channels;
    y.h = s.out_height();
    y.w = s.out_width();
    if (!dst) {
      y.buf = pool_.get(y.numel());
      dst = y.data();
    }
    cv.forward(x, h, w, dst);
    return y;
  }
  Act conv(const Conv2d& cv, const Act& x) { return conv(cv, x.data(), x.h, x.w); }

  // ResnetBlock2D without time embedding: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))).
  Act resnet(const ResnetBlock& r, Act x) {
    Act h{pool_.get(x.numel()), x.c, x.h, x.w};
    r.norm1.forward(x.data(), h.data(), 1, x.h * x.w, /*silu_after=*/true);
    Act h1 = conv(r.conv1, h);  // [out, h, w]
    h = Act{};
    r.norm2.forward(h1.data(), h1.data(), 1, h1.h * h1.w, /*silu_after=*/true);
    Act h2 = conv(r.conv2, h1);
    h1 = Act{};
    if (r.conv_shortcut) x = conv(*r.conv_shortcut, x);  // [out, h, w]
    add_inplace(h2.data(), x.data(), h2.numel());
    return h2;
  }

  // Attention over the h·w pixels as tokens of x.c features, one head; the result is added to x.
  Act attention(const Attention& a, Act x) {
    const int64_t C = x.c, T = x.h * x.w;
    Act normed{pool_.get(x.numel()), C, x.h, x.w};
    a.group_norm.forward(x.data(), normed.data(), 1, T, /*silu_after=*/false);
    BufferPool::Handle tokens = pool_.get(T * C), q = pool_.get(T * C), k = pool_.get(T * C),
                       v = pool_.get(T * C);
    transpose(normed.data(), tokens.data(), C, T);  // [C, T] -> [T, C]
    normed = Act{};
    a.to_q.forward(tokens.data(), q.data(), T);  // q [T, C]
    a.to_k.forward(tokens.data(), k.data(), T);  // k [T, C]
    a.to_v.forward(tokens.data(), v.data(), T);  // v [T, C]
    ops::attention({.q = q.data(),
                    .k = k.data(),
                    .v = v.data(),
                    .out = tokens.data(),
                    .seq_q = T,
                    .seq_kv = T,
                    .heads = 1,
                    .head_dim = C,
                    .q_stride = C,
                    .k_stride = C,
                    .v_stride = C,
                    .out_stride = C});
    a.to_out.forward(tokens.data(), q.data(), T);  // to_out.0
    // x [C, T] += out [T, C]ᵀ   (residual_connection; rescale_output_factor is 1)
    float* xd = x.data();
    const float* o = q.data();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) xd[c * T + t] += o[t * C + c];
    return x;
  }

  // Upsample2D: nearest ×2, then a 3×3 convolution.
  Act upsample(const Conv2d& cv, Act x) {
    Act up{pool_.get(x.numel() * 4), x.c, 2 * x.h, 2 * x.w};
    ops::upsample_nearest(x.data(), up.data(), x.c, x.h, x.w, up.h, up.w);
    x = Act{};
    return conv(cv, up);
  }

  // The block plan, then GroupNorm + SiLU in place.
  Act run(const Coder& coder, const VaeCoderSpec& spec, Act x) {
    for (const VaeStep& step : spec.steps) {
      switch (step.kind) {
        case VaeStep::Kind::kResnet:
          x = resnet(coder.resnets[step.index], std::move(x));
          break;
        case VaeStep::Kind::kAttention:
          x = attention(coder.attentions[step.index], std::move(x));
          break;
        case VaeStep::Kind::kDownsample:
          x = conv(coder.samplers[step.index], x);
          break;
        case VaeStep::Kind::kUpsample:
          x = upsample(coder.samplers[step.index], std::move(x));
          break;
      }
    }
    coder.norm_out.forward(x.data(), x.data(), 1, x.h * x.w, /*silu_after=*/true);
    return x;
  }

 private:
  static void transpose(const float* x, float* y, int64_t rows, int64_t cols) {
    constexpr int64_t kTile = 32;  // keeps both sides in cache
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t r0 = 0; r0 < rows; r0 += kTile)
      for (int64_t c0 = 0; c0 < cols; c0 += kTile)
        for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
          for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) y[c * rows + r] = x[r * cols + c];
  }

  BufferPool pool_;  // declared before any Act that uses it
};

void check_input(const Tensor& t, int64_t channels, const char* what, const char* layout) {
  if (t.dtype() != DType::kF32 || t.rank() != 4 || t.dim(1) != channels || t.dim(0) < 1 || t.dim(2) < 1 ||
      t.dim(3) < 1)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("VAE {}: expected an F32 tensor {} with {} channels, got {} {}", what, layout,
                            channels, dtype_name(t.dtype()), shape_to_string(t.shape())));
}

}  // namespace

struct AutoencoderKL::Layers {
  VaeDescription description;
  std::optional<Coder> encoder, decoder;
};

AutoencoderKL::AutoencoderKL() : layers_(std::make_unique<Layers>()) {}
AutoencoderKL::AutoencoderKL(AutoencoderKL&&) noexcept = default;
AutoencoderKL& AutoencoderKL::operator=(AutoencoderKL&&) noexcept = default;
AutoencoderKL::~AutoencoderKL() = default;

const VaeConfig& AutoencoderKL::config() const {
  return layers_->description.config;
}
bool AutoencoderKL::has_encoder() const {
  return layers_->encoder.has_value();
}
bool AutoencoderKL::has_decoder() const {
  return layers_->decoder.has_value();
}

AutoencoderKL AutoencoderKL::from_folder(const std::filesystem::path& dir, VaeParts parts) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: VAE folder not found", dir.string()));
  const auto config_path = dir / "config.json";
  const VaeConfig config = VaeConfig::from_json_file(config_path);
  const auto weights = io::WeightStore::from_component_dir(dir, "diffusion_pytorch_model");
  return from_weights(config, weights, config_path.string(), parts);
}

AutoencoderKL AutoencoderKL::from_weights(const VaeConfig& config, const io::WeightStore& weights,
                                          const std::string& config_source, VaeParts parts) {
  return load(describe_vae(config, parts), {weights, config_source});
}

AutoencoderKL AutoencoderKL::load(const VaeDescription& description, const WeightSource& w) {
  AutoencoderKL m;
  auto& l = *m.layers_;
  l.description = description;
  if (l.description.encoder) l.encoder = Coder::load(w, *l.description.encoder);
  if (l.description.decoder) l.decoder = Coder::load(w, *l.description.decoder);
  return m;
}

int64_t AutoencoderKL::parameter_count() const {
  return (layers_->encoder ? layers_->encoder->parameter_count() : 0) +
         (layers_->decoder ? layers_->decoder->parameter_count() : 0);
}

Tensor AutoencoderKL::decode(const Tensor& latents) const {
  if (!layers_->decoder) throw Error(ErrorKind::kInvalidArgument, "VAE decode: the decoder was not loaded");
  const auto& config = layers_->description.config;
  const auto& decoder = *layers_->decoder;
  const int64_t L = config.latent_channels, f = config.downscale_factor();
  check_input(latents, L, "decode", "[batch, latent_channels, height, width]");
  const int64_t B = latents.dim(0), h = latents.dim(2), w = latents.dim(3);
  Tensor image({B, config.out_channels, h * f, w * f}, DType::kF32);
  Runner run;
  for (int64_t b = 0; b < B; ++b) {
    const float* z = latents.data<float>() + b * L * h * w;
    Act pq;
    if (decoder.quant_conv) {  // post_quant_conv
      pq = run.conv(*decoder.quant_conv, z, h, w);
      z = pq.data();
    }
    Act x = run.conv(decoder.conv_in, z, h, w);
    pq = Act{};
    x = run.run(decoder, *layers_->description.decoder, std::move(x));
    float* out = image.data<float>() + b * config.out_channels * x.h * x.w;
    run.conv(decoder.conv_out, x.data(), x.h, x.w, out);
  }
  return image;
}

Tensor AutoencoderKL::encode(const Tensor& image) const {
  if (!layers_->encoder) throw Error(ErrorKind::kInvalidArgument, "VAE encode: the encoder was not loaded");
  const auto& config = layers_->description.config;
  const auto& encoder = *layers_->encoder;
  check_input(image, config.in_channels, "encode", "[batch, channels, height, width]");
  const int64_t B = image.dim(0), H = image.dim(2), W = image.dim(3), C = config.in_channels;
  // Every Downsample2D maps n to floor(n / 2); the smallest image that survives is 2^(blocks - 1) pixels.
  const size_t downsamplings = encoder.samplers.size();
  int64_t h = H, w = W;
  for (size_t i = 0; i < downsamplings; ++i) {
    if (h < 2 || w < 2)
      throw Error(
          ErrorKind::kInvalidArgument,
          fmt::format("VAE encode: image {}x{} is too small for {} downsamplings", W, H, downsamplings));
    h /= 2, w /= 2;
  }
  const int64_t out_c = 2 * config.latent_channels;
  Tensor moments({B, out_c, h, w}, DType::kF32);
  Runner run;
  for (int64_t b = 0; b < B; ++b) {
    Act x = run.conv(encoder.conv_in, image.data<float>() + b * C * H * W, H, W);
    x = run.run(encoder, *layers_->description.encoder, std::move(x));
    float* out = moments.data<float>() + b * out_c * h * w;
    if (encoder.quant_conv) {
      const Act e = run.conv(encoder.conv_out, x);
      run.conv(*encoder.quant_conv, e.data(), e.h, e.w, out);
    } else {
      run.conv(encoder.conv_out, x.data(), x.h, x.w, out);
    }
  }
  return moments;
}

}  // namespace sdrt::models::cpu
