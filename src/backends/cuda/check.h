// Error checks for CUDA runtime, cuBLAS(Lt) and cuDNN calls: every call is checked and a failure becomes an
// sdrt::Error naming the call site's description, so the CLI prints one line instead of crashing.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <string>

#include "sdrt/error.h"

namespace sdrt::cuda {

[[noreturn]] void throw_cuda_error(const std::string& what, const std::string& detail);

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw_cuda_error(what, cudaGetErrorString(status));
}
inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw_cuda_error(what, cublasLtGetStatusString(status));
}
inline void check(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS) throw_cuda_error(what, cudnnGetErrorString(status));
}
// Checks the last kernel launch (launch-configuration errors; execution errors surface at the next sync).
inline void check_launch(const char* what) {
  check(cudaGetLastError(), what);
}

}  // namespace sdrt::cuda
