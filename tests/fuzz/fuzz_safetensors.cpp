// libFuzzer target for the safetensors reader: parse arbitrary bytes, then read every tensor back.
// Any sdrt::Error is a correct rejection; crashes, sanitizer reports, leaks and broken invariants are bugs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "io/safetensors.h"
#include "sdrt/error.h"

namespace {

// Invariant checks that must hold for every file the reader accepts.
void check(bool ok) {
  if (!ok) std::abort();
}

void exercise(const std::byte* data, size_t size) {
  const auto file = sdrt::io::SafetensorsFile::parse_borrowed(data, size, "<fuzz>");
  for (const auto& name : file.names()) {
    const sdrt::io::TensorInfo& info = file.info(name);
    check(info.begin <= info.end && info.end <= size);
    const std::byte* raw = file.raw(name);
    check(raw >= data && raw + (info.end - info.begin) <= data + size);
    volatile std::byte sink{};
    if (info.end > info.begin)
      sink = raw[info.end - info.begin - 1];  // ASan checks the range really is readable
    (void)sink;
    for (const sdrt::DType dtype : {sdrt::DType::kF32, sdrt::DType::kF16, sdrt::DType::kBF16}) {
      try {
        const sdrt::Tensor t = file.load(name, dtype);
        check(t.shape() == info.shape && t.dtype() == dtype);
      } catch (const sdrt::Error& e) {
        check(e.kind() == sdrt::ErrorKind::kUnsupported);  // the only reason a listed tensor may not load
      }
    }
  }
  const auto& names = file.names();
  for (size_t i = 1; i < names.size(); ++i) check(names[i - 1] < names[i]);  // sorted, unique
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    exercise(reinterpret_cast<const std::byte*>(data), size);
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
