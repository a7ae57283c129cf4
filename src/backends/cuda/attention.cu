// Multi-head attention on the GPU: plan per shape, then one of two paths.
//
// * "cudnn-sdpa": cuDNN's fused flash attention (attention_sdpa.cpp) — the [seq_q, seq_kv] scores never reach
//   memory. Chosen whenever cuDNN can build the graph for the shape on this GPU and cuDNN version.
// * "fallback": unfused but exact: per (batch, group of heads) S = scale·QKᵀ with cuBLASLt (fp16 in, fp32
//   scores), a row softmax kernel in fp32 writing fp16 probabilities P, then O = P·V with cuBLASLt (fp32
//   accumulation). Used for what cuDNN rejects — head dims that are not multiples of 8, pointers or strides
//   that are not 16-byte aligned, GPUs before sm80 — or when forced (SDRT_ATTENTION=fallback /
//   attention_force_fallback), and for head_dim > 256 (the VAE's single-head 512-channel attention), where it
//   measured 3x faster than cuDNN's fused kernel on an H100. Its score/probability scratch is allocated at
//   planning time and capped (heads are processed in groups), so a call never allocates.
//
// Row-major [rows, cols] with leading dimension ld is, to column-major cuBLASLt, a [cols, rows] matrix: Sᵀ =
// K·Qᵀ (A = K transposed, B = Q) and Oᵀ = Vᵀ·Pᵀ (A = V, B = P), each batched over a group of heads with the
// batch stride head_dim (heads are adjacent column blocks of one row).
//
// Plans are cached in a process-wide map keyed by the context's handles, every AttentionShape field, the
// pointers' common alignment and the forced-fallback flag. The first call with a key plans (cuDNN graph
// build, cuBLASLt heuristics, scratch allocation, workspace growth) and must not be under CUDA-graph capture.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/attention_sdpa.h"
#include "backends/cuda/check.h"
#include "backends/cuda/context.h"

namespace sdrt::cuda {
namespace {

constexpr size_t kFallbackScratchCap = size_t{256} << 20;  // scores (fp32) + probabilities (fp16)
constexpr size_t kCublasWorkspace = size_t{32} << 20;

// ---- Softmax kernel
// ------------------------------------------------------------------------------------------

struct MaxSum {
  float m, s;  // running max and sum of exp(x - m)
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
  if (a.m == -INFINITY) return b;
  if (b.m == -INFINITY) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}

// One block per score row: probs[row, j] = softmax(scores[row, :valid])_j, 0 for j >= valid, where valid =
// query index + 1 under the causal mask (rows are [head][query] within a group, queries = row % seq_q).
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    softmax_rows_kernel(const float* __restrict__ scores, __half* __restrict__ probs, int cols, int seq_q,
                        bool causal) {
  const int64_t row = blockIdx.x;
  const float* in = scores + row * cols;
  __half* out = probs + row * cols;
  const int valid = causal ? min(cols, static_cast<int>(row % seq_q) + 1) : cols;

  MaxSum acc{-INFINITY, 0.0f};
  for (int j = threadIdx.x; j < valid; j += kThreads) {
    const float x = in[j];
    if (x > acc.m) {
      acc.s = acc.s * __expf(acc.m - x) + 1.0f;  // acc.m = -inf on the first element: 0·0 + 1
      acc.m = x;
    } else {
      acc.s += __expf(x - acc.m);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, acc.m, offset), __shfl_xor_sync(0xffffffffu, acc.s, offset)};
    acc = combine(acc, other);
  }
  __shared__ MaxSum warp_acc[kThreads / 32];
  __shared__ MaxSum total;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_acc[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaxSum t = warp_acc[0];
    for (int w = 1; w < kThreads / 32; ++w) t = combine(t, warp_acc[w]);
    total = t;
  }
  __syncthreads();
  const float m = total.m, inv = 1.0f / total.s;
  for (int j = threadIdx.x; j < cols; j += kThreads)
    out[j] = __float2half_rn(j < valid ? __expf(in[j] - m) * inv : 0.0f);
}

// ---- cuBLASLt descriptors
// ------------------------------------------------------------------------------------

struct LayoutDeleter {
  void operator()(cublasLtMatrixLayoutOpaque_t* p) const { cublasLtMatrixLayoutDestroy(p); }
};
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* p) const { cublasLtMatmulDescDestroy(p); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

// Column-major rows×cols matrix with leading dimension ld, `batch` of them `batch_stride` elements apart.
Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int32_t batch,
                   int64_t batch_stride) {
  cublasLtMatrixLayout_t raw = nullptr;
  check(cublasLtMatrixLayoutCreate(&raw, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
        "cublasLtMatrixLayoutCreate (attention)");
  Layout layout(raw);
  check(cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)),
        "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
  check(cublasLtMatrixLayoutSetAttribute(raw, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &batch_stride,
                                         sizeof(batch_stride)),
        "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  return layout;
}

// Largest power of two (<= 256) dividing every value — the byte alignment cuBLASLt may assume.
uint32_t common_alignment(std::initializer_list<uint64_t> byte_values) {
  uint64_t bits = 256;
  for (uint64_t v : byte_values) bits |= v;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

// One batched matmul D = alpha·op(A)·op(B) with its heuristic-chosen algorithm.
struct Matmul {
  MatmulDesc desc;
  Layout a, b, d;
  cublasLtMatmulAlgo_t algo{};

  void init(cublasLtHandle_t handle, cublasOperation_t op_a, Layout la, Layout lb, Layout ld,
            uint32_t align_a, uint32_t align_b, uint32_t align_d, const char* what) {
    cublasLtMatmulDesc_t raw = nullptr;
    check(cublasLtMatmulDescCreate(&raw, CUBLAS_COMPUTE_32F, CUDA_R_32F),
          "cublasLtMatmulDescCreate (attention)");
    desc.reset(raw);
    const int32_t ta = op_a, tb = CUBLAS_OP_N;
    check(cublasLtMatmulDescSetAttribute(raw, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)),
          "cublasLtMatmulDescSetAttribute(TRANSA)");
    check(cublasLtMatmulDescSetAttribute(raw, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)),
          "cublasLtMatmulDescSetAttribute(TRANSB)");
    a = std::move(la);
    b = std::move(lb);
    d = std::move(ld);

    cublasLtMatmulPreference_t pref_raw = nullptr;
    check(cublasLtMatmulPreferenceCreate(&pref_raw), "cublasLtMatmulPreferenceCreate (attention)");
    Preference pref(pref_raw);
    const uint64_t ws = kCublasWorkspace;
    check(cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof(ws)),
          "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
    for (const auto& [attr, value] : aligns)
      check(cublasLtMatmulPreferenceSetAttribute(pref_raw, attr, &value, sizeof(value)),
            "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");

    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(handle, raw, a.get(), b.get(), d.get(), d.get(), pref_raw, 1,
                                         &result, &found),
          "cublasLtMatmulAlgoGetHeuristic (attention)");
    if (found == 0)
      throw Error(ErrorKind::kUnsupported,
                  std::string("CUDA attention: cuBLASLt has no algorithm for ") + what);
    algo = result.algo;
  }

  void run(cublasLtHandle_t handle, cudaStream_t stream, float alpha, const void* pa, const void* pb,
           void* pd, void* workspace) const {
    const float beta = 0.0f;
    check(cublasLtMatmul(handle, desc.get(), &alpha, pa, a.get(), pb, b.get(), &beta, pd, d.get(), pd,
                         d.get(), &algo, workspace, kCublasWorkspace, stream),
          "cublasLtMatmul (attention)");
  }
};

// ---- Plans
// ---------------------------------------------------------------------------------------------------

struct FallbackPlan {
  int64_t group = 1;  // heads per matmul batch (divides heads)
  DeviceBuffer scores, probs;
  Matmul qk, pv;
};

struct Plan {
  std::shared_ptr<detail::SdpaPlan> sdpa;  // null: fallback
  size_t sdpa_workspace = 0;
  std::unique_ptr<FallbackPlan> fallback;
  std::string note;  // why the fallback was chosen
};

struct PlanKey {
  cudnnHandle_t cudnn;
  cublasLtHandle_t cublas;
  int64_t batch, heads, seq_q, seq_kv, head_dim, q_stride, k_stride, v_stride, out_stride;
  uint32_t scale_bits;
  bool causal;
  uint32_t alignment;
  bool forced;
  auto tie() const {
    return std::tie(cudnn, cublas, batch, heads, seq_q, seq_kv, head_dim, q_stride, k_stride, v_stride,
                    out_stride, scale_bits, causal, alignment, forced);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

struct PlanCache {
  std::mutex mutex;
  std::map<PlanKey, std::shared_ptr<Plan>> plans;
};

// Never destroyed: plans hold cuDNN/cuBLASLt objects and device memory that must not be released after the
// CUDA runtime has shut down at process exit.
PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;
  return *cache;
}

bool env_forces_fallback() {
  const char* v = std::getenv("SDRT_ATTENTION");
  return v != nullptr && std::strcmp(v, "fallback") == 0;
}
std::atomic<bool> g_force_fallback{env_forces_fallback()};

bool env_logs_plans() {
  const char* v = std::getenv("SDRT_ATTENTION_LOG");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

using detail::describe;

void validate(const AttentionShape& s) {
  const int64_t width = s.heads * s.head_dim;
  const bool ok = s.batch > 0 && s.heads > 0 && s.seq_q > 0 && s.seq_kv > 0 && s.head_dim > 0 &&
                  s.q_stride >= width && s.k_stride >= width && s.v_stride >= width &&
                  s.out_stride >= width && s.seq_kv <= INT32_MAX && s.seq_q <= INT32_MAX &&
                  std::isfinite(s.scale);
  if (!ok) throw Error(ErrorKind::kInvalidArgument, "CUDA attention: invalid shape: " + describe(s));
}

std::unique_ptr<FallbackPlan> make_fallback_plan(Context& ctx, const AttentionShape& s, uint32_t ptr_align) {
  auto plan = std::make_unique<FallbackPlan>();
  const int64_t H = s.heads, Sq = s.seq_q, Skv = s.seq_kv, D = s.head_dim;
  const size_t per_head = static_cast<size_t>(Sq * Skv) * (sizeof(float) + sizeof(__half));
  // The largest divisor of `heads` whose scratch fits the cap (at least one head).
  for (int64_t g = H; g >= 1; --g) {
    if (H % g == 0 && (g == 1 || per_head * static_cast<size_t>(g) <= kFallbackScratchCap)) {
      plan->group = g;
      break;
    }
  }
  const int64_t G = plan->group;
  plan->scores = DeviceBuffer(static_cast<size_t>(G * Sq * Skv) * sizeof(float));
  plan->probs = DeviceBuffer(static_cast<size_t>(G * Sq * Skv) * sizeof(__half));
  ctx.workspace(kCublasWorkspace);

  constexpr uint64_t h = sizeof(__half), f = sizeof(float);
  // Every base pointer a call uses: the caller's pointer + batch·seq·stride + group·head_dim elements.
  auto operand_align = [&](int64_t seq, int64_t stride) {
    return common_alignment({ptr_align, static_cast<uint64_t>(stride) * h, static_cast<uint64_t>(D) * h,
                             static_cast<uint64_t>(seq * stride) * h});
  };
  const uint32_t align_q = operand_align(Sq, s.q_stride), align_k = operand_align(Skv, s.k_stride),
                 align_v = operand_align(Skv, s.v_stride), align_o = operand_align(Sq, s.out_stride);
  const uint32_t align_s =
      common_alignment({static_cast<uint64_t>(Skv) * f, static_cast<uint64_t>(Sq * Skv) * f});
  const uint32_t align_p =
      common_alignment({static_cast<uint64_t>(Skv) * h, static_cast<uint64_t>(Sq * Skv) * h});

  const auto g32 = static_cast<int32_t>(G);
  // Sᵀ [Skv, Sq] (ld Skv, fp32) = op(K)ᵀ·Q: A = K as column-major [D, Skv] (ld k_stride), transposed.
  plan->qk.init(ctx.cublas(), CUBLAS_OP_T, make_layout(CUDA_R_16F, D, Skv, s.k_stride, g32, D),
                make_layout(CUDA_R_16F, D, Sq, s.q_stride, g32, D),
                make_layout(CUDA_R_32F, Skv, Sq, Skv, g32, Sq * Skv), align_k, align_q, align_s,
                "the attention scores QKᵀ");
  // Oᵀ [D, Sq] (ld out_stride) = Vᵀ·Pᵀ: A = V as column-major [D, Skv], B = P as column-major [Skv, Sq].
  plan->pv.init(ctx.cublas(), CUBLAS_OP_N, make_layout(CUDA_R_16F, D, Skv, s.v_stride, g32, D),
                make_layout(CUDA_R_16F, Skv, Sq, Skv, g32, Sq * Skv),
                make_layout(CUDA_R_16F, D, Sq, s.out_stride, g32, D), align_v, align_p, align_o,
                "the attention output P·V");
  return plan;
}

std::shared_ptr<Plan> make_plan(Context& ctx, const AttentionShape& s, uint32_t ptr_align, bool forced) {
  auto plan = std::make_shared<Plan>();
  if (forced) {
    plan->note = "forced (SDRT_ATTENTION=fallback)";
  } else if (ptr_align < 16) {
    plan->note = "pointers only " + std::to_string(ptr_align) + "-byte aligned";
  } else if (s.head_dim > 256) {
    // cuDNN 9 on H100 does run head_dim 512 (the VAE), but 3x slower than the fallback (0.37 vs 0.13 ms at
    // 4096 tokens): its flash kernels are tuned for head_dim <= 256.
    plan->note = "head_dim > 256 (the unfused path is faster there)";
  } else if (ctx.sm_version() < 80) {
    plan->note = "sm_" + std::to_string(ctx.sm_version()) + " has no cuDNN flash attention";
  } else {
    std::string why;
    plan->sdpa = detail::build_sdpa_plan(ctx.cudnn(), s, &why);
    if (plan->sdpa) {
      plan->sdpa_workspace =
          static_cast<size_t>(std::max<int64_t>(detail::sdpa_workspace_size(*plan->sdpa), 0));
      ctx.workspace(plan->sdpa_workspace);  // grow now: capture forbids growing later
    } else {
      plan->note = "cuDNN: " + why;
    }
  }
  if (!plan->sdpa) plan->fallback = make_fallback_plan(ctx, s, ptr_align);
  if (env_logs_plans())
    std::fprintf(stderr, "sdrt: attention %s -> %s%s%s\n", describe(s).c_str(),
                 plan->sdpa ? "cudnn-sdpa" : "fallback", plan->note.empty() ? "" : ": ", plan->note.c_str());
  return plan;
}

uint32_t float_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
}

uint32_t pointer_alignment(const void* q, const void* k, const void* v, const void* out) {
  const uint64_t bits = reinterpret_cast<uintptr_t>(q) | reinterpret_cast<uintptr_t>(k) |
                        reinterpret_cast<uintptr_t>(v) | reinterpret_cast<uintptr_t>(out) | 16;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

std::shared_ptr<Plan> get_plan(Context& ctx, const AttentionShape& s, uint32_t ptr_align) {
  validate(s);
  const PlanKey key{ctx.cudnn(),  ctx.cublas(),        s.batch,    s.heads,    s.seq_q,
                    s.seq_kv,     s.head_dim,          s.q_stride, s.k_stride, s.v_stride,
                    s.out_stride, float_bits(s.scale), s.causal,   ptr_align,  g_force_fallback.load()};
  PlanCache& cache = plan_cache();
  std::lock_guard lock(cache.mutex);
  auto it = cache.plans.find(key);
  if (it != cache.plans.end()) return it->second;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(ctx.stream(), &capture), "cudaStreamIsCapturing");
  if (capture != cudaStreamCaptureStatusNone)
    throw Error(
        ErrorKind::kInternal,
        "CUDA attention: first call with a new shape during CUDA-graph capture (plan it before capturing): " +
            describe(s));
  auto plan = make_plan(ctx, s, ptr_align, key.forced);
  cache.plans.emplace(key, plan);
  return plan;
}

void run_fallback(Context& ctx, const FallbackPlan& plan, const AttentionShape& s, const __half* q,
                  const __half* k, const __half* v, __half* out) {
  const int64_t G = plan.group, D = s.head_dim;
  void* workspace = ctx.workspace(kCublasWorkspace);
  constexpr int kThreads = 256;
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t h0 = 0; h0 < s.heads; h0 += G) {
      const __half* qb = q + b * s.seq_q * s.q_stride + h0 * D;
      const __half* kb = k + b * s.seq_kv * s.k_stride + h0 * D;
      const __half* vb = v + b * s.seq_kv * s.v_stride + h0 * D;
      __half* ob = out + b * s.seq_q * s.out_stride + h0 * D;
      plan.qk.run(ctx.cublas(), ctx.stream(), s.scale, kb, qb, plan.scores.data(), workspace);
      softmax_rows_kernel<kThreads><<<static_cast<unsigned>(G * s.seq_q), kThreads, 0, ctx.stream()>>>(
          plan.scores.as<float>(), plan.probs.as<__half>(), static_cast<int>(s.seq_kv),
          static_cast<int>(s.seq_q), s.causal);
      check_launch("attention softmax kernel");
      plan.pv.run(ctx.cublas(), ctx.stream(), 1.0f, vb, plan.probs.data(), ob, workspace);
    }
  }
}

}  // namespace

void attention(Context& ctx, const AttentionShape& shape, const __half* q, const __half* k, const __half* v,
               __half* out) {
  const auto plan = get_plan(ctx, shape, pointer_alignment(q, k, v, out));
  if (plan->sdpa) {
    detail::run_sdpa_plan(*plan->sdpa, ctx.cudnn(), q, k, v, out, ctx.workspace(plan->sdpa_workspace));
  } else {
    run_fallback(ctx, *plan->fallback, shape, q, k, v, out);
  }
}

const char* attention_path(Context& ctx, const AttentionShape& shape) {
  return get_plan(ctx, shape, 16)->sdpa ? "cudnn-sdpa" : "fallback";
}

std::string attention_plan_note(Context& ctx, const AttentionShape& shape) {
  const auto plan = get_plan(ctx, shape, 16);
  return plan->sdpa ? std::string("cudnn-sdpa") : "fallback (" + plan->note + ")";
}

void attention_force_fallback(bool on) {
  g_force_fallback.store(on);
}

void attention_release_plans(Context& ctx) {
  PlanCache& cache = plan_cache();
  std::lock_guard lock(cache.mutex);
  for (auto it = cache.plans.begin(); it != cache.plans.end();) {
    if (it->first.cudnn == ctx.cudnn() || it->first.cublas == ctx.cublas())
      it = cache.plans.erase(it);
    else
      ++it;
  }
}

}  // namespace sdrt::cuda
