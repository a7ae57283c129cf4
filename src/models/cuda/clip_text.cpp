#include "models/cuda/clip_text.h"

#include <fmt/format.h>

#include <cmath>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/elementwise.cuh"

namespace sdrt::models::cuda {

struct ClipTextModel::Layers {
  struct Layer {
    LayerNorm ln1, ln2;
    Linear qkv, out_proj, fc1, fc2;
  };
  std::vector<Layer> layers;
  LayerNorm final_ln;
};

ClipTextModel::ClipTextModel() : layers_(std::make_unique<Layers>()) {}
ClipTextModel::ClipTextModel(ClipTextModel&&) noexcept = default;
ClipTextModel& ClipTextModel::operator=(ClipTextModel&&) noexcept = default;
ClipTextModel::~ClipTextModel() = default;

ClipTextModel ClipTextModel::load(Context& ctx, const ClipTextDescription& d, const WeightSource& w) {
  ClipTextModel te;
  te.config_ = d.config;
  for (const auto& spec : d.layers)
    te.layers_->layers.push_back({LayerNorm::load(ctx, w, spec.layer_norm1),
                                  LayerNorm::load(ctx, w, spec.layer_norm2),
                                  Linear::load_stacked(ctx, w, {&spec.q_proj, &spec.k_proj, &spec.v_proj}),
                                  Linear::load(ctx, w, spec.out_proj), Linear::load(ctx, w, spec.fc1),
                                  Linear::load(ctx, w, spec.fc2)});
  te.layers_->final_ln = LayerNorm::load(ctx, w, d.final_layer_norm);
  return te;
}

Act ClipTextModel::forward(Context& ctx, ActivationPool& pool, const Act& x_in, Act* penultimate) const {
  const auto& c = config_;
  const int64_t B = x_in.n, S = x_in.h, D = c.hidden_size, I = c.intermediate_size;
  const int64_t H = c.num_attention_heads, head_dim = D / H, rows = B * S;
  Act x(pool, B, S, 1, D);
  check(cudaMemcpyAsync(x.data(), x_in.data(), x.numel() * sizeof(__half), cudaMemcpyDeviceToDevice,
                        ctx.stream()),
        "text encoder input copy");
  const bool quick = c.hidden_act == Activation::kQuickGelu;
  if (!quick && c.hidden_act != Activation::kGelu)
    throw Error(ErrorKind::kUnsupported,
                fmt::format("text encoder: activation {} is not supported on CUDA", c.hidden_act_name));
  for (const auto& l : layers_->layers) {
    if (penultimate && &l == &layers_->layers.back()) {  // hidden_states[-2]: the last layer's input
      *penultimate = Act(pool, B, S, 1, D);
      check(cudaMemcpyAsync(penultimate->data(), x.data(), x.numel() * sizeof(__half),
                            cudaMemcpyDeviceToDevice, ctx.stream()),
            "text encoder hidden state copy");
    }
    // x += out_proj(causal_attention(ln1(x)))
    const Act h = l.ln1.forward(ctx, pool, x);
    Act q3(pool, B, S, 1, 3 * D);
    l.qkv.forward(ctx, h.data(), q3.data(), rows);
    Act attn(pool, B, S, 1, D);
    {
      OpScope scope(ctx, "attention");
      ops::attention(ctx,
                     {.batch = B,
                      .heads = H,
                      .seq_q = S,
                      .seq_kv = S,
                      .head_dim = head_dim,
                      .q_stride = 3 * D,
                      .k_stride = 3 * D,
                      .v_stride = 3 * D,
                      .out_stride = D,
                      .scale = 1.0f / std::sqrt(static_cast<float>(head_dim)),
                      .causal = true},
                     q3.data(), q3.data() + D, q3.data() + 2 * D, attn.data());
    }
    l.out_proj.forward(ctx, attn.data(), x.data(), rows, /*residual=*/x.data());
    // x += fc2(act(fc1(ln2(x))))
    const Act h2 = l.ln2.forward(ctx, pool, x);
    Act mlp(pool, B, S, 1, I);
    l.fc1.forward(ctx, h2.data(), mlp.data(), rows);
    ops::launch_gelu(mlp.data(), mlp.numel(), quick, ctx.stream());
    l.fc2.forward(ctx, mlp.data(), x.data(), rows, /*residual=*/x.data());
  }
  return layers_->final_ln.forward(ctx, pool, x);
}

}  // namespace sdrt::models::cuda
