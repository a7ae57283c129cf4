#include "backends/cuda/context.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "backends/cuda/attention.cuh"
#include "backends/cuda/check.h"
#include "backends/cuda/weight_upload.h"

namespace sdrt::cuda {

void throw_cuda_error(const std::string& what, const std::string& detail) {
  throw Error(ErrorKind::kInternal, fmt::format("CUDA: {} failed: {}", what, detail));
}

bool device_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" status
    return false;
  }
  return count > 0;
}

std::string device_description() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return fmt::format("no CUDA device ({})", cudaGetErrorString(status));
  }
  if (count == 0) return "no CUDA device";
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  return fmt::format("{} (sm_{}{}, {:.1f} GiB)", prop.name, prop.major, prop.minor,
                     static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes == 0) return;
  cudaError_t status = cudaMalloc(&ptr_, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw Error(ErrorKind::kInternal,
                fmt::format("CUDA: out of device memory allocating {:.1f} MiB ({})",
                            static_cast<double>(bytes) / (1024.0 * 1024.0), cudaGetErrorString(status)));
  }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);
}

Context::Context(int device_index) {
  if (!device_available()) throw Error(ErrorKind::kUnsupported, "CUDA: " + device_description());
  check(cudaSetDevice(device_index), "cudaSetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device_index), "cudaGetDeviceProperties");
  sm_version_ = prop.major * 10 + prop.minor;
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cublasLtCreate(&cublas_), "cublasLtCreate");
  check(cudnnCreate(&cudnn_), "cudnnCreate");
  check(cudnnSetStream(cudnn_, stream_), "cudnnSetStream");
  workspace_ = DeviceBuffer(32u << 20);  // cuBLASLt's recommended 32 MiB on Hopper
}

Context::~Context() {
  if (stream_) cudaStreamSynchronize(stream_);
  uploader_.reset();
  attention_release_plans(*this);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (cublas_) cublasLtDestroy(cublas_);
  workspace_ = DeviceBuffer();
  if (stream_) cudaStreamDestroy(stream_);
}

void* Context::workspace(size_t bytes) {
  if (bytes > workspace_.size()) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream_, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      throw Error(ErrorKind::kInternal, "CUDA: workspace grown during graph capture (plan shapes first)");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    workspace_ = DeviceBuffer(bytes);
  }
  return workspace_.data();
}

void* Context::zeroed_scratch(size_t bytes) {
  if (bytes > zeroed_scratch_.size()) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream_, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone)
      throw Error(ErrorKind::kInternal, "CUDA: scratch grown during graph capture (plan shapes first)");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    zeroed_scratch_ = DeviceBuffer(std::max(bytes, size_t{1} << 20));
    check(cudaMemset(zeroed_scratch_.data(), 0, zeroed_scratch_.size()), "cudaMemset");
  }
  return zeroed_scratch_.data();
}

WeightUploader& Context::uploader() {
  if (!uploader_) uploader_ = std::make_unique<WeightUploader>(*this);
  return *uploader_;
}

void Context::finish_uploads() {
  if (!uploader_) return;
  uploader_->wait();
  uploader_.reset();
}

void Context::synchronize() const {
  check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void upload(Context& ctx, void* device_dst, const void* host_src, size_t bytes) {
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, ctx.stream()), "upload");
  ctx.synchronize();
}

void download(Context& ctx, void* host_dst, const void* device_src, size_t bytes) {
  check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, ctx.stream()), "download");
  ctx.synchronize();
}

}  // namespace sdrt::cuda
