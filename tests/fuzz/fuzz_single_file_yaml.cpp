// libFuzzer target for the sidecar <checkpoint>.yaml of a single-file checkpoint (its `parameterization:`
// line sets the prediction type): the input is the .yaml next to a valid tiny SD 1.x checkpoint (the text
// encoder of tests/fixtures/single_file/sd1.safetensors). Opening must either throw sdrt::Error or give
// epsilon / v_prediction.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>

#include "fuzz_util.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "loaders/single_file.h"
#include "sdrt/error.h"

namespace {

const std::filesystem::path& checkpoint() {
  static const std::filesystem::path path = [] {
    const auto src = sdrt::io::WeightStore::from_file(SDRT_FIXTURES_DIR "/single_file/sd1.safetensors");
    std::map<std::string, sdrt::Tensor> tensors;
    for (const auto& n : src.names())
      if (n.rfind("cond_stage_model.", 0) == 0)
        tensors.emplace(n, src.load(n, src.info(n).dtype == "F16" ? sdrt::DType::kF16 : sdrt::DType::kF32));
    const auto p = sdrt::fuzz::scratch_dir() / "model.safetensors";
    sdrt::io::write_safetensors(p, tensors);
    return p;
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = checkpoint();
  sdrt::fuzz::write_file(sdrt::fuzz::scratch_dir() / "model.yaml",
                         std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    const auto f = sdrt::loaders::SingleFile::open(path, {.text_encoder_only = true});
    if (f.prediction_type() != "epsilon" && f.prediction_type() != "v_prediction") std::abort();
    if (f.scheduler_config()["prediction_type"] != f.prediction_type()) std::abort();
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
