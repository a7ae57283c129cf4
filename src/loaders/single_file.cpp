#include "loaders/single_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <set>
#include <sstream>

#include "io/atomic_file.h"
#include "io/interrupt.h"
#include "io/regular_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "sdrt/error.h"
#include "text/builtin_vocab.h"

namespace sdrt::loaders {

namespace fs = std::filesystem;
using io::WeightStore;
using io::write_file_atomically;
using io::write_safetensors;

namespace {

constexpr const char* kUnet = "model.diffusion_model.";
constexpr const char* kVae = "first_stage_model.";
constexpr const char* kClip = "cond_stage_model.transformer.";
constexpr const char* kOpenClip = "cond_stage_model.model.";
// SDXL (Stability's generative-models layout): the conditioner's embedders, numbered in order of use.
constexpr const char* kEmbedders = "conditioner.embedders.";
constexpr const char* kSdxlClip = "conditioner.embedders.0.transformer.";  // base: CLIP ViT-L
constexpr const char* kSdxlBigG = "conditioner.embedders.1.model.";        // base: OpenCLIP ViT-bigG
constexpr const char* kRefinerBigG = "conditioner.embedders.0.model.";     // refiner: bigG alone

[[noreturn]] void fail(ErrorKind kind, const fs::path& file, const std::string& message) {
  throw Error(kind, fmt::format("{}: {}", file.string(), message));
}

std::optional<DType> float_dtype(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return std::nullopt;
}

// GroupNorm groups: SD's 32 when the widths allow it, else their gcd (tiny test models).
int64_t norm_groups(const std::vector<int64_t>& widths) {
  int64_t g = 0;
  for (int64_t w : widths) g = std::gcd(g, w);
  return g % 32 == 0 ? 32 : std::min<int64_t>(g, 32);
}

// Builds one component's plan against the checkpoint, failing on a missing key with its original name.
class Planner {
 public:
  // `key_of` turns the names the planner is given into the checkpoint's keys (EMA names).
  using KeyOf = std::function<std::string(const std::string&)>;
  Planner(const WeightStore& src, const fs::path& file, MappedComponent& out, KeyOf key_of = nullptr)
      : src_(src), file_(file), out_(out), key_of_(std::move(key_of)) {}

  std::string key(const std::string& name) const { return key_of_ ? key_of_(name) : name; }
  bool has(const std::string& name) const { return src_.contains(key(name)); }
  Shape shape(const std::string& name) const {
    if (!has(name)) missing(name);
    return src_.info(key(name)).shape;
  }
  // The same for a tensor whose dimensions the plan reads: it must have `rank` of them.
  Shape shape(const std::string& name, size_t rank) const {
    Shape s = shape(name);
    if (s.size() != rank)
      fail(ErrorKind::kModel, file_,
           fmt::format("tensor \"{}\" has shape {}, expected {} dimensions", key(name), shape_to_string(s),
                       rank));
    return s;
  }
  [[noreturn]] void missing(const std::string& name) const {
    fail(ErrorKind::kModel, file_,
         fmt::format("missing tensor \"{}\" (needed for the {})", key(name), out_.name));
  }
  void add(const std::string& dst, const std::string& src_key, int part = -1) {
    Shape s = shape(src_key);
    if (part >= 0) {
      if (s.empty() || s[0] % 3 != 0)
        fail(ErrorKind::kModel, file_,
             fmt::format("tensor \"{}\" of shape {} is not a fused q/k/v projection", src_key,
                         shape_to_string(s)));
      s[0] /= 3;
    }
    out_.tensors[dst] = {key(src_key), std::move(s), part};
  }
  // A matrix stored transposed ([in, out] for a Linear's [out, in]).
  void add_transposed(const std::string& dst, const std::string& src_key) {
    Shape s = shape(src_key, 2);
    out_.tensors[dst] = {key(src_key), {s[1], s[0]}, -1, true};
  }
  [[noreturn]] void bad_shape(const std::string& name, const std::string& expected) const {
    fail(ErrorKind::kModel, file_,
         fmt::format("tensor \"{}\" has shape {}, expected {}", key(name), shape_to_string(shape(name)),
                     expected));
  }
  // weight + bias
  void add_wb(const std::string& dst, const std::string& src_key) {
    add(dst + ".weight", src_key + ".weight");
    add(dst + ".bias", src_key + ".bias");
  }
  // A 1x1 convolution stored for a linear layer ([C, C, 1, 1] -> [C, C]).
  void add_linear(const std::string& dst, const std::string& src_key) {
    add_wb(dst, src_key);
    auto& w = out_.tensors[dst + ".weight"].shape;
    if (w.size() == 4) w.resize(2);
  }
  int count(const std::string& prefix, const std::string& suffix) const {
    int n = 0;
    while (has(prefix + std::to_string(n) + suffix)) ++n;
    return n;
  }

 private:
  const WeightStore& src_;
  const fs::path& file_;
  MappedComponent& out_;
  KeyOf key_of_;
};

// ---- UNet

void plan_unet_resnet(Planner& p, const std::string& dst, const std::string& src) {
  p.add_wb(dst + ".norm1", src + ".in_layers.0");
  p.add_wb(dst + ".conv1", src + ".in_layers.2");
  p.add_wb(dst + ".time_emb_proj", src + ".emb_layers.1");
  p.add_wb(dst + ".norm2", src + ".out_layers.0");
  p.add_wb(dst + ".conv2", src + ".out_layers.3");
  if (p.has(src + ".skip_connection.weight")) p.add_wb(dst + ".conv_shortcut", src + ".skip_connection");
}

void plan_transformer(Planner& p, const std::string& dst, const std::string& src, int depth) {
  p.add_wb(dst + ".norm", src + ".norm");
  p.add_wb(dst + ".proj_in", src + ".proj_in");
  p.add_wb(dst + ".proj_out", src + ".proj_out");
  for (int j = 0; j < depth; ++j) {
    const std::string d = fmt::format("{}.transformer_blocks.{}", dst, j);
    const std::string s = fmt::format("{}.transformer_blocks.{}", src, j);
    for (const char* n :
         {".norm1", ".norm2", ".norm3", ".ff.net.0.proj", ".ff.net.2", ".attn1.to_out.0", ".attn2.to_out.0"})
      p.add_wb(d + n, s + n);
    for (const char* a : {".attn1", ".attn2"})
      for (const char* q : {".to_q", ".to_k", ".to_v"}) p.add(d + a + q + ".weight", s + a + q + ".weight");
  }
}

// The key holding a UNet tensor: its EMA copy ("model_ema.diffusion_model" + key without dots) when
// preferred.
struct UnetKeys {
  bool ema = false;
  std::string operator()(const std::string& key) const {
    if (!ema) return kUnet + key;
    std::string flat = key;
    flat.erase(std::remove(flat.begin(), flat.end(), '.'), flat.end());
    return "model_ema.diffusion_model" + flat;
  }
};

// SDXL's add_embedding (label_emb.0): pooled text embeddings [pooled] and `time_ids` sinusoidal embeddings
// of the size / crop / aesthetic conditioning, side by side, into the time embedding's width.
void plan_add_embedding(Planner& p, nlohmann::json& config, int64_t pooled, int time_ids) {
  const std::string l1 = "label_emb.0.0.weight", l2 = "label_emb.0.2.weight";
  const int64_t time_embed = p.shape("time_embed.0.weight", 2)[0];
  const Shape in = p.shape(l1, 2);
  if (in[0] != time_embed || in[1] <= pooled || (in[1] - pooled) % time_ids != 0)
    p.bad_shape(l1, fmt::format("[{}, {} pooled text + {} time ids x their embedding width]", time_embed,
                                pooled, time_ids));
  if (p.shape(l2, 2) != Shape{time_embed, time_embed})
    p.bad_shape(l2, fmt::format("[{}, {}]", time_embed, time_embed));
  p.add_wb("add_embedding.linear_1", "label_emb.0.0");
  p.add_wb("add_embedding.linear_2", "label_emb.0.2");
  config["addition_embed_type"] = "text_time";
  config["addition_embed_type_num_heads"] = 64;
  config["addition_time_embed_dim"] = (in[1] - pooled) / time_ids;
  config["projection_class_embeddings_input_dim"] = in[1];
}

// `pooled`: SDXL's pooled text width (text_encoder_2's projection_dim); unused otherwise.
MappedComponent plan_unet(const WeightStore& src, const fs::path& file, SdFamily family, bool v_pred,
                          bool ema, int64_t pooled) {
  MappedComponent c{"unet", "UNet2DConditionModel", {}, {}};
  Planner p(src, file, c, UnetKeys{ema});
  const auto k = [](const std::string& key) { return key; };  // the planner maps to the checkpoint's keys
  const Shape conv_in = p.shape(k("input_blocks.0.0.weight"), 4);
  // input_blocks: conv_in, then per block `layers` (resnet [+ attention]) and a downsampler but the last.
  int first_op = 1;
  while (first_op < 64 && !p.has(k(fmt::format("input_blocks.{}.0.op.weight", first_op)))) ++first_op;
  if (first_op == 64) p.missing(k("input_blocks.3.0.op.weight"));
  const int layers = first_op - 1;
  int blocks = 1;
  while (p.has(k(fmt::format("input_blocks.{}.0.op.weight", blocks * (layers + 1))))) ++blocks;
  std::vector<int64_t> widths, heads;
  std::vector<bool> attn;
  std::vector<int> depth;
  for (int b = 0; b < blocks; ++b) {
    const std::string first = fmt::format("input_blocks.{}", 1 + b * (layers + 1));
    widths.push_back(p.shape(k(first + ".0.out_layers.3.weight"), 4)[0]);
    attn.push_back(p.has(k(first + ".1.proj_in.weight")));
    depth.push_back(attn.back() ? p.count(k(first + ".1.transformer_blocks."), ".norm1.weight") : 0);
    if (attn.back() && depth.back() == 0) p.missing(k(first + ".1.transformer_blocks.0.norm1.weight"));
  }
  const std::string mid_attn = "middle_block.1";
  const int mid_depth = p.count(k(mid_attn + ".transformer_blocks."), ".norm1.weight");
  if (mid_depth == 0) p.missing(k(mid_attn + ".transformer_blocks.0.norm1.weight"));
  // diffusers builds the mid block with the last block's transformer_layers_per_block: a last block without
  // attention (the SDXL refiner's) carries the mid block's depth; one with attention must agree with it.
  if (attn.back() && depth.back() != mid_depth)
    fail(ErrorKind::kUnsupported, file,
         fmt::format("the mid block has {} transformer layers and the last down block {}: diffusers' "
                     "UNet2DConditionModel cannot express that",
                     mid_depth, depth.back()));
  const Shape proj_in = p.shape(k(mid_attn + ".proj_in.weight"));
  const bool linear = proj_in.size() == 2;
  const int64_t context = p.shape(k(mid_attn + ".transformer_blocks.0.attn2.to_k.weight"), 2)[1];
  for (int64_t w : widths) heads.push_back(family == SdFamily::kSd1 ? 8 : std::max<int64_t>(1, w / 64));

  // Mapping, in diffusers' order.
  p.add_wb("conv_in", k("input_blocks.0.0"));
  p.add_wb("time_embedding.linear_1", k("time_embed.0"));
  p.add_wb("time_embedding.linear_2", k("time_embed.2"));
  int i = 1;
  for (int b = 0; b < blocks; ++b) {
    for (int l = 0; l < layers; ++l, ++i) {
      plan_unet_resnet(p, fmt::format("down_blocks.{}.resnets.{}", b, l),
                       k(fmt::format("input_blocks.{}.0", i)));
      if (attn[b])
        plan_transformer(p, fmt::format("down_blocks.{}.attentions.{}", b, l),
                         k(fmt::format("input_blocks.{}.1", i)), depth[b]);
    }
    if (b + 1 < blocks)
      p.add_wb(fmt::format("down_blocks.{}.downsamplers.0.conv", b),
               k(fmt::format("input_blocks.{}.0.op", i++)));
  }
  plan_unet_resnet(p, "mid_block.resnets.0", k("middle_block.0"));
  plan_transformer(p, "mid_block.attentions.0", k(mid_attn), mid_depth);
  plan_unet_resnet(p, "mid_block.resnets.1", k("middle_block.2"));
  i = 0;
  for (int b = 0; b < blocks; ++b) {
    const int down = blocks - 1 - b;
    for (int l = 0; l <= layers; ++l, ++i) {
      plan_unet_resnet(p, fmt::format("up_blocks.{}.resnets.{}", b, l),
                       k(fmt::format("output_blocks.{}.0", i)));
      if (attn[down])
        plan_transformer(p, fmt::format("up_blocks.{}.attentions.{}", b, l),
                         k(fmt::format("output_blocks.{}.1", i)), depth[down]);
      if (l == layers && b + 1 < blocks)
        p.add_wb(fmt::format("up_blocks.{}.upsamplers.0.conv", b),
                 k(fmt::format("output_blocks.{}.{}.conv", i, attn[down] ? 2 : 1)));
    }
  }
  p.add_wb("conv_norm_out", k("out.0"));
  p.add_wb("conv_out", k("out.2"));

  std::vector<std::string> down_types, up_types;
  for (int b = 0; b < blocks; ++b) down_types.push_back(attn[b] ? "CrossAttnDownBlock2D" : "DownBlock2D");
  for (int b = blocks - 1; b >= 0; --b) up_types.push_back(attn[b] ? "CrossAttnUpBlock2D" : "UpBlock2D");
  nlohmann::json head_json = nlohmann::json(heads);
  if (family == SdFamily::kSd1) head_json = 8;  // SD 1.x configs hold one int
  std::vector<int64_t> tdepth;
  for (int b = 0; b < blocks; ++b) tdepth.push_back(attn[b] ? depth[b] : 1);
  tdepth.back() = mid_depth;
  const bool sdxl = is_sdxl(family);
  const int64_t sample_size = sdxl ? 128 : family == SdFamily::kSd2 && v_pred ? 96 : 64;  // latent pixels
  c.config = {{"_class_name", "UNet2DConditionModel"},
              {"act_fn", "silu"},
              {"attention_head_dim", head_json},
              {"block_out_channels", widths},
              {"center_input_sample", false},
              {"cross_attention_dim", context},
              {"down_block_types", down_types},
              {"downsample_padding", 1},
              {"dual_cross_attention", false},
              {"flip_sin_to_cos", true},
              {"freq_shift", 0},
              {"in_channels", conv_in[1]},
              {"layers_per_block", layers},
              {"mid_block_scale_factor", 1},
              {"mid_block_type", "UNetMidBlock2DCrossAttn"},
              {"norm_eps", 1e-5},
              {"norm_num_groups", norm_groups(widths)},
              {"only_cross_attention", false},
              {"out_channels", p.shape(k("out.2.weight"), 4)[0]},
              {"sample_size", sample_size},
              {"transformer_layers_per_block", tdepth},
              {"up_block_types", up_types},
              {"upcast_attention", family == SdFamily::kSd2 && v_pred},
              {"use_linear_projection", linear}};
  if (sdxl) plan_add_embedding(p, c.config, pooled, family == SdFamily::kSdxl ? 6 : 5);
  return c;
}

// ---- VAE

void plan_vae_resnet(Planner& p, const std::string& dst, const std::string& src) {
  for (const char* n : {".norm1", ".conv1", ".norm2", ".conv2"}) p.add_wb(dst + n, src + n);
  if (p.has(src + ".nin_shortcut.weight")) p.add_wb(dst + ".conv_shortcut", src + ".nin_shortcut");
}

void plan_vae_mid(Planner& p, const std::string& dst, const std::string& src) {
  plan_vae_resnet(p, dst + ".resnets.0", src + ".block_1");
  p.add_wb(dst + ".attentions.0.group_norm", src + ".attn_1.norm");
  p.add_linear(dst + ".attentions.0.to_q", src + ".attn_1.q");
  p.add_linear(dst + ".attentions.0.to_k", src + ".attn_1.k");
  p.add_linear(dst + ".attentions.0.to_v", src + ".attn_1.v");
  p.add_linear(dst + ".attentions.0.to_out.0", src + ".attn_1.proj_out");
  plan_vae_resnet(p, dst + ".resnets.1", src + ".block_2");
}

nlohmann::json vae_config(const std::vector<int64_t>& widths, int64_t layers, int64_t in, int64_t out,
                          int64_t latent, int64_t sample_size, double scaling_factor = 0.18215) {
  return {{"_class_name", "AutoencoderKL"},
          {"act_fn", "silu"},
          {"block_out_channels", widths},
          {"down_block_types", std::vector<std::string>(widths.size(), "DownEncoderBlock2D")},
          {"in_channels", in},
          {"latent_channels", latent},
          {"layers_per_block", layers},
          {"norm_num_groups", norm_groups(widths)},
          {"out_channels", out},
          {"sample_size", sample_size},
          {"scaling_factor", scaling_factor},
          {"up_block_types", std::vector<std::string>(widths.size(), "UpDecoderBlock2D")}};
}

MappedComponent plan_vae(const WeightStore& src, const fs::path& file, const std::string& pre,
                         int64_t sample_size, double scaling_factor = 0.18215) {
  MappedComponent c{"vae", "AutoencoderKL", {}, {}};
  Planner p(src, file, c);
  const Shape conv_in = p.shape(pre + "encoder.conv_in.weight", 4);
  const int blocks = p.count(pre + "encoder.down.", ".block.0.conv1.weight");
  const int layers = p.count(pre + "encoder.down.0.block.", ".conv1.weight");
  if (blocks == 0 || layers == 0) p.missing(pre + "encoder.down.0.block.0.conv1.weight");
  std::vector<int64_t> widths;
  for (int b = 0; b < blocks; ++b)
    widths.push_back(p.shape(fmt::format("{}encoder.down.{}.block.0.conv2.weight", pre, b), 4)[0]);

  for (const char* coder : {"encoder", "decoder"}) {
    const std::string s = pre + coder, d = coder;
    p.add_wb(d + ".conv_in", s + ".conv_in");
    plan_vae_mid(p, d + ".mid_block", s + ".mid");
    p.add_wb(d + ".conv_norm_out", s + ".norm_out");
    p.add_wb(d + ".conv_out", s + ".conv_out");
  }
  for (int b = 0; b < blocks; ++b) {
    for (int l = 0; l < layers; ++l)
      plan_vae_resnet(p, fmt::format("encoder.down_blocks.{}.resnets.{}", b, l),
                      fmt::format("{}encoder.down.{}.block.{}", pre, b, l));
    if (b + 1 < blocks)
      p.add_wb(fmt::format("encoder.down_blocks.{}.downsamplers.0.conv", b),
               fmt::format("{}encoder.down.{}.downsample.conv", pre, b));
    // The original numbers decoder blocks from the lowest resolution up, diffusers from the top down.
    const int up = blocks - 1 - b;
    for (int l = 0; l <= layers; ++l)
      plan_vae_resnet(p, fmt::format("decoder.up_blocks.{}.resnets.{}", b, l),
                      fmt::format("{}decoder.up.{}.block.{}", pre, up, l));
    if (b + 1 < blocks)
      p.add_wb(fmt::format("decoder.up_blocks.{}.upsamplers.0.conv", b),
               fmt::format("{}decoder.up.{}.upsample.conv", pre, up));
  }
  if (p.has(pre + "quant_conv.weight")) p.add_wb("quant_conv", pre + "quant_conv");
  if (p.has(pre + "post_quant_conv.weight")) p.add_wb("post_quant_conv", pre + "post_quant_conv");
  const int64_t latent = p.shape(pre + "decoder.conv_in.weight", 4)[1];
  c.config = vae_config(widths, layers, conv_in[1], p.shape(pre + "decoder.conv_out.weight", 4)[0], latent,
                        sample_size, scaling_factor);
  c.config["use_quant_conv"] = c.tensors.count("quant_conv.weight") != 0;
  c.config["use_post_quant_conv"] = c.tensors.count("post_quant_conv.weight") != 0;
  return c;
}

// A VAE file already in diffusers' names: identity mapping, config from the shapes.
MappedComponent plan_diffusers_vae(const WeightStore& src, const fs::path& file) {
  MappedComponent c{"vae", "AutoencoderKL", {}, {}};
  Planner p(src, file, c);
  for (const auto& name : src.names()) c.tensors[name] = {name, src.info(name).shape, -1};
  const int blocks = p.count("encoder.down_blocks.", ".resnets.0.conv1.weight");
  const int layers = p.count("encoder.down_blocks.0.resnets.", ".conv1.weight");
  std::vector<int64_t> widths;
  for (int b = 0; b < blocks; ++b)
    widths.push_back(p.shape(fmt::format("encoder.down_blocks.{}.resnets.0.conv2.weight", b), 4)[0]);
  c.config =
      vae_config(widths, layers, p.shape("encoder.conv_in.weight", 4)[1],
                 p.shape("decoder.conv_out.weight", 4)[0], p.shape("decoder.conv_in.weight", 4)[1], 512);
  c.config["use_quant_conv"] = p.has("quant_conv.weight");
  c.config["use_post_quant_conv"] = p.has("post_quant_conv.weight");
  return c;
}

// ---- text encoders

nlohmann::json clip_config(int64_t vocab, int64_t width, int64_t inner, int64_t layers, int64_t positions,
                           const std::string& act, int64_t projection) {
  return {{"architectures", {"CLIPTextModel"}},
          {"attention_dropout", 0.0},
          {"bos_token_id", 49406},
          {"eos_token_id", 49407},
          {"hidden_act", act},
          {"hidden_size", width},
          {"initializer_factor", 1.0},
          {"initializer_range", 0.02},
          {"intermediate_size", inner},
          {"layer_norm_eps", 1e-5},
          {"max_position_embeddings", positions},
          {"model_type", "clip_text_model"},
          {"num_attention_heads", std::max<int64_t>(1, width / 64)},
          {"num_hidden_layers", layers},
          {"pad_token_id", 1},
          {"projection_dim", projection},
          {"torch_dtype", "float32"},
          {"vocab_size", vocab}};
}

void plan_clip_layer(Planner& p, const std::string& dst, const std::string& src) {
  for (const char* n : {".layer_norm1", ".layer_norm2", ".mlp.fc1", ".mlp.fc2", ".self_attn.q_proj",
                        ".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.out_proj"})
    p.add_wb(dst + n, src + n);
}

// SD 1.x / SDXL base: transformers' CLIPTextModel under <prefix>[text_model.], every layer kept.
MappedComponent plan_clip(const WeightStore& src, const fs::path& file, const std::string& prefix) {
  MappedComponent c{"text_encoder", "CLIPTextModel", {}, {}};
  Planner p(src, file, c);
  std::string s = prefix + "text_model.";
  // Very old checkpoints lack "text_model."; a missing encoder is reported under the usual names.
  if (!p.has(s + "embeddings.token_embedding.weight") && p.has(prefix + "embeddings.token_embedding.weight"))
    s = prefix;
  const Shape tok = p.shape(s + "embeddings.token_embedding.weight", 2);
  const int layers = p.count(s + "encoder.layers.", ".layer_norm1.weight");
  p.add("text_model.embeddings.token_embedding.weight", s + "embeddings.token_embedding.weight");
  p.add("text_model.embeddings.position_embedding.weight", s + "embeddings.position_embedding.weight");
  for (int l = 0; l < layers; ++l)
    plan_clip_layer(p, fmt::format("text_model.encoder.layers.{}", l),
                    fmt::format("{}encoder.layers.{}", s, l));
  p.add_wb("text_model.final_layer_norm", s + "final_layer_norm");
  const int64_t inner = p.shape(s + "encoder.layers.0.mlp.fc1.weight", 2)[0];
  c.config = clip_config(tok[0], tok[1], inner, layers,
                         p.shape(s + "embeddings.position_embedding.weight", 2)[0], "quick_gelu", tok[1]);
  return c;
}

// OpenCLIP's text tower (q/k/v fused in attn.in_proj_*). SD 2.x: CLIPTextModel without the last resblock
// (SD 2.x conditions on the penultimate layer). SDXL's bigG: CLIPTextModelWithProjection ("text_encoder_2"),
// every resblock kept, and text_projection ([hidden, projection], applied as x @ P) as the Linear's weight.
MappedComponent plan_open_clip(const WeightStore& src, const fs::path& file, const std::string& prefix,
                               bool sdxl) {
  MappedComponent c{sdxl ? "text_encoder_2" : "text_encoder",
                    sdxl ? "CLIPTextModelWithProjection" : "CLIPTextModel",
                    {},
                    {}};
  Planner p(src, file, c);
  const std::string& s = prefix;
  const Shape tok = p.shape(s + "token_embedding.weight", 2);
  const int blocks = p.count(s + "transformer.resblocks.", ".ln_1.weight");
  if (blocks < (sdxl ? 1 : 2)) p.missing(fmt::format("{}transformer.resblocks.{}.ln_1.weight", s, blocks));
  const int layers = sdxl ? blocks : blocks - 1;
  p.add("text_model.embeddings.token_embedding.weight", s + "token_embedding.weight");
  p.add("text_model.embeddings.position_embedding.weight", s + "positional_embedding");
  for (int l = 0; l < layers; ++l) {
    const std::string d = fmt::format("text_model.encoder.layers.{}", l);
    const std::string r = fmt::format("{}transformer.resblocks.{}", s, l);
    p.add_wb(d + ".layer_norm1", r + ".ln_1");
    p.add_wb(d + ".layer_norm2", r + ".ln_2");
    p.add_wb(d + ".mlp.fc1", r + ".mlp.c_fc");
    p.add_wb(d + ".mlp.fc2", r + ".mlp.c_proj");
    p.add_wb(d + ".self_attn.out_proj", r + ".attn.out_proj");
    const char* qkv[] = {".self_attn.q_proj", ".self_attn.k_proj", ".self_attn.v_proj"};
    for (int part = 0; part < 3; ++part) {
      p.add(d + qkv[part] + ".weight", r + ".attn.in_proj_weight", part);
      p.add(d + qkv[part] + ".bias", r + ".attn.in_proj_bias", part);
    }
  }
  p.add_wb("text_model.final_layer_norm", s + "ln_final");
  const int64_t inner = p.shape(s + "transformer.resblocks.0.mlp.c_fc.weight", 2)[0];
  int64_t projection = tok[1];
  if (sdxl) {
    if (p.shape(s + "text_projection", 2)[0] != tok[1])
      p.bad_shape(s + "text_projection", fmt::format("[{}, projection width]", tok[1]));
    p.add_transposed("text_projection.weight", s + "text_projection");
    projection = c.tensors.at("text_projection.weight").shape[0];
  } else if (p.has(s + "text_projection")) {
    projection = p.shape(s + "text_projection", 2)[1];
  }
  c.config = clip_config(tok[0], tok[1], inner, layers, p.shape(s + "positional_embedding", 2)[0], "gelu",
                         projection);
  if (sdxl) c.config["architectures"] = {"CLIPTextModelWithProjection"};
  return c;
}

// The scalar at model.params.parameterization in the original training config next to the checkpoint
// (<stem>.yaml, e.g. `parameterization: "v"` in SD 2.x's v2-inference-v.yaml). A minimal strict reader of
// the block-mapping subset those configs use: `key: value` / `key:` lines nested by space indentation,
// `#` comments, blank lines and `- item` list lines (skipped); a scalar may be plain, 'single' or "double"
// quoted. Tabs in indentation, flow mappings at the key's level and a duplicated key are errors naming the
// file and line — so a "parameterization" elsewhere (a comment, another section, a longer key) no longer
// counts, as it did with the old substring match.
std::optional<std::string> yaml_parameterization(const fs::path& yaml) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(yaml, ec))) return std::nullopt;
  // A sidecar that is there must be readable: a FIFO or a folder of that name is an error naming it, not a
  // hang and not silently ignored.
  const std::string text = io::read_regular_file(yaml);
  const auto fail = [&](size_t line_no, const std::string& what) {
    throw Error(ErrorKind::kFormat, fmt::format("{}:{}: {}", yaml.string(), line_no, what));
  };
  const std::vector<std::string> want{"model", "params", "parameterization"};
  std::vector<std::pair<size_t, std::string>> path;  // (indent, key) of the enclosing mappings
  std::optional<std::string> found;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t indent = 0;
    while (indent < line.size() && line[indent] == ' ') ++indent;
    if (indent < line.size() && line[indent] == '\t') fail(line_no, "a tab in the indentation");
    if (indent == line.size() || line[indent] == '#') continue;
    if (line.compare(indent, 3, "---") == 0 && indent == 0) continue;
    if (line[indent] == '-' && (indent + 1 == line.size() || line[indent + 1] == ' ')) continue;  // list item
    // key: the text up to the first ": " (or a trailing ':') outside quotes.
    size_t colon = std::string::npos;
    for (size_t i = indent; i < line.size(); ++i) {
      if (line[i] == ':' && (i + 1 == line.size() || line[i + 1] == ' ')) {
        colon = i;
        break;
      }
      if (line[i] == '"' || line[i] == '\'' || line[i] == '{' || line[i] == '[') break;
    }
    if (colon == std::string::npos) continue;  // a continuation of a multi-line scalar
    std::string key = line.substr(indent, colon - indent);
    while (!key.empty() && key.back() == ' ') key.pop_back();
    while (!path.empty() && path.back().first >= indent) path.pop_back();
    path.emplace_back(indent, key);
    if (path.size() != want.size() || !std::equal(path.begin(), path.end(), want.begin(),
                                                  [](const auto& a, const auto& b) { return a.second == b; }))
      continue;
    // The value: a plain or quoted scalar, then an optional comment.
    std::string v = line.substr(colon + 1);
    size_t b = v.find_first_not_of(' ');
    v = b == std::string::npos ? "" : v.substr(b);
    std::string value;
    if (!v.empty() && (v[0] == '"' || v[0] == '\'')) {
      const auto close = v.find(v[0], 1);
      if (close == std::string::npos) fail(line_no, "unterminated quoted value of \"parameterization\"");
      value = v.substr(1, close - 1);
      const auto rest = v.find_first_not_of(' ', close + 1);
      if (rest != std::string::npos && v[rest] != '#')
        fail(line_no, "text after the quoted value of \"parameterization\"");
    } else {
      const auto hash = v.find(" #");
      value = v.substr(0, hash);
      while (!value.empty() && value.back() == ' ') value.pop_back();
      if (!value.empty() && value[0] == '#') value.clear();
      if (value.empty() || value[0] == '{' || value[0] == '[' || value[0] == '|' || value[0] == '>' ||
          value[0] == '&' || value[0] == '*' || value[0] == '!')
        fail(line_no, "\"parameterization\" must be a plain scalar such as \"v\" or \"eps\"");
    }
    if (found) fail(line_no, "\"parameterization\" is given twice under model.params");
    found = value;
  }
  return found;
}

std::string normalize_prediction(const std::string& v, const std::string& origin) {
  if (v == "epsilon" || v == "eps") return "epsilon";
  if (v == "v_prediction" || v == "v") return "v_prediction";
  throw Error(ErrorKind::kInvalidArgument,
              fmt::format("{}: unknown prediction type \"{}\" (epsilon or v_prediction)", origin, v));
}

bool has_prefix(const WeightStore& src, const std::string& prefix) {
  const auto names = src.names();
  auto it = std::lower_bound(names.begin(), names.end(), prefix);
  return it != names.end() && it->compare(0, prefix.size(), prefix) == 0;
}

size_t count_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  return std::count_if(names.begin(), names.end(),
                       [&](const std::string& n) { return n.compare(0, prefix.size(), prefix) == 0; });
}

}  // namespace

const char* sd_family_name(SdFamily family) {
  switch (family) {
    case SdFamily::kSd1:
      return "SD 1.x";
    case SdFamily::kSd2:
      return "SD 2.x";
    case SdFamily::kSdxl:
      return "SDXL";
    case SdFamily::kSdxlRefiner:
      return "SDXL refiner";
  }
  return "?";
}

bool is_sdxl(SdFamily family) {
  return family == SdFamily::kSdxl || family == SdFamily::kSdxlRefiner;
}

int64_t MappedComponent::parameter_count() const {
  int64_t n = 0;
  for (const auto& entry : tensors) n += shape_numel(entry.second.shape);
  return n;
}

SingleFile::SingleFile() = default;
SingleFile::SingleFile(SingleFile&&) noexcept = default;
SingleFile& SingleFile::operator=(SingleFile&&) noexcept = default;
SingleFile::~SingleFile() = default;

SingleFile SingleFile::open(const fs::path& path, const SingleFileOptions& options) {
  SingleFile f;
  f.path_ = path;
  f.source_ = std::make_shared<const WeightStore>(WeightStore::open(path));
  const WeightStore& src = *f.source_;
  const bool has_clip = has_prefix(src, kClip), has_open_clip = has_prefix(src, kOpenClip);
  const bool has_embedders = has_prefix(src, kEmbedders);
  const bool has_unet = src.contains(std::string(kUnet) + "input_blocks.0.0.weight");
  if (!has_clip && !has_open_clip && !has_embedders && !has_unet)
    fail(ErrorKind::kFormat, path,
         "not an SD 1.x / 2.x / XL checkpoint in the original layout (no model.diffusion_model.*, "
         "cond_stage_model.* or conditioner.embedders.* tensors)");
  // The text encoders tell the family; the refiner's bigG is its first (only) embedder.
  if (has_embedders) {
    f.family_ = has_prefix(src, kRefinerBigG) ? SdFamily::kSdxlRefiner : SdFamily::kSdxl;
  } else if (has_open_clip) {
    f.family_ = SdFamily::kSd2;
  } else if (!has_clip && has_unet) {
    if (src.contains(std::string(kUnet) + "label_emb.0.0.weight")) {
      f.family_ = SdFamily::kSdxl;
    } else {
      const auto proj = src.info(std::string(kUnet) + "middle_block.1.proj_in.weight").shape;
      f.family_ = proj.size() == 2 ? SdFamily::kSd2 : SdFamily::kSd1;
    }
  }
  // Prediction type: the option, else the sidecar yaml, else epsilon.
  if (options.prediction_type) {
    f.prediction_type_ = normalize_prediction(*options.prediction_type, "prediction_type");
    f.prediction_source_ = "option";
  } else {
    auto yaml = path;
    yaml.replace_extension(".yaml");
    if (const auto v = yaml_parameterization(yaml)) {
      f.prediction_type_ = normalize_prediction(*v, yaml.string());
      f.prediction_source_ = yaml.string();
    }
  }
  switch (f.family_) {
    case SdFamily::kSd1:
    case SdFamily::kSd2:
      if (f.family_ == SdFamily::kSd1 ? !has_clip : !has_open_clip)
        fail(ErrorKind::kModel, path,
             fmt::format("no text encoder ({}* tensors)", f.family_ == SdFamily::kSd1 ? kClip : kOpenClip));
      f.text_encoder_ = f.family_ == SdFamily::kSd1 ? plan_clip(src, path, kClip)
                                                    : plan_open_clip(src, path, kOpenClip, false);
      break;
    case SdFamily::kSdxl:
      if (!has_embedders)
        fail(ErrorKind::kModel, path,
             fmt::format("an SDXL UNet without text encoders ({}* tensors)", kEmbedders));
      f.text_encoder_ = plan_clip(src, path, kSdxlClip);
      f.text_encoder_2_ = plan_open_clip(src, path, kSdxlBigG, true);
      break;
    case SdFamily::kSdxlRefiner:
      f.text_encoder_2_ = plan_open_clip(src, path, kRefinerBigG, true);
      break;
  }
  if (options.text_encoder_only) return f;
  if (!has_unet)
    fail(ErrorKind::kModel, path, fmt::format("missing tensor \"{}input_blocks.0.0.weight\"", kUnet));
  // diffusers' rule: a checkpoint with over 100 model_ema.* tensors carries EMA weights.
  const auto names = src.names();
  f.uses_ema_ = options.prefer_ema && count_prefix(names, "model_ema.") > 100;
  const bool v_pred = f.prediction_type_ == "v_prediction";
  const bool sdxl = is_sdxl(f.family_);
  const int64_t pooled = sdxl ? f.text_encoder_2_->config.at("projection_dim").get<int64_t>() : 0;
  f.unet_ = plan_unet(src, path, f.family_, v_pred, f.uses_ema_, pooled);
  if (sdxl) {
    f.vae_ = plan_vae(src, path, kVae, 1024, 0.13025);
    f.vae_->config["force_upcast"] = true;  // SDXL's VAE overflows in fp16
  } else {
    f.vae_ = plan_vae(src, path, kVae, f.family_ == SdFamily::kSd2 && v_pred ? 768 : 512);
  }
  return f;
}

SingleFile SingleFile::open_vae(const fs::path& path) {
  SingleFile f;
  f.path_ = path;
  f.source_ = std::make_shared<const WeightStore>(WeightStore::open(path));
  const WeightStore& src = *f.source_;
  if (src.contains("encoder.down_blocks.0.resnets.0.conv1.weight")) {
    f.vae_ = plan_diffusers_vae(src, path);
  } else if (src.contains("encoder.down.0.block.0.conv1.weight")) {
    f.vae_ = plan_vae(src, path, "", 512);
  } else if (src.contains(std::string(kVae) + "encoder.down.0.block.0.conv1.weight")) {
    f.vae_ = plan_vae(src, path, kVae, 512);
  } else {
    fail(ErrorKind::kFormat, path,
         "not a VAE (no encoder.down.0.block.0.conv1.weight, first_stage_model.* or encoder.down_blocks.* "
         "tensors)");
  }
  return f;
}

std::vector<const MappedComponent*> SingleFile::components() const {
  std::vector<const MappedComponent*> out;
  for (const auto* c : {&text_encoder_, &text_encoder_2_, &unet_, &vae_})
    if (c->has_value()) out.push_back(&**c);
  return out;
}

nlohmann::json SingleFile::scheduler_config() const {
  if (is_sdxl(family_))  // SDXL 1.0 base's and refiner's scheduler_config.json
    return {{"_class_name", "EulerDiscreteScheduler"},
            {"beta_end", 0.012},
            {"beta_schedule", "scaled_linear"},
            {"beta_start", 0.00085},
            {"clip_sample", false},
            {"interpolation_type", "linear"},
            {"num_train_timesteps", 1000},
            {"prediction_type", prediction_type_},
            {"sample_max_value", 1.0},
            {"set_alpha_to_one", false},
            {"skip_prk_steps", true},
            {"steps_offset", 1},
            {"timestep_spacing", "leading"},
            {"trained_betas", nullptr},
            {"use_karras_sigmas", false}};
  return {{"_class_name", "PNDMScheduler"},
          {"beta_end", 0.012},
          {"beta_schedule", "scaled_linear"},
          {"beta_start", 0.00085},
          {"clip_sample", false},
          {"num_train_timesteps", 1000},
          {"prediction_type", prediction_type_},
          {"set_alpha_to_one", false},
          {"skip_prk_steps", true},
          {"steps_offset", 1},
          {"timestep_spacing", "leading"},
          {"trained_betas", nullptr}};
}

nlohmann::json SingleFile::pipeline_config() const {
  switch (family_) {
    case SdFamily::kSdxl:
      return {{"_class_name", "StableDiffusionXLPipeline"},
              {"force_zeros_for_empty_prompt", true},
              {"requires_aesthetics_score", false}};
    case SdFamily::kSdxlRefiner:
      return {{"_class_name", "StableDiffusionXLImg2ImgPipeline"},
              {"force_zeros_for_empty_prompt", false},
              {"requires_aesthetics_score", true}};
    default:
      return {{"_class_name", "StableDiffusionPipeline"}};
  }
}

text::ClipTokenizerConfig SingleFile::tokenizer_config() const {
  text::ClipTokenizerConfig c;
  c.pad_token = family_ == SdFamily::kSd2 ? "!" : "<|endoftext|>";
  return c;
}

text::ClipTokenizerConfig SingleFile::tokenizer_2_config() const {
  text::ClipTokenizerConfig c;
  c.pad_token = "!";
  return c;
}

size_t SingleFile::tensor_count() const {
  return source_->names().size();
}

std::string SingleFile::stored_dtypes() const {
  std::set<std::string> seen;
  for (const auto& n : source_->names()) seen.insert(source_->info(n).dtype);
  std::string out;
  for (const auto& d : seen) out += (out.empty() ? "" : ",") + d;
  return out;
}

std::map<std::string, Tensor> SingleFile::load(const MappedComponent& component) const {
  std::map<std::string, Tensor> out;
  for (const auto& [name, m] : component.tensors) {
    const auto& info = source_->info(m.source);
    const auto dtype = float_dtype(info.dtype);
    if (!dtype)
      fail(ErrorKind::kUnsupported, path_,
           fmt::format("tensor \"{}\" has dtype {} (F32, F16 or BF16 expected)", m.source, info.dtype));
    Tensor t = source_->load(m.source, *dtype);
    if (m.transpose) {  // [a, b] stored -> [b, a]
      Tensor transposed(m.shape, *dtype);
      const size_t rows = static_cast<size_t>(m.shape[1]), cols = static_cast<size_t>(m.shape[0]);
      const size_t elem = dtype_size(*dtype);
      const auto* from = static_cast<const std::byte*>(t.raw_data());
      auto* to = static_cast<std::byte*>(transposed.raw_data());
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c)
          std::memcpy(to + (c * rows + r) * elem, from + (r * cols + c) * elem, elem);
      t = std::move(transposed);
    } else if (m.part >= 0) {  // one third of a fused projection along dim 0
      Tensor slice(m.shape, *dtype);
      const size_t bytes = slice.nbytes();
      std::memcpy(slice.raw_data(), static_cast<const std::byte*>(t.raw_data()) + bytes * m.part, bytes);
      t = std::move(slice);
    } else if (t.shape() != m.shape) {
      t = t.reshape(m.shape);
    }
    out.emplace(name, std::move(t));
  }
  return out;
}

WeightStore SingleFile::store(const MappedComponent& component) const {
  return WeightStore::from_tensors(load(component), fmt::format("{} ({})", path_.string(), component.name));
}

namespace {

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// tokenizer/ as SD 1.5 / 2.1 ship it: vocab.json and merges.txt from OpenAI's merges
// (scripts/make_fixtures.py).
void write_tokenizer_folder(const fs::path& dir, const std::string& pad_token) {
  constexpr size_t kMerges = 49152 - 256 - 2;
  fs::create_directories(dir);
  // GPT-2's byte alphabet: printable bytes map to themselves, the others to 256 + n, in that order.
  std::vector<uint32_t> order;
  for (uint32_t b = '!'; b <= '~'; ++b) order.push_back(b);
  for (uint32_t b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
  for (uint32_t b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
  std::vector<std::string> symbols;
  for (uint32_t b : order) append_utf8(symbols.emplace_back(), b);
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b)
    if (std::find(order.begin(), order.end(), b) == order.end())
      append_utf8(symbols.emplace_back(), 256 + extra++);
  std::vector<std::string> vocab = symbols;
  for (const auto& s : symbols) vocab.push_back(s + "</w>");
  const std::string& text = text::builtin_clip_merges_text();
  std::string merges = "#version: 0.2\n";
  size_t pos = text.find('\n') + 1;
  for (size_t n = 0; n < kMerges && pos < text.size(); ++n) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    std::string line = text.substr(pos, end - pos);
    merges += line + "\n";
    line.erase(std::remove(line.begin(), line.end(), ' '), line.end());
    vocab.push_back(line);
    pos = end + 1;
  }
  vocab.push_back("<|startoftext|>");
  vocab.push_back("<|endoftext|>");
  nlohmann::json v = nlohmann::json::object();  // key order is immaterial; ordered_json inserts in O(n)
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  write_file_atomically(dir / "vocab.json", v.dump());
  write_file_atomically(dir / "merges.txt", merges);
  const auto special = [](const std::string& t) {
    return nlohmann::json{
        {"content", t}, {"lstrip", false}, {"normalized", true}, {"rstrip", false}, {"single_word", false}};
  };
  const nlohmann::json pad = pad_token == "!" ? nlohmann::json(pad_token) : special(pad_token);
  const nlohmann::json config = {{"add_prefix_space", false},
                                 {"bos_token", special("<|startoftext|>")},
                                 {"do_lower_case", true},
                                 {"eos_token", special("<|endoftext|>")},
                                 {"errors", "replace"},
                                 {"model_max_length", 77},
                                 {"pad_token", pad_token},
                                 {"tokenizer_class", "CLIPTokenizer"},
                                 {"unk_token", special("<|endoftext|>")}};
  write_file_atomically(dir / "tokenizer_config.json", config.dump(2));
  const nlohmann::json map = {{"bos_token", special("<|startoftext|>")},
                              {"eos_token", special("<|endoftext|>")},
                              {"pad_token", pad},
                              {"unk_token", special("<|endoftext|>")}};
  write_file_atomically(dir / "special_tokens_map.json", map.dump(2));
}

}  // namespace

void convert_to_diffusers(const SingleFile& file, const fs::path& output) {
  const bool sdxl = is_sdxl(file.family());
  const bool refiner = file.family() == SdFamily::kSdxlRefiner;
  if ((!file.text_encoder() && !refiner) || (sdxl && !file.text_encoder_2()) || !file.unet() || !file.vae())
    fail(ErrorKind::kInvalidArgument, file.path(),
         "convert needs a whole checkpoint (text encoder, UNet, VAE)");
  // Everything is written into a temporary sibling folder renamed to `output` at the end: an error or an
  // interruption (io/interrupt.h) removes it, so a half-written model folder is never left behind.
  io::TemporaryFolder folder(output);
  const fs::path& dir = folder.path();
  nlohmann::json index = file.pipeline_config();
  index["_diffusers_version"] = "0.30.0";
  if (sdxl) {
    if (!refiner)
      index.erase("requires_aesthetics_score");  // StableDiffusionXLPipeline takes no such argument
  } else {
    index["feature_extractor"] = {nullptr, nullptr};
    index["requires_safety_checker"] = false;
    index["safety_checker"] = {nullptr, nullptr};
  }
  for (const auto* c : file.components()) {
    io::throw_if_interrupted(output.string());
    fs::create_directories(dir / c->name);
    write_file_atomically(dir / c->name / "config.json", c->config.dump(2));
    const auto tensors = file.load(*c);
    io::throw_if_interrupted(output.string());
    const bool transformers = c->name.starts_with("text_encoder");
    write_safetensors(
        dir / c->name / (transformers ? "model.safetensors" : "diffusion_pytorch_model.safetensors"),
        tensors);
    index[c->name] = {transformers ? "transformers" : "diffusers", c->class_name};
  }
  fs::create_directories(dir / "scheduler");
  const auto scheduler = file.scheduler_config();
  write_file_atomically(dir / "scheduler" / "scheduler_config.json", scheduler.dump(2));
  index["scheduler"] = {"diffusers", scheduler.at("_class_name")};
  // The refiner has neither text_encoder nor tokenizer: null entries, as diffusers writes them.
  if (file.text_encoder()) {
    write_tokenizer_folder(dir / "tokenizer", file.tokenizer_config().pad_token);
    index["tokenizer"] = {"transformers", "CLIPTokenizer"};
  } else {
    index["text_encoder"] = index["tokenizer"] = {nullptr, nullptr};
  }
  if (sdxl) {
    write_tokenizer_folder(dir / "tokenizer_2", file.tokenizer_2_config().pad_token);
    index["tokenizer_2"] = {"transformers", "CLIPTokenizer"};
  }
  write_file_atomically(dir / "model_index.json", index.dump(2));
  folder.commit();
}

}  // namespace sdrt::loaders
