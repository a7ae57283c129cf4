#include "backends/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <dnnl.h>
#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::cpu {

namespace {

// Row-major C = alpha · op(A) · op(B) + beta · C through oneDNN's sgemm. oneDNN rather than a separate BLAS:
// it is as fast on these shapes and shares the OpenMP thread pool with the convolutions and our own loops, so
// two runtimes never fight over the cores.
void sgemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const dnnl_status_t status = dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', m, n, k, alpha, a,
                                          lda, b, ldb, beta, c, ldc);
  if (status != dnnl_success)
    throw Error(ErrorKind::kInternal, fmt::format("dnnl_sgemm failed ({})", static_cast<int>(status)));
}

}  // namespace

void gemm(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, bool transpose_b,
          float alpha, float beta) {
  sgemm(false, transpose_b, m, n, k, alpha, a, k, b, transpose_b ? k : n, beta, c, n);
}

void linear(const float* x, const float* w, const float* bias, float* y, int64_t rows, int64_t in,
            int64_t out) {
  if (bias) {
    for (int64_t r = 0; r < rows; ++r) std::copy(bias, bias + out, y + r * out);
  }
  gemm(x, w, y, rows, out, in, /*transpose_b=*/true, 1.0f, bias ? 1.0f : 0.0f);
}

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t rows, int64_t dim,
                float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = y + r * dim;
    // Two-pass mean / variance in double: the reference must not lose digits on large activations.
    double mean = 0.0;
    for (int64_t i = 0; i < dim; ++i) mean += xr[i];
    mean /= static_cast<double>(dim);
    double var = 0.0;
    for (int64_t i = 0; i < dim; ++i) {
      const double d = xr[i] - mean;
      var += d * d;
    }
    var /= static_cast<double>(dim);
    const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i) {
      const float n = (xr[i] - m) * inv;
      yr[i] = n * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
    }
  }
}

void activate(float* x, int64_t n, Activation act) {
  switch (act) {
    case Activation::kGelu:
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i)
        x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * static_cast<float>(M_SQRT1_2)));
      break;
    case Activation::kGeluTanh: {
      const float c = std::sqrt(2.0f / static_cast<float>(M_PI));
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + std::tanh(c * (v + 0.044715f * v * v * v)));
      }
      break;
    }
    case Activation::kQuickGelu:
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-1.702f * x[i]));
      break;
    case Activation::kSilu:
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-x[i]));
      break;
    case Activation::kRelu:
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
      break;
  }
}

void add(const float* a, const float* b, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

void group_norm(const float* x, const float* gamma, const float* beta, float* y, int64_t batch,
                int64_t channels, int64_t spatial, int64_t groups, float eps, bool silu_after) {
  const int64_t per_group = channels / groups;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t offset = (b * channels + g * per_group) * spatial;
      const int64_t count = per_group * spatial;
      const float* xg = x + offset;
      float* yg = y + offset;
      // Statistics in double: the reference must not drift with the 4,096 x 40 values of an SD group.
      double mean = 0.0;
      for (int64_t i = 0; i < count; ++i) mean += xg[i];
      mean /= static_cast<double>(count);
      double var = 0.0;
      for (int64_t i = 0; i < count; ++i) {
        const double d = xg[i] - mean;
        var += d * d;
      }
      var /= static_cast<double>(count);
      const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
      const float m = static_cast<float>(mean);
      for (int64_t c = 0; c < per_group; ++c) {
        const int64_t ch = g * per_group + c;
        const float scale = inv * (gamma ? gamma[ch] : 1.0f);
        const float shift = (beta ? beta[ch] : 0.0f) - m * scale;
        const float* xc = xg + c * spatial;
        float* yc = yg + c * spatial;
        for (int64_t i = 0; i < spatial; ++i) {
          float v = xc[i] * scale + shift;
          if (silu_after) v = v / (1.0f + std::exp(-v));
          yc[i] = v;
        }
      }
    }
  }
}

void upsample_nearest(const float* x, float* y, int64_t planes, int64_t h, int64_t w, int64_t out_h,
                      int64_t out_w) {
  // torch computes the source index in float: floor(dst * (in / out)); exact for the integer ratios SD uses
  // and for the odd sizes of non-multiple-of-64 images.
  const float scale_h = static_cast<float>(h) / static_cast<float>(out_h);
  const float scale_w = static_cast<float>(w) / static_cast<float>(out_w);
  std::vector<int64_t> src_col(static_cast<size_t>(out_w));
  for (int64_t j = 0; j < out_w; ++j)
    src_col[j] = std::min(static_cast<int64_t>(std::floor(static_cast<float>(j) * scale_w)), w - 1);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t i = 0; i < out_h; ++i) {
      const int64_t si = std::min(static_cast<int64_t>(std::floor(static_cast<float>(i) * scale_h)), h - 1);
      const float* row = x + (p * h + si) * w;
      float* out = y + (p * out_h + i) * out_w;
      for (int64_t j = 0; j < out_w; ++j) out[j] = row[src_col[j]];
    }
  }
}

namespace {

void softmax_row(float* row, int64_t dim) {
  const float mx = *std::max_element(row, row + dim);
  double sum = 0.0;
  for (int64_t i = 0; i < dim; ++i) {
    row[i] = std::exp(row[i] - mx);
    sum += row[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < dim; ++i) row[i] *= inv;
}

}  // namespace

void softmax_rows(float* x, int64_t rows, int64_t dim) {
#pragma omp parallel for schedule(static) if (rows * dim > 65536)
  for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * dim, dim);
}

void attention(const AttentionArgs& a) {
  // Blocks of queries, one (head, block) per task: the [block, seq_kv] score tile stays in cache between the
  // two matrix products and the softmax, instead of streaming a [seq_q, seq_kv] matrix (64 MB at SD's
  // 4,096 tokens) through memory three times. Inside the parallel region oneDNN's sgemm runs single-threaded.
  constexpr int64_t kBlock = 64;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  const int64_t blocks = (a.seq_q + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(kBlock * a.seq_kv));
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t h = 0; h < a.heads; ++h) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t row0 = blk * kBlock, rows = std::min(kBlock, a.seq_q - row0);
        const float* q = a.q + row0 * a.q_stride + h * a.head_dim;
        const float* k = a.k + h * a.head_dim;
        const float* v = a.v + h * a.head_dim;
        float* out = a.out + row0 * a.out_stride + h * a.head_dim;
        // scores[i, j] = scale · q_i · k_j
        sgemm(false, true, rows, a.seq_kv, a.head_dim, scale, q, a.q_stride, k, a.k_stride, 0.0f,
              scores.data(), a.seq_kv);
        for (int64_t i = 0; i < rows; ++i) {
          float* row = scores.data() + i * a.seq_kv;
          if (a.causal)
            for (int64_t j = row0 + i + 1; j < a.seq_kv; ++j)
              row[j] = -std::numeric_limits<float>::infinity();
          softmax_row(row, a.seq_kv);
        }
        // out rows = scores · v_h
        sgemm(false, false, rows, a.head_dim, a.seq_kv, 1.0f, scores.data(), a.seq_kv, v, a.v_stride, 0.0f,
              out, a.out_stride);
      }
    }
  }
}

}  // namespace sdrt::cpu
