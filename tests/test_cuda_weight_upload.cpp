// The GPU weight loader (backends/cuda/weight_upload.h) against the host loader: every stored dtype (F32,
// F16, BF16) converted on the device must equal WeightStore::load's host conversion bit for bit, convolution
// weights must come out in [out, k, k, in] order, and tensors larger than one staging slot (chunked, and the
// whole-tensor path for big convolution weights) must arrive intact. Skips without a CUDA device.
#if SDRT_HAVE_CUDA

#include <cuda_fp16.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cuda/weight_upload.h"
#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "sdrt/tensor.h"

namespace sdrt {
namespace {

namespace tc = sdrt::testing::cuda;
using sdrt::cuda::DeviceBuffer;
using sdrt::cuda::StoredType;
using sdrt::cuda::WeightUploader;

Tensor random_tensor(const Shape& shape, DType dtype, uint32_t seed) {
  Tensor f(shape, DType::kF32);
  const auto v = tc::random_normal(static_cast<size_t>(f.numel()), seed, 3.0f);
  std::memcpy(f.raw_data(), v.data(), v.size() * sizeof(float));
  return f.to(dtype);
}

WeightUploader::Source source_of(const io::WeightStore& store, const std::string& name) {
  const auto b = store.bytes(name);
  const StoredType type = b.dtype == DType::kF16    ? StoredType::kF16
                          : b.dtype == DType::kBF16 ? StoredType::kBF16
                                                    : StoredType::kF32;
  return {b.data, type, b.numel};
}

std::vector<uint16_t> download_u16(const DeviceBuffer& d, int64_t n) {
  std::vector<uint16_t> h(static_cast<size_t>(n));
  sdrt::cuda::download(tc::context(), h.data(), d.data(), h.size() * sizeof(uint16_t));
  return h;
}

struct Case {
  std::string name;
  Shape shape;
  DType stored;
};

TEST(CudaWeightUpload, ConvertsEveryStoredTypeLikeTheHost) {
  SDRT_REQUIRE_CUDA();
  // Small, odd-sized, and one above a 64 MiB staging slot in every source type (several chunks).
  const std::vector<Case> cases = {
      {"f32_small", {7, 3}, DType::kF32},          {"f16_small", {5}, DType::kF16},
      {"bf16_small", {33, 17}, DType::kBF16},      {"f32_chunked", {17, 1 << 20}, DType::kF32},
      {"f16_chunked", {33, 1 << 20}, DType::kF16}, {"bf16_chunked", {35, 1 << 20}, DType::kBF16},
  };
  std::map<std::string, Tensor> tensors;
  uint32_t seed = 1;
  for (const auto& c : cases) tensors.emplace(c.name, random_tensor(c.shape, c.stored, seed++));
  const auto store = io::WeightStore::from_tensors(tensors, "upload-test");

  WeightUploader uploader(tc::context());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t n = shape_numel(c.shape);
    DeviceBuffer f16(static_cast<size_t>(n) * 2), f32(static_cast<size_t>(n) * 4);
    uploader.to_f16(source_of(store, c.name), f16.as<__half>());
    uploader.to_f32(source_of(store, c.name), f32.as<float>());
    uploader.wait();
    const Tensor want16 = store.load(c.name, DType::kF16), want32 = store.load(c.name, DType::kF32);
    const auto got16 = download_u16(f16, n);
    EXPECT_EQ(std::memcmp(got16.data(), want16.raw_data(), want16.nbytes()), 0);
    std::vector<float> got32(static_cast<size_t>(n));
    sdrt::cuda::download(tc::context(), got32.data(), f32.data(), got32.size() * sizeof(float));
    EXPECT_EQ(std::memcmp(got32.data(), want32.raw_data(), want32.nbytes()), 0);
  }
}

TEST(CudaWeightUpload, PermutesConvolutionWeightsToOhwi) {
  SDRT_REQUIRE_CUDA();
  // [out, in, k, k]: a 3×3 and a 1×1 of SD shapes, an odd one, and an fp32 weight above one slot (the
  // whole-tensor path: 1280 × 1600 × 9 × 4 bytes = 74 MB).
  const std::vector<Case> cases = {
      {"conv3_f16", {320, 4, 3, 3}, DType::kF16},
      {"conv1_bf16", {64, 96, 1, 1}, DType::kBF16},
      {"conv3_odd_f32", {5, 3, 3, 3}, DType::kF32},
      {"conv3_big_f32", {1280, 1600, 3, 3}, DType::kF32},
  };
  std::map<std::string, Tensor> tensors;
  uint32_t seed = 11;
  for (const auto& c : cases) tensors.emplace(c.name, random_tensor(c.shape, c.stored, seed++));
  const auto store = io::WeightStore::from_tensors(tensors, "upload-test");

  WeightUploader uploader(tc::context());
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t out = c.shape[0], in = c.shape[1], taps = c.shape[2] * c.shape[3];
    DeviceBuffer d(static_cast<size_t>(out * in * taps) * 2);
    uploader.conv_to_ohwi_f16(source_of(store, c.name), out, in, taps, d.as<__half>());
    uploader.wait();
    const auto got = download_u16(d, out * in * taps);
    const Tensor host = store.load(c.name, DType::kF16);  // [out, in, taps]
    const auto* src = static_cast<const uint16_t*>(host.raw_data());
    int64_t mismatches = 0;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t r = 0; r < taps; ++r)
        for (int64_t i = 0; i < in; ++i)
          mismatches += got[static_cast<size_t>((o * taps + r) * in + i)] != src[(o * in + i) * taps + r];
    EXPECT_EQ(mismatches, 0);
  }
}

}  // namespace
}  // namespace sdrt

#endif  // SDRT_HAVE_CUDA
