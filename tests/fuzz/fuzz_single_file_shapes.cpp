// libFuzzer target for single-file model inference from tensor shapes (loaders/single_file: family, UNet /
// VAE / text encoder configs and the diffusers <- original key plan, from headers only). Each input edits the
// tensor table of a tiny SD 1.x, 2.x, SDXL base or SDXL refiner checkpoint
// (tests/fixtures/single_file/{sd1,sd2,sdxl_base,sdxl_refiner}.safetensors): byte 0 picks the base, then one byte per tensor in name order keeps it (< 200), drops it (< 230) or gives it a new
// shape (rank = next byte % 5, then one byte per dimension). The resulting checkpoint (zero data, f16) must
// either be rejected with sdrt::Error or give a plan whose every mapped tensor exists with as many elements
// as its source (a third of them for a q / k / v part of a fused projection).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "loaders/single_file.h"
#include "sdrt/error.h"

namespace {

using Table = std::vector<std::pair<std::string, sdrt::Shape>>;

Table read_table(const char* file) {
  const auto src = sdrt::io::WeightStore::from_file(file);
  Table t;
  for (const auto& n : src.names()) t.emplace_back(n, src.info(n).shape);
  return t;
}

const Table& base(int which) {
  static const Table tables[] = {read_table(SDRT_FIXTURES_DIR "/single_file/sd1.safetensors"),
                                 read_table(SDRT_FIXTURES_DIR "/single_file/sd2.safetensors"),
                                 read_table(SDRT_FIXTURES_DIR "/single_file/sdxl_base.safetensors"),
                                 read_table(SDRT_FIXTURES_DIR "/single_file/sdxl_refiner.safetensors")};
  return tables[which % 4];
}

int64_t numel(const sdrt::Shape& s) {
  int64_t n = 1;
  for (const int64_t d : s) n *= d;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  size_t at = 0;
  const auto next = [&]() -> int { return at < size ? data[at++] : 0; };
  const Table& table = base(next());
  std::map<std::string, sdrt::Shape> shapes;
  int64_t total = 0;
  for (const auto& [name, shape] : table) {
    const int op = next();
    if (op < 200) {
      shapes.emplace(name, shape);
    } else if (op >= 230) {
      sdrt::Shape s(static_cast<size_t>(next() % 5));
      for (auto& d : s) d = next();
      shapes.emplace(name, s);
    }
  }
  // The safetensors file by hand (header, then zero data as a sparse tail): no fsync, no copies.
  nlohmann::json header = nlohmann::json::object();
  for (const auto& [name, shape] : shapes) {
    const int64_t begin = total * 2;
    total += numel(shape);
    if (total > (int64_t{4} << 20)) return 0;  // keep one input's file small
    header[name] = {{"dtype", "F16"}, {"shape", shape}, {"data_offsets", {begin, total * 2}}};
  }
  const std::string text = header.dump();
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i)
    prefix[static_cast<size_t>(i)] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  const auto path = sdrt::fuzz::scratch_dir() / "model.safetensors";
  sdrt::fuzz::write_file(path, prefix + text);
  std::filesystem::resize_file(path, prefix.size() + text.size() + static_cast<size_t>(total) * 2);
  try {
    const auto f = sdrt::loaders::SingleFile::open(path);
    // A whole-model open plans the UNet, the VAE and at least one text encoder (the SDXL refiner has only
    // text_encoder_2).
    if (!f.unet() || !f.vae() || (!f.text_encoder() && !f.text_encoder_2())) std::abort();
    for (const auto* c : {&f.text_encoder(), &f.text_encoder_2(), &f.unet(), &f.vae()}) {
      if (!c->has_value()) continue;
      for (const auto& [name, mapped] : (*c)->tensors) {
        const auto it = shapes.find(mapped.source);
        if (it == shapes.end()) std::abort();
        const int64_t want = mapped.part >= 0 ? numel(it->second) / 3 : numel(it->second);
        if (numel(mapped.shape) != want) std::abort();
      }
    }
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
