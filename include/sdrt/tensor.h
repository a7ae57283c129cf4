// sdrt::Tensor — a dense, row-major tensor with shared storage.
//
// Storage lives on the host for now; the Device tag leaves room for device memory in the CUDA backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sdrt {

enum class DType { kF32, kF16, kBF16 };
enum class Device { kHost, kCuda };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

using Shape = std::vector<int64_t>;
std::string shape_to_string(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;
  // Allocates zero-initialised host storage.
  Tensor(Shape shape, DType dtype);

  static Tensor zeros(Shape shape, DType dtype = DType::kF32) { return Tensor(std::move(shape), dtype); }
  static Tensor from_f32(Shape shape, std::span<const float> values);

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the back
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return Device::kHost; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  bool empty() const { return !storage_; }

  void* raw_data() { return storage_ ? storage_->data() : nullptr; }
  const void* raw_data() const { return storage_ ? storage_->data() : nullptr; }

  // Typed access; throws sdrt::Error when T does not match dtype().
  template <typename T>
  T* data();
  template <typename T>
  const T* data() const;

  // A view with a new shape over the same storage (numel must match).
  Tensor reshape(Shape shape) const;
  // A deep copy converted to another dtype.
  Tensor to(DType dtype) const;

 private:
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kF32;
  std::shared_ptr<std::vector<std::byte>> storage_;
};

}  // namespace sdrt
