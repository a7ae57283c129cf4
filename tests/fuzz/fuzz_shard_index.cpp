// libFuzzer target for a sharded weights index (model.safetensors.index.json: "weight_map" tensor name ->
// shard file): the input is the index; two valid shards lie next to it (a.safetensors: "x" [2, 3] f32 and "y"
// [4] f16; b.safetensors: "z" [3] bf16). The index must either be rejected with sdrt::Error or give a store
// whose every tensor loads with its declared shape.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "sdrt/error.h"

namespace {

const std::filesystem::path& index_path() {
  static const std::filesystem::path path = [] {
    const auto& dir = sdrt::fuzz::scratch_dir();
    sdrt::io::write_safetensors(dir / "a.safetensors", {{"x", sdrt::Tensor({2, 3}, sdrt::DType::kF32)},
                                                        {"y", sdrt::Tensor({4}, sdrt::DType::kF16)}});
    sdrt::io::write_safetensors(dir / "b.safetensors", {{"z", sdrt::Tensor({3}, sdrt::DType::kBF16)}});
    return dir / "model.safetensors.index.json";
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = index_path();
  sdrt::fuzz::write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    const auto store = sdrt::io::WeightStore::from_index(path);
    for (const auto& name : store.names()) {
      if (!store.contains(name)) std::abort();
      const auto& info = store.info(name);
      const sdrt::Tensor t = store.load(name);
      if (t.shape() != info.shape) std::abort();
    }
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
