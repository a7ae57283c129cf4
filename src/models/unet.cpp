#include "models/unet.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "io/json_file.h"
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
  if (const auto it = j.find("addition_embed_type"); it != j.end() && *it == "text_time") {
    c.text_time_embedding = true;
    c.addition_time_embed_dim = io::get_int(j, "addition_time_embed_dim", 0, what);
    c.projection_class_embeddings_input_dim =
        io::get_int(j, "projection_class_embeddings_input_dim", 0, what);
  }

  for (size_t i = 0; i < blocks; ++i) {
    const int64_t heads = c.num_attention_heads[i];
    if (heads <= 0 || c.block_out_channels[i] % heads != 0)
      throw Error(ErrorKind::kFormat, fmt::format("{}: block {} has {} channels, not divisible into {} heads",
                                                  what, i, c.block_out_channels[i], heads));
    if (c.layers_per_block[i] <= 0 || c.transformer_layers_per_block[i] <= 0)
      throw Error(ErrorKind::kFormat, fmt::format("{}: block {} needs at least one layer", what, i));
  }
  // Numbers that size allocations are bounded before anything is built from them: SD's UNets have 4 in/out
  // channels, sample_size 64 or 96, 320..1280 channels, cross_attention_dim 768..2048.
  const auto in_range = [&](int64_t v, int64_t lo, int64_t hi, const std::string& field) {
    if (v < lo || v > hi)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" = {} is out of range ({} to {})", what, field, v, lo, hi));
  };
  in_range(c.in_channels, 1, 64, "in_channels");
  in_range(c.out_channels, 1, 64, "out_channels");
  in_range(c.sample_size, 1, 2048, "sample_size");
  in_range(static_cast<int64_t>(blocks), 1, 8, "block_out_channels (length)");
  for (size_t i = 0; i < blocks; ++i) {
    in_range(c.block_out_channels[i], 1, 1 << 14, fmt::format("block_out_channels[{}]", i));
    in_range(c.layers_per_block[i], 1, 16, fmt::format("layers_per_block[{}]", i));
    in_range(c.transformer_layers_per_block[i], 1, 64, fmt::format("transformer_layers_per_block[{}]", i));
  }
  in_range(c.cross_attention_dim, 1, 1 << 14, "cross_attention_dim");
  in_range(c.norm_num_groups, 1, 1024, "norm_num_groups");
  in_range(c.downsample_padding, 0, 16, "downsample_padding");
  if (c.text_time_embedding) {  // SDXL: 256 per time id, 2816 = 1280 + 6 · 256
    in_range(c.addition_time_embed_dim, 2, 1 << 12, "addition_time_embed_dim");
    if (c.addition_time_embed_dim % 2 != 0)
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"addition_time_embed_dim\" = {} must be even",
                                                  what, c.addition_time_embed_dim));
    in_range(c.projection_class_embeddings_input_dim, 1, 1 << 16, "projection_class_embeddings_input_dim");
  }
  for (const auto& [field, v] :
       {std::pair{"norm_eps", static_cast<double>(c.norm_eps)}, std::pair{"freq_shift", c.freq_shift},
        std::pair{"mid_block_scale_factor", c.mid_block_scale_factor}})
    if (!std::isfinite(v))
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" = {} is not finite", what, field, v));
  if (!(c.norm_eps > 0.0f))
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"norm_eps\" = {} must be positive", what, c.norm_eps));
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
  if (!c.text_time_embedding) require_default(j, "addition_embed_type", nullptr, what);
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

Tensor text_time_add_embeds(const UNetConfig& c, const Tensor& text_embeds, const Tensor& time_ids) {
  if (!c.text_time_embedding)
    throw Error(ErrorKind::kInternal, "text_time_add_embeds: the UNet has no text_time embedding");
  if (text_embeds.rank() != 2 || time_ids.rank() != 2 || text_embeds.dim(0) != time_ids.dim(0))
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("SDXL conditioning: text_embeds {} and time ids {} must be [B, P] and [B, n]",
                            shape_to_string(text_embeds.shape()), shape_to_string(time_ids.shape())));
  const int64_t B = text_embeds.dim(0), P = text_embeds.dim(1), n = time_ids.dim(1);
  const int64_t T = c.addition_time_embed_dim, width = P + n * T;
  if (width != c.projection_class_embeddings_input_dim)
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("SDXL conditioning: {} pooled text features + {} time ids x {} = {}, but the unet's "
                    "add_embedding takes projection_class_embeddings_input_dim = {}",
                    P, n, T, width, c.projection_class_embeddings_input_dim));
  const Tensor te = text_embeds.to(DType::kF32), ids = time_ids.to(DType::kF32);
  Tensor out({B, width}, DType::kF32);
  for (int64_t b = 0; b < B; ++b) {
    float* row = out.data<float>() + b * width;
    std::memcpy(row, te.data<float>() + b * P, static_cast<size_t>(P) * sizeof(float));
    for (int64_t k = 0; k < n; ++k) {  // add_time_proj: the UNet's own flip_sin_to_cos / freq_shift
      const auto f = timestep_embedding(ids.data<float>()[b * n + k], T, c.flip_sin_to_cos, c.freq_shift);
      std::memcpy(row + P + k * T, f.data(), static_cast<size_t>(T) * sizeof(float));
    }
  }
  return out;
}

// ---- description
// ----------------------------------------------------------------------------------------------------

namespace {

AttentionSpec describe_attention(const std::string& p, int64_t dim, int64_t context_dim, int64_t heads,
                                 bool cross) {
  AttentionSpec a;
  a.to_q = {p + ".to_q", dim, dim, false};
  a.to_k = {p + ".to_k", context_dim, dim, false};
  a.to_v = {p + ".to_v", context_dim, dim, false};
  a.to_out = {p + ".to_out.0", dim, dim, true};
  a.dim = dim;
  a.heads = heads;
  a.context_dim = context_dim;
  a.cross = cross;
  return a;
}

Transformer2DSpec describe_transformer(const std::string& p, int64_t channels, int64_t heads, int64_t layers,
                                       const UNetConfig& c) {
  Transformer2DSpec t;
  t.norm = {p + ".norm", c.norm_num_groups, channels, 1e-6f};
  const auto storage = c.use_linear_projection ? LinearStorage::kMatrix : LinearStorage::kConv1x1;
  t.proj_in = {p + ".proj_in", channels, channels, true, storage};
  const int64_t inner = channels * 4;
  for (int64_t i = 0; i < layers; ++i) {
    const std::string b = fmt::format("{}.transformer_blocks.{}", p, i);
    TransformerBlockSpec block;
    block.norm1 = {b + ".norm1", channels, 1e-5f};
    block.attn1 = describe_attention(b + ".attn1", channels, channels, heads, false);
    block.norm2 = {b + ".norm2", channels, 1e-5f};
    block.attn2 = describe_attention(b + ".attn2", channels, c.cross_attention_dim, heads, true);
    block.norm3 = {b + ".norm3", channels, 1e-5f};
    block.ff_proj = {b + ".ff.net.0.proj", channels, inner * 2, true};
    block.ff_out = {b + ".ff.net.2", inner, channels, true};
    t.blocks.push_back(std::move(block));
  }
  t.proj_out = {p + ".proj_out", channels, channels, true, storage};
  return t;
}

}  // namespace

UNetDescription describe_unet(const UNetConfig& c) {
  UNetDescription d;
  d.config = c;
  using Kind = UNetStep::Kind;
  const auto step = [&](Kind kind, size_t index = 0) { d.steps.push_back({kind, index}); };
  const auto resnet = [&](const std::string& p, int64_t in, int64_t out, double scale) {
    d.resnets.push_back(describe_resnet(p, in, out, c.norm_num_groups, c.norm_eps, d.time_embed_dim, scale));
    step(Kind::kResnet, d.resnets.size() - 1);
  };
  const auto transformer = [&](const std::string& p, int64_t channels, size_t block) {
    d.transformers.push_back(describe_transformer(p, channels, c.num_attention_heads[block],
                                                  c.transformer_layers_per_block[block], c));
    step(Kind::kTransformer, d.transformers.size() - 1);
  };

  const int64_t c0 = c.block_out_channels.front();
  const size_t n = c.block_out_channels.size();
  d.time_embed_dim = c0 * 4;
  d.time_linear_1 = {"time_embedding.linear_1", c0, d.time_embed_dim, true};
  d.time_linear_2 = {"time_embedding.linear_2", d.time_embed_dim, d.time_embed_dim, true};
  if (c.text_time_embedding) {
    d.add_linear_1 =
        LinearSpec{"add_embedding.linear_1", c.projection_class_embeddings_input_dim, d.time_embed_dim, true};
    d.add_linear_2 = LinearSpec{"add_embedding.linear_2", d.time_embed_dim, d.time_embed_dim, true};
  }
  d.conv_in = Conv2dSpec::same("conv_in", c.in_channels, c0, 3);
  step(Kind::kPushSkip);

  // Down blocks: every resnet (+ transformer) output and every downsampled output is a skip.
  int64_t out_ch = c0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_ch = out_ch;
    out_ch = c.block_out_channels[i];
    const bool attention = c.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int64_t j = 0; j < c.layers_per_block[i]; ++j) {
      resnet(fmt::format("down_blocks.{}.resnets.{}", i, j), j == 0 ? in_ch : out_ch, out_ch, 1.0);
      if (attention) transformer(fmt::format("down_blocks.{}.attentions.{}", i, j), out_ch, i);
      step(Kind::kPushSkip);
    }
    if (i + 1 < n) {
      Conv2dSpec down = Conv2dSpec::same(fmt::format("down_blocks.{}.downsamplers.0.conv", i), out_ch, out_ch,
                                         3, 2, c.downsample_padding);
      if (c.downsample_padding == 0) {  // diffusers pads right / bottom by one instead
        down.pad_top = down.pad_left = 0;
        down.pad_bottom = down.pad_right = 1;
      }
      d.downsamplers.push_back(std::move(down));
      step(Kind::kDownsample, d.downsamplers.size() - 1);
      step(Kind::kPushSkip);
    }
  }

  // Mid block: resnet, transformer, resnet at the deepest width.
  const int64_t mid_ch = c.block_out_channels.back();
  resnet("mid_block.resnets.0", mid_ch, mid_ch, c.mid_block_scale_factor);
  transformer("mid_block.attentions.0", mid_ch, n - 1);
  resnet("mid_block.resnets.1", mid_ch, mid_ch, c.mid_block_scale_factor);

  // Up blocks mirror the down blocks; each resnet takes the previous output concatenated with a skip.
  const std::vector<int64_t> reversed(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  out_ch = reversed[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev_out = out_ch;
    out_ch = reversed[i];
    const int64_t in_ch = reversed[std::min(i + 1, n - 1)];
    const size_t down_index = n - 1 - i;
    const int64_t layers = c.layers_per_block[down_index] + 1;
    const bool attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    for (int64_t j = 0; j < layers; ++j) {
      const int64_t skip_ch = j == layers - 1 ? in_ch : out_ch;
      step(Kind::kConcatSkip);
      resnet(fmt::format("up_blocks.{}.resnets.{}", i, j), (j == 0 ? prev_out : out_ch) + skip_ch, out_ch,
             1.0);
      if (attention) transformer(fmt::format("up_blocks.{}.attentions.{}", i, j), out_ch, down_index);
    }
    if (i + 1 < n) {
      d.upsamplers.push_back(
          Conv2dSpec::same(fmt::format("up_blocks.{}.upsamplers.0.conv", i), out_ch, out_ch, 3));
      step(Kind::kUpsample, d.upsamplers.size() - 1);
    }
  }

  d.conv_norm_out = {"conv_norm_out", c.norm_num_groups, c0, c.norm_eps};
  d.conv_out = Conv2dSpec::same("conv_out", c0, c.out_channels, 3);
  return d;
}

std::vector<WeightSpec> UNetDescription::weights() const {
  std::vector<WeightSpec> w;
  append_weights(w, time_linear_1);
  append_weights(w, time_linear_2);
  if (add_linear_1) append_weights(w, *add_linear_1);
  if (add_linear_2) append_weights(w, *add_linear_2);
  append_weights(w, conv_in);
  for (const auto& s : steps) {
    switch (s.kind) {
      case UNetStep::Kind::kResnet:
        append_weights(w, resnets[s.index]);
        break;
      case UNetStep::Kind::kTransformer: {
        const auto& t = transformers[s.index];
        append_weights(w, t.norm);
        append_weights(w, t.proj_in);
        for (const auto& b : t.blocks) {
          for (const auto* n : {&b.norm1, &b.norm2, &b.norm3}) append_weights(w, *n);
          for (const auto* a : {&b.attn1, &b.attn2})
            for (const auto* l : {&a->to_q, &a->to_k, &a->to_v, &a->to_out}) append_weights(w, *l);
          append_weights(w, b.ff_proj);
          append_weights(w, b.ff_out);
        }
        append_weights(w, t.proj_out);
        break;
      }
      case UNetStep::Kind::kDownsample:
        append_weights(w, downsamplers[s.index]);
        break;
      case UNetStep::Kind::kUpsample:
        append_weights(w, upsamplers[s.index]);
        break;
      case UNetStep::Kind::kPushSkip:
      case UNetStep::Kind::kConcatSkip:
        break;
    }
  }
  append_weights(w, conv_norm_out);
  append_weights(w, conv_out);
  return w;
}

}  // namespace sdrt::models
