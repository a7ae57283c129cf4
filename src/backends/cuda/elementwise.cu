// Elementwise and data-movement kernels on fp16 activations (fp32 math).
//
// All of these are memory-bound, so the only things that matter are wide accesses and enough bytes in
// flight: every kernel picks the widest vector V ∈ {8, 2, 1} halves (16 / 4 / 2 bytes) that the pointers'
// alignment and the innermost dimension allow, and walks the tensor with a grid-stride loop over vectors
// (256 threads a block, up to 64 blocks per SM's worth of work before striding). Flat maps (add, SiLU, GELU,
// fp32<->fp16) handle the n % V tail in the same launch. Transcendentals use the fast exp / divide
// intrinsics where the result is rounded to fp16 anyway (SiLU, quick GELU) and erff for the exact GELU.
// Layout conversions between NCHW fp32 (the engine boundary) and NHWC fp16 go through a 32×32 shared-memory
// tile so that both the read and the write are coalesced (reading along spatial, writing along channels).
// Upsampling reads each input vector once and writes its four copies. Counting non-finite values reduces per
// warp and issues one atomicAdd per warp that saw any.
#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "backends/cuda/check.h"
#include "backends/cuda/elementwise.cuh"
#include "backends/cuda/vec.cuh"
#include "sdrt/error.h"

namespace sdrt::cuda {

using detail::aligned;
using detail::ceil_div;
using detail::load_float;
using detail::load_half;
using detail::store_float;
using detail::store_half;

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 132 * 64;  // beyond this the grid-stride loop takes over

dim3 grid_for(int64_t work_items) {
  return dim3(static_cast<unsigned>(
      std::min<int64_t>(std::max<int64_t>(ceil_div(work_items, kThreads), 1), kMaxBlocks)));
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---- flat maps
// ----------------------------------------------------------------------------------------------

struct SiluOp {
  __device__ float operator()(float v) const { return detail::silu(v); }
};
struct GeluOp {
  __device__ float operator()(float v) const { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }
};
struct QuickGeluOp {
  __device__ float operator()(float v) const { return __fdividef(v, 1.0f + __expf(-1.702f * v)); }
};

// y[i] = op(x[i]) for i < n (y may alias x).
template <int V, typename Op>
__global__ void map_kernel(const __half* x, __half* y, int64_t n, Op op) {
  const int64_t nvec = n / V;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    float v[V];
    load_half<V>(x + i * V, v);
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] = op(v[e]);
    store_half<V>(y + i * V, v);
  }
  const int64_t t = nvec * V + global_thread();
  if (t < n) y[t] = __float2half_rn(op(__half2float(x[t])));
}

template <int V>
__global__ void add_kernel(const __half* a, const __half* b, __half* y, int64_t n) {
  const int64_t nvec = n / V;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    float va[V], vb[V];
    load_half<V>(a + i * V, va);
    load_half<V>(b + i * V, vb);
#pragma unroll
    for (int e = 0; e < V; ++e) va[e] += vb[e];
    store_half<V>(y + i * V, va);
  }
  const int64_t t = nvec * V + global_thread();
  if (t < n) y[t] = __float2half_rn(__half2float(a[t]) + __half2float(b[t]));
}

template <int V>
__global__ void f32_to_f16_kernel(const float* x, __half* y, int64_t n) {
  const int64_t nvec = n / V;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    float v[V];
    load_float<V>(x + i * V, v);
    store_half<V>(y + i * V, v);
  }
  const int64_t t = nvec * V + global_thread();
  if (t < n) y[t] = __float2half_rn(x[t]);
}

template <int V>
__global__ void f16_to_f32_kernel(const __half* x, float* y, int64_t n) {
  const int64_t nvec = n / V;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    float v[V];
    load_half<V>(x + i * V, v);
    store_float<V>(y + i * V, v);
  }
  const int64_t t = nvec * V + global_thread();
  if (t < n) y[t] = __half2float(x[t]);
}

// Widest V ∈ {8, 2, 1} for which every pointer is aligned to V halves.
int vec_for(std::initializer_list<const void*> ptrs, int64_t inner = 0) {
  bool a16 = true, a4 = true;
  for (const void* p : ptrs) {
    a16 = a16 && aligned(p, 16);
    a4 = a4 && aligned(p, 4);
  }
  if (a16 && inner % 8 == 0) return 8;
  if (a4 && inner % 2 == 0) return 2;
  return 1;
}

template <typename Op>
void launch_map(const __half* x, __half* y, int64_t n, Op op, const char* name, cudaStream_t stream) {
  if (n <= 0) return;
  const int v = vec_for({x, y});
  const dim3 grid = grid_for(std::max<int64_t>(n / v, n % v));
  if (v == 8) {
    map_kernel<8><<<grid, kThreads, 0, stream>>>(x, y, n, op);
  } else if (v == 2) {
    map_kernel<2><<<grid, kThreads, 0, stream>>>(x, y, n, op);
  } else {
    map_kernel<1><<<grid, kThreads, 0, stream>>>(x, y, n, op);
  }
  check_launch(name);
}

// ---- GEGLU
// ------------------------------------------------------------------------------------------------------

template <int V>
__global__ void geglu_kernel(const __half* x, __half* y, int64_t rows, int64_t inner) {
  const int64_t ivec = inner / V;
  const int64_t nvec = rows * ivec;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    const int64_t r = i / ivec;
    const int64_t c = (i - r * ivec) * V;
    const __half* h = x + r * 2 * inner + c;
    float vh[V], vg[V];
    load_half<V>(h, vh);
    load_half<V>(h + inner, vg);
#pragma unroll
    for (int e = 0; e < V; ++e) vh[e] *= GeluOp{}(vg[e]);
    store_half<V>(y + i * V, vh);
  }
}

// ---- layout
// ---------------------------------------------------------------------------------------------------

template <int V>
__global__ void upsample2x_kernel(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w,
                                  int64_t channels) {
  const int64_t cvec = channels / V;
  const int64_t nvec = batch * h * w * cvec;
  const int64_t ow = 2 * w;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    int64_t p = i / cvec;
    const int64_t c = (i - p * cvec) * V;
    const int64_t ix = p % w;
    p /= w;
    const int64_t iy = p % h;
    const int64_t b = p / h;
    float v[V];
    load_half<V>(x + i * V, v);
    __half* o = y + ((b * 2 * h + 2 * iy) * ow + 2 * ix) * channels + c;
    store_half<V>(o, v);
    store_half<V>(o + channels, v);
    store_half<V>(o + ow * channels, v);
    store_half<V>(o + ow * channels + channels, v);
  }
}

// General nearest resize: one thread per output vector.
template <int V>
__global__ void upsample_nearest_kernel(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w,
                                        int64_t out_h, int64_t out_w, int64_t channels, float scale_h,
                                        float scale_w) {
  const int64_t cvec = channels / V;
  const int64_t nvec = batch * out_h * out_w * cvec;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    int64_t p = i / cvec;
    const int64_t c = (i - p * cvec) * V;
    const int64_t ox = p % out_w;
    p /= out_w;
    const int64_t oy = p % out_h;
    const int64_t b = p / out_h;
    // Same float operations as the CPU reference / torch: floor(dst · (in / out)), clamped.
    const int64_t sy = min(static_cast<int64_t>(floorf(static_cast<float>(oy) * scale_h)), h - 1);
    const int64_t sx = min(static_cast<int64_t>(floorf(static_cast<float>(ox) * scale_w)), w - 1);
    float v[V];
    load_half<V>(x + ((b * h + sy) * w + sx) * channels + c, v);
    store_half<V>(y + i * V, v);
  }
}

template <int V>
__global__ void concat_kernel(const __half* a, const __half* b, __half* y, int64_t rows, int64_t ca,
                              int64_t cb) {
  const int64_t ct = ca + cb;
  const int64_t tvec = ct / V;
  const int64_t nvec = rows * tvec;
  for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
    const int64_t r = i / tvec;
    const int64_t c = (i - r * tvec) * V;
    const __half* src = c < ca ? a + r * ca + c : b + r * cb + (c - ca);
    float v[V];
    load_half<V>(src, v);
    store_half<V>(y + i * V, v);
  }
}

constexpr int kTile = 32;
constexpr int kTileRows = 8;  // block (32, 8): each thread moves 4 values of the 32×32 tile

// x [batch, channels, spatial] fp32 -> y [batch, spatial, channels] fp16, scaled.
__global__ void nchw_f32_to_nhwc_f16_kernel(const float* x, __half* y, int64_t channels, int64_t spatial,
                                            float scale) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t b = blockIdx.z;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * kTile, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const float* xb = x + b * channels * spatial;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t c = c0 + r, s = s0 + threadIdx.x;
    if (c < channels && s < spatial) tile[r][threadIdx.x] = xb[c * spatial + s];
  }
  __syncthreads();
  __half* yb = y + b * spatial * channels;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t s = s0 + r, c = c0 + threadIdx.x;
    if (c < channels && s < spatial) yb[s * channels + c] = __float2half_rn(tile[threadIdx.x][r] * scale);
  }
}

// x [batch, spatial, channels] fp16 -> y [batch, channels, spatial] fp32. With `guidance`, x holds 2·batch
// entries [uncond | cond] and y = uncond + scale·(cond − uncond).
template <bool kGuidance>
__global__ void nhwc_f16_to_nchw_f32_kernel(const __half* x, float* y, int64_t batch, int64_t channels,
                                            int64_t spatial, float scale) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t b = blockIdx.z;
  const int64_t s0 = static_cast<int64_t>(blockIdx.x) * kTile, c0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t plane = spatial * channels;
  const __half* xb = x + b * plane;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t s = s0 + r, c = c0 + threadIdx.x;
    if (c < channels && s < spatial) {
      float v = __half2float(xb[s * channels + c]);
      if constexpr (kGuidance) {
        const float cond = __half2float(xb[batch * plane + s * channels + c]);
        v = __fadd_rn(v, __fmul_rn(scale, __fsub_rn(cond, v)));  // no FMA contraction: same bits as torch
      }
      tile[r][threadIdx.x] = v;
    }
  }
  __syncthreads();
  float* yb = y + b * plane;
  for (int r = threadIdx.y; r < kTile; r += kTileRows) {
    const int64_t c = c0 + r, s = s0 + threadIdx.x;
    if (c < channels && s < spatial) yb[c * spatial + s] = tile[threadIdx.x][r];
  }
}

dim3 tile_grid(int64_t batch, int64_t channels, int64_t spatial) {
  if (batch > 65535 || ceil_div(channels, kTile) > 65535 || ceil_div(spatial, kTile) > 0x7fffffff)
    throw Error(ErrorKind::kUnsupported, "layout conversion: tensor too large");
  return dim3(static_cast<unsigned>(ceil_div(spatial, kTile)),
              static_cast<unsigned>(ceil_div(channels, kTile)), static_cast<unsigned>(batch));
}

// ---- timestep embedding
// --------------------------------------------------------------------------------------

__global__ void timestep_embedding_kernel(const float* timestep, __half* y, int64_t batch, int64_t dim,
                                          bool flip, float log_max_period, float denom) {
  const int64_t half = dim / 2;
  const float t = *timestep;
  for (int64_t i = global_thread(); i < batch * half; i += grid_threads()) {
    const int64_t b = i / half, j = i - b * half;
    // Same float operations, in the same order, as the CPU reference (models::timestep_embedding).
    const float exponent = (-log_max_period * static_cast<float>(j)) / denom;
    const float arg = t * expf(exponent);
    const float s = sinf(arg), c = cosf(arg);
    __half* yb = y + b * dim;
    yb[j] = __float2half_rn(flip ? c : s);
    yb[half + j] = __float2half_rn(flip ? s : c);
    if (j == 0 && dim % 2 == 1) yb[dim - 1] = __float2half_rn(0.0f);  // diffusers zero-pads odd dims
  }
}

// ---- non-finite count
// ---------------------------------------------------------------------------------------

__device__ __forceinline__ bool nonfinite_bits(uint16_t h) {
  return (h & 0x7c00u) == 0x7c00u;
}
__device__ __forceinline__ bool nonfinite_bits(uint32_t f) {
  return (f & 0x7f800000u) == 0x7f800000u;
}

__device__ __forceinline__ void add_count(int local, int* count) {
  local = __reduce_add_sync(0xffffffffu, local);
  if ((threadIdx.x & 31) == 0 && local > 0) atomicAdd(count, local);
}

// kVec16: x is 16-byte aligned and read as uint4 (8 halves or 4 floats).
template <typename Bits, bool kVec16>
__global__ void count_nonfinite_kernel(const void* x, int64_t n, int* count) {
  const Bits* bits = static_cast<const Bits*>(x);
  constexpr int kPer16 = 16 / sizeof(Bits);
  int local = 0;
  int64_t done = 0;
  if constexpr (kVec16) {
    const int64_t nvec = n / kPer16;
    const uint4* v = static_cast<const uint4*>(x);
    for (int64_t i = global_thread(); i < nvec; i += grid_threads()) {
      const uint4 u = v[i];
      const Bits* e = reinterpret_cast<const Bits*>(&u);
#pragma unroll
      for (int k = 0; k < kPer16; ++k) local += nonfinite_bits(e[k]) ? 1 : 0;
    }
    done = nvec * kPer16;
  }
  for (int64_t i = done + global_thread(); i < n; i += grid_threads())
    local += nonfinite_bits(bits[i]) ? 1 : 0;
  add_count(local, count);  // every thread of the block reaches this: no early returns above
}

template <typename Bits>
void launch_count_nonfinite(const void* x, int64_t n, int* count, cudaStream_t stream) {
  if (n <= 0) return;
  constexpr int kPer16 = 16 / sizeof(Bits);
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(ceil_div(n, kPer16), kThreads), 132 * 8)));
  if (aligned(x, 16)) {
    count_nonfinite_kernel<Bits, true><<<grid, kThreads, 0, stream>>>(x, n, count);
  } else {
    count_nonfinite_kernel<Bits, false><<<grid, kThreads, 0, stream>>>(x, n, count);
  }
  check_launch("count_nonfinite_kernel");
}

}  // namespace

void launch_add(const __half* a, const __half* b, __half* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int v = vec_for({a, b, y});
  const dim3 grid = grid_for(std::max<int64_t>(n / v, n % v));
  if (v == 8) {
    add_kernel<8><<<grid, kThreads, 0, stream>>>(a, b, y, n);
  } else if (v == 2) {
    add_kernel<2><<<grid, kThreads, 0, stream>>>(a, b, y, n);
  } else {
    add_kernel<1><<<grid, kThreads, 0, stream>>>(a, b, y, n);
  }
  check_launch("add_kernel");
}

void launch_silu(__half* x, int64_t n, cudaStream_t stream) {
  launch_map(x, x, n, SiluOp{}, "silu_kernel", stream);
}

void launch_gelu(__half* x, int64_t n, bool quick, cudaStream_t stream) {
  if (quick) {
    launch_map(x, x, n, QuickGeluOp{}, "quick_gelu_kernel", stream);
  } else {
    launch_map(x, x, n, GeluOp{}, "gelu_kernel", stream);
  }
}

void launch_geglu(const __half* x, __half* y, int64_t rows, int64_t inner, cudaStream_t stream) {
  if (rows <= 0 || inner <= 0) return;
  const int v = vec_for({x, y}, inner);
  const dim3 grid = grid_for(rows * inner / v);
  if (v == 8) {
    geglu_kernel<8><<<grid, kThreads, 0, stream>>>(x, y, rows, inner);
  } else if (v == 2) {
    geglu_kernel<2><<<grid, kThreads, 0, stream>>>(x, y, rows, inner);
  } else {
    geglu_kernel<1><<<grid, kThreads, 0, stream>>>(x, y, rows, inner);
  }
  check_launch("geglu_kernel");
}

void launch_upsample_nearest2x(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w,
                               int64_t channels, cudaStream_t stream) {
  if (batch <= 0 || h <= 0 || w <= 0 || channels <= 0) return;
  const int v = vec_for({x, y}, channels);
  const dim3 grid = grid_for(batch * h * w * channels / v);
  if (v == 8) {
    upsample2x_kernel<8><<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, channels);
  } else if (v == 2) {
    upsample2x_kernel<2><<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, channels);
  } else {
    upsample2x_kernel<1><<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, channels);
  }
  check_launch("upsample_nearest2x_kernel");
}

void launch_upsample_nearest(const __half* x, __half* y, int64_t batch, int64_t h, int64_t w, int64_t out_h,
                             int64_t out_w, int64_t channels, cudaStream_t stream) {
  if (batch <= 0 || h <= 0 || w <= 0 || out_h <= 0 || out_w <= 0 || channels <= 0) return;
  if (out_h == 2 * h && out_w == 2 * w) {  // floor(j · 0.5) = j / 2 exactly: the read-once ×2 kernel
    launch_upsample_nearest2x(x, y, batch, h, w, channels, stream);
    return;
  }
  const float scale_h = static_cast<float>(h) / static_cast<float>(out_h);
  const float scale_w = static_cast<float>(w) / static_cast<float>(out_w);
  const int v = vec_for({x, y}, channels);
  const dim3 grid = grid_for(batch * out_h * out_w * channels / v);
  if (v == 8) {
    upsample_nearest_kernel<8>
        <<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, out_h, out_w, channels, scale_h, scale_w);
  } else if (v == 2) {
    upsample_nearest_kernel<2>
        <<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, out_h, out_w, channels, scale_h, scale_w);
  } else {
    upsample_nearest_kernel<1>
        <<<grid, kThreads, 0, stream>>>(x, y, batch, h, w, out_h, out_w, channels, scale_h, scale_w);
  }
  check_launch("upsample_nearest_kernel");
}

void launch_concat_channels(const __half* a, const __half* b, __half* y, int64_t rows, int64_t ca, int64_t cb,
                            cudaStream_t stream) {
  if (rows <= 0 || ca + cb <= 0) return;
  // V must divide both widths so that no vector straddles the a|b boundary.
  const int v = vec_for({a, b, y}, ca % 8 == 0 && cb % 8 == 0 ? 8 : (ca % 2 == 0 && cb % 2 == 0 ? 2 : 1));
  const dim3 grid = grid_for(rows * (ca + cb) / v);
  if (v == 8) {
    concat_kernel<8><<<grid, kThreads, 0, stream>>>(a, b, y, rows, ca, cb);
  } else if (v == 2) {
    concat_kernel<2><<<grid, kThreads, 0, stream>>>(a, b, y, rows, ca, cb);
  } else {
    concat_kernel<1><<<grid, kThreads, 0, stream>>>(a, b, y, rows, ca, cb);
  }
  check_launch("concat_channels_kernel");
}

void launch_timestep_embedding(const float* timestep, __half* y, int64_t batch, int64_t dim,
                               bool flip_sin_to_cos, float freq_shift, cudaStream_t stream) {
  if (batch <= 0 || dim <= 0) return;
  const int64_t half = dim / 2;
  if (half == 0) {  // dim 1: only the zero padding
    check(cudaMemsetAsync(y, 0, static_cast<size_t>(batch * dim) * sizeof(__half), stream),
          "timestep_embedding memset");
    return;
  }
  const float log_max_period = static_cast<float>(std::log(10000.0));
  const float denom = static_cast<float>(static_cast<double>(half) - static_cast<double>(freq_shift));
  timestep_embedding_kernel<<<grid_for(batch * half), kThreads, 0, stream>>>(
      timestep, y, batch, dim, flip_sin_to_cos, log_max_period, denom);
  check_launch("timestep_embedding_kernel");
}

void launch_nchw_f32_to_nhwc_f16(const float* x, __half* y, int64_t batch, int64_t channels, int64_t spatial,
                                 float scale, cudaStream_t stream) {
  if (batch <= 0 || channels <= 0 || spatial <= 0) return;
  nchw_f32_to_nhwc_f16_kernel<<<tile_grid(batch, channels, spatial), dim3(kTile, kTileRows), 0, stream>>>(
      x, y, channels, spatial, scale);
  check_launch("nchw_f32_to_nhwc_f16_kernel");
}

void launch_nhwc_f16_to_nchw_f32(const __half* x, float* y, int64_t batch, int64_t channels, int64_t spatial,
                                 cudaStream_t stream) {
  if (batch <= 0 || channels <= 0 || spatial <= 0) return;
  nhwc_f16_to_nchw_f32_kernel<false>
      <<<tile_grid(batch, channels, spatial), dim3(kTile, kTileRows), 0, stream>>>(x, y, batch, channels,
                                                                                   spatial, 1.0f);
  check_launch("nhwc_f16_to_nchw_f32_kernel");
}

void launch_guidance_combine(const __half* eps, float* out, int64_t batch, int64_t channels, int64_t spatial,
                             float scale, cudaStream_t stream) {
  if (batch <= 0 || channels <= 0 || spatial <= 0) return;
  nhwc_f16_to_nchw_f32_kernel<true>
      <<<tile_grid(batch, channels, spatial), dim3(kTile, kTileRows), 0, stream>>>(eps, out, batch, channels,
                                                                                   spatial, scale);
  check_launch("guidance_combine_kernel");
}

void launch_f32_to_f16(const float* x, __half* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int v = vec_for({x, y});  // fp32 side: 8 floats = two 16-byte loads, 2 floats = one 8-byte load
  const bool x8 = aligned(x, 8);
  const dim3 grid = grid_for(std::max<int64_t>(n / v, n % v));
  if (v == 8) {
    f32_to_f16_kernel<8><<<grid, kThreads, 0, stream>>>(x, y, n);
  } else if (v == 2 && x8) {
    f32_to_f16_kernel<2><<<grid, kThreads, 0, stream>>>(x, y, n);
  } else {
    f32_to_f16_kernel<1><<<grid_for(n), kThreads, 0, stream>>>(x, y, n);
  }
  check_launch("f32_to_f16_kernel");
}

void launch_f16_to_f32(const __half* x, float* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const int v = vec_for({x, y});
  const bool y8 = aligned(y, 8);
  const dim3 grid = grid_for(std::max<int64_t>(n / v, n % v));
  if (v == 8) {
    f16_to_f32_kernel<8><<<grid, kThreads, 0, stream>>>(x, y, n);
  } else if (v == 2 && y8) {
    f16_to_f32_kernel<2><<<grid, kThreads, 0, stream>>>(x, y, n);
  } else {
    f16_to_f32_kernel<1><<<grid_for(n), kThreads, 0, stream>>>(x, y, n);
  }
  check_launch("f16_to_f32_kernel");
}

void launch_count_nonfinite_f16(const __half* x, int64_t n, int* count, cudaStream_t stream) {
  launch_count_nonfinite<uint16_t>(x, n, count, stream);
}

void launch_count_nonfinite_f32(const float* x, int64_t n, int* count, cudaStream_t stream) {
  launch_count_nonfinite<uint32_t>(x, n, count, stream);
}

}  // namespace sdrt::cuda
