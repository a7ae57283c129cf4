// libFuzzer target for .ckpt reading: the same bytes go (1) to the restricted unpickler as data.pkl, with a
// fake resolver that serves every storage key from a fixed buffer, and (2) to the zip reader + checkpoint
// parser as a whole archive. Any sdrt::Error is a correct rejection; crashes, sanitizer reports, leaks and
// broken invariants are bugs.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "io/pickle.h"
#include "io/torch_checkpoint.h"
#include "io/zip_archive.h"
#include "sdrt/error.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Storage keys resolve to a prefix of this buffer whose length depends on the key, so size checks get
// exercised both ways.
alignas(8) std::byte g_storage[4096];

void check_tensor(const sdrt::io::PickledTensor& t, const std::byte* lo, const std::byte* hi) {
  check(t.data >= lo && t.data <= hi && t.nbytes <= static_cast<uint64_t>(hi - t.data));
  volatile std::byte sink{};
  if (t.nbytes) sink = t.data[t.nbytes - 1];  // ASan checks the range really is readable
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    const sdrt::io::StorageResolver resolve = [](const std::string& key) {
      return std::span<const std::byte>(g_storage, (key.size() * 24) % sizeof(g_storage));
    };
    for (const auto& t : sdrt::io::read_state_dict_pickle({bytes, size}, resolve, "<fuzz>"))
      check_tensor(t, g_storage, g_storage + sizeof(g_storage));
  } catch (const sdrt::Error&) {
  }
  try {
    const auto zip = sdrt::io::ZipArchive::parse_borrowed(bytes, size, "<fuzz>");
    for (const auto& e : zip.entries()) {
      check(e.data_offset <= size && e.compressed_size <= size - e.data_offset);
      try {
        const auto span = zip.data(e);
        check(span.data() >= bytes && span.size() <= size);
      } catch (const sdrt::Error& err) {
        check(err.kind() == sdrt::ErrorKind::kUnsupported);
      }
    }
    const auto ckpt = sdrt::io::TorchCheckpoint::parse_borrowed(bytes, size, "<fuzz>");
    for (const auto& [name, t] : ckpt.tensors()) check_tensor(t, bytes, bytes + size);
  } catch (const sdrt::Error&) {
  }
  return 0;
}
