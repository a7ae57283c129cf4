#include "models/vae.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <utility>

#include <fmt/format.h>

#include "io/json_file.h"
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
  // Latents are divided by scaling_factor before decoding: SD's are 0.18215 (1.x/2.x) and 0.13025 (SDXL),
  // so a value outside [1e-4, 1e4] (or not finite) is a broken config, not a model.
  if (!(c.scaling_factor >= 1e-4 && c.scaling_factor <= 1e4))
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"scaling_factor\" = {} must be between 1e-4 and 1e4", what,
                            c.scaling_factor));
  if (c.shift_factor && !(std::isfinite(*c.shift_factor) && std::abs(*c.shift_factor) <= 1e4))
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"shift_factor\" = {} must be a finite number of at most 1e4 in "
                            "magnitude",
                            what, *c.shift_factor));
  return c;
}

// ---- Description ------------------------------------------------------------------------------------------

namespace {

// diffusers' Attention with one head over all channels and a residual connection. Checkpoints saved before
// diffusers 0.14 name the projections query / key / value / proj_attn.
VaeAttentionSpec describe_vae_attention(const std::string& p, int64_t c, int64_t groups) {
  VaeAttentionSpec a;
  a.group_norm = {p + ".group_norm", groups, c, kEps};
  a.to_q = {p + ".to_q", c, c, true, LinearStorage::kEither, p + ".query"};
  a.to_k = {p + ".to_k", c, c, true, LinearStorage::kEither, p + ".key"};
  a.to_v = {p + ".to_v", c, c, true, LinearStorage::kEither, p + ".value"};
  a.to_out = {p + ".to_out.0", c, c, true, LinearStorage::kEither, p + ".proj_attn"};
  return a;
}

// UNetMidBlock2D: resnet, attention (unless mid_block_add_attention is false), resnet.
void describe_mid_block(VaeCoderSpec& coder, const std::string& p, int64_t c, const VaeConfig& config) {
  const int64_t groups = config.norm_num_groups;
  coder.resnets.push_back(describe_resnet(p + ".resnets.0", c, c, groups, kEps, 0));
  coder.steps.push_back({VaeStep::Kind::kResnet, coder.resnets.size() - 1});
  if (config.mid_block_add_attention) {
    coder.attentions.push_back(describe_vae_attention(p + ".attentions.0", c, groups));
    coder.steps.push_back({VaeStep::Kind::kAttention, coder.attentions.size() - 1});
  }
  coder.resnets.push_back(describe_resnet(p + ".resnets.1", c, c, groups, kEps, 0));
  coder.steps.push_back({VaeStep::Kind::kResnet, coder.resnets.size() - 1});
}

// diffusers' Encoder: block i maps block_out_channels[i - 1] (or [0]) to block_out_channels[i], then a
// Downsample2D (padding 0: pad right / bottom by one, stride-2 3×3 conv) but after the last.
VaeCoderSpec describe_encoder(const VaeConfig& c) {
  const auto& ch = c.block_out_channels;
  const int64_t groups = c.norm_num_groups;
  VaeCoderSpec e;
  e.conv_in = Conv2dSpec::same("encoder.conv_in", c.in_channels, ch[0], 3);
  int64_t out = ch[0];
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t in = out;
    out = ch[i];
    for (int64_t j = 0; j < c.layers_per_block; ++j) {
      e.resnets.push_back(describe_resnet(fmt::format("encoder.down_blocks.{}.resnets.{}", i, j),
                                          j == 0 ? in : out, out, groups, kEps, 0));
      e.steps.push_back({VaeStep::Kind::kResnet, e.resnets.size() - 1});
    }
    if (i + 1 < ch.size()) {
      e.samplers.push_back({fmt::format("encoder.down_blocks.{}.downsamplers.0.conv", i), out, out, 3, 2,
                            /*pad_top=*/0, /*pad_bottom=*/1, /*pad_left=*/0, /*pad_right=*/1});
      e.steps.push_back({VaeStep::Kind::kDownsample, e.samplers.size() - 1});
    }
  }
  describe_mid_block(e, "encoder.mid_block", ch.back(), c);
  e.norm_out = {"encoder.conv_norm_out", groups, ch.back(), kEps};
  e.conv_out = Conv2dSpec::same("encoder.conv_out", ch.back(), 2 * c.latent_channels, 3);  // mean, logvar
  if (c.use_quant_conv)
    e.quant_conv = Conv2dSpec::same("quant_conv", 2 * c.latent_channels, 2 * c.latent_channels, 1);
  return e;
}

// diffusers' Decoder: the channel list reversed, layers_per_block + 1 resnets per block, then an Upsample2D
// (nearest ×2, 3×3 conv) but after the last.
VaeCoderSpec describe_decoder(const VaeConfig& c) {
  const std::vector<int64_t> ch(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  const int64_t groups = c.norm_num_groups, L = c.latent_channels;
  VaeCoderSpec d;
  if (c.use_post_quant_conv) d.quant_conv = Conv2dSpec::same("post_quant_conv", L, L, 1);
  d.conv_in = Conv2dSpec::same("decoder.conv_in", L, ch[0], 3);
  describe_mid_block(d, "decoder.mid_block", ch[0], c);
  int64_t out = ch[0];
  for (size_t i = 0; i < ch.size(); ++i) {
    const int64_t in = out;
    out = ch[i];
    for (int64_t j = 0; j <= c.layers_per_block; ++j) {
      d.resnets.push_back(describe_resnet(fmt::format("decoder.up_blocks.{}.resnets.{}", i, j),
                                          j == 0 ? in : out, out, groups, kEps, 0));
      d.steps.push_back({VaeStep::Kind::kResnet, d.resnets.size() - 1});
    }
    if (i + 1 < ch.size()) {
      d.samplers.push_back(
          Conv2dSpec::same(fmt::format("decoder.up_blocks.{}.upsamplers.0.conv", i), out, out, 3));
      d.steps.push_back({VaeStep::Kind::kUpsample, d.samplers.size() - 1});
    }
  }
  d.norm_out = {"decoder.conv_norm_out", groups, ch.back(), kEps};
  d.conv_out = Conv2dSpec::same("decoder.conv_out", ch.back(), c.out_channels, 3);
  return d;
}

}  // namespace

VaeDescription describe_vae(const VaeConfig& config, VaeParts parts) {
  VaeDescription d;
  d.config = config;
  if (parts.encoder) d.encoder = describe_encoder(config);
  if (parts.decoder) d.decoder = describe_decoder(config);
  return d;
}

std::vector<WeightSpec> VaeDescription::weights() const {
  std::vector<WeightSpec> w;
  for (const auto* coder : {encoder ? &*encoder : nullptr, decoder ? &*decoder : nullptr}) {
    if (!coder) continue;
    append_weights(w, coder->conv_in);
    for (const auto& r : coder->resnets) append_weights(w, r);
    for (const auto& a : coder->attentions) {
      append_weights(w, a.group_norm);
      for (const auto* l : {&a.to_q, &a.to_k, &a.to_v, &a.to_out}) append_weights(w, *l);
    }
    for (const auto& s : coder->samplers) append_weights(w, s);
    append_weights(w, coder->norm_out);
    append_weights(w, coder->conv_out);
    if (coder->quant_conv) append_weights(w, *coder->quant_conv);
  }
  return w;
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
