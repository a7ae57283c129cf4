#include "models/cuda/clip_text.h"

#include <fmt/format.h>

#include <cmath>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/elementwise.cuh"

namespace sdrt::models::gpu {

struct CudaClipText::Layers {
  struct Layer {
    DLayerNorm ln1, ln2;
    DLinear qkv, out_proj, fc1, fc2;
  };
  std::vector<Layer> layers;
  DLayerNorm final_ln;
};

CudaClipText::CudaClipText() : layers_(std::make_unique<Layers>()) {}
CudaClipText::CudaClipText(CudaClipText&&) noexcept = default;
CudaClipText& CudaClipText::operator=(CudaClipText&&) noexcept = default;
CudaClipText::~CudaClipText() = default;

CudaClipText CudaClipText::load(Context& ctx, const ClipTextConfig& config, const io::WeightStore& store,
                                const std::string& prefix, const std::string& config_source) {
  CudaClipText te;
  te.config_ = config;
  const WeightSource w{store, config_source};
  const int64_t D = config.hidden_size, I = config.intermediate_size;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = fmt::format("{}encoder.layers.{}.", prefix, i);
    Layers::Layer l;
    l.ln1 = DLayerNorm::load(ctx, w, p + "layer_norm1", D, config.layer_norm_eps);
    l.qkv = DLinear::load_stacked(
        ctx, w, {p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"}, D, D, true);
    l.out_proj = DLinear::load(ctx, w, p + "self_attn.out_proj", D, D, true);
    l.ln2 = DLayerNorm::load(ctx, w, p + "layer_norm2", D, config.layer_norm_eps);
    l.fc1 = DLinear::load(ctx, w, p + "mlp.fc1", D, I, true);
    l.fc2 = DLinear::load(ctx, w, p + "mlp.fc2", I, D, true);
    te.layers_->layers.push_back(std::move(l));
  }
  te.layers_->final_ln = DLayerNorm::load(ctx, w, prefix + "final_layer_norm", D, config.layer_norm_eps);
  return te;
}

Act CudaClipText::forward(Context& ctx, ActivationPool& pool, const Act& x_in) const {
  const auto& c = config_;
  const int64_t B = x_in.n, S = x_in.h, D = c.hidden_size, I = c.intermediate_size;
  const int64_t H = c.num_attention_heads, head_dim = D / H, rows = B * S;
  Act x(pool, B, S, 1, D);
  check(cudaMemcpyAsync(x.data(), x_in.data(), x.numel() * sizeof(__half), cudaMemcpyDeviceToDevice,
                        ctx.stream()),
        "text encoder input copy");
  const bool quick = c.hidden_act == cpu::Activation::kQuickGelu;
  if (!quick && c.hidden_act != cpu::Activation::kGelu)
    throw Error(ErrorKind::kUnsupported,
                fmt::format("text encoder: activation {} is not supported on CUDA", c.hidden_act_name));
  for (const auto& l : layers_->layers) {
    // x += out_proj(causal_attention(ln1(x)))
    const Act h = l.ln1.forward(ctx, pool, x);
    Act q3(pool, B, S, 1, 3 * D);
    l.qkv.forward(ctx, h.data(), q3.data(), rows);
    Act attn(pool, B, S, 1, D);
    {
      OpScope scope(ctx, "attention");
      cuda::attention(ctx,
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
    cuda::launch_gelu(mlp.data(), mlp.numel(), quick, ctx.stream());
    l.fc2.forward(ctx, mlp.data(), x.data(), rows, /*residual=*/x.data());
  }
  return layers_->final_ln.forward(ctx, pool, x);
}

}  // namespace sdrt::models::gpu
