#include "models/cuda/vae.h"

#include <fmt/format.h>

#include <cmath>
#include <optional>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/elementwise.cuh"

namespace sdrt::models::gpu {
namespace {

// ResnetBlock2D without time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x))))))
struct Resnet {
  DGroupNorm norm1, norm2;
  DConv2d conv1, conv2;
  std::optional<DConv2d> conv_shortcut;

  static Resnet load(Context& ctx, const WeightSource& w, const std::string& p, int64_t in, int64_t out,
                     int64_t groups) {
    Resnet r;
    r.norm1 = DGroupNorm::load(ctx, w, p + ".norm1", groups, in, 1e-6f);
    r.conv1 = DConv2d::load(ctx, w, p + ".conv1", in, out, 3);
    r.norm2 = DGroupNorm::load(ctx, w, p + ".norm2", groups, out, 1e-6f);
    r.conv2 = DConv2d::load(ctx, w, p + ".conv2", out, out, 3);
    if (in != out) r.conv_shortcut = DConv2d::load(ctx, w, p + ".conv_shortcut", in, out, 1, 1, 0);
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

// One head over all channels, residual connection (diffusers Attention with residual_connection=True).
struct Attention {
  DGroupNorm group_norm;
  DLinear qkv, to_out;
  int64_t channels = 0;

  static Attention load(Context& ctx, const WeightSource& w, const std::string& p, int64_t channels,
                        int64_t groups) {
    Attention a;
    a.channels = channels;
    a.group_norm = DGroupNorm::load(ctx, w, p + ".group_norm", groups, channels, 1e-6f);
    a.qkv = DLinear::load_stacked(ctx, w, {p + ".to_q", p + ".to_k", p + ".to_v"}, channels, channels, true);
    a.to_out = DLinear::load(ctx, w, p + ".to_out.0", channels, channels, true);
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
      cuda::attention(ctx,
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

struct CudaVaeDecoder::Blocks {
  struct Block {
    std::vector<Resnet> resnets;
    std::optional<DConv2d> upsample;
  };
  std::optional<DConv2d> post_quant_conv;
  DConv2d conv_in, conv_out;
  Resnet mid0, mid1;
  std::optional<Attention> mid_attention;
  std::vector<Block> blocks;
  DGroupNorm norm_out;
};

CudaVaeDecoder::CudaVaeDecoder() : blocks_(std::make_unique<Blocks>()) {}
CudaVaeDecoder::CudaVaeDecoder(CudaVaeDecoder&&) noexcept = default;
CudaVaeDecoder& CudaVaeDecoder::operator=(CudaVaeDecoder&&) noexcept = default;
CudaVaeDecoder::~CudaVaeDecoder() = default;

CudaVaeDecoder CudaVaeDecoder::load(Context& ctx, const VaeConfig& config, const io::WeightStore& store,
                                    const std::string& config_source) {
  CudaVaeDecoder vae;
  vae.config_ = config;
  const auto& c = vae.config_;
  auto& m = *vae.blocks_;
  const WeightSource w{store, config_source};
  const int64_t L = c.latent_channels, groups = c.norm_num_groups;
  if (c.use_post_quant_conv) m.post_quant_conv = DConv2d::load(ctx, w, "post_quant_conv", L, L, 1, 1, 0);
  const std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  m.conv_in = DConv2d::load(ctx, w, "decoder.conv_in", L, rev[0], 3);
  m.mid0 = Resnet::load(ctx, w, "decoder.mid_block.resnets.0", rev[0], rev[0], groups);
  if (c.mid_block_add_attention)
    m.mid_attention = Attention::load(ctx, w, "decoder.mid_block.attentions.0", rev[0], groups);
  m.mid1 = Resnet::load(ctx, w, "decoder.mid_block.resnets.1", rev[0], rev[0], groups);
  int64_t ch = rev[0];
  for (size_t i = 0; i < rev.size(); ++i) {
    Blocks::Block b;
    for (int64_t j = 0; j < c.layers_per_block + 1; ++j) {
      b.resnets.push_back(
          Resnet::load(ctx, w, fmt::format("decoder.up_blocks.{}.resnets.{}", i, j), ch, rev[i], groups));
      ch = rev[i];
    }
    if (i + 1 < rev.size())
      b.upsample = DConv2d::load(ctx, w, fmt::format("decoder.up_blocks.{}.upsamplers.0.conv", i), ch, ch, 3);
    m.blocks.push_back(std::move(b));
  }
  m.norm_out = DGroupNorm::load(ctx, w, "decoder.conv_norm_out", groups, ch, 1e-6f);
  m.conv_out = DConv2d::load(ctx, w, "decoder.conv_out", ch, c.out_channels, 3);
  return vae;
}

Act CudaVaeDecoder::decode(Context& ctx, ActivationPool& pool, const Act& z) const {
  const auto& m = *blocks_;
  if (!m.post_quant_conv) throw Error(ErrorKind::kUnsupported, "vae: the CUDA decoder needs post_quant_conv");
  Act x = m.conv_in.forward(ctx, pool, m.post_quant_conv->forward(ctx, pool, z));
  x = m.mid0.forward(ctx, pool, x);
  if (m.mid_attention) x = m.mid_attention->forward(ctx, pool, x);
  x = m.mid1.forward(ctx, pool, x);
  for (const auto& block : m.blocks) {
    for (const auto& r : block.resnets) x = r.forward(ctx, pool, x);
    if (block.upsample) {
      Act up(pool, x.n, x.h * 2, x.w * 2, x.c);
      cuda::launch_upsample_nearest2x(x.data(), up.data(), x.n, x.h, x.w, x.c, ctx.stream());
      x = block.upsample->forward(ctx, pool, up);
    }
  }
  x = m.norm_out.forward(ctx, pool, x, true);
  return m.conv_out.forward(ctx, pool, x);
}

}  // namespace sdrt::models::gpu
