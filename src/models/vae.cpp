#include "models/vae.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include <fmt/format.h>

#include "backends/cpu/conv.h"
#include "backends/cpu/ops.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models {

namespace {

constexpr float kEps = 1e-6f;  // every GroupNorm of diffusers' Encoder / Decoder

// A list of block types; each entry must be `supported`.
std::vector<std::string> block_types(const nlohmann::json& j, const char* field, const std::string& supported,
                                     const std::string& what) {
  if (!j.contains(field) || j[field].is_null()) return {supported};
  const auto& v = j[field];
  if (!v.is_array() || v.empty())
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"{}\" must be a non-empty list of strings", what, field));
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string())
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\"[{}] must be a string", what, field, i));
    out.push_back(v[i].get<std::string>());
    if (out.back() != supported)
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("{}: field \"{}\"[{}] = \"{}\" is not supported (only {})", what, field, i,
                              out.back(), supported));
  }
  return out;
}

}  // namespace

VaeConfig VaeConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(io::read_json_file(path), path.string());
}

VaeConfig VaeConfig::from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", what));
  VaeConfig c;
  c.in_channels = io::get_int(j, "in_channels", c.in_channels, what);
  c.out_channels = io::get_int(j, "out_channels", c.out_channels, what);
  c.latent_channels = io::get_int(j, "latent_channels", c.latent_channels, what);
  c.layers_per_block = io::get_int(j, "layers_per_block", c.layers_per_block, what);
  c.norm_num_groups = io::get_int(j, "norm_num_groups", c.norm_num_groups, what);
  c.scaling_factor = io::get_number(j, "scaling_factor", c.scaling_factor, what);
  if (j.contains("shift_factor") && !j["shift_factor"].is_null())
    c.shift_factor = io::get_number(j, "shift_factor", 0.0, what);
  c.use_quant_conv = io::get_bool(j, "use_quant_conv", c.use_quant_conv, what);
  c.use_post_quant_conv = io::get_bool(j, "use_post_quant_conv", c.use_post_quant_conv, what);
  c.mid_block_add_attention = io::get_bool(j, "mid_block_add_attention", c.mid_block_add_attention, what);
  const std::string act = io::get_string(j, "act_fn", "silu", what);
  if (act != "silu")
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: field \"act_fn\" = \"{}\" is not supported (only silu)", what, act));

  if (j.contains("block_out_channels") && !j["block_out_channels"].is_null()) {
    const auto& v = j["block_out_channels"];
    if (!v.is_array() || v.empty() || v.size() > 8)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"block_out_channels\" must be a list of 1 to 8 integers", what));
    c.block_out_channels.clear();
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_number_integer())
        throw Error(ErrorKind::kFormat,
                    fmt::format("{}: field \"block_out_channels\"[{}] must be an integer", what, i));
      c.block_out_channels.push_back(v[i].get<int64_t>());
    }
  }
  const auto down = block_types(j, "down_block_types", "DownEncoderBlock2D", what);
  const auto up = block_types(j, "up_block_types", "UpDecoderBlock2D", what);
  // diffusers pairs block i with block_out_channels[i]; other lengths would build a different network.
  for (const auto& [field, n] :
       {std::pair{"down_block_types", down.size()}, std::pair{"up_block_types", up.size()}})
    if (n != c.block_out_channels.size())
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" has {} entries but block_out_channels has {}", what, field, n,
                              c.block_out_channels.size()));

  const auto in_range = [&](int64_t v, int64_t lo, int64_t hi, const std::string& field) {
    if (v < lo || v > hi)
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" = {} is out of range", what, field, v));
  };
  in_range(c.in_channels, 1, 64, "in_channels");
  in_range(c.out_channels, 1, 64, "out_channels");
  in_range(c.latent_channels, 1, 1024, "latent_channels");
  in_range(c.layers_per_block, 1, 16, "layers_per_block");
  in_range(c.norm_num_groups, 1, 1024, "norm_num_groups");
  for (size_t i = 0; i < c.block_out_channels.size(); ++i) {
    const std::string field = fmt::format("block_out_channels[{}]", i);
    in_range(c.block_out_channels[i], 1, 1 << 14, field);
    if (c.block_out_channels[i] % c.norm_num_groups != 0)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" = {} is not divisible by norm_num_groups {}", what, field,
                              c.block_out_channels[i], c.norm_num_groups));
  }
  if (!(c.scaling_factor > 0.0) || !std::isfinite(c.scaling_factor))
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"scaling_factor\" must be positive", what));
  return c;
}

// ---- Loading ----------------------------------------------------------------------------------------------

class AutoencoderKL::Loader {
 public:
  Loader(const io::WeightStore& weights, const std::string& config_source)
      : weights_(weights), config_source_(config_source) {}

  // Loads a weight and checks its shape against what config.json implies.
  Tensor tensor(const std::string& name, const Shape& expected) const {
    if (!weights_.contains(name))
      throw Error(ErrorKind::kModel, fmt::format("{}: missing tensor \"{}\" (expected by {})",
                                                 weights_.source().string(), name, config_source_));
    const auto& info = weights_.info(name);
    if (info.shape != expected)
      throw Error(
          ErrorKind::kModel,
          fmt::format("{}: tensor \"{}\" has shape {} but {} implies {}", weights_.file_of(name).string(),
                      name, shape_to_string(info.shape), config_source_, shape_to_string(expected)));
    return weights_.load(name, DType::kF32);
  }

  Conv conv(const std::string& p, int64_t in, int64_t out, int64_t kernel) const {
    return {tensor(p + ".weight", {out, in, kernel, kernel}), tensor(p + ".bias", {out}), in, out, kernel};
  }
  Norm norm(const std::string& p, int64_t channels) const {
    return {tensor(p + ".weight", {channels}), tensor(p + ".bias", {channels})};
  }

  Resnet resnet(const std::string& p, int64_t in, int64_t out) const {
    Resnet r{norm(p + ".norm1", in), norm(p + ".norm2", out), conv(p + ".conv1", in, out, 3),
             conv(p + ".conv2", out, out, 3), std::nullopt};
    if (in != out) r.conv_shortcut = conv(p + ".conv_shortcut", in, out, 1);
    return r;
  }

  // Checkpoints saved before diffusers 0.14 name the projections query/key/value/proj_attn, and conversions
  // from LDM sometimes keep them as 1x1 convolutions; both hold the same numbers.
  Tensor projection(const std::string& p, const char* name, const char* old_name, const char* param,
                    int64_t c) const {
    std::string key = fmt::format("{}.{}.{}", p, name, param);
    if (!weights_.contains(key)) {
      const std::string old_key = fmt::format("{}.{}.{}", p, old_name, param);
      if (weights_.contains(old_key)) key = old_key;
    }
    const bool is_weight = std::strcmp(param, "weight") == 0;
    if (is_weight && weights_.contains(key) && weights_.info(key).shape == Shape{c, c, 1, 1})
      return tensor(key, {c, c, 1, 1}).reshape({c, c});
    return tensor(key, is_weight ? Shape{c, c} : Shape{c});
  }

  Attention attention(const std::string& p, int64_t c) const {
    Attention a;
    a.group_norm = norm(p + ".group_norm", c);
    a.q_w = projection(p, "to_q", "query", "weight", c);
    a.q_b = projection(p, "to_q", "query", "bias", c);
    a.k_w = projection(p, "to_k", "key", "weight", c);
    a.k_b = projection(p, "to_k", "key", "bias", c);
    a.v_w = projection(p, "to_v", "value", "weight", c);
    a.v_b = projection(p, "to_v", "value", "bias", c);
    a.out_w = projection(p, "to_out.0", "proj_attn", "weight", c);
    a.out_b = projection(p, "to_out.0", "proj_attn", "bias", c);
    return a;
  }

  MidBlock mid_block(const std::string& p, int64_t c, bool attention_too) const {
    MidBlock m{resnet(p + ".resnets.0", c, c), resnet(p + ".resnets.1", c, c), std::nullopt};
    if (attention_too) m.attention = attention(p + ".attentions.0", c);
    return m;
  }

  // diffusers' Encoder: block i maps block_out_channels[i - 1] (or [0]) to block_out_channels[i].
  Coder encoder(const VaeConfig& c) const {
    const auto& ch = c.block_out_channels;
    Coder e;
    e.conv_in = conv("encoder.conv_in", c.in_channels, ch[0], 3);
    int64_t out = ch[0];
    for (size_t i = 0; i < ch.size(); ++i) {
      const int64_t in = out;
      out = ch[i];
      Block b;
      for (int64_t j = 0; j < c.layers_per_block; ++j)
        b.resnets.push_back(
            resnet(fmt::format("encoder.down_blocks.{}.resnets.{}", i, j), j == 0 ? in : out, out));
      if (i + 1 < ch.size())
        b.resample = conv(fmt::format("encoder.down_blocks.{}.downsamplers.0.conv", i), out, out, 3);
      e.blocks.push_back(std::move(b));
    }
    e.mid = mid_block("encoder.mid_block", ch.back(), c.mid_block_add_attention);
    e.norm_out = norm("encoder.conv_norm_out", ch.back());
    e.conv_out = conv("encoder.conv_out", ch.back(), 2 * c.latent_channels, 3);  // double_z: mean and logvar
    return e;
  }

  // diffusers' Decoder: the channel list reversed, layers_per_block + 1 resnets per block.
  Coder decoder(const VaeConfig& c) const {
    const std::vector<int64_t> ch(c.block_out_channels.rbegin(), c.block_out_channels.rend());
    Coder d;
    d.conv_in = conv("decoder.conv_in", c.latent_channels, ch[0], 3);
    d.mid = mid_block("decoder.mid_block", ch[0], c.mid_block_add_attention);
    int64_t out = ch[0];
    for (size_t i = 0; i < ch.size(); ++i) {
      const int64_t in = out;
      out = ch[i];
      Block b;
      for (int64_t j = 0; j <= c.layers_per_block; ++j)
        b.resnets.push_back(
            resnet(fmt::format("decoder.up_blocks.{}.resnets.{}", i, j), j == 0 ? in : out, out));
      if (i + 1 < ch.size())
        b.resample = conv(fmt::format("decoder.up_blocks.{}.upsamplers.0.conv", i), out, out, 3);
      d.blocks.push_back(std::move(b));
    }
    d.norm_out = norm("decoder.conv_norm_out", ch.back());
    d.conv_out = conv("decoder.conv_out", ch.back(), c.out_channels, 3);
    return d;
  }

 private:
  const io::WeightStore& weights_;
  const std::string& config_source_;
};

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
  const Loader load(weights, config_source);
  AutoencoderKL m;
  m.config_ = config;
  const int64_t L = config.latent_channels;
  if (parts.encoder) {
    m.encoder_ = load.encoder(config);
    if (config.use_quant_conv) m.quant_conv_ = load.conv("quant_conv", 2 * L, 2 * L, 1);
    m.has_encoder_ = true;
  }
  if (parts.decoder) {
    m.decoder_ = load.decoder(config);
    if (config.use_post_quant_conv) m.post_quant_conv_ = load.conv("post_quant_conv", L, L, 1);
    m.has_decoder_ = true;
  }
  return m;
}

int64_t AutoencoderKL::parameter_count() const {
  int64_t n = 0;
  const auto conv = [&](const Conv& c) { n += c.w.numel() + c.b.numel(); };
  const auto norm = [&](const Norm& g) { n += g.w.numel() + g.b.numel(); };
  const auto resnet = [&](const Resnet& r) {
    norm(r.norm1), norm(r.norm2), conv(r.conv1), conv(r.conv2);
    if (r.conv_shortcut) conv(*r.conv_shortcut);
  };
  const auto coder = [&](const Coder& c) {
    conv(c.conv_in), conv(c.conv_out), norm(c.norm_out);
    resnet(c.mid.resnet0), resnet(c.mid.resnet1);
    if (const auto& a = c.mid.attention) {
      norm(a->group_norm);
      for (const Tensor* t : {&a->q_w, &a->q_b, &a->k_w, &a->k_b, &a->v_w, &a->v_b, &a->out_w, &a->out_b})
        n += t->numel();
    }
    for (const auto& b : c.blocks) {
      for (const auto& r : b.resnets) resnet(r);
      if (b.resample) conv(*b.resample);
    }
  };
  if (has_encoder_) coder(encoder_);
  if (has_decoder_) coder(decoder_);
  if (quant_conv_) conv(*quant_conv_);
  if (post_quant_conv_) conv(*post_quant_conv_);
  return n;
}

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

// Runs the blocks on one sample at a time: diffusers' GroupNorm and attention are per sample, so batching
// buys nothing but memory.
class AutoencoderKL::Runner {
 public:
  // x [c, h, w] (any memory) -> y [conv.out, oh, ow] at `dst`, or in a pool buffer when dst is null.
  Act conv(const Conv& cv, const float* x, int64_t h, int64_t w, int64_t stride = 1,
           std::array<int64_t, 4> pad_lrtb = {-1, -1, -1, -1}, float* dst = nullptr) {
    cpu::Conv2dShape s;
    s.batch = 1;
    s.in_channels = cv.in;
    s.height = h;
    s.width = w;
    s.out_channels = cv.out;
    s.kernel = cv.kernel;
    s.stride = stride;
    const int64_t same = cv.kernel / 2;  // torch's padding=1 for 3x3, 0 for 1x1
    s.pad_left = pad_lrtb[0] < 0 ? same : pad_lrtb[0];
    s.pad_right = pad_lrtb[1] < 0 ? same : pad_lrtb[1];
    s.pad_top = pad_lrtb[2] < 0 ? same : pad_lrtb[2];
    s.pad_bottom = pad_lrtb[3] < 0 ? same : pad_lrtb[3];
    Act y;
    y.c = cv.out;
    y.h = s.out_height();
    y.w = s.out_width();
    if (!dst) {
      y.buf = pool_.get(y.numel());
      dst = y.data();
    }
    cpu::conv2d(x, cv.w.data<float>(), cv.b.data<float>(), dst, s);
    return y;
  }
  Act conv(const Conv& cv, const Act& x) { return conv(cv, x.data(), x.h, x.w); }

  void group_norm(const Norm& n, const Act& x, float* y, bool silu) {
    cpu::group_norm(x.data(), n.w.data<float>(), n.b.data<float>(), y, 1, x.c, x.h * x.w, groups_, kEps,
                    silu);
  }

  // ResnetBlock2D: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))), dropout being a no-op.
  Act resnet(const Resnet& r, Act x) {
    Act h{pool_.get(x.numel()), x.c, x.h, x.w};
    group_norm(r.norm1, x, h.data(), /*silu=*/true);
    Act h1 = conv(r.conv1, h);  // [out, h, w]
    h = Act{};
    group_norm(r.norm2, h1, h1.data(), /*silu=*/true);
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
    group_norm(a.group_norm, x, normed.data(), /*silu=*/false);
    BufferPool::Handle tokens = pool_.get(T * C), q = pool_.get(T * C), k = pool_.get(T * C),
                       v = pool_.get(T * C);
    transpose(normed.data(), tokens.data(), C, T);  // [C, T] -> [T, C]
    normed = Act{};
    cpu::linear(tokens.data(), a.q_w.data<float>(), a.q_b.data<float>(), q.data(), T, C, C);  // q [T, C]
    cpu::linear(tokens.data(), a.k_w.data<float>(), a.k_b.data<float>(), k.data(), T, C, C);  // k [T, C]
    cpu::linear(tokens.data(), a.v_w.data<float>(), a.v_b.data<float>(), v.data(), T, C, C);  // v [T, C]
    cpu::attention({.q = q.data(),
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
    cpu::linear(tokens.data(), a.out_w.data<float>(), a.out_b.data<float>(), q.data(), T, C, C);  // to_out.0
    // x [C, T] += out [T, C]ᵀ   (residual_connection; rescale_output_factor is 1)
    float* xd = x.data();
    const float* o = q.data();
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t) xd[c * T + t] += o[t * C + c];
    return x;
  }

  Act mid_block(const MidBlock& m, Act x) {
    x = resnet(m.resnet0, std::move(x));
    if (m.attention) x = attention(*m.attention, std::move(x));
    return resnet(m.resnet1, std::move(x));
  }

  // Upsample2D: nearest x2, then a 3x3 convolution.
  Act upsample(const Conv& cv, Act x) {
    Act up{pool_.get(x.numel() * 4), x.c, 2 * x.h, 2 * x.w};
    cpu::upsample_nearest(x.data(), up.data(), x.c, x.h, x.w, up.h, up.w);
    x = Act{};
    return conv(cv, up);
  }

  // Downsample2D with padding=0: pad right and bottom by one, then a stride-2 3x3 convolution.
  Act downsample(const Conv& cv, const Act& x) {
    return conv(cv, x.data(), x.h, x.w, 2, {0, 1, 0, 1});
  }

  explicit Runner(int64_t groups) : groups_(groups) {}

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
  int64_t groups_;
};

namespace {

void check_input(const Tensor& t, int64_t channels, const char* what, const char* layout) {
  if (t.dtype() != DType::kF32 || t.rank() != 4 || t.dim(1) != channels || t.dim(0) < 1 || t.dim(2) < 1 ||
      t.dim(3) < 1)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("VAE {}: expected an F32 tensor {} with {} channels, got {} {}", what, layout,
                            channels, dtype_name(t.dtype()), shape_to_string(t.shape())));
}

}  // namespace

Tensor AutoencoderKL::decode(const Tensor& latents) const {
  if (!has_decoder_) throw Error(ErrorKind::kInvalidArgument, "VAE decode: the decoder was not loaded");
  const int64_t L = config_.latent_channels, f = config_.downscale_factor();
  check_input(latents, L, "decode", "[batch, latent_channels, height, width]");
  const int64_t B = latents.dim(0), h = latents.dim(2), w = latents.dim(3);
  Tensor image({B, config_.out_channels, h * f, w * f}, DType::kF32);
  Runner run(config_.norm_num_groups);
  for (int64_t b = 0; b < B; ++b) {
    const float* z = latents.data<float>() + b * L * h * w;
    Act pq;
    if (post_quant_conv_) {
      pq = run.conv(*post_quant_conv_, z, h, w);
      z = pq.data();
    }
    Act x = run.conv(decoder_.conv_in, z, h, w);
    pq = Act{};
    x = run.mid_block(decoder_.mid, std::move(x));
    for (const Block& block : decoder_.blocks) {
      for (const Resnet& r : block.resnets) x = run.resnet(r, std::move(x));
      if (block.resample) x = run.upsample(*block.resample, std::move(x));
    }
    run.group_norm(decoder_.norm_out, x, x.data(), /*silu=*/true);
    float* out = image.data<float>() + b * config_.out_channels * x.h * x.w;
    run.conv(decoder_.conv_out, x.data(), x.h, x.w, 1, {-1, -1, -1, -1}, out);
  }
  return image;
}

Tensor AutoencoderKL::encode(const Tensor& image) const {
  if (!has_encoder_) throw Error(ErrorKind::kInvalidArgument, "VAE encode: the encoder was not loaded");
  check_input(image, config_.in_channels, "encode", "[batch, channels, height, width]");
  const int64_t B = image.dim(0), H = image.dim(2), W = image.dim(3), C = config_.in_channels;
  // Every Downsample2D maps n to floor(n / 2); the smallest image that survives is 2^(blocks - 1) pixels.
  int64_t h = H, w = W;
  for (size_t i = 0; i + 1 < encoder_.blocks.size(); ++i) {
    if (h < 2 || w < 2)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("VAE encode: image {}x{} is too small for {} downsamplings", W, H,
                              encoder_.blocks.size() - 1));
    h /= 2, w /= 2;
  }
  const int64_t out_c = 2 * config_.latent_channels;
  Tensor moments({B, out_c, h, w}, DType::kF32);
  Runner run(config_.norm_num_groups);
  for (int64_t b = 0; b < B; ++b) {
    Act x = run.conv(encoder_.conv_in, image.data<float>() + b * C * H * W, H, W);
    for (const Block& block : encoder_.blocks) {
      for (const Resnet& r : block.resnets) x = run.resnet(r, std::move(x));
      if (block.resample) x = run.downsample(*block.resample, x);
    }
    x = run.mid_block(encoder_.mid, std::move(x));
    run.group_norm(encoder_.norm_out, x, x.data(), /*silu=*/true);
    float* out = moments.data<float>() + b * out_c * h * w;
    if (quant_conv_) {
      const Act e = run.conv(encoder_.conv_out, x);
      run.conv(*quant_conv_, e.data(), e.h, e.w, 1, {-1, -1, -1, -1}, out);
    } else {
      run.conv(encoder_.conv_out, x.data(), x.h, x.w, 1, {-1, -1, -1, -1}, out);
    }
  }
  return moments;
}

// ---- Postprocess ------------------------------------------------------------------------------------------

std::vector<uint8_t> image_to_rgb8(const Tensor& image) {
  const bool batched = image.rank() == 4;
  if (image.dtype() != DType::kF32 || (image.rank() != 3 && !batched) || (batched && image.dim(0) != 1) ||
      image.dim(-3) != 3)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("image_to_rgb8: expected an F32 image [1, 3, H, W], got {} {}",
                            dtype_name(image.dtype()), shape_to_string(image.shape())));
  const int64_t H = image.dim(-2), W = image.dim(-1), plane = H * W;
  const float* x = image.data<float>();
  std::vector<uint8_t> rgb(static_cast<size_t>(plane * 3));
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < plane; ++p) {
    for (int64_t c = 0; c < 3; ++c) {
      // Same float32 operations, in the same order, as torch's (x / 2 + 0.5).clamp(0, 1) and numpy's
      // (x * 255).round(); nearbyint rounds half to even in the default rounding mode, as np.round does.
      const float v = std::clamp(x[c * plane + p] / 2.0f + 0.5f, 0.0f, 1.0f);
      const float r = std::nearbyint(v * 255.0f);
      rgb[static_cast<size_t>(p * 3 + c)] = std::isnan(r) ? 0 : static_cast<uint8_t>(r);
    }
  }
  return rgb;
}

}  // namespace sdrt::models
