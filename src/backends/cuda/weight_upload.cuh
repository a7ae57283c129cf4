// Weight conversion kernels for loading: the stored bytes of a tensor arrive on the device as they are in the
// file (fp32, fp16 or bf16, torch layout) and are converted to the backend's types and layouts here, so the
// host only copies bytes (see weight_upload.h).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace sdrt::cuda {

// The stored element type of a weight (safetensors F32 / F16 / BF16).
enum class StoredType { kF32, kF16, kBF16 };

// dst[i] = fp16(src[i]) over n elements (round to nearest even, as the host conversion).
void launch_stored_to_f16(const void* src, StoredType type, __half* dst, int64_t n, cudaStream_t stream);
// dst[i] = fp32(src[i]) over n elements (exact).
void launch_stored_to_f32(const void* src, StoredType type, float* dst, int64_t n, cudaStream_t stream);
// A convolution weight from torch's [out, in, kh·kw] to the NHWC kernels' [out, kh·kw, in], as fp16.
void launch_conv_weight_to_ohwi_f16(const void* src, StoredType type, __half* dst, int64_t out, int64_t in,
                                    int64_t taps, cudaStream_t stream);

}  // namespace sdrt::cuda
