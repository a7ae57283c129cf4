// CPU reference ops, fp32, row-major. The matrix products go through oneDNN (dnnl_sgemm, sharing the
// convolutions' OpenMP pool); everything else is a plain loop. Every other backend is tested against these.
#pragma once

#include <cstdint>

namespace sdrt::cpu {

// y[rows, out] = x[rows, in] · w[out, in]ᵀ + bias[out]   (torch.nn.Linear; bias may be null)
void linear(const float* x, const float* w, const float* bias, float* y, int64_t rows, int64_t in,
            int64_t out);

// c[m, n] = alpha · a[m, k] · b (b is [k, n], or [n, k] when transpose_b) + beta · c
void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool transpose_b,
          float alpha = 1.0f, float beta = 0.0f);

// LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) · gamma + beta. x may alias y.
void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim,
                float eps);

enum class Activation { kGelu, kGeluTanh, kQuickGelu, kSilu, kRelu };
// In place. kGelu is the exact erf form (torch's default), kQuickGelu is x·sigmoid(1.702x) (OpenAI CLIP).
void activate(float* x, int64_t n, Activation act);

// y = a + b, elementwise (y may alias a or b).
void add(const float* a, const float* b, float* y, int64_t n);

// GroupNorm over x [batch, channels, spatial] (torch.nn.GroupNorm): statistics per (batch, group) over
// channels/groups · spatial values, then per-channel gamma/beta. `silu_after` fuses the SiLU that follows
// every GroupNorm in ResNet blocks. x may alias y.
void group_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t batch,
                int64_t channels, int64_t spatial, int64_t groups, float eps, bool silu_after = false);

// Nearest-neighbour resize [batch·channels, h, w] -> [batch·channels, out_h, out_w] as torch's
// F.interpolate(mode="nearest"): source index = floor(dst · in / out).
void upsample_nearest(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int64_t out_h,
                      int64_t out_w);

// Softmax over the last dimension of [rows, dim], in place.
void softmax_rows(float* x, int64_t rows, int64_t dim);

// Multi-head scaled-dot-product attention for one sequence.
//   q [seq_q, heads · head_dim], k and v [seq_kv, heads · head_dim] (row stride `*_stride` floats),
//   out [seq_q, heads · head_dim]. `causal` masks key j > query i (CLIP's text encoder).
// Materialises one head's [seq_q, seq_kv] score matrix at a time.
struct AttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  float* out;
  int64_t seq_q, seq_kv, heads, head_dim;
  int64_t q_stride, k_stride, v_stride, out_stride;
  bool causal = false;
};
void attention(const AttentionArgs& args);

}  // namespace sdrt::cpu
