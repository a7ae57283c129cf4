#include "backends/cuda/weight_upload.h"

#include <algorithm>
#include <cstring>

#include "backends/cuda/check.h"

namespace sdrt::cuda {
namespace {

// 3 × 64 MiB: every SD 1.x / 2.x fp16 convolution weight fits one slot (the largest, 1280 × 2560 × 3 × 3, is
// 59 MB), and three slots keep the host copy, the DMA and the conversion of consecutive chunks overlapped.
constexpr size_t kSlotBytes = size_t{64} << 20;
constexpr int kSlots = 3;
constexpr size_t kCopyPiece = size_t{1} << 20;  // per-thread unit of the host copy

size_t stored_size(StoredType type) {
  return type == StoredType::kF32 ? 4 : 2;
}

}  // namespace

WeightUploader::WeightUploader(Context& ctx) : ctx_(ctx), slots_(kSlots) {}

WeightUploader::~WeightUploader() {
  for (Slot& s : slots_) {
    if (s.done) {
      cudaEventSynchronize(s.done);
      cudaEventDestroy(s.done);
    }
    if (s.host) cudaFreeHost(s.host);
  }
}

WeightUploader::Slot& WeightUploader::next_slot() {
  Slot& s = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  if (!s.host) {
    check(cudaHostAlloc(&s.host, kSlotBytes, cudaHostAllocDefault), "cudaHostAlloc(weight staging)");
    check(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming), "cudaEventCreate");
  }
  if (s.in_flight) check(cudaEventSynchronize(s.done), "cudaEventSynchronize(weight staging)");
  s.in_flight = false;
  return s;
}

void WeightUploader::copy_to_pinned(void* pinned, const std::byte* src, size_t bytes) {
  const auto pieces = static_cast<int64_t>((bytes + kCopyPiece - 1) / kCopyPiece);
  auto* dst = static_cast<std::byte*>(pinned);
  // Page-cache reads through the mapping are bound by page faults and memory latency per thread, not by
  // bandwidth: several threads copy several times faster.
#pragma omp parallel for schedule(static) if (pieces > 2)
  for (int64_t p = 0; p < pieces; ++p) {
    const size_t at = static_cast<size_t>(p) * kCopyPiece;
    std::memcpy(dst + at, src + at, std::min(kCopyPiece, bytes - at));
  }
}

void WeightUploader::copy_bytes(const std::byte* src, size_t bytes, void* dst) {
  for (size_t at = 0; at < bytes; at += kSlotBytes) {
    const size_t n = std::min(kSlotBytes, bytes - at);
    Slot& s = next_slot();
    copy_to_pinned(s.host, src + at, n);
    check(
        cudaMemcpyAsync(static_cast<std::byte*>(dst) + at, s.host, n, cudaMemcpyHostToDevice, ctx_.stream()),
        "cudaMemcpyAsync(weights)");
    check(cudaEventRecord(s.done, ctx_.stream()), "cudaEventRecord");
    s.in_flight = true;
  }
}

// Chunks of whole elements through pinned -> device staging -> convert(staging, first element, count).
template <typename Convert>
void WeightUploader::convert_chunks(const Source& src, Convert&& convert) {
  const size_t elem = stored_size(src.type);
  const auto per_chunk = static_cast<int64_t>(kSlotBytes / elem);
  for (int64_t first = 0; first < src.numel; first += per_chunk) {
    const int64_t count = std::min(per_chunk, src.numel - first);
    const size_t bytes = static_cast<size_t>(count) * elem;
    Slot& s = next_slot();
    if (s.device.size() < kSlotBytes) s.device = DeviceBuffer(kSlotBytes);
    copy_to_pinned(s.host, src.data + static_cast<size_t>(first) * elem, bytes);
    check(cudaMemcpyAsync(s.device.data(), s.host, bytes, cudaMemcpyHostToDevice, ctx_.stream()),
          "cudaMemcpyAsync(weights)");
    convert(s.device.data(), first, count);
    check(cudaEventRecord(s.done, ctx_.stream()), "cudaEventRecord");
    s.in_flight = true;
  }
}

void WeightUploader::to_f16(const Source& src, __half* dst) {
  if (src.type == StoredType::kF16) return copy_bytes(src.data, static_cast<size_t>(src.numel) * 2, dst);
  convert_chunks(src, [&](const void* staged, int64_t first, int64_t count) {
    launch_stored_to_f16(staged, src.type, dst + first, count, ctx_.stream());
  });
}

void WeightUploader::to_f32(const Source& src, float* dst) {
  if (src.type == StoredType::kF32) return copy_bytes(src.data, static_cast<size_t>(src.numel) * 4, dst);
  convert_chunks(src, [&](const void* staged, int64_t first, int64_t count) {
    launch_stored_to_f32(staged, src.type, dst + first, count, ctx_.stream());
  });
}

void WeightUploader::conv_to_ohwi_f16(const Source& src, int64_t out, int64_t in, int64_t taps, __half* dst) {
  const size_t bytes = static_cast<size_t>(src.numel) * stored_size(src.type);
  if (bytes <= kSlotBytes) {  // the usual case: one slot holds the whole weight
    convert_chunks(src, [&](const void* staged, int64_t, int64_t) {
      launch_conv_weight_to_ohwi_f16(staged, src.type, dst, out, in, taps, ctx_.stream());
    });
    return;
  }
  // Larger than a slot (fp32 checkpoints of wide layers): gather it whole on the device first.
  DeviceBuffer whole(bytes);
  copy_bytes(src.data, bytes, whole.data());
  launch_conv_weight_to_ohwi_f16(whole.data(), src.type, dst, out, in, taps, ctx_.stream());
  ctx_.synchronize();  // before `whole` is freed
}

void WeightUploader::wait() {
  ctx_.synchronize();
  for (Slot& s : slots_) s.in_flight = false;
}

}  // namespace sdrt::cuda
