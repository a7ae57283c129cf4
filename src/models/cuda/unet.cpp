#include "models/cuda/unet.h"

#include <fmt/format.h>

#include <cstring>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/check.h"
#include "backends/cuda/elementwise.cuh"
#include "io/safetensors.h"

namespace sdrt::models::gpu {
namespace {

// Linears that all read the same input, run as one product: their weights (and biases) stacked along `out`.
// add() registers a layer and returns where its columns start in the product's output; build() uploads them.
// Used for every cross-attention's k/v projection (they all read the context, which is fixed for a
// generation: one product per prompt, CudaUNet::project_context, outside the per-step graph) and for every
// ResNet's time-embedding projection (one product per step instead of one small launch per ResNet).
struct LinearStack {
  struct Part {
    std::string prefix;
    int64_t rows;
  };
  std::vector<Part> parts;
  int64_t in = 0, width = 0;
  bool bias = false;
  int64_t add(const WeightSource& w, const std::string& prefix, int64_t in_, int64_t rows, bool has_bias) {
    if (!parts.empty() && (in_ != in || has_bias != bias))
      throw Error(ErrorKind::kInternal, "unet: stacked linears must share input width and bias");
    in = in_;
    bias = has_bias;
    w.check(prefix + ".weight", {rows, in});
    if (bias) w.check(prefix + ".bias", {rows});
    parts.push_back({prefix, rows});
    width += rows;
    return width - rows;
  }
  DLinear build(Context& ctx, const WeightSource& w) const {
    DLinear l;
    l.in = in;
    l.out = width;
    if (width == 0) return l;
    l.weight = DeviceBuffer(static_cast<size_t>(width * in) * sizeof(__half));
    if (bias) l.bias = DeviceBuffer(static_cast<size_t>(width) * sizeof(__half));
    int64_t row = 0;
    for (const auto& part : parts) {
      weight_f16_into(ctx, w, part.prefix + ".weight", {part.rows, in}, l.weight.as<__half>() + row * in);
      if (bias) weight_f16_into(ctx, w, part.prefix + ".bias", {part.rows}, l.bias.as<__half>() + row);
      row += part.rows;
    }
    return l;
  }
};

// ResnetBlock2D: x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(emb)))))
struct ResnetBlock {
  DGroupNorm norm1, norm2;
  DConv2d conv1, conv2;
  int64_t temb_offset = 0;  // where time_emb_proj's output sits in the stacked time projections
  bool has_shortcut = false;
  DConv2d conv_shortcut;

  static ResnetBlock load(Context& ctx, const WeightSource& w, const std::string& p, int64_t in, int64_t out,
                          int64_t temb, int64_t groups, float eps, double output_scale_factor,
                          LinearStack& time_projections) {
    if (output_scale_factor != 1.0)
      throw Error(ErrorKind::kUnsupported,
                  fmt::format("{}: output_scale_factor {} is not supported on CUDA", p, output_scale_factor));
    ResnetBlock r;
    r.norm1 = DGroupNorm::load(ctx, w, p + ".norm1", groups, in, eps);
    r.conv1 = DConv2d::load(ctx, w, p + ".conv1", in, out, 3);
    r.temb_offset = time_projections.add(w, p + ".time_emb_proj", temb, out, true);
    r.norm2 = DGroupNorm::load(ctx, w, p + ".norm2", groups, out, eps);
    r.conv2 = DConv2d::load(ctx, w, p + ".conv2", out, out, 3);
    r.has_shortcut = in != out;
    if (r.has_shortcut) r.conv_shortcut = DConv2d::load(ctx, w, p + ".conv_shortcut", in, out, 1, 1, 0);
    return r;
  }

  // x [B, H, W, in], time_projections [B, Σ out] (every ResNet's time_emb_proj(silu(emb))) -> [B, H, W, out]
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, const Act& time_projections) const {
    Act h = conv1.forward(ctx, pool, norm1.forward(ctx, pool, x, /*silu=*/true));  // [B, H, W, out]
    h = norm2.forward(ctx, pool, h, /*silu=*/true, /*pre_bias=*/time_projections.data() + temb_offset,
                      /*pre_bias_stride=*/time_projections.c);
    if (!has_shortcut) return conv2.forward(ctx, pool, h, /*residual=*/x.data());
    Act shortcut = conv_shortcut.forward(ctx, pool, x);
    return conv2.forward(ctx, pool, h, shortcut.data());
  }
};

// diffusers' Attention inside BasicTransformerBlock. Self-attention stacks q/k/v into one projection;
// cross-attention projects q from x and k/v (stacked) from the context.
struct Attention {
  DLinear qkv;  // self: [3·dim, dim]; cross: q only [dim, dim]
  DLinear to_out;
  int64_t heads = 8, dim = 320;
  bool cross = false;
  int64_t kv_offset = 0;  // cross: where this block's [k | v] columns start in the projected context

  static Attention load(Context& ctx, const WeightSource& w, const std::string& p, int64_t dim,
                        int64_t context_dim, int64_t heads, bool cross, LinearStack& kv) {
    Attention a;
    a.heads = heads;
    a.dim = dim;
    a.cross = cross;
    if (cross) {
      a.qkv = DLinear::load(ctx, w, p + ".to_q", dim, dim, false);
      a.kv_offset = kv.add(w, p + ".to_k", context_dim, dim, false);
      kv.add(w, p + ".to_v", context_dim, dim, false);
    } else {
      a.qkv = DLinear::load_stacked(ctx, w, {p + ".to_q", p + ".to_k", p + ".to_v"}, dim, dim, false);
    }
    a.to_out = DLinear::load(ctx, w, p + ".to_out.0", dim, dim, true);
    return a;
  }

  // x [B, N, dim] normalised; h [B, N, dim] the residual stream, updated: h += to_out(attention(x, context));
  // context_kv [B, S, W]: every cross-attention's k and v projections of the context (see
  // LinearStack).
  void forward_add(Context& ctx, ActivationPool& pool, const Act& x, const Act& context_kv, Act& h) const {
    const int64_t B = x.n, N = x.h;
    const int64_t head_dim = dim / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    Act attn(pool, B, N, 1, dim);
    if (!cross) {
      Act q3(pool, B, N, 1, 3 * dim);  // [B, N, q | k | v]
      qkv.forward(ctx, x.data(), q3.data(), B * N);
      {
        OpScope scope(ctx, "attention");
        cuda::attention(ctx,
                        {.batch = B,
                         .heads = heads,
                         .seq_q = N,
                         .seq_kv = N,
                         .head_dim = head_dim,
                         .q_stride = 3 * dim,
                         .k_stride = 3 * dim,
                         .v_stride = 3 * dim,
                         .out_stride = dim,
                         .scale = scale},
                        q3.data(), q3.data() + dim, q3.data() + 2 * dim, attn.data());
      }
    } else {
      const int64_t S = context_kv.h, W = context_kv.c;
      Act q(pool, B, N, 1, dim);
      qkv.forward(ctx, x.data(), q.data(), B * N);
      const __half* k = context_kv.data() + kv_offset;
      {
        OpScope scope(ctx, "attention");
        cuda::attention(ctx,
                        {.batch = B,
                         .heads = heads,
                         .seq_q = N,
                         .seq_kv = S,
                         .head_dim = head_dim,
                         .q_stride = dim,
                         .k_stride = W,
                         .v_stride = W,
                         .out_stride = dim,
                         .scale = scale},
                        q.data(), k, k + dim, attn.data());
      }
    }
    to_out.forward(ctx, attn.data(), h.data(), B * N, /*residual=*/h.data());
  }
};

// BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm + residual.
struct TransformerBlock {
  DLayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  DLinear ff_proj, ff_out;

  static TransformerBlock load(Context& ctx, const WeightSource& w, const std::string& p, int64_t dim,
                               int64_t context_dim, int64_t heads, LinearStack& kv) {
    TransformerBlock t;
    const int64_t inner = dim * 4;
    t.norm1 = DLayerNorm::load(ctx, w, p + ".norm1", dim, 1e-5f);
    t.attn1 = Attention::load(ctx, w, p + ".attn1", dim, dim, heads, false, kv);
    t.norm2 = DLayerNorm::load(ctx, w, p + ".norm2", dim, 1e-5f);
    t.attn2 = Attention::load(ctx, w, p + ".attn2", dim, context_dim, heads, true, kv);
    t.norm3 = DLayerNorm::load(ctx, w, p + ".norm3", dim, 1e-5f);
    t.ff_proj = DLinear::load(ctx, w, p + ".ff.net.0.proj", dim, inner * 2, true);
    t.ff_out = DLinear::load(ctx, w, p + ".ff.net.2", inner, dim, true);
    return t;
  }

  // h [B, N, dim] updated in place.
  void forward(Context& ctx, ActivationPool& pool, Act& h, const Act& context_kv) const {
    const int64_t rows = h.rows();
    attn1.forward_add(ctx, pool, norm1.forward(ctx, pool, h), h, h);
    attn2.forward_add(ctx, pool, norm2.forward(ctx, pool, h), context_kv, h);
    const Act n3 = norm3.forward(ctx, pool, h);
    const int64_t inner = ff_out.in;
    Act proj(pool, h.n, h.h, 1, 2 * inner);  // [B·N, value | gate]
    ff_proj.forward(ctx, n3.data(), proj.data(), rows);
    Act gated(pool, h.n, h.h, 1, inner);
    {
      OpScope scope(ctx, "elementwise");
      cuda::launch_geglu(proj.data(), gated.data(), rows, inner, ctx.stream());
    }
    ff_out.forward(ctx, gated.data(), h.data(), rows, /*residual=*/h.data());
  }
};

// Transformer2DModel: GroupNorm, proj_in, transformer blocks, proj_out, residual. NHWC is already the token
// layout, so proj_in/proj_out (1×1 conv or linear) are plain products on [B·H·W, C].
struct Transformer2D {
  DGroupNorm norm;
  DLinear proj_in, proj_out;
  std::vector<TransformerBlock> blocks;

  static Transformer2D load(Context& ctx, const WeightSource& w, const std::string& p, int64_t channels,
                            int64_t heads, int64_t layers, int64_t context_dim, int64_t groups,
                            bool linear_projection, LinearStack& kv) {
    Transformer2D t;
    t.norm = DGroupNorm::load(ctx, w, p + ".norm", groups, channels, 1e-6f);
    const auto projection = [&](const std::string& name) {
      return linear_projection ? DLinear::load(ctx, w, name, channels, channels, true)
                               : DLinear::load_conv1x1(ctx, w, name, channels, channels);
    };
    t.proj_in = projection(p + ".proj_in");
    for (int64_t i = 0; i < layers; ++i)
      t.blocks.push_back(TransformerBlock::load(ctx, w, fmt::format("{}.transformer_blocks.{}", p, i),
                                                channels, context_dim, heads, kv));
    t.proj_out = projection(p + ".proj_out");
    return t;
  }

  // x [B, H, W, C] -> [B, H, W, C]
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, const Act& context_kv) const {
    const Act n = norm.forward(ctx, pool, x, /*silu=*/false);
    Act h(pool, x.n, x.h * x.w, 1, x.c);  // tokens [B, H·W, C]
    proj_in.forward(ctx, n.data(), h.data(), x.rows());
    for (const auto& block : blocks) block.forward(ctx, pool, h, context_kv);
    Act out(pool, x.n, x.h, x.w, x.c);
    proj_out.forward(ctx, h.data(), out.data(), x.rows(), /*residual=*/x.data());
    return out;
  }
};

}  // namespace

struct CudaUNet::Blocks {
  struct Stage {
    std::vector<ResnetBlock> resnets;
    std::vector<Transformer2D> attentions;
    bool has_sampler = false;
    DConv2d sampler;
  };
  DLinear time_linear_1, time_linear_2;
  DConv2d conv_in, conv_out;
  DGroupNorm conv_norm_out;
  std::vector<Stage> down, up;
  ResnetBlock mid_resnet0;
  std::vector<Transformer2D> mid_attentions;
  std::vector<ResnetBlock> mid_resnets;
  DLinear context_kv;        // every cross-attention's [k | v] projection, stacked
  DLinear time_projections;  // every ResNet's time_emb_proj, stacked
};

CudaUNet::CudaUNet() : blocks_(std::make_unique<Blocks>()) {}
CudaUNet::CudaUNet(CudaUNet&&) noexcept = default;
CudaUNet& CudaUNet::operator=(CudaUNet&&) noexcept = default;
CudaUNet::~CudaUNet() = default;

CudaUNet CudaUNet::load(Context& ctx, const UNetConfig& config, const io::WeightStore& store,
                        const std::string& config_source) {
  CudaUNet unet;
  unet.config_ = config;
  const auto& c = unet.config_;
  const WeightSource w{store, config_source};
  auto& m = *unet.blocks_;
  LinearStack kv, time_projections;

  const int64_t c0 = c.block_out_channels.front(), temb = c0 * 4, groups = c.norm_num_groups;
  const size_t n = c.block_out_channels.size();
  m.time_linear_1 = DLinear::load(ctx, w, "time_embedding.linear_1", c0, temb, true);
  m.time_linear_2 = DLinear::load(ctx, w, "time_embedding.linear_2", temb, temb, true);
  m.conv_in = DConv2d::load(ctx, w, "conv_in", c.in_channels, c0, 3);

  int64_t out_ch = c0;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_ch = out_ch;
    out_ch = c.block_out_channels[i];
    const bool attention = c.down_block_types[i] == "CrossAttnDownBlock2D";
    Blocks::Stage s;
    for (int64_t j = 0; j < c.layers_per_block[i]; ++j) {
      const std::string p = fmt::format("down_blocks.{}", i);
      s.resnets.push_back(ResnetBlock::load(ctx, w, fmt::format("{}.resnets.{}", p, j),
                                            j == 0 ? in_ch : out_ch, out_ch, temb, groups, c.norm_eps, 1.0,
                                            time_projections));
      if (attention)
        s.attentions.push_back(Transformer2D::load(
            ctx, w, fmt::format("{}.attentions.{}", p, j), out_ch, c.num_attention_heads[i],
            c.transformer_layers_per_block[i], c.cross_attention_dim, groups, c.use_linear_projection, kv));
    }
    s.has_sampler = i + 1 < n;
    if (s.has_sampler)
      s.sampler = DConv2d::load(ctx, w, fmt::format("down_blocks.{}.downsamplers.0.conv", i), out_ch, out_ch,
                                3, 2, c.downsample_padding);
    if (s.has_sampler && c.downsample_padding == 0) {
      s.sampler.pad_top = s.sampler.pad_left = 0;
      s.sampler.pad_bottom = s.sampler.pad_right = 1;
    }
    m.down.push_back(std::move(s));
  }

  const int64_t mid_ch = c.block_out_channels.back();
  m.mid_resnet0 = ResnetBlock::load(ctx, w, "mid_block.resnets.0", mid_ch, mid_ch, temb, groups, c.norm_eps,
                                    c.mid_block_scale_factor, time_projections);
  m.mid_attentions.push_back(Transformer2D::load(
      ctx, w, "mid_block.attentions.0", mid_ch, c.num_attention_heads.back(),
      c.transformer_layers_per_block.back(), c.cross_attention_dim, groups, c.use_linear_projection, kv));
  m.mid_resnets.push_back(ResnetBlock::load(ctx, w, "mid_block.resnets.1", mid_ch, mid_ch, temb, groups,
                                            c.norm_eps, c.mid_block_scale_factor, time_projections));

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
      s.resnets.push_back(ResnetBlock::load(ctx, w, fmt::format("{}.resnets.{}", p, j), resnet_in, out_ch,
                                            temb, groups, c.norm_eps, 1.0, time_projections));
      if (attention)
        s.attentions.push_back(
            Transformer2D::load(ctx, w, fmt::format("{}.attentions.{}", p, j), out_ch,
                                c.num_attention_heads[down_index], c.transformer_layers_per_block[down_index],
                                c.cross_attention_dim, groups, c.use_linear_projection, kv));
    }
    s.has_sampler = i + 1 < n;
    if (s.has_sampler)
      s.sampler = DConv2d::load(ctx, w, fmt::format("up_blocks.{}.upsamplers.0.conv", i), out_ch, out_ch, 3);
    m.up.push_back(std::move(s));
  }

  m.conv_norm_out = DGroupNorm::load(ctx, w, "conv_norm_out", groups, c0, c.norm_eps);
  m.conv_out = DConv2d::load(ctx, w, "conv_out", c0, c.out_channels, 3);
  m.context_kv = kv.build(ctx, w);
  m.time_projections = time_projections.build(ctx, w);
  return unet;
}

int64_t CudaUNet::context_kv_width() const {
  return blocks_->context_kv.out;
}

void CudaUNet::project_context(Context& ctx, const Act& context, Act& context_kv) const {
  if (context_kv.c != context_kv_width() || context_kv.rows() != context.rows())
    throw Error(ErrorKind::kInternal, "unet: projected context has the wrong shape");
  if (context_kv_width() > 0)
    blocks_->context_kv.forward(ctx, context.data(), context_kv.data(), context.rows());
}

Act CudaUNet::forward(Context& ctx, ActivationPool& pool, const Act& sample, const float* timestep,
                      const Act& context_kv) const {
  const auto& c = config_;
  const auto& m = *blocks_;
  const int64_t B = sample.n;
  cudaStream_t stream = ctx.stream();

  // Time embedding: sinusoidal features -> linear -> SiLU -> linear -> SiLU (every resnet's own SiLU).
  const int64_t c0 = c.block_out_channels.front();
  Act features(pool, B, 1, 1, c0);
  cuda::launch_timestep_embedding(timestep, features.data(), B, c0, c.flip_sin_to_cos,
                                  static_cast<float>(c.freq_shift), stream);
  Act emb(pool, B, 1, 1, 4 * c0);
  m.time_linear_1.forward(ctx, features.data(), emb.data(), B);
  cuda::launch_silu(emb.data(), emb.numel(), stream);
  Act emb_silu(pool, B, 1, 1, 4 * c0);
  m.time_linear_2.forward(ctx, emb.data(), emb_silu.data(), B);
  cuda::launch_silu(emb_silu.data(), emb_silu.numel(), stream);
  Act time_projections(pool, B, 1, 1, m.time_projections.out);  // [B, Σ resnet out]: every time_emb_proj
  m.time_projections.forward(ctx, emb_silu.data(), time_projections.data(), B);

  // Every down-path output is kept as a skip (the UNet reads them back in reverse on the way up).
  std::vector<Act> skips;
  skips.reserve(64);
  skips.push_back(m.conv_in.forward(ctx, pool, sample));  // [B, h, w, C0]
  for (const auto& stage : m.down) {
    for (size_t j = 0; j < stage.resnets.size(); ++j) {
      Act y = stage.resnets[j].forward(ctx, pool, skips.back(), time_projections);
      if (!stage.attentions.empty()) y = stage.attentions[j].forward(ctx, pool, y, context_kv);
      skips.push_back(std::move(y));
    }
    if (stage.has_sampler) skips.push_back(stage.sampler.forward(ctx, pool, skips.back()));
  }

  Act x = m.mid_resnet0.forward(ctx, pool, skips.back(), time_projections);
  for (size_t j = 0; j < m.mid_attentions.size(); ++j) {
    x = m.mid_attentions[j].forward(ctx, pool, x, context_kv);
    x = m.mid_resnets[j].forward(ctx, pool, x, time_projections);
  }

  for (const auto& stage : m.up) {
    for (size_t j = 0; j < stage.resnets.size(); ++j) {
      const Act& skip = skips.back();
      Act cat(pool, x.n, x.h, x.w, x.c + skip.c);
      {
        OpScope scope(ctx, "elementwise");
        cuda::launch_concat_channels(x.data(), skip.data(), cat.data(), x.rows(), x.c, skip.c, stream);
      }
      skips.pop_back();
      x = stage.resnets[j].forward(ctx, pool, cat, time_projections);
      if (!stage.attentions.empty()) x = stage.attentions[j].forward(ctx, pool, x, context_kv);
    }
    if (stage.has_sampler) {
      const int64_t H = skips.back().h, W = skips.back().w;
      Act up(pool, x.n, H, W, x.c);
      {
        OpScope scope(ctx, "elementwise");
        cuda::launch_upsample_nearest(x.data(), up.data(), x.n, x.h, x.w, H, W, x.c, stream);
      }
      x = stage.sampler.forward(ctx, pool, up);
    }
  }

  x = m.conv_norm_out.forward(ctx, pool, x, /*silu=*/true);
  return m.conv_out.forward(ctx, pool, x);
}

UNetGraph::UNetGraph(const CudaUNet& unet, int64_t batch, int64_t height, int64_t width,
                     int64_t context_tokens, bool use_graph)
    : unet_(unet), use_graph_(use_graph) {
  const auto& c = unet.config();
  sample_ = Act(io_pool_, batch, height, width, c.in_channels);
  context_ = Act(io_pool_, batch, context_tokens, 1, c.cross_attention_dim);
  context_kv_ = Act(io_pool_, batch, context_tokens, 1, unet.context_kv_width());
  output_ = Act(io_pool_, batch, height, width, c.out_channels);
  timestep_ = DeviceBuffer(sizeof(float));
}

UNetGraph::~UNetGraph() {
  if (exec_) cudaGraphExecDestroy(exec_);
}

void UNetGraph::run(Context& ctx) {
  cudaStream_t stream = ctx.stream();
  if (context_changed_) {  // once per prompt, before (and outside) the step graph
    unet_.project_context(ctx, context_, context_kv_);
    context_changed_ = false;
  }
  const auto eager = [&] {
    Act out = unet_.forward(ctx, pool_, sample_, timestep(), context_kv_);
    check(cudaMemcpyAsync(output_.data(), out.data(), out.numel() * sizeof(__half), cudaMemcpyDeviceToDevice,
                          stream),
          "unet output copy");
  };
  if (!use_graph_ || runs_ == 0) {
    eager();  // plans every shape and fills the pool
    ++runs_;
    return;
  }
  if (!exec_) {
    cudaGraph_t graph = nullptr;
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    try {
      eager();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    cudaError_t status = cudaGraphInstantiate(&exec_, graph, 0);
    cudaGraphDestroy(graph);
    check(status, "cudaGraphInstantiate");
  }
  check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch");
  ++runs_;
}

}  // namespace sdrt::models::gpu
