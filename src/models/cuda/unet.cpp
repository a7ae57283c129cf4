#include "models/cuda/unet.h"

#include <fmt/format.h>

#include <cmath>
#include <cstring>
#include <optional>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/check.h"
#include "backends/cuda/elementwise.cuh"
#include "io/safetensors.h"

namespace sdrt::models::cuda {
namespace {

// Linears that all read the same input, run as one product: their weights (and biases) stacked along `out`.
// add() registers a layer and returns where its columns start in the product's output; build() uploads them.
// Used for every cross-attention's k/v projection (they all read the context, which is fixed for a
// generation: one product per prompt, UNet::project_context, outside the per-step graph) and for every
// ResNet's time-embedding projection (one product per step instead of one small launch per ResNet).
struct LinearStack {
  std::vector<const LinearSpec*> parts;
  int64_t width = 0;
  int64_t add(const LinearSpec& spec) {
    parts.push_back(&spec);
    width += spec.out;
    return width - spec.out;
  }
  Linear build(Context& ctx, const WeightSource& w) const { return Linear::load_stacked(ctx, w, parts); }
};

// ResnetSpec: x + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(emb)))))
struct ResnetBlock {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2;
  int64_t temb_offset = 0;  // where time_emb_proj's output sits in the stacked time projections
  std::optional<Conv2d> conv_shortcut;

  static ResnetBlock load(Context& ctx, const WeightSource& w, const ResnetSpec& spec,
                          LinearStack& time_projections) {
    if (spec.output_scale_factor != 1.0)
      throw Error(ErrorKind::kUnsupported, fmt::format("{}: output_scale_factor {} is not supported on CUDA",
                                                       spec.norm1.name, spec.output_scale_factor));
    if (!spec.time_emb_proj)
      throw Error(ErrorKind::kInternal,
                  fmt::format("{}: a UNet resnet needs a time projection", spec.norm1.name));
    ResnetBlock r;
    r.norm1 = GroupNorm::load(ctx, w, spec.norm1);
    r.conv1 = Conv2d::load(ctx, w, spec.conv1);
    w.linear(*spec.time_emb_proj);  // checked now, uploaded with the stack
    r.temb_offset = time_projections.add(*spec.time_emb_proj);
    r.norm2 = GroupNorm::load(ctx, w, spec.norm2);
    r.conv2 = Conv2d::load(ctx, w, spec.conv2);
    if (spec.conv_shortcut) r.conv_shortcut = Conv2d::load(ctx, w, *spec.conv_shortcut);
    return r;
  }

  // x [B, H, W, in], time_projections [B, Σ out] (every ResNet's time_emb_proj(silu(emb))) -> [B, H, W, out]
  Act forward(Context& ctx, ActivationPool& pool, const Act& x, const Act& time_projections) const {
    Act h = conv1.forward(ctx, pool, norm1.forward(ctx, pool, x, /*silu=*/true));  // [B, H, W, out]
    h = norm2.forward(ctx, pool, h, /*silu=*/true, /*pre_bias=*/time_projections.data() + temb_offset,
                      /*pre_bias_stride=*/time_projections.c);
    if (!conv_shortcut) return conv2.forward(ctx, pool, h, /*residual=*/x.data());
    Act shortcut = conv_shortcut->forward(ctx, pool, x);
    return conv2.forward(ctx, pool, h, shortcut.data());
  }
};

// AttentionSpec. Self-attention stacks q/k/v into one projection; cross-attention projects q from x and k/v
// (stacked across all cross-attentions) from the context.
struct Attention {
  Linear qkv;  // self: [3·dim, dim]; cross: q only [dim, dim]
  Linear to_out;
  int64_t heads = 8, dim = 320;
  bool cross = false;
  int64_t kv_offset = 0;  // cross: where this block's [k | v] columns start in the projected context

  static Attention load(Context& ctx, const WeightSource& w, const AttentionSpec& spec, LinearStack& kv) {
    Attention a;
    a.heads = spec.heads;
    a.dim = spec.dim;
    a.cross = spec.cross;
    if (spec.cross) {
      a.qkv = Linear::load(ctx, w, spec.to_q);
      w.linear(spec.to_k);  // checked now, uploaded with the stack
      w.linear(spec.to_v);
      a.kv_offset = kv.add(spec.to_k);
      kv.add(spec.to_v);
    } else {
      a.qkv = Linear::load_stacked(ctx, w, {&spec.to_q, &spec.to_k, &spec.to_v});
    }
    a.to_out = Linear::load(ctx, w, spec.to_out);
    return a;
  }

  // x [B, N, dim] normalised; h [B, N, dim] the residual stream, updated: h += to_out(attention(x, context));
  // context_kv [B, S, W]: every cross-attention's k and v projections of the context (see LinearStack).
  void forward_add(Context& ctx, ActivationPool& pool, const Act& x, const Act& context_kv, Act& h) const {
    const int64_t B = x.n, N = x.h;
    const int64_t head_dim = dim / heads;
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    Act attn(pool, B, N, 1, dim);
    if (!cross) {
      Act q3(pool, B, N, 1, 3 * dim);  // [B, N, q | k | v]
      qkv.forward(ctx, x.data(), q3.data(), B * N);
      OpScope scope(ctx, "attention");
      ops::attention(ctx,
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
    } else {
      const int64_t S = context_kv.h, W = context_kv.c;
      Act q(pool, B, N, 1, dim);
      qkv.forward(ctx, x.data(), q.data(), B * N);
      const __half* k = context_kv.data() + kv_offset;
      OpScope scope(ctx, "attention");
      ops::attention(ctx,
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
    to_out.forward(ctx, attn.data(), h.data(), B * N, /*residual=*/h.data());
  }
};

// TransformerBlockSpec: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm + residual.
struct TransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  Linear ff_proj, ff_out;

  static TransformerBlock load(Context& ctx, const WeightSource& w, const TransformerBlockSpec& spec,
                               LinearStack& kv) {
    TransformerBlock t;
    t.norm1 = LayerNorm::load(ctx, w, spec.norm1);
    t.attn1 = Attention::load(ctx, w, spec.attn1, kv);
    t.norm2 = LayerNorm::load(ctx, w, spec.norm2);
    t.attn2 = Attention::load(ctx, w, spec.attn2, kv);
    t.norm3 = LayerNorm::load(ctx, w, spec.norm3);
    t.ff_proj = Linear::load(ctx, w, spec.ff_proj);
    t.ff_out = Linear::load(ctx, w, spec.ff_out);
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
      ops::launch_geglu(proj.data(), gated.data(), rows, inner, ctx.stream());
    }
    ff_out.forward(ctx, gated.data(), h.data(), rows, /*residual=*/h.data());
  }
};

// Transformer2DSpec: GroupNorm, proj_in, transformer blocks, proj_out, residual. NHWC is already the token
// layout, so proj_in / proj_out (1×1 conv or linear) are plain products on [B·H·W, C].
struct Transformer2D {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<TransformerBlock> blocks;

  static Transformer2D load(Context& ctx, const WeightSource& w, const Transformer2DSpec& spec,
                            LinearStack& kv) {
    Transformer2D t;
    t.norm = GroupNorm::load(ctx, w, spec.norm);
    t.proj_in = Linear::load(ctx, w, spec.proj_in);
    for (const auto& block : spec.blocks) t.blocks.push_back(TransformerBlock::load(ctx, w, block, kv));
    t.proj_out = Linear::load(ctx, w, spec.proj_out);
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

struct UNet::Layers {
  UNetDescription description;
  Linear time_linear_1, time_linear_2;
  std::optional<Linear> add_linear_1, add_linear_2;  // SDXL's text_time embedding
  Conv2d conv_in, conv_out;
  GroupNorm conv_norm_out;
  std::vector<ResnetBlock> resnets;
  std::vector<Transformer2D> transformers;
  std::vector<Conv2d> downsamplers, upsamplers;
  Linear context_kv;        // every cross-attention's [k | v] projection, stacked
  Linear time_projections;  // every ResNet's time_emb_proj, stacked
};

UNet::UNet() : layers_(std::make_unique<Layers>()) {}
UNet::UNet(UNet&&) noexcept = default;
UNet& UNet::operator=(UNet&&) noexcept = default;
UNet::~UNet() = default;

const UNetConfig& UNet::config() const {
  return layers_->description.config;
}

UNet UNet::load(Context& ctx, const UNetDescription& description, const WeightSource& w) {
  UNet unet;
  auto& m = *unet.layers_;
  m.description = description;
  const auto& d = m.description;
  LinearStack kv, time_projections;
  m.time_linear_1 = Linear::load(ctx, w, d.time_linear_1);
  m.time_linear_2 = Linear::load(ctx, w, d.time_linear_2);
  if (d.add_linear_1) {
    m.add_linear_1 = Linear::load(ctx, w, *d.add_linear_1);
    m.add_linear_2 = Linear::load(ctx, w, *d.add_linear_2);
  }
  m.conv_in = Conv2d::load(ctx, w, d.conv_in);
  for (const auto& spec : d.resnets) m.resnets.push_back(ResnetBlock::load(ctx, w, spec, time_projections));
  for (const auto& spec : d.transformers) m.transformers.push_back(Transformer2D::load(ctx, w, spec, kv));
  for (const auto& spec : d.downsamplers) m.downsamplers.push_back(Conv2d::load(ctx, w, spec));
  for (const auto& spec : d.upsamplers) m.upsamplers.push_back(Conv2d::load(ctx, w, spec));
  m.conv_norm_out = GroupNorm::load(ctx, w, d.conv_norm_out);
  m.conv_out = Conv2d::load(ctx, w, d.conv_out);
  m.context_kv = kv.build(ctx, w);
  m.time_projections = time_projections.build(ctx, w);
  return unet;
}

int64_t UNet::context_kv_width() const {
  return layers_->context_kv.out;
}

void UNet::project_context(Context& ctx, const Act& context, Act& context_kv) const {
  if (context_kv.c != context_kv_width() || context_kv.rows() != context.rows())
    throw Error(ErrorKind::kInternal, "unet: projected context has the wrong shape");
  if (context_kv_width() > 0)
    layers_->context_kv.forward(ctx, context.data(), context_kv.data(), context.rows());
}

Act UNet::forward(Context& ctx, ActivationPool& pool, const Act& sample, const float* timestep,
                  const Act& context_kv, const Act* add_embeds) const {
  const auto& m = *layers_;
  const auto& c = m.description.config;
  const int64_t B = sample.n;
  cudaStream_t stream = ctx.stream();

  // Time embedding: sinusoidal features -> linear -> SiLU -> linear -> SiLU (every resnet's own SiLU).
  const int64_t c0 = c.block_out_channels.front();
  Act features(pool, B, 1, 1, c0);
  ops::launch_timestep_embedding(timestep, features.data(), B, c0, c.flip_sin_to_cos,
                                 static_cast<float>(c.freq_shift), stream);
  Act emb(pool, B, 1, 1, m.description.time_embed_dim);
  m.time_linear_1.forward(ctx, features.data(), emb.data(), B);
  ops::launch_silu(emb.data(), emb.numel(), stream);
  Act emb_silu(pool, B, 1, 1, m.description.time_embed_dim);
  m.time_linear_2.forward(ctx, emb.data(), emb_silu.data(), B);
  if (m.add_linear_1) {  // SDXL: emb += linear_2(silu(linear_1(add_embeds))), the add fused as a residual
    if (!add_embeds || add_embeds->n != B || add_embeds->c != m.add_linear_1->in)
      throw Error(ErrorKind::kInternal, "unet: the text_time embedding needs add_embeds [B, P]");
    Act aug(pool, B, 1, 1, m.description.time_embed_dim);
    m.add_linear_1->forward(ctx, add_embeds->data(), aug.data(), B);
    ops::launch_silu(aug.data(), aug.numel(), stream);
    m.add_linear_2->forward(ctx, aug.data(), emb_silu.data(), B, /*residual=*/emb_silu.data());
  }
  ops::launch_silu(emb_silu.data(), emb_silu.numel(), stream);
  Act time_projections(pool, B, 1, 1, m.time_projections.out);  // [B, Σ resnet out]: every time_emb_proj
  m.time_projections.forward(ctx, emb_silu.data(), time_projections.data(), B);

  Act x = m.conv_in.forward(ctx, pool, sample);  // [B, h, w, C0]
  std::vector<Act> skips;
  skips.reserve(64);
  // A skip is the activation itself (moved, not copied): x then reads it through `current`.
  const Act* current = &x;
  for (const UNetStep& step : m.description.steps) {
    switch (step.kind) {
      case UNetStep::Kind::kResnet:
        x = m.resnets[step.index].forward(ctx, pool, *current, time_projections);
        break;
      case UNetStep::Kind::kTransformer:
        x = m.transformers[step.index].forward(ctx, pool, *current, context_kv);
        break;
      case UNetStep::Kind::kDownsample:
        x = m.downsamplers[step.index].forward(ctx, pool, *current);
        break;
      case UNetStep::Kind::kUpsample: {
        const int64_t H = skips.back().h, W = skips.back().w;
        Act up(pool, current->n, H, W, current->c);
        {
          OpScope scope(ctx, "elementwise");
          ops::launch_upsample_nearest(current->data(), up.data(), current->n, current->h, current->w, H, W,
                                       current->c, stream);
        }
        x = m.upsamplers[step.index].forward(ctx, pool, up);
        break;
      }
      case UNetStep::Kind::kPushSkip:
        if (current == &x) skips.push_back(std::move(x));
        current = &skips.back();
        continue;
      case UNetStep::Kind::kConcatSkip: {
        const Act& skip = skips.back();
        Act cat(pool, current->n, current->h, current->w, current->c + skip.c);
        {
          OpScope scope(ctx, "elementwise");
          ops::launch_concat_channels(current->data(), skip.data(), cat.data(), current->rows(), current->c,
                                      skip.c, stream);
        }
        x = std::move(cat);
        skips.pop_back();
        break;
      }
    }
    current = &x;
  }

  x = m.conv_norm_out.forward(ctx, pool, *current, /*silu=*/true);
  return m.conv_out.forward(ctx, pool, x);
}

UNetGraph::UNetGraph(const UNet& unet, int64_t batch, int64_t height, int64_t width, int64_t context_tokens,
                     bool use_graph)
    : unet_(unet), use_graph_(use_graph) {
  const auto& c = unet.config();
  sample_ = Act(io_pool_, batch, height, width, c.in_channels);
  context_ = Act(io_pool_, batch, context_tokens, 1, c.cross_attention_dim);
  context_kv_ = Act(io_pool_, batch, context_tokens, 1, unet.context_kv_width());
  output_ = Act(io_pool_, batch, height, width, c.out_channels);
  if (c.text_time_embedding)
    add_embeds_ = Act(io_pool_, batch, 1, 1, c.projection_class_embeddings_input_dim);
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
    Act out = unet_.forward(ctx, pool_, sample_, timestep(), context_kv_,
                            unet_.config().text_time_embedding ? &add_embeds_ : nullptr);
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

}  // namespace sdrt::models::cuda
