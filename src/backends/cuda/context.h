// The CUDA execution context: one device, one stream, the cuBLASLt and cuDNN handles bound to that stream,
// and a workspace shared by the libraries. Everything the CUDA backend launches goes on `stream`, so a whole
// UNet step can be captured into a CUDA graph.
#pragma once

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace sdrt::cuda {

// True when a CUDA device is present and usable (tests skip their CUDA cases otherwise).
bool device_available();
// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" or the reason no device is usable.
std::string device_description();

class WeightUploader;  // backends/cuda/weight_upload.h

// Owns one device allocation (cudaMalloc/cudaFree). Movable, not copyable.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return ptr_; }
  size_t size() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class Context {
 public:
  // Binds to device `device_index`; throws sdrt::Error when CUDA, cuBLASLt or cuDNN cannot start.
  explicit Context(int device_index = 0);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t cublas() const { return cublas_; }
  cudnnHandle_t cudnn() const { return cudnn_; }
  int sm_version() const { return sm_version_; }  // 90 for H100

  // Scratch memory for cuBLASLt / cuDNN (grown on request; never while a graph is being captured, so callers
  // ask for their largest size while planning).
  void* workspace(size_t bytes);
  size_t workspace_size() const { return workspace_.size(); }

  // Zero-filled scratch for kernels that keep it zeroed themselves (GroupNorm's partial statistics). Grown
  // outside graph capture only; one per stream, so such kernels must not run concurrently.
  void* zeroed_scratch(size_t bytes);

  void synchronize() const;

  // The staging ring that loads weights (created on first use; its pinned memory is returned by
  // finish_uploads once the models are loaded).
  WeightUploader& uploader();
  // Waits for every weight upload and frees the staging ring.
  void finish_uploads();

 private:
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t cublas_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  int sm_version_ = 0;
  DeviceBuffer workspace_;
  DeviceBuffer zeroed_scratch_;
  std::unique_ptr<WeightUploader> uploader_;
};

// Host <-> device copies on the context's stream (synchronous for the caller: they wait for the stream).
void upload(Context& ctx, void* device_dst, const void* host_src, size_t bytes);
void download(Context& ctx, void* host_dst, const void* device_src, size_t bytes);

}  // namespace sdrt::cuda
