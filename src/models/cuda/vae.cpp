#include "models/cuda/vae.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/elementwise.cuh"

namespace sdrt::models::cuda {
namespace {

// ResnetSpec without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x))))))
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  std::optional<Conv2d> conv_shortcut;

  static ResnetBlock load(Context& ctx, const WeightSource& w, const ResnetSpec& spec) {
    ResnetBlock r;
    r.norm1 = GroupNorm::load(ctx, w, spec.norm1);
    r.conv1 = Conv2d::load(ctx, w, spec.conv1);
    r.norm2 = GroupNorm::load(ctx, w, spec.norm2);
    r.conv2 = Conv2d::load(ctx, w, spec.conv2);
    if (spec.conv_shortcut) r.conv_shortcut = Conv2d::load(ctx, w, *spec.conv_shortcut);
    return r;
  }

  Act forward(Context& ctx, ActivationPool& pool, const Act& x) const {
    Act h = conv1.forward(ctx, pool, norm1.forward(ctx, pool, x, true));
    h = norm2.forward(ctx, pool, h, true);
    if (!conv_shortcut) return conv2.forward(ctx, pool, h, x.data());
    Act shortcut = conv_shortcut->forward(ctx, pool, x);
    return conv2.forward(ctx, pool, h, shortcut.data());
  }
};

// VaeAttentionSpec: one head over all channels, residual connection; q/k/v as one stacked product.
struct Attention {
  GroupNorm group_norm;
  Linear qkv, to_out;
  int64_t channels = 0;

  static Attention load(Context& ctx, const WeightSource& w, const VaeAttentionSpec& spec) {
    Attention a;
    a.channels = spec.group_norm.channels;
    a.group_norm = GroupNorm::load(ctx, w, spec.group_norm);
    a.qkv = Linear::load_stacked(ctx, w, {&spec.to_q, &spec.to_k, &spec.to_v});
    a.to_out = Linear::load(ctx, w, spec.to_out);
    return a;
  }

  Act forward(Context& ctx, ActivationPool& pool, const Act& x) const {
    const int64_t C = channels, N = x.h * x.w;
    const Act n = group_norm.forward(ctx, pool, x, false);
    Act q3(pool, x.n, N, 1, 3 * C);
    qkv.forward(ctx, n.data(), q3.data(), x.rows());
    Act attn(pool, x.n, N, 1, C);
    {
      OpScope scope(ctx, "attention");
      ops::attention(ctx,
                     {.batch = x.n,
                      .heads = 1,
                      .seq_q = N,
                      .seq_kv = N,
                      .head_dim = C,
                      .q_stride = 3 * C,
                      .k_stride = 3 * C,
                      .v_stride = 3 * C,
                      .out_stride = C,
                      .scale = 1.0f / std::sqrt(static_cast<float>(C))},
                     q3.data(), q3.data() + C, q3.data() + 2 * C, attn.data());
    }
    Act out(pool, x.n, x.h, x.w, C);
    to_out.forward(ctx, attn.data(), out.data(), x.rows(), /*residual=*/x.data());
    return out;
  }
};

}  // namespace

struct VaeDecoder::Layers {
  VaeDescription description;
  std::optional<Conv2d> post_quant_conv;
  Conv2d conv_in, conv_out;
  std::vector<ResnetBlock> resnets;
  std::vector<Attention> attentions;
  std::vector<Conv2d> samplers;
  GroupNorm norm_out;
};

VaeDecoder::VaeDecoder() : layers_(std::make_unique<Layers>()) {}
VaeDecoder::VaeDecoder(VaeDecoder&&) noexcept = default;
VaeDecoder& VaeDecoder::operator=(VaeDecoder&&) noexcept = default;
VaeDecoder::~VaeDecoder() = default;

const VaeConfig& VaeDecoder::config() const {
  return layers_->description.config;
}

VaeDecoder VaeDecoder::load(Context& ctx, const VaeDescription& description, const WeightSource& w) {
  if (!description.decoder) throw Error(ErrorKind::kInternal, "vae: the description has no decoder");
  VaeDecoder vae;
  auto& m = *vae.layers_;
  m.description = description;
  const VaeCoderSpec& d = *m.description.decoder;
  if (d.quant_conv) m.post_quant_conv = Conv2d::load(ctx, w, *d.quant_conv);
  m.conv_in = Conv2d::load(ctx, w, d.conv_in);
  for (const auto& spec : d.resnets) m.resnets.push_back(ResnetBlock::load(ctx, w, spec));
  for (const auto& spec : d.attentions) m.attentions.push_back(Attention::load(ctx, w, spec));
  for (const auto& spec : d.samplers) m.samplers.push_back(Conv2d::load(ctx, w, spec));
  m.norm_out = GroupNorm::load(ctx, w, d.norm_out);
  m.conv_out = Conv2d::load(ctx, w, d.conv_out);
  return vae;
}

Act VaeDecoder::decode(Context& ctx, ActivationPool& pool, const Act& z) const {
  const auto& m = *layers_;
  if (!m.post_quant_conv) throw Error(ErrorKind::kUnsupported, "vae: the CUDA decoder needs post_quant_conv");
  Act x = m.conv_in.forward(ctx, pool, m.post_quant_conv->forward(ctx, pool, z));
  for (const VaeStep& step : m.description.decoder->steps) {
    switch (step.kind) {
      case VaeStep::Kind::kResnet:
        x = m.resnets[step.index].forward(ctx, pool, x);
        break;
      case VaeStep::Kind::kAttention:
        x = m.attentions[step.index].forward(ctx, pool, x);
        break;
      case VaeStep::Kind::kUpsample: {
        Act up(pool, x.n, x.h * 2, x.w * 2, x.c);
        ops::launch_upsample_nearest2x(x.data(), up.data(), x.n, x.h, x.w, x.c, ctx.stream());
        x = m.samplers[step.index].forward(ctx, pool, up);
        break;
      }
      case VaeStep::Kind::kDownsample:
        x = m.samplers[step.index].forward(ctx, pool, x);
        break;
    }
  }
  x = m.norm_out.forward(ctx, pool, x, true);
  return m.conv_out.forward(ctx, pool, x);
}

}  // namespace sdrt::models::cuda
