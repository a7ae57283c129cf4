#include "backends/cuda/check.h"
#include "backends/cuda/weight_upload.cuh"

namespace sdrt::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float stored_to_float(const void* src, StoredType type, int64_t i) {
  switch (type) {
    case StoredType::kF32:
      return static_cast<const float*>(src)[i];
    case StoredType::kF16:
      return __half2float(static_cast<const __half*>(src)[i]);
    case StoredType::kBF16:  // bf16 is the top half of an fp32
      return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(src)[i]) << 16);
  }
  return 0.0f;
}

__global__ void stored_to_f16_kernel(const void* src, StoredType type, __half* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (type == StoredType::kF16)
      dst[i] = static_cast<const __half*>(src)[i];  // bit copy (keeps NaN payloads as the host does)
    else
      dst[i] = __float2half_rn(stored_to_float(src, type, i));
  }
}

__global__ void stored_to_f32_kernel(const void* src, StoredType type, float* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = stored_to_float(src, type, i);
}

// One thread per destination element [o, r, i]: the writes are coalesced, the reads stride by `taps`.
__global__ void conv_weight_to_ohwi_kernel(const void* src, StoredType type, __half* dst, int64_t out,
                                           int64_t in, int64_t taps) {
  const int64_t n = out * in * taps;
  for (int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; d < n;
       d += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = d % in;
    const int64_t r = (d / in) % taps;
    const int64_t o = d / (in * taps);
    const int64_t s = (o * in + i) * taps + r;
    dst[d] = type == StoredType::kF16 ? static_cast<const __half*>(src)[s]
                                      : __float2half_rn(stored_to_float(src, type, s));
  }
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

}  // namespace

void launch_stored_to_f16(const void* src, StoredType type, __half* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  stored_to_f16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, type, dst, n);
  check_launch("stored_to_f16_kernel");
}

void launch_stored_to_f32(const void* src, StoredType type, float* dst, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  stored_to_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, type, dst, n);
  check_launch("stored_to_f32_kernel");
}

void launch_conv_weight_to_ohwi_f16(const void* src, StoredType type, __half* dst, int64_t out, int64_t in,
                                    int64_t taps, cudaStream_t stream) {
  const int64_t n = out * in * taps;
  if (n <= 0) return;
  conv_weight_to_ohwi_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, type, dst, out, in, taps);
  check_launch("conv_weight_to_ohwi_kernel");
}

}  // namespace sdrt::cuda
