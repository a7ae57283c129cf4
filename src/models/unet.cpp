#include "models/unet.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models {

// ---- config
// ----------------------------------------------------------------------------------------------------

namespace {

// An int or a list of ints (one per down block), as diffusers accepts for several UNet fields.
std::vector<int64_t> int_or_list(const nlohmann::json& j, const std::string& key, size_t blocks,
                                 int64_t fallback, const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::vector<int64_t>(blocks, fallback);
  if (it->is_number_integer()) return std::vector<int64_t>(blocks, it->get<int64_t>());
  if (it->is_array()) {
    std::vector<int64_t> v;
    for (const auto& e : *it) {
      if (!e.is_number_integer())
        throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" must hold integers", what, key));
      v.push_back(e.get<int64_t>());
    }
    if (v.size() != blocks)
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" has {} entries for {} down blocks", what,
                                                  key, v.size(), blocks));
    return v;
  }
  throw Error(ErrorKind::kFormat,
              fmt::format("{}: field \"{}\" must be an integer or a list of integers", what, key));
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& key,
                                     const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array())
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"{}\" must be a list of block type names", what, key));
  std::vector<std::string> v;
  for (const auto& e : *it) {
    if (!e.is_string())
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" must hold strings", what, key));
    v.push_back(e.get<std::string>());
  }
  return v;
}

void require_default(const nlohmann::json& j, const std::string& key, const nlohmann::json& allowed,
                     const std::string& what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == allowed) return;
  throw Error(ErrorKind::kUnsupported, fmt::format("{}: {} = {} is not supported yet (only {})", what, key,
                                                   it->dump(), allowed.dump()));
}

}  // namespace

UNetConfig UNetConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(io::read_json_file(path), path.string());
}

UNetConfig UNetConfig::from_json(const nlohmann::json& j, const std::string& what) {
  if (!j.is_object()) throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", what));
  UNetConfig c;
  c.in_channels = io::get_int(j, "in_channels", c.in_channels, what);
  c.out_channels = io::get_int(j, "out_channels", c.out_channels, what);
  c.sample_size = io::get_int(j, "sample_size", c.sample_size, what);
  if (j.contains("block_out_channels")) {
    c.block_out_channels.clear();
    const auto& list = j["block_out_channels"];
    if (!list.is_array() || list.empty())
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"block_out_channels\" must be a list", what));
    for (const auto& e : list) {
      if (!e.is_number_integer() || e.get<int64_t>() <= 0)
        throw Error(ErrorKind::kFormat,
                    fmt::format("{}: field \"block_out_channels\" must hold positive integers", what));
      c.block_out_channels.push_back(e.get<int64_t>());
    }
  }
  const size_t blocks = c.block_out_channels.size();
  c.down_block_types = string_list(j, "down_block_types", what);
  c.up_block_types = string_list(j, "up_block_types", what);
  if (c.down_block_types.size() != blocks || c.up_block_types.size() != blocks)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: {} down and {} up block types for {} block_out_channels", what,
                            c.down_block_types.size(), c.up_block_types.size(), blocks));
  for (const auto& t : c.down_block_types)
    if (t != "CrossAttnDownBlock2D" && t != "DownBlock2D")
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("{}: down block type \"{}\" is not supported", what, t));
  for (const auto& t : c.up_block_types)
    if (t != "CrossAttnUpBlock2D" && t != "UpBlock2D")
      throw Error(ErrorKind::kUnsupported, fmt::format("{}: up block type \"{}\" is not supported", what, t));
  c.mid_block_type = io::get_string(j, "mid_block_type", c.mid_block_type, what);
  if (c.mid_block_type != "UNetMidBlock2DCrossAttn")
    throw Error(ErrorKind::kUnsupported,
                fmt::format("{}: mid block type \"{}\" is not supported", what, c.mid_block_type));

  c.layers_per_block = int_or_list(j, "layers_per_block", blocks, 2, what);
  c.transformer_layers_per_block = int_or_list(j, "transformer_layers_per_block", blocks, 1, what);
  // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` — the historical field name
  // "attention_head_dim" holds the number of heads.
  const bool has_heads = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null();
  c.num_attention_heads =
      int_or_list(j, has_heads ? "num_attention_heads" : "attention_head_dim", blocks, 8, what);
  c.cross_attention_dim = io::get_int(j, "cross_attention_dim", c.cross_attention_dim, what);
  c.norm_num_groups = io::get_int(j, "norm_num_groups", c.norm_num_groups, what);
  c.norm_eps = static_cast<float>(io::get_number(j, "norm_eps", c.norm_eps, what));
  c.flip_sin_to_cos = io::get_bool(j, "flip_sin_to_cos", c.flip_sin_to_cos, what);
  c.freq_shift = io::get_number(j, "freq_shift", c.freq_shift, what);
  c.use_linear_projection = io::get_bool(j, "use_linear_projection", c.use_linear_projection, what);
  c.upcast_attention = io::get_bool(j, "upcast_attention", c.upcast_attention, what);
  c.downsample_padding = io::get_int(j, "downsample_padding", c.downsample_padding, what);
  c.mid_block_scale_factor = io::get_number(j, "mid_block_scale_factor", c.mid_block_scale_factor, what);

  for (size_t i = 0; i < blocks; ++i) {
    const int64_t heads = c.num_attention_heads[i];
    if (heads <= 0 || c.block_out_channels[i] % heads != 0)
      throw Error(ErrorKind::kFormat, fmt::format("{}: block {} has {} channels, not divisible into {} heads",
                                                  what, i, c.block_out_channels[i], heads));
    if (c.layers_per_block[i] <= 0 || c.transformer_layers_per_block[i] <= 0)
      throw Error(ErrorKind::kFormat, fmt::format("{}: block {} needs at least one layer", what, i));
  }
  // Features of other UNet variants (SDXL's added embeddings, class conditioning, ...) are refused by name
  // rather than silently ignored.
  require_default(j, "act_fn", "silu", what);
  require_default(j, "resnet_time_scale_shift", "default", what);
  require_default(j, "time_embedding_type", "positional", what);
  require_default(j, "conv_in_kernel", 3, what);
  require_default(j, "conv_out_kernel", 3, what);
  require_default(j, "center_input_sample", false, what);
  require_default(j, "only_cross_attention", false, what);
  require_default(j, "dual_cross_attention", false, what);
  require_default(j, "class_embed_type", nullptr, what);
  require_default(j, "addition_embed_type", nullptr, what);
  require_default(j, "encoder_hid_dim", nullptr, what);
  require_default(j, "time_cond_proj_dim", nullptr, what);
  require_default(j, "resnet_out_scale_factor", 1.0, what);
  return c;
}

std::vector<float> timestep_embedding(double timestep, int64_t dim, bool flip_sin_to_cos, double freq_shift) {
  // Mirrors diffusers' get_timestep_embedding in float32: exp(-ln(10000) · i / (half - shift)) · t.
  const int64_t half = dim / 2;
  std::vector<float> emb(static_cast<size_t>(dim), 0.0f);
  const float log_max_period = static_cast<float>(std::log(10000.0));
  const float denom = static_cast<float>(static_cast<double>(half) - freq_shift);
  const float t = static_cast<float>(timestep);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = (-log_max_period * static_cast<float>(i)) / denom;
    const float arg = t * std::exp(exponent);
    const float s = std::sin(arg), c = std::cos(arg);
    emb[static_cast<size_t>(i)] = flip_sin_to_cos ? c : s;
    emb[static_cast<size_t>(half + i)] = flip_sin_to_cos ? s : c;
  }
  return emb;
}

// ---- modules
// ---------------------------------------------------------------------------------------------------

namespace {

// ResnetBlock2D: x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(emb)))))
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  Linear time_emb_proj;
  bool has_shortcut = false;
  Conv2d conv_shortcut;  // 1×1, when in != out
  double output_scale_factor = 1.0;

  static ResnetBlock load(const WeightSource& w, const std::string& p, int64_t in, int64_t out, int64_t temb,
                          int64_t groups, float eps, double output_scale_factor) {
    ResnetBlock r;
    r.norm1 = GroupNorm::load(w, p + ".norm1", groups, in, eps);
    r.conv1 = Conv2d::load(w, p + ".conv1", in, out, 3);
    r.time_emb_proj = Linear::load(w, p + ".time_emb_proj", temb, out, true);
    r.norm2 = GroupNorm::load(w, p + ".norm2", groups, out, eps);
    r.conv2 = Conv2d::load(w, p + ".conv2", out, out, 3);
    r.has_shortcut = in != out;
    if (r.has_shortcut) r.conv_shortcut = Conv2d::load(w, p + ".conv_shortcut", in, out, 1, 1, 0);
    r.output_scale_factor = output_scale_factor;
    return r;
  }

  // x [B, in, H, W], emb_silu [B, temb] -> [B, out, H, W]
  Tensor forward(const Tensor& x, const Tensor& emb_silu) const {
    const int64_t B = x.dim(0);
    Tensor h = conv1.forward(norm1.forward(x, /*silu_after=*/true));  // [B, out, H, W]
    const Tensor t = time_emb_proj.forward(emb_silu, B);              // [B, out]
    const int64_t C = h.dim(1), HW = h.dim(2) * h.dim(3);
    float* hd = h.data<float>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        const float add = t.data<float>()[b * C + c];
        float* plane = hd + (b * C + c) * HW;
        for (int64_t i = 0; i < HW; ++i) plane[i] += add;
      }
    h = conv2.forward(norm2.forward(h, /*silu_after=*/true));
    Tensor out = has_shortcut ? conv_shortcut.forward(x) : x.to(DType::kF32);
    float* od = out.data<float>();
    const float* hh = h.data<float>();
    const float inv = static_cast<float>(1.0 / output_scale_factor);
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      od[i] = output_scale_factor == 1.0 ? od[i] + hh[i] : (od[i] + hh[i]) * inv;
    return out;
  }
};

// diffusers' Attention as used inside BasicTransformerBlock: no q/k/v bias, to_out.0 with bias.
struct Attention {
  Linear to_q, to_k, to_v, to_out;
  int64_t heads = 8, head_dim = 40;

  static Attention load(const WeightSource& w, const std::string& p, int64_t dim, int64_t context_dim,
                        int64_t heads) {
    Attention a;
    a.heads = heads;
    a.head_dim = dim / heads;
    a.to_q = Linear::load(w, p + ".to_q", dim, dim, false);
    a.to_k = Linear::load(w, p + ".to_k", context_dim, dim, false);
    a.to_v = Linear::load(w, p + ".to_v", context_dim, dim, false);
    a.to_out = Linear::load(w, p + ".to_out.0", dim, dim, true);
    return a;
  }

  // x [B, N, dim] (normalised), context [B, S, context_dim] (or x itself for self-attention);
  // adds the attention output to `residual` [B, N, dim].
  void forward_add(const Tensor& x, const Tensor& context, Tensor& residual) const {
    const int64_t B = x.dim(0), N = x.dim(1), D = to_q.out, S = context.dim(1);
    Tensor q({B, N, D}, DType::kF32), k({B, S, D}, DType::kF32), v({B, S, D}, DType::kF32);
    to_q.forward(x.data<float>(), q.data<float>(), B * N);
    to_k.forward(context.data<float>(), k.data<float>(), B * S);
    to_v.forward(context.data<float>(), v.data<float>(), B * S);
    Tensor attn({B, N, D}, DType::kF32);
    for (int64_t b = 0; b < B; ++b) {
      cpu::attention({.q = q.data<float>() + b * N * D,
                      .k = k.data<float>() + b * S * D,
                      .v = v.data<float>() + b * S * D,
                      .out = attn.data<float>() + b * N * D,
                      .seq_q = N,
                      .seq_kv = S,
                      .heads = heads,
                      .head_dim = head_dim,
                      .q_stride = D,
                      .k_stride = D,
                      .v_stride = D,
                      .out_stride = D,
                      .causal = false});
    }
    // residual += to_out(attn): let BLAS accumulate into the residual (beta = 1) after adding the bias.
    float* r = residual.data<float>();
    const float* bias = to_out.bias.data<float>();
    for (int64_t i = 0; i < B * N; ++i)
      for (int64_t d = 0; d < D; ++d) r[i * D + d] += bias[d];
    cpu::gemm(attn.data<float>(), to_out.weight.data<float>(), r, B * N, D, D, /*transpose_b=*/true, 1.0f,
              1.0f);
  }
};

// BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm + residual.
struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_proj;  // GEGLU: dim -> 2·inner (value half, then gate half)
  Linear ff_out;   // inner -> dim

  static TransformerBlock load(const WeightSource& w, const std::string& p, int64_t dim, int64_t context_dim,
                               int64_t heads) {
    TransformerBlock t;
    const int64_t inner = dim * 4;
    t.norm1 = LayerNorm::load(w, p + ".norm1", dim, 1e-5f);
    t.attn1 = Attention::load(w, p + ".attn1", dim, dim, heads);
    t.norm2 = LayerNorm::load(w, p + ".norm2", dim, 1e-5f);
    t.attn2 = Attention::load(w, p + ".attn2", dim, context_dim, heads);
    t.norm3 = LayerNorm::load(w, p + ".norm3", dim, 1e-5f);
    t.ff_proj = Linear::load(w, p + ".ff.net.0.proj", dim, inner * 2, true);
    t.ff_out = Linear::load(w, p + ".ff.net.2", inner, dim, true);
    return t;
  }

  // x [B, N, dim] updated in place.
  void forward(Tensor& x, const Tensor& context) const {
    const int64_t B = x.dim(0), N = x.dim(1), D = x.dim(2), rows = B * N;
    Tensor h(x.shape(), DType::kF32);
    norm1.forward(x.data<float>(), h.data<float>(), rows);
    attn1.forward_add(h, h, x);
    norm2.forward(x.data<float>(), h.data<float>(), rows);
    attn2.forward_add(h, context, x);
    norm3.forward(x.data<float>(), h.data<float>(), rows);
    const int64_t inner = ff_out.in;
    Tensor proj({rows, 2 * inner}, DType::kF32);  // [B·N, 2·inner]
    ff_proj.forward(h.data<float>(), proj.data<float>(), rows);
    Tensor gated({rows, inner}, DType::kF32);  // value · gelu(gate)
    const float* pd = proj.data<float>();
    float* gd = gated.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows; ++i) {
      const float* value = pd + i * 2 * inner;
      const float* gate = value + inner;
      for (int64_t j = 0; j < inner; ++j)
        gd[i * inner + j] =
            value[j] * (0.5f * gate[j] * (1.0f + std::erf(gate[j] * static_cast<float>(M_SQRT1_2))));
    }
    float* xd = x.data<float>();
    const float* bias = ff_out.bias.data<float>();
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t d = 0; d < D; ++d) xd[i * D + d] += bias[d];
    cpu::gemm(gd, ff_out.weight.data<float>(), xd, rows, D, inner, /*transpose_b=*/true, 1.0f, 1.0f);
  }
};

// Transformer2DModel (continuous input): GroupNorm, proj_in, transformer blocks, proj_out, residual.
// proj_in/proj_out are 1×1 convolutions (SD 1.x) or linears (use_linear_projection, SD 2.x); on the token
// layout both are the same matrix product, so both load into a Linear.
struct Transformer2D {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<TransformerBlock> blocks;

  static Transformer2D load(const WeightSource& w, const std::string& p, int64_t channels, int64_t heads,
                            int64_t layers, int64_t context_dim, int64_t groups, bool linear_projection) {
    Transformer2D t;
    t.norm = GroupNorm::load(w, p + ".norm", groups, channels, 1e-6f);
    const auto projection = [&](const std::string& name) {
      if (linear_projection) return Linear::load(w, name, channels, channels, true);
      Linear l;
      l.in = l.out = channels;
      l.weight = w.get(name + ".weight", {channels, channels, 1, 1}).reshape({channels, channels});
      l.bias = w.get(name + ".bias", {channels});
      return l;
    };
    t.proj_in = projection(p + ".proj_in");
    for (int64_t i = 0; i < layers; ++i)
      t.blocks.push_back(TransformerBlock::load(w, fmt::format("{}.transformer_blocks.{}", p, i), channels,
                                                context_dim, heads));
    t.proj_out = projection(p + ".proj_out");
    return t;
  }

  // x [B, C, H, W], context [B, S, context_dim] -> [B, C, H, W]
  Tensor forward(const Tensor& x, const Tensor& context) const {
    const int64_t B = x.dim(0), H = x.dim(2), W = x.dim(3);
    Tensor tokens = nchw_to_tokens(norm.forward(x));  // [B, H·W, C]
    Tensor h = proj_in.forward(tokens, B * H * W);    // [B, H·W, C]
    for (const auto& block : blocks) block.forward(h, context);
    Tensor out = tokens_to_nchw(proj_out.forward(h, B * H * W), H, W);  // [B, C, H, W]
    return add(out, x);
  }
};

}  // namespace

struct UNet::Blocks {
  struct Stage {
    std::vector<ResnetBlock> resnets;
    std::vector<Transformer2D> attentions;  // empty for DownBlock2D / UpBlock2D
    bool has_sampler = false;
    Conv2d sampler;  // downsampler (stride 2) or the conv after the nearest ×2 upsample
  };
  Linear time_linear_1, time_linear_2;
  Conv2d conv_in, conv_out;
  GroupNorm conv_norm_out;
  std::vector<Stage> down, up;
  ResnetBlock mid_resnet0;
  std::vector<Transformer2D> mid_attentions;
  std::vector<ResnetBlock> mid_resnets;
  int64_t parameters = 0;
};

UNet::UNet() : blocks_(std::make_unique<Blocks>()) {}
UNet::UNet(UNet&&) noexcept = default;
UNet& UNet::operator=(UNet&&) noexcept = default;
UNet::~UNet() = default;

int64_t UNet::parameter_count() const {
  return blocks_->parameters;
}

UNet UNet::from_folder(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: unet folder not found", dir.string()));
  const auto config_path = dir / "config.json";
  const UNetConfig config = UNetConfig::from_json_file(config_path);
  const auto store = io::WeightStore::from_component_dir(dir, "diffusion_pytorch_model");
  return from_weights(config, store, config_path.string());
}

UNet UNet::from_weights(const UNetConfig& config, const io::WeightStore& store,
                        const std::string& config_source) {
  UNet unet;
  unet.config_ = config;
  const auto& c = unet.config_;
  const WeightSource w{store, config_source};
  auto& m = *unet.blocks_;

  const int64_t c0 = c.block_out_channels.front(), temb = c0 * 4, groups = c.norm_num_groups;
  const size_t n = c.block_out_channels.size();
  m.time_linear_1 = Linear::load(w, "time_embedding.linear_1", c0, temb, true);
  m.time_linear_2 = Linear::load(w, "time_embedding.linear_2", temb, temb, true);
  m.conv_in = Conv2d::load(w, "conv_in", c.in_channels, c0, 3);

  int64_t out_ch = c0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_ch = out_ch;
    out_ch = c.block_out_channels[i];
    const bool attention = c.down_block_types[i] == "CrossAttnDownBlock2D";
    Blocks::Stage s;
    for (int64_t j = 0; j < c.layers_per_block[i]; ++j) {
      const std::string p = fmt::format("down_blocks.{}", i);
      s.resnets.push_back(ResnetBlock::load(w, fmt::format("{}.resnets.{}", p, j), j == 0 ? in_ch : out_ch,
                                            out_ch, temb, groups, c.norm_eps, 1.0));
      if (attention)
        s.attentions.push_back(Transformer2D::load(
            w, fmt::format("{}.attentions.{}", p, j), out_ch, c.num_attention_heads[i],
            c.transformer_layers_per_block[i], c.cross_attention_dim, groups, c.use_linear_projection));
    }
    s.has_sampler = i + 1 < n;
    if (s.has_sampler)
      s.sampler = Conv2d::load(w, fmt::format("down_blocks.{}.downsamplers.0.conv", i), out_ch, out_ch, 3, 2,
                               c.downsample_padding);
    if (s.has_sampler && c.downsample_padding == 0) {  // diffusers pads right/bottom by one instead
      s.sampler.pad_top = s.sampler.pad_left = 0;
      s.sampler.pad_bottom = s.sampler.pad_right = 1;
    }
    m.down.push_back(std::move(s));
  }

  const int64_t mid_ch = c.block_out_channels.back();
  m.mid_resnet0 = ResnetBlock::load(w, "mid_block.resnets.0", mid_ch, mid_ch, temb, groups, c.norm_eps,
                                    c.mid_block_scale_factor);
  m.mid_attentions.push_back(Transformer2D::load(
      w, "mid_block.attentions.0", mid_ch, c.num_attention_heads.back(),
      c.transformer_layers_per_block.back(), c.cross_attention_dim, groups, c.use_linear_projection));
  m.mid_resnets.push_back(ResnetBlock::load(w, "mid_block.resnets.1", mid_ch, mid_ch, temb, groups,
                                            c.norm_eps, c.mid_block_scale_factor));

  // Up blocks mirror the down blocks; each resnet takes the previous output concatenated with a skip.
  std::vector<int64_t> reversed_channels(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  out_ch = reversed_channels[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev_out = out_ch;
    out_ch = reversed_channels[i];
    const int64_t in_ch = reversed_channels[std::min(i + 1, n - 1)];
    const size_t down_index = n - 1 - i;
    const int64_t layers = c.layers_per_block[down_index] + 1;
    const bool attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    Blocks::Stage s;
    for (int64_t j = 0; j < layers; ++j) {
      const int64_t skip_ch = j == layers - 1 ? in_ch : out_ch;
      const int64_t resnet_in = (j == 0 ? prev_out : out_ch) + skip_ch;
      const std::string p = fmt::format("up_blocks.{}", i);
      s.resnets.push_back(ResnetBlock::load(w, fmt::format("{}.resnets.{}", p, j), resnet_in, out_ch, temb,
                                            groups, c.norm_eps, 1.0));
      if (attention)
        s.attentions.push_back(Transformer2D::load(w, fmt::format("{}.attentions.{}", p, j), out_ch,
                                                   c.num_attention_heads[down_index],
                                                   c.transformer_layers_per_block[down_index],
                                                   c.cross_attention_dim, groups, c.use_linear_projection));
    }
    s.has_sampler = i + 1 < n;
    if (s.has_sampler)
      s.sampler = Conv2d::load(w, fmt::format("up_blocks.{}.upsamplers.0.conv", i), out_ch, out_ch, 3);
    m.up.push_back(std::move(s));
  }

  m.conv_norm_out = GroupNorm::load(w, "conv_norm_out", groups, c0, c.norm_eps);
  m.conv_out = Conv2d::load(w, "conv_out", c0, c.out_channels, 3);
  for (const auto& name : store.names()) m.parameters += shape_numel(store.info(name).shape);
  return unet;
}

Tensor UNet::forward(const Tensor& sample, double timestep, const Tensor& context) const {
  const auto& c = config_;
  const auto& m = *blocks_;
  if (sample.rank() != 4 || sample.dim(1) != c.in_channels)
    throw Error(ErrorKind::kInvalidArgument, fmt::format("unet: sample {} must be [B, {}, h, w]",
                                                         shape_to_string(sample.shape()), c.in_channels));
  const int64_t B = sample.dim(0);
  if (context.rank() != 3 || context.dim(0) != B || context.dim(2) != c.cross_attention_dim)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("unet: context {} must be [{}, S, {}]", shape_to_string(context.shape()), B,
                            c.cross_attention_dim));

  // Time embedding: sinusoidal features -> linear -> SiLU -> linear, the same for every batch row.
  const int64_t c0 = c.block_out_channels.front();
  const auto features = timestep_embedding(timestep, c0, c.flip_sin_to_cos, c.freq_shift);
  Tensor t_emb({B, c0}, DType::kF32);
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(t_emb.data<float>() + b * c0, features.data(), c0 * sizeof(float));
  Tensor emb = m.time_linear_1.forward(t_emb, B);  // [B, 4·C0]
  silu_inplace(emb);
  emb = m.time_linear_2.forward(emb, B);
  silu_inplace(emb);  // every ResnetBlock2D applies SiLU to the embedding before its projection

  Tensor x = m.conv_in.forward(sample);  // [B, C0, h, w]
  std::vector<Tensor> skips{x};
  for (const auto& stage : m.down) {
    for (size_t j = 0; j < stage.resnets.size(); ++j) {
      x = stage.resnets[j].forward(x, emb);
      if (!stage.attentions.empty()) x = stage.attentions[j].forward(x, context);
      skips.push_back(x);
    }
    if (stage.has_sampler) {
      x = stage.sampler.forward(x);  // stride 2: [B, C, ceil(h/2), ceil(w/2)]
      skips.push_back(x);
    }
  }

  x = m.mid_resnet0.forward(x, emb);
  for (size_t j = 0; j < m.mid_attentions.size(); ++j) {
    x = m.mid_attentions[j].forward(x, context);
    x = m.mid_resnets[j].forward(x, emb);
  }

  for (const auto& stage : m.up) {
    for (size_t j = 0; j < stage.resnets.size(); ++j) {
      x = concat_channels(x, skips.back());
      skips.pop_back();
      x = stage.resnets[j].forward(x, emb);
      if (!stage.attentions.empty()) x = stage.attentions[j].forward(x, context);
    }
    if (stage.has_sampler) {
      // Upsample to the size of the skip that comes next: ×2, or the odd size a non-multiple-of-64 image had.
      const int64_t H = skips.back().dim(2), W = skips.back().dim(3);
      Tensor up({B, x.dim(1), H, W}, DType::kF32);
      cpu::upsample_nearest(x.data<float>(), up.data<float>(), B * x.dim(1), x.dim(2), x.dim(3), H, W);
      x = stage.sampler.forward(up);
    }
  }

  x = m.conv_norm_out.forward(x, /*silu_after=*/true);
  return m.conv_out.forward(x);  // [B, out, h, w]
}

}  // namespace sdrt::models
