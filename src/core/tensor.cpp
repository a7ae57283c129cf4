#include "sdrt/tensor.h"

#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "core/half.h"
#include "sdrt/error.h"

namespace sdrt {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  return dtype == DType::kF32 ? 4 : 2;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorKind::kInternal, "negative dimension in shape " + shape_to_string(shape));
    n *= d;
  }
  return n;
}

Tensor::Tensor(Shape shape, DType dtype)
    : shape_(std::move(shape)),
      numel_(shape_numel(shape_)),
      dtype_(dtype),
      storage_(std::make_shared<std::vector<std::byte>>(nbytes())) {}

Tensor Tensor::from_f32(Shape shape, std::span<const float> values) {
  Tensor t(std::move(shape), DType::kF32);
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw Error(ErrorKind::kInternal,
                fmt::format("from_f32: {} values for shape {}", values.size(), shape_to_string(t.shape())));
  std::memcpy(t.raw_data(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  const int k = i < 0 ? i + r : i;
  if (k < 0 || k >= r)
    throw Error(ErrorKind::kInternal,
                fmt::format("dim {} out of range for shape {}", i, shape_to_string(shape_)));
  return shape_[static_cast<size_t>(k)];
}

namespace {
template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::kF32;
}
template <>
constexpr DType dtype_of<uint16_t>() {
  return DType::kF16;
}  // F16 or BF16 raw bits; checked by size below
}  // namespace

template <typename T>
T* Tensor::data() {
  return const_cast<T*>(std::as_const(*this).data<T>());
}

template <typename T>
const T* Tensor::data() const {
  const bool ok =
      sizeof(T) == dtype_size(dtype_) && (dtype_of<T>() == DType::kF32) == (dtype_ == DType::kF32);
  if (!ok)
    throw Error(ErrorKind::kInternal,
                fmt::format("typed access does not match tensor dtype {}", dtype_name(dtype_)));
  return static_cast<const T*>(raw_data());
}

template float* Tensor::data<float>();
template const float* Tensor::data<float>() const;
template uint16_t* Tensor::data<uint16_t>();
template const uint16_t* Tensor::data<uint16_t>() const;

Tensor Tensor::reshape(Shape shape) const {
  if (shape_numel(shape) != numel_)
    throw Error(ErrorKind::kInternal,
                fmt::format("cannot reshape {} to {}", shape_to_string(shape_), shape_to_string(shape)));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor out(shape_, dtype);
  if (dtype == dtype_) {
    if (nbytes()) std::memcpy(out.raw_data(), raw_data(), nbytes());
    return out;
  }
  // Go through f32: every supported dtype converts to and from it exactly or with correct rounding.
  std::vector<float> tmp(static_cast<size_t>(numel_));
  if (dtype_ == DType::kF32) {
    std::memcpy(tmp.data(), raw_data(), nbytes());
  } else {
    const auto* src = data<uint16_t>();
    for (int64_t i = 0; i < numel_; ++i)
      tmp[i] = dtype_ == DType::kF16 ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
  }
  if (dtype == DType::kF32) {
    std::memcpy(out.raw_data(), tmp.data(), out.nbytes());
  } else {
    auto* dst = out.data<uint16_t>();
    for (int64_t i = 0; i < numel_; ++i)
      dst[i] = dtype == DType::kF16 ? f32_to_f16(tmp[i]) : f32_to_bf16(tmp[i]);
  }
  return out;
}

}  // namespace sdrt
