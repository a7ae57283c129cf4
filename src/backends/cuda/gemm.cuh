// Matrix products through cuBLASLt, fp16 in/out with fp32 accumulation, with the epilogues that fuse the
// work around torch.nn.Linear: bias, GELU, and a residual added in the same pass.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace sdrt::cuda {

class Context;

enum class GemmEpilogue { kNone, kGelu };  // kGelu: exact-erf GELU after the bias

struct LinearArgs {
  const __half* x;         // [rows, in], row stride x_stride (0 = in)
  const __half* weight;    // [out, in] (torch.nn.Linear layout)
  const __half* bias;      // [out] or null
  const __half* residual;  // [rows, out] added after the epilogue, or null; may alias y
  __half* y;               // [rows, out]
  int64_t rows, in, out;
  int64_t x_stride = 0;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
};
// y = act(x · weightᵀ + bias) + residual. Algorithms are chosen once per shape and cached; call once per
// shape before graph capture.
void linear(Context& ctx, const LinearArgs& args);

}  // namespace sdrt::cuda
