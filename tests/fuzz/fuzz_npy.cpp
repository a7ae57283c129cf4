// libFuzzer target for the .npy reader (used for --init-noise files): arbitrary bytes must either parse into
// a tensor whose size matches its shape or be rejected with sdrt::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "io/npy.h"
#include "sdrt/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const sdrt::Tensor t = sdrt::io::parse_npy(data, size, "<fuzz>");
    if (static_cast<size_t>(t.numel()) * sizeof(float) > size) std::abort();
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
