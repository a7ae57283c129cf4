#include "models/cpu/unet.h"

#include <cmath>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/cpu/layers.h"
#include "sdrt/error.h"

namespace sdrt::models::cpu {

namespace ops = sdrt::cpu;

namespace {

// AttentionSpec: q from x, k / v from the context (or x), multi-head attention, to_out added to the residual.
struct Attention {
  Linear to_q, to_k, to_v, to_out;
  int64_t heads = 8, head_dim = 40;

  static Attention load(const WeightSource& w, const AttentionSpec& spec) {
    return {Linear::load(w, spec.to_q),
            Linear::load(w, spec.to_k),
            Linear::load(w, spec.to_v),
            Linear::load(w, spec.to_out),
            spec.heads,
            spec.head_dim()};
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
      ops::attention({.q = q.data<float>() + b * N * D,
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
    ops::gemm(attn.data<float>(), to_out.weight.data<float>(), r, B * N, D, D, /*transpose_b=*/true, 1.0f,
              1.0f);
  }
};

// TransformerBlockSpec: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm + residual.
struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_proj, ff_out;

  static TransformerBlock load(const WeightSource& w, const TransformerBlockSpec& spec) {
    return {LayerNorm::load(w, spec.norm1), LayerNorm::load(w, spec.norm2), LayerNorm::load(w, spec.norm3),
            Attention::load(w, spec.attn1), Attention::load(w, spec.attn2), Linear::load(w, spec.ff_proj),
            Linear::load(w, spec.ff_out)};
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
    ops::gemm(gd, ff_out.weight.data<float>(), xd, rows, D, inner, /*transpose_b=*/true, 1.0f, 1.0f);
  }
};

// Transformer2DSpec: GroupNorm, proj_in, transformer blocks, proj_out, + x.
struct Transformer2D {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<TransformerBlock> blocks;

  static Transformer2D load(const WeightSource& w, const Transformer2DSpec& spec) {
    Transformer2D t{GroupNorm::load(w, spec.norm), Linear::load(w, spec.proj_in), {}, {}};
    for (const auto& block : spec.blocks) t.blocks.push_back(TransformerBlock::load(w, block));
    t.proj_out = Linear::load(w, spec.proj_out);
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

struct UNet::Layers {
  UNetDescription description;
  Linear time_linear_1, time_linear_2;
  std::optional<Linear> add_linear_1, add_linear_2;  // SDXL's text_time embedding
  Conv2d conv_in, conv_out;
  GroupNorm conv_norm_out;
  std::vector<ResnetBlock> resnets;
  std::vector<Transformer2D> transformers;
  std::vector<Conv2d> downsamplers, upsamplers;
  int64_t parameters = 0;
};

UNet::UNet() : layers_(std::make_unique<Layers>()) {}
UNet::UNet(UNet&&) noexcept = default;
UNet& UNet::operator=(UNet&&) noexcept = default;
UNet::~UNet() = default;

const UNetConfig& UNet::config() const {
  return layers_->description.config;
}

int64_t UNet::parameter_count() const {
  return layers_->parameters;
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
  return load(describe_unet(config), {store, config_source});
}

UNet UNet::load(const UNetDescription& description, const WeightSource& w) {
  UNet unet;
  auto& m = *unet.layers_;
  m.description = description;
  const auto& d = m.description;
  m.time_linear_1 = Linear::load(w, d.time_linear_1);
  m.time_linear_2 = Linear::load(w, d.time_linear_2);
  if (d.add_linear_1) {
    m.add_linear_1 = Linear::load(w, *d.add_linear_1);
    m.add_linear_2 = Linear::load(w, *d.add_linear_2);
  }
  m.conv_in = Conv2d::load(w, d.conv_in);
  for (const auto& spec : d.resnets) m.resnets.push_back(ResnetBlock::load(w, spec));
  for (const auto& spec : d.transformers) m.transformers.push_back(Transformer2D::load(w, spec));
  for (const auto& spec : d.downsamplers) m.downsamplers.push_back(Conv2d::load(w, spec));
  for (const auto& spec : d.upsamplers) m.upsamplers.push_back(Conv2d::load(w, spec));
  m.conv_norm_out = GroupNorm::load(w, d.conv_norm_out);
  m.conv_out = Conv2d::load(w, d.conv_out);
  for (const auto& weight : d.weights()) m.parameters += shape_numel(weight.shape);
  return unet;
}

Tensor UNet::forward(const Tensor& sample, double timestep, const Tensor& context,
                     const Tensor& add_embeds) const {
  const auto& m = *layers_;
  const auto& c = m.description.config;
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
  if (m.add_linear_1) {  // SDXL: emb += linear_2(silu(linear_1(add_embeds)))
    const int64_t P = m.add_linear_1->in;
    if (add_embeds.rank() != 2 || add_embeds.dim(0) != B || add_embeds.dim(1) != P)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("unet: add_embeds {} must be [{}, {}] (pooled text embeddings and time ids)",
                              shape_to_string(add_embeds.shape()), B, P));
    Tensor aug = m.add_linear_1->forward(add_embeds.to(DType::kF32), B);
    silu_inplace(aug);
    aug = m.add_linear_2->forward(aug, B);
    ops::add(emb.data<float>(), aug.data<float>(), emb.data<float>(), emb.numel());
  } else if (!add_embeds.empty()) {
    throw Error(ErrorKind::kInvalidArgument,
                "unet: add_embeds given to a UNet without a text_time embedding");
  }
  silu_inplace(emb);  // every ResnetBlock2D applies SiLU to the embedding before its projection

  Tensor x = m.conv_in.forward(sample);  // [B, C0, h, w]
  std::vector<Tensor> skips;
  for (const UNetStep& step : m.description.steps) {
    switch (step.kind) {
      case UNetStep::Kind::kResnet:
        x = m.resnets[step.index].forward(x, emb);
        break;
      case UNetStep::Kind::kTransformer:
        x = m.transformers[step.index].forward(x, context);
        break;
      case UNetStep::Kind::kDownsample:
        x = m.downsamplers[step.index].forward(x);  // stride 2: [B, C, ceil(h/2), ceil(w/2)]
        break;
      case UNetStep::Kind::kUpsample: {
        // To the size of the skip that comes next: ×2, or the odd size a non-multiple-of-64 image had.
        const int64_t H = skips.back().dim(2), W = skips.back().dim(3);
        Tensor up({B, x.dim(1), H, W}, DType::kF32);
        ops::upsample_nearest(x.data<float>(), up.data<float>(), B * x.dim(1), x.dim(2), x.dim(3), H, W);
        x = m.upsamplers[step.index].forward(up);
        break;
      }
      case UNetStep::Kind::kPushSkip:
        skips.push_back(x);
        break;
      case UNetStep::Kind::kConcatSkip:
        x = concat_channels(x, skips.back());
        skips.pop_back();
        break;
    }
  }
  x = m.conv_norm_out.forward(x, /*silu_after=*/true);
  return m.conv_out.forward(x);  // [B, out, h, w]
}

}  // namespace sdrt::models::cpu
