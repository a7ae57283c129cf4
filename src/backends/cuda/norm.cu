// GroupNorm and LayerNorm on NHWC fp16 activations, statistics in fp32 (fp64 for the final combine).
//
// GroupNorm, x [batch, spatial, channels]: one (batch, group) pair spans spatial rows × channels/groups
// scattered columns, and SD has only batch·32 pairs (64 at batch 2), far too few blocks for 132 SMs. So the
// rows of each batch item are cut into `chunks` row ranges and two kernels run over a (chunk, batch) grid:
//   1. stats: each block reads its rows once (16-byte loads) and keeps, per thread, fp32 sums of
//      d = x + pre_bias − K_c and d² for its own channels, where K_c is the chunk's first value of channel c
//      (a shifted-data variance: no catastrophic cancellation when |mean| ≫ std). The block size is a
//      multiple of channels/V, so a thread's channels never change while it strides through the chunk.
//      Per-thread sums are combined per channel in shared memory in a fixed order (deterministic), then
//      per group (warp per group) into a chunk (mean, M2) partial written to scratch. The last block of a
//      batch item to finish (atomic counter in scratch, threadfence-reduction pattern) merges the chunk
//      partials with the parallel-variance formula in fp64 and writes (mean, rstd) per group.
//   2. apply: per thread, scale/shift for its channels folded into registers once (gamma, beta, pre_bias,
//      mean, rstd), then y = x·a + b (+ SiLU) with 16-byte loads/stores. The second read of x mostly hits L2
//      for UNet shapes (≤ 10 MiB), so GroupNorm costs about one HBM read + one write.
// Single pass (sm_90+, the UNet's shapes): a thread-block cluster of K ≤ 8 blocks owns one (batch item,
// channel slice), the slice being lcm(channels/groups, 8) channels (whole groups, 16-byte vectors); each
// block loads its 1/K of the rows into shared memory once, summing d = x − K_c and d² per channel (K_c: the
// channel's first value, a shift that keeps fp32 sums accurate when |mean| ≫ std), reduced per block in a
// fixed order and across the cluster through distributed shared memory (ranks summed in order:
// deterministic), combined per group exactly. Then the block normalises its rows from shared
// memory. One kernel, one read and one write of the tensor, no scratch; used when a block's rows fit in 96
// KiB (see kClusterMaxTileBytes).
// Shapes whose channel count does not allow the fixed-channel layout (no block size ≤ 1024 that is a
// multiple of both 32 and channels/V) use a generic per-element path with shared-memory atomics (correct,
// slower). Scratch: [batch] counters (zeroed once by the caller, re-zeroed by every launch), [batch, groups]
// stats, [batch, groups, chunks] partials. No allocation happens here, so launches can be captured in CUDA
// graphs.
//
// LayerNorm, x [rows, dim]: one warp per row, the row held in registers (dim ≤ 4096 with 16-byte vectors),
// exact two-pass mean / variance with warp shuffles; 8 rows per 256-thread block. Other dims fall back to a
// block per row that re-reads the row from L1/L2.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <tuple>

#include "backends/cuda/check.h"
#include "backends/cuda/norm.cuh"
#include "backends/cuda/vec.cuh"
#include "sdrt/error.h"

namespace sdrt::cuda {

using detail::aligned;
using detail::ceil_div;
using detail::load_float;
using detail::load_half;
using detail::store_half;
using detail::warp_sum;

namespace {

// ---- GroupNorm -------------------------------------------------------------------------------------------

constexpr int64_t kTargetBlocks = 512;    // ~4 co-resident blocks per SM on a 132-SM H100
constexpr int64_t kMinChunkElems = 4096;  // ≥ 8 KiB of input per block
constexpr int64_t kMaxPartials = 4096;    // chunks × groups per batch item (the merge stages 32 KiB of them)
constexpr int64_t kMergeStageBytes = 32768;

struct Chunking {
  int64_t rows = 0;    // rows per chunk (the last one may have fewer)
  int64_t chunks = 0;  // chunks per batch item
};

Chunking group_norm_chunking(int64_t batch, int64_t spatial, int64_t channels, int64_t groups) {
  int64_t chunks = ceil_div(kTargetBlocks, std::max<int64_t>(batch, 1));
  chunks = std::min(chunks, std::max<int64_t>(1, spatial * channels / kMinChunkElems));
  chunks = std::min(chunks, std::max<int64_t>(1, kMaxPartials / std::max<int64_t>(groups, 1)));
  chunks = std::clamp<int64_t>(chunks, 1, std::max<int64_t>(spatial, 1));
  Chunking c;
  c.rows = ceil_div(std::max<int64_t>(spatial, 1), chunks);
  c.chunks = ceil_div(std::max<int64_t>(spatial, 1), c.rows);
  return c;
}

size_t align_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

struct ScratchLayout {
  size_t counters = 0, stats = 0, partials = 0, total = 0;
};

ScratchLayout scratch_layout(int64_t batch, int64_t groups, int64_t chunks) {
  ScratchLayout l;
  l.counters = 0;
  l.stats = align_up(static_cast<size_t>(batch) * sizeof(int), 256);
  l.partials = l.stats + align_up(static_cast<size_t>(batch * groups) * sizeof(float2), 256);
  l.total = l.partials + static_cast<size_t>(batch * groups * chunks) * sizeof(float2);
  return l;
}

// The tensors both GroupNorm kernels read and write (see GroupNormArgs).
struct GnTensors {
  const __half* x;
  __half* y;
  const float* gamma;
  const float* beta;
  const __half* pre_bias;
  int64_t pre_bias_stride;  // elements between batch items of pre_bias
};

GnTensors gn_tensors(const GroupNormArgs& a) {
  return {a.x, a.y, a.gamma, a.beta, a.pre_bias, a.pre_bias_stride ? a.pre_bias_stride : a.channels};
}

struct GnParams : GnTensors {
  int* counters;     // [batch]
  float2* stats;     // [batch, groups] (mean, rstd)
  float2* partials;  // [batch, groups, chunks] (chunk mean, chunk M2)
  int64_t spatial, channels, groups, cpg;
  int64_t rows;       // rows per chunk
  int stage_floats2;  // float2 capacity of the dynamic shared memory for the merge
  float eps;
};

// Stats kernel. Grid (chunks, batch); blockDim.x = T with (T·V) % channels == 0 when kFixed.
template <int V, bool kFixed>
__global__ void __launch_bounds__(1024) group_norm_stats_kernel(GnParams p) {
  extern __shared__ float smem[];
  const int64_t C = p.channels;
  float* s_k = smem;              // [C] shift K_c (includes pre_bias)
  float* s_s1 = smem + C;         // [C] Σ d
  float* s_s2 = smem + 2 * C;     // [C] Σ d²
  float* s_stage = smem + 3 * C;  // [T·V] per-thread sums (kFixed)

  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  const int64_t b = blockIdx.y;
  const int64_t chunk = blockIdx.x;
  const int64_t chunks = gridDim.x;
  const int64_t r0 = chunk * p.rows;
  const int64_t rows = min(p.rows, p.spatial - r0);
  const __half* xb = p.x + (b * p.spatial + r0) * C;
  const __half* pb = p.pre_bias ? p.pre_bias + b * p.pre_bias_stride : nullptr;

  for (int64_t c = tid; c < C; c += nthreads) {
    s_k[c] = __half2float(xb[c]) + (pb ? __half2float(pb[c]) : 0.0f);
    s_s1[c] = 0.0f;
    s_s2[c] = 0.0f;
  }
  __syncthreads();

  if constexpr (kFixed) {
    const int64_t nvec = rows * C / V;
    const int c0 = static_cast<int>((static_cast<int64_t>(tid) * V) % C);
    float k[V], s1[V], s2[V];
#pragma unroll
    for (int e = 0; e < V; ++e) {
      k[e] = s_k[c0 + e] - (pb ? __half2float(pb[c0 + e]) : 0.0f);  // d = x − (K − pre_bias)
      s1[e] = 0.0f;
      s2[e] = 0.0f;
    }
#pragma unroll 4
    for (int64_t i = tid; i < nvec; i += nthreads) {
      float v[V];
      load_half<V>(xb + i * V, v);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float d = v[e] - k[e];
        s1[e] += d;
        s2[e] = fmaf(d, d, s2[e]);
      }
    }
    // Per-channel totals in a fixed order: thread t's element e sits at stage[t·V + e], channel (t·V + e) %
    // C.
    const int64_t per_channel = static_cast<int64_t>(nthreads) * V / C;
#pragma unroll
    for (int e = 0; e < V; ++e) s_stage[tid * V + e] = s1[e];
    __syncthreads();
    for (int64_t c = tid; c < C; c += nthreads) {
      float acc = 0.0f;
      for (int64_t j = 0; j < per_channel; ++j) acc += s_stage[c + j * C];
      s_s1[c] = acc;
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < V; ++e) s_stage[tid * V + e] = s2[e];
    __syncthreads();
    for (int64_t c = tid; c < C; c += nthreads) {
      float acc = 0.0f;
      for (int64_t j = 0; j < per_channel; ++j) acc += s_stage[c + j * C];
      s_s2[c] = acc;
    }
  } else {
    const int64_t n = rows * C;
    for (int64_t i = tid; i < n; i += nthreads) {
      const int64_t c = i % C;
      const float d = __half2float(xb[i]) + (pb ? __half2float(pb[c]) : 0.0f) - s_k[c];
      atomicAdd(&s_s1[c], d);
      atomicAdd(&s_s2[c], d * d);
    }
  }
  __syncthreads();

  // Channels -> groups (warp per group): per channel mean_c = K_c + S1/n, M2_c = S2 − S1²/n; then the group's
  // chunk mean is the average of the channel means and M2 = Σ M2_c + n·(mean_c − mean)².
  const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
  const float inv_rows = 1.0f / static_cast<float>(rows);
  for (int64_t g = warp; g < p.groups; g += nwarps) {
    float m = 0.0f;
    for (int64_t j = lane; j < p.cpg; j += 32) {
      const int64_t c = g * p.cpg + j;
      m += s_k[c] + s_s1[c] * inv_rows;
    }
    m = warp_sum(m) / static_cast<float>(p.cpg);
    float q = 0.0f;
    for (int64_t j = lane; j < p.cpg; j += 32) {
      const int64_t c = g * p.cpg + j;
      const float mc = s_k[c] + s_s1[c] * inv_rows;
      const float m2c = fmaxf(s_s2[c] - s_s1[c] * s_s1[c] * inv_rows, 0.0f);
      const float d = mc - m;
      q += m2c + static_cast<float>(rows) * d * d;
    }
    q = warp_sum(q);
    if (lane == 0) p.partials[(b * p.groups + g) * chunks + chunk] = make_float2(m, q);
  }

  // The last block of this batch item merges all chunk partials.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(&p.counters[b], 1) == static_cast<int>(chunks - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();

  float2* stage = reinterpret_cast<float2*>(smem);
  const int64_t tile_groups = p.stage_floats2 / chunks > 1 ? p.stage_floats2 / chunks : 1;
  const double total = static_cast<double>(p.spatial) * static_cast<double>(p.cpg);
  for (int64_t g0 = 0; g0 < p.groups; g0 += tile_groups) {
    const int64_t ng = min(tile_groups, p.groups - g0);
    const float2* src = p.partials + (b * p.groups + g0) * chunks;
    for (int64_t i = tid; i < ng * chunks; i += nthreads) stage[i] = __ldcg(src + i);
    __syncthreads();
    for (int64_t gl = warp; gl < ng; gl += nwarps) {
      double sum = 0.0;
      for (int64_t j = lane; j < chunks; j += 32) {
        const double nj = static_cast<double>(min(p.rows, p.spatial - j * p.rows) * p.cpg);
        sum += nj * static_cast<double>(stage[gl * chunks + j].x);
      }
      const double mean = warp_sum(sum) / total;
      double m2 = 0.0;
      for (int64_t j = lane; j < chunks; j += 32) {
        const double nj = static_cast<double>(min(p.rows, p.spatial - j * p.rows) * p.cpg);
        const double d = static_cast<double>(stage[gl * chunks + j].x) - mean;
        m2 += static_cast<double>(stage[gl * chunks + j].y) + nj * d * d;
      }
      m2 = warp_sum(m2);
      if (lane == 0) {
        const double rstd = 1.0 / sqrt(m2 / total + static_cast<double>(p.eps));
        p.stats[b * p.groups + g0 + gl] = make_float2(static_cast<float>(mean), static_cast<float>(rstd));
      }
    }
    __syncthreads();
  }
  if (tid == 0) p.counters[b] = 0;  // ready for the next launch
}

// Per-channel y = x·a + b: a = rstd·gamma, b = beta + (pre_bias − mean)·a.
__device__ __forceinline__ void group_norm_affine(const GnParams& p, int64_t b, int64_t c, float& a,
                                                  float& shift) {
  const float2 st = p.stats[b * p.groups + c / p.cpg];
  const float pb = p.pre_bias ? __half2float(p.pre_bias[b * p.pre_bias_stride + c]) : 0.0f;
  a = st.y * (p.gamma ? p.gamma[c] : 1.0f);
  shift = (p.beta ? p.beta[c] : 0.0f) + (pb - st.x) * a;
}

template <int V, bool kFixed, bool kSilu>
__global__ void __launch_bounds__(1024) group_norm_apply_kernel(GnParams p) {
  extern __shared__ float smem[];
  const int64_t C = p.channels;
  const int tid = threadIdx.x;
  const int nthreads = blockDim.x;
  const int64_t b = blockIdx.y;
  const int64_t r0 = blockIdx.x * p.rows;
  const int64_t rows = min(p.rows, p.spatial - r0);
  const int64_t base = (b * p.spatial + r0) * C;
  const __half* xb = p.x + base;  // may alias y: every element is read, then written, by one thread
  __half* yb = p.y + base;

  if constexpr (kFixed) {
    const int64_t c0 = (static_cast<int64_t>(tid) * V) % C;
    float a[V], sh[V];
#pragma unroll
    for (int e = 0; e < V; ++e) group_norm_affine(p, b, c0 + e, a[e], sh[e]);
    const int64_t nvec = rows * C / V;
    // Loads in batches ahead of the stores (y may alias x, so the compiler keeps each load after the stores
    // before it: one at a time would wait a full memory round trip each).
    constexpr int kBatch = 4;
    for (int64_t i = tid; i < nvec; i += kBatch * nthreads) {
      float v[kBatch][V];
#pragma unroll
      for (int q = 0; q < kBatch; ++q)
        if (i + q * nthreads < nvec) load_half<V>(xb + (i + q * nthreads) * V, v[q]);
#pragma unroll
      for (int q = 0; q < kBatch; ++q) {
        if (i + q * nthreads >= nvec) break;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          v[q][e] = fmaf(v[q][e], a[e], sh[e]);
          if constexpr (kSilu) v[q][e] = detail::silu(v[q][e]);
        }
        store_half<V>(yb + (i + q * nthreads) * V, v[q]);
      }
    }
  } else {
    float* s_a = smem;
    float* s_sh = smem + C;
    for (int64_t c = tid; c < C; c += nthreads) group_norm_affine(p, b, c, s_a[c], s_sh[c]);
    __syncthreads();
    const int64_t n = rows * C;
    for (int64_t i = tid; i < n; i += nthreads) {
      const int64_t c = i % C;
      float v = fmaf(__half2float(xb[i]), s_a[c], s_sh[c]);
      if constexpr (kSilu) v = detail::silu(v);
      yb[i] = __float2half_rn(v);
    }
  }
}

struct GnConfig {
  int vec = 1;
  int threads = 256;
  bool fixed = false;
};

GnConfig group_norm_config(const GroupNormArgs& a) {
  for (int v : {8, 4, 2, 1}) {
    if (a.channels % v != 0) continue;
    if (!aligned(a.x, 2 * v) || !aligned(a.y, 2 * v)) continue;
    const int64_t l = std::lcm<int64_t>(a.channels / v, 32);
    if (l > 1024) continue;
    GnConfig cfg;
    cfg.vec = v;
    cfg.threads = static_cast<int>(l * std::max<int64_t>(1, 512 / l));
    cfg.fixed = true;
    return cfg;
  }
  return GnConfig{};
}

template <int V, bool kFixed>
void run_group_norm(const GnParams& p, int threads, dim3 grid, size_t stats_smem, size_t apply_smem,
                    bool silu, cudaStream_t stream) {
  auto stats = group_norm_stats_kernel<V, kFixed>;
  if (stats_smem > 48 * 1024)
    check(cudaFuncSetAttribute(stats, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(stats_smem)),
          "cudaFuncSetAttribute(group_norm_stats)");
  stats<<<grid, threads, stats_smem, stream>>>(p);
  check_launch("group_norm_stats_kernel");
  auto apply = silu ? group_norm_apply_kernel<V, kFixed, true> : group_norm_apply_kernel<V, kFixed, false>;
  if (apply_smem > 48 * 1024)
    check(cudaFuncSetAttribute(apply, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(apply_smem)),
          "cudaFuncSetAttribute(group_norm_apply)");
  apply<<<grid, threads, apply_smem, stream>>>(p);
  check_launch("group_norm_apply_kernel");
}

// ---- GroupNorm, single pass (thread-block clusters) ----------------------------------------------------

// Cluster size and tile limit, from timings of the UNet's shapes replayed in a CUDA graph on an H100
// (bench_cuda --op-bench): a cluster's cost grows with its size (8-block clusters took ~8 µs more than
// 2-block ones on small shapes), so the smallest cluster of at least 2 blocks whose tiles fit 96 KiB wins;
// larger tiles (64×64×960) are faster on the two-pass kernels.
constexpr int64_t kClusterMinBlocks = 2;
constexpr int64_t kClusterMaxBlocks = 8;            // portable cluster size
constexpr size_t kClusterMaxTileBytes = 96 * 1024;  // rows of one block in shared memory

struct ClusterGnParams : GnTensors {
  int64_t spatial, channels;
  int cpg;    // channels per group
  int slice;  // channels per cluster (whole groups, multiple of 8)
  int rows;   // rows per block (the last block of a cluster may have fewer, or none)
  float eps;
};

// Shared memory: [rows · slice/8] uint4 tile, then [blockDim · 8] floats of per-thread sums, [parts · slice]
// floats of per-channel part sums, then 4 arrays of slice/cpg floats (block partials of both passes, the
// group means and rstds).
constexpr int kClusterMaxThreads = 512;

template <bool kSilu>
__global__ void __launch_bounds__(kClusterMaxThreads) group_norm_cluster_kernel(ClusterGnParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  extern __shared__ uint4 smem_u4[];
  const int nv = p.slice / 8;
  const int groups = p.slice / p.cpg;  // in this slice
  const int T = blockDim.x;
  const int tid = threadIdx.x;
  const int vc = tid % nv;  // fixed vector column: T is a multiple of nv
  const int row0 = tid / nv, row_step = T / nv;
  const int64_t K = cluster.num_blocks();
  const int64_t rank = cluster.block_rank();
  const int64_t slice_index = blockIdx.x / K;
  const int64_t b = blockIdx.y;
  const int64_t r0 = rank * p.rows;
  const int64_t rows_left = p.spatial - r0;
  const int rows = rows_left <= 0 ? 0 : static_cast<int>(rows_left < p.rows ? rows_left : p.rows);
  const int64_t c0 = slice_index * p.slice + vc * 8;  // this thread's first channel

  uint4* tile = smem_u4;
  const int parts = (row_step + 7) / 8;  // per channel: threads sharing a column, summed 8 at a time
  float* stage = reinterpret_cast<float*>(tile + static_cast<int64_t>(p.rows) * nv);  // [T, 2, 8]
  float* stage2 = stage + T * 16;                                                     // [2, parts, slice]
  float* part_sum = stage2 + 2 * parts * p.slice;  // [2, slice]: this block's Σd and Σd² per channel
  float* s_shift = part_sum + 2 * p.slice;         // [slice]
  float* s_mean = s_shift + p.slice;               // [groups]
  float* s_rstd = s_mean + groups;                 // [groups]

  float pb[8], shift[8];
  const __half* x0 = p.x + b * p.spatial * p.channels + c0;  // the batch item's first row
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    pb[e] = p.pre_bias ? __half2float(p.pre_bias[b * p.pre_bias_stride + c0 + e]) : 0.0f;
    // Shift K_c = channel c's first value (+ pre_bias), the same in every block: the sums of d = x + pre_bias
    // − K_c and d² below stay accurate however large |mean| is next to the spread.
    shift[e] = __half2float(x0[e]) + pb[e];
  }
  if (row0 == 0) {
#pragma unroll
    for (int e = 0; e < 8; ++e) s_shift[vc * 8 + e] = shift[e];
  }

  // Load the rows into shared memory; per-channel Σd and Σd².
  const __half* xb = p.x + (b * p.spatial + r0) * p.channels + c0;
  float s1[8] = {}, s2[8] = {};
  // kBatch loads are issued before their shared-memory stores: x is a generic pointer the compiler must
  // assume may alias the tile, so one load per store would wait a full memory round trip each.
  constexpr int kBatch = 4;
  for (int r = row0; r < rows; r += kBatch * row_step) {
    uint4 u[kBatch];
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
      const int rq = r + q * row_step;
      if (rq < rows) u[q] = *reinterpret_cast<const uint4*>(xb + static_cast<int64_t>(rq) * p.channels);
    }
#pragma unroll
    for (int q = 0; q < kBatch; ++q) {
      const int rq = r + q * row_step;
      if (rq >= rows) break;
      tile[rq * nv + vc] = u[q];
      float v[8];
      load_half<8>(reinterpret_cast<const __half*>(&u[q]), v);
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float d = v[e] + pb[e] - shift[e];
        s1[e] += d;
        s2[e] = fmaf(d, d, s2[e]);
      }
    }
  }

  // Block sums per channel in a fixed order: per-thread sums -> stage; (a) part j adds the threads of rows
  // j·8 .. j·8 + 7 of a channel's column (channel cs of the slice sits in stage[((cs / 8) + k·nv)] at cs %
  // 8); (b) the parts in order.
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    stage[tid * 16 + e] = s1[e];
    stage[tid * 16 + 8 + e] = s2[e];
  }
  __syncthreads();
  for (int i = tid; i < 2 * p.slice * parts; i += T) {
    const int cs = i % p.slice, part = (i / p.slice) % parts, which = i / (p.slice * parts);
    float sum = 0.0f;
    for (int k = part * 8; k < min(part * 8 + 8, row_step); ++k)
      sum += stage[((cs >> 3) + k * nv) * 16 + which * 8 + (cs & 7)];
    stage2[(which * parts + part) * p.slice + cs] = sum;
  }
  __syncthreads();
  for (int i = tid; i < 2 * p.slice; i += T) {
    const int cs = i % p.slice, which = i / p.slice;
    float sum = 0.0f;
    for (int part = 0; part < parts; ++part) sum += stage2[(which * parts + part) * p.slice + cs];
    part_sum[which * p.slice + cs] = sum;
  }

  // Cluster totals per channel (ranks added in order), then per group: with n rows, A_c = Σd, B_c = Σd²,
  // mean = Σ_c (n·K_c + A_c) / (n·cpg) and Σ(x − mean)² = Σ_c B_c + 2(K_c − mean)·A_c + n·(K_c − mean)².
  cluster.sync();
  for (int i = tid; i < 2 * p.slice; i += T) {
    float sum = 0.0f;
    for (int64_t k = 0; k < K; ++k) sum += cluster.map_shared_rank(part_sum, static_cast<unsigned>(k))[i];
    stage2[i] = sum;  // [2, slice] cluster totals (stage2 is free again)
  }
  cluster.barrier_arrive();  // done reading the other blocks' partials; wait only before leaving
  __syncthreads();
  const int lane = tid & 31, warp = tid >> 5, nwarps = T >> 5;
  const float n = static_cast<float>(p.spatial);
  for (int g = warp; g < groups; g += nwarps) {
    float total = 0.0f;
    for (int j = lane; j < p.cpg; j += 32) {
      const int c = g * p.cpg + j;
      total += n * s_shift[c] + stage2[c];
    }
    const float m = warp_sum(total) / (n * static_cast<float>(p.cpg));
    float m2 = 0.0f;
    for (int j = lane; j < p.cpg; j += 32) {
      const int c = g * p.cpg + j;
      const float dk = s_shift[c] - m;
      m2 += stage2[p.slice + c] + 2.0f * dk * stage2[c] + n * dk * dk;
    }
    m2 = warp_sum(m2);
    if (lane == 0) {
      s_mean[g] = m;
      s_rstd[g] = 1.0f / sqrtf(fmaxf(m2, 0.0f) / (n * static_cast<float>(p.cpg)) + p.eps);
    }
  }
  __syncthreads();
  float mean[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) mean[e] = s_mean[(vc * 8 + e) / p.cpg];

  // Normalise: y = x·a + offset with a = rstd·gamma, offset = beta + (pre_bias − mean)·a.
  float a[8], offset[8];
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const int64_t c = c0 + e;
    a[e] = s_rstd[(vc * 8 + e) / p.cpg] * (p.gamma ? p.gamma[c] : 1.0f);
    offset[e] = (p.beta ? p.beta[c] : 0.0f) + (pb[e] - mean[e]) * a[e];
  }
  __half* yb = p.y + (b * p.spatial + r0) * p.channels + c0;
#pragma unroll 4
  for (int r = row0; r < rows; r += row_step) {
    float v[8];
    load_half<8>(reinterpret_cast<const __half*>(&tile[r * nv + vc]), v);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      v[e] = fmaf(v[e], a[e], offset[e]);
      if constexpr (kSilu) v[e] = detail::silu(v[e]);
    }
    store_half<8>(yb + static_cast<int64_t>(r) * p.channels, v);
  }
  cluster.barrier_wait();  // no block leaves while another may still read its partials
#endif
}

struct ClusterGnPlan {
  int slice = 0, threads = 0, rows = 0;
  int64_t cluster = 0;
  size_t smem = 0;
};

bool device_has_clusters() {
  static const bool yes = [] {
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return yes;
}

// The cluster layout for a shape, or nothing when the single-pass kernel cannot take it.
std::optional<ClusterGnPlan> plan_cluster_group_norm(const GroupNormArgs& a) {
  if (!a.single_pass || !device_has_clusters()) return std::nullopt;
  if (a.channels % 8 != 0 || !aligned(a.x, 16) || !aligned(a.y, 16) || a.batch > 65535) return std::nullopt;
  const int64_t cpg = a.channels / a.groups;
  const int64_t slice = std::lcm<int64_t>(cpg, 8);
  if (a.channels % slice != 0 || slice > 1024) return std::nullopt;
  const int64_t nv = slice / 8;
  const int64_t threads =
      std::lcm<int64_t>(nv, 32) * std::max<int64_t>(1, kClusterMaxThreads / std::lcm<int64_t>(nv, 32));
  if (threads > kClusterMaxThreads) return std::nullopt;
  auto tile_bytes = [&](int64_t k) { return static_cast<size_t>(ceil_div(a.spatial, k) * slice * 2); };
  // SDRT_GN_CLUSTER=n caps the cluster size (a tuning knob: 1, 2, 4 or 8).
  static const int64_t max_blocks = [] {
    const char* v = std::getenv("SDRT_GN_CLUSTER");
    const int64_t n = v ? std::atoll(v) : kClusterMaxBlocks;
    return std::clamp<int64_t>(n, 1, kClusterMaxBlocks);
  }();
  int64_t k = std::min(kClusterMinBlocks, max_blocks);
  while (k < max_blocks && tile_bytes(k) > kClusterMaxTileBytes) k *= 2;
  if (tile_bytes(k) > kClusterMaxTileBytes) return std::nullopt;
  ClusterGnPlan plan;
  plan.slice = static_cast<int>(slice);
  plan.threads = static_cast<int>(threads);
  plan.cluster = k;
  plan.rows = static_cast<int>(ceil_div(a.spatial, k));
  const int64_t groups_in_slice = slice / cpg;
  const int64_t parts = (threads / nv + 7) / 8;
  plan.smem = tile_bytes(k) + sizeof(float) * static_cast<size_t>(threads * 16 + 2 * parts * slice +
                                                                  3 * slice + 2 * groups_in_slice);
  return plan;
}

cudaLaunchConfig_t cluster_launch_config(const GroupNormArgs& a, const ClusterGnPlan& plan,
                                         cudaStream_t stream, cudaLaunchAttribute* attribute) {
  cudaLaunchConfig_t config{};
  config.gridDim =
      dim3(static_cast<unsigned>(a.channels / plan.slice * plan.cluster), static_cast<unsigned>(a.batch));
  config.blockDim = dim3(static_cast<unsigned>(plan.threads));
  config.dynamicSmemBytes = plan.smem;
  config.stream = stream;
  attribute->id = cudaLaunchAttributeClusterDimension;
  attribute->val.clusterDim.x = static_cast<unsigned>(plan.cluster);
  attribute->val.clusterDim.y = 1;
  attribute->val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  return config;
}

auto cluster_kernel(bool silu) {
  return silu ? group_norm_cluster_kernel<true> : group_norm_cluster_kernel<false>;
}

// Whether the device can co-schedule such clusters. Asked once per (kernel, shared memory, block, cluster);
// the kernel's shared-memory limit only ever grows (a launch needs it at least as high as its own size).
bool cluster_group_norm_fits(const GroupNormArgs& a, const ClusterGnPlan& plan) {
  static std::mutex mutex;
  static std::map<std::tuple<bool, size_t, int, int64_t>, bool> fits;
  static size_t smem_limit[2] = {0, 0};  // per kernel (silu or not)
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(a.silu, plan.smem, plan.threads, plan.cluster);
  auto it = fits.find(key);
  if (it == fits.end()) {
    auto kernel = cluster_kernel(a.silu);
    size_t& limit = smem_limit[a.silu ? 1 : 0];
    bool ok = true;
    if (plan.smem > limit) {
      ok = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(plan.smem)) == cudaSuccess;
      if (ok) limit = plan.smem;
    }
    cudaLaunchAttribute attribute{};
    const cudaLaunchConfig_t config = cluster_launch_config(a, plan, nullptr, &attribute);
    int clusters = 0;
    ok = ok && cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) == cudaSuccess && clusters > 0;
    cudaGetLastError();
    it = fits.emplace(key, ok).first;
  }
  return it->second;
}

// Launches the single-pass kernel; false when the device cannot co-schedule such a cluster.
bool launch_cluster_group_norm(const GroupNormArgs& a, const ClusterGnPlan& plan, cudaStream_t stream) {
  if (!cluster_group_norm_fits(a, plan)) return false;
  cudaLaunchAttribute attribute{};
  const cudaLaunchConfig_t config = cluster_launch_config(a, plan, stream, &attribute);
  ClusterGnParams p{};
  static_cast<GnTensors&>(p) = gn_tensors(a);
  p.spatial = a.spatial;
  p.channels = a.channels;
  p.cpg = static_cast<int>(a.channels / a.groups);
  p.slice = plan.slice;
  p.rows = plan.rows;
  p.eps = a.eps;
  check(cudaLaunchKernelEx(&config, cluster_kernel(a.silu), p),
        "cudaLaunchKernelEx(group_norm_cluster_kernel)");
  return true;
}

// ---- LayerNorm -------------------------------------------------------------------------------------------

constexpr int kLnWarpsPerBlock = 8;

// One warp per row; lane l holds vectors l, l + 32, ... (kVecsPerLane of them at most).
template <int V, int kVecsPerLane>
__global__ void __launch_bounds__(kLnWarpsPerBlock * 32)
    layer_norm_warp_kernel(const __half* x, __half* y, const float* gamma, const float* beta, int64_t rows,
                           int dim, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kLnWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= rows) return;
  const __half* xr = x + row * dim;
  __half* yr = y + row * dim;
  const int nvec = dim / V;
  float v[kVecsPerLane][V];
  float sum = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecsPerLane; ++k) {
    const int idx = lane + 32 * k;
    if (idx < nvec) {
      load_half<V>(xr + idx * V, v[k]);
#pragma unroll
      for (int e = 0; e < V; ++e) sum += v[k][e];
    }
  }
  const float mean = warp_sum(sum) / static_cast<float>(dim);
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kVecsPerLane; ++k) {
    if (lane + 32 * k < nvec) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float d = v[k][e] - mean;
        sq = fmaf(d, d, sq);
      }
    }
  }
  const float rstd = rsqrtf(warp_sum(sq) / static_cast<float>(dim) + eps);
#pragma unroll
  for (int k = 0; k < kVecsPerLane; ++k) {
    const int idx = lane + 32 * k;
    if (idx < nvec) {
      float g[V], bt[V];
      if (gamma) {
        load_float<V>(gamma + idx * V, g);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) g[e] = 1.0f;
      }
      if (beta) {
        load_float<V>(beta + idx * V, bt);
      } else {
#pragma unroll
        for (int e = 0; e < V; ++e) bt[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < V; ++e) v[k][e] = fmaf((v[k][e] - mean) * rstd, g[e], bt[e]);
      store_half<V>(yr + idx * V, v[k]);
    }
  }
}

__device__ float block_sum(float v, float* s_red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // s_red may still be read from a previous call
  if (lane == 0) s_red[warp] = v;
  __syncthreads();
  float t = 0.0f;
  for (int w = 0; w < nwarps; ++w) t += s_red[w];
  return t;
}

// Fallback: one block per row, three passes over the row (it stays in L1/L2).
__global__ void __launch_bounds__(256) layer_norm_block_kernel(const __half* x, __half* y, const float* gamma,
                                                               const float* beta, int64_t dim, float eps) {
  __shared__ float s_red[32];
  const __half* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  __half* yr = y + static_cast<int64_t>(blockIdx.x) * dim;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += __half2float(xr[i]);
  const float mean = block_sum(sum, s_red) / static_cast<float>(dim);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float d = __half2float(xr[i]) - mean;
    sq = fmaf(d, d, sq);
  }
  const float rstd = rsqrtf(block_sum(sq, s_red) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float n = (__half2float(xr[i]) - mean) * rstd;
    yr[i] = __float2half_rn(fmaf(n, gamma ? gamma[i] : 1.0f, beta ? beta[i] : 0.0f));
  }
}

template <int V>
bool try_layer_norm_warp(const __half* x, __half* y, const float* gamma, const float* beta, int64_t rows,
                         int64_t dim, float eps, cudaStream_t stream) {
  if (dim % V != 0) return false;
  const int64_t per_lane = ceil_div(dim / V, 32);
  const dim3 grid(static_cast<unsigned>(ceil_div(rows, kLnWarpsPerBlock)));
  const dim3 block(kLnWarpsPerBlock * 32);
  const int d = static_cast<int>(dim);
  if (per_lane <= 1) {
    layer_norm_warp_kernel<V, 1><<<grid, block, 0, stream>>>(x, y, gamma, beta, rows, d, eps);
  } else if (per_lane <= 2) {
    layer_norm_warp_kernel<V, 2><<<grid, block, 0, stream>>>(x, y, gamma, beta, rows, d, eps);
  } else if (per_lane <= 4) {
    layer_norm_warp_kernel<V, 4><<<grid, block, 0, stream>>>(x, y, gamma, beta, rows, d, eps);
  } else if (per_lane <= 8) {
    layer_norm_warp_kernel<V, 8><<<grid, block, 0, stream>>>(x, y, gamma, beta, rows, d, eps);
  } else if (per_lane <= 16) {
    layer_norm_warp_kernel<V, 16><<<grid, block, 0, stream>>>(x, y, gamma, beta, rows, d, eps);
  } else {
    return false;
  }
  check_launch("layer_norm_warp_kernel");
  return true;
}

}  // namespace

size_t group_norm_scratch_bytes(int64_t batch, int64_t spatial, int64_t channels, int64_t groups) {
  const Chunking ch = group_norm_chunking(batch, spatial, channels, groups);
  return scratch_layout(batch, groups, ch.chunks).total;
}

bool group_norm_single_pass(const GroupNormArgs& a) {
  const auto plan = plan_cluster_group_norm(a);
  return plan && cluster_group_norm_fits(a, *plan);
}

void launch_group_norm(const GroupNormArgs& a, cudaStream_t stream) {
  if (a.groups <= 0 || a.channels <= 0 || a.channels % a.groups != 0)
    throw Error(ErrorKind::kInvalidArgument, "group_norm: channels must be a positive multiple of groups");
  if (a.batch <= 0 || a.spatial <= 0) return;
  if (!a.scratch) throw Error(ErrorKind::kInternal, "group_norm: no scratch memory");
  if (a.batch > 65535) throw Error(ErrorKind::kUnsupported, "group_norm: batch > 65535");
  if (const auto plan = plan_cluster_group_norm(a); plan && launch_cluster_group_norm(a, *plan, stream))
    return;

  const Chunking ch = group_norm_chunking(a.batch, a.spatial, a.channels, a.groups);
  const ScratchLayout layout = scratch_layout(a.batch, a.groups, ch.chunks);
  char* scratch = static_cast<char*>(a.scratch);
  const GnConfig cfg = group_norm_config(a);

  GnParams p{};
  static_cast<GnTensors&>(p) = gn_tensors(a);
  p.counters = reinterpret_cast<int*>(scratch + layout.counters);
  p.stats = reinterpret_cast<float2*>(scratch + layout.stats);
  p.partials = reinterpret_cast<float2*>(scratch + layout.partials);
  p.spatial = a.spatial;
  p.channels = a.channels;
  p.groups = a.groups;
  p.cpg = a.channels / a.groups;
  p.rows = ch.rows;
  p.eps = a.eps;

  const size_t stats_phase =
      sizeof(float) * static_cast<size_t>(3 * a.channels + (cfg.fixed ? cfg.threads * cfg.vec : 0));
  const size_t merge_phase = std::max<size_t>(
      sizeof(float2) * static_cast<size_t>(ch.chunks),
      std::min<size_t>(kMergeStageBytes, sizeof(float2) * static_cast<size_t>(ch.chunks * a.groups)));
  const size_t stats_smem = std::max(stats_phase, merge_phase);
  p.stage_floats2 = static_cast<int>(stats_smem / sizeof(float2));
  const size_t apply_smem = cfg.fixed ? 0 : sizeof(float) * static_cast<size_t>(2 * a.channels);

  const dim3 grid(static_cast<unsigned>(ch.chunks), static_cast<unsigned>(a.batch));
  if (!cfg.fixed) {
    run_group_norm<1, false>(p, cfg.threads, grid, stats_smem, apply_smem, a.silu, stream);
    return;
  }
  switch (cfg.vec) {
    case 8:
      run_group_norm<8, true>(p, cfg.threads, grid, stats_smem, apply_smem, a.silu, stream);
      break;
    case 4:
      run_group_norm<4, true>(p, cfg.threads, grid, stats_smem, apply_smem, a.silu, stream);
      break;
    case 2:
      run_group_norm<2, true>(p, cfg.threads, grid, stats_smem, apply_smem, a.silu, stream);
      break;
    default:
      run_group_norm<1, true>(p, cfg.threads, grid, stats_smem, apply_smem, a.silu, stream);
      break;
  }
}

void launch_layer_norm(const __half* x, __half* y, const float* gamma, const float* beta, int64_t rows,
                       int64_t dim, float eps, cudaStream_t stream) {
  if (rows <= 0 || dim <= 0) return;
  const bool params16 = (!gamma || aligned(gamma, 16)) && (!beta || aligned(beta, 16));
  const bool params8 = (!gamma || aligned(gamma, 8)) && (!beta || aligned(beta, 8));
  if (aligned(x, 16) && aligned(y, 16) && params16 &&
      try_layer_norm_warp<8>(x, y, gamma, beta, rows, dim, eps, stream))
    return;
  if (aligned(x, 4) && aligned(y, 4) && params8 &&
      try_layer_norm_warp<2>(x, y, gamma, beta, rows, dim, eps, stream))
    return;
  if (try_layer_norm_warp<1>(x, y, gamma, beta, rows, dim, eps, stream)) return;
  if (rows > 0x7fffffff) throw Error(ErrorKind::kUnsupported, "layer_norm: too many rows");
  layer_norm_block_kernel<<<static_cast<unsigned>(rows), 256, 0, stream>>>(x, y, gamma, beta, dim, eps);
  check_launch("layer_norm_block_kernel");
}

}  // namespace sdrt::cuda
