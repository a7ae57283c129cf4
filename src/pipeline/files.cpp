// include/sdrt/files.h: the public face of io/png.h, io/npy.h, io/atomic_file.h, io/interrupt.h and
// loaders/single_file.h.
#include "sdrt/files.h"

#include <sys/stat.h>

#include <span>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "io/interrupt.h"
#include "io/npy.h"
#include "io/png.h"
#include "loaders/single_file.h"
#include "sdrt/error.h"

namespace sdrt {

namespace {

namespace fs = std::filesystem;

bool same_file(const struct stat& a, const fs::path& p) {
  struct stat b {};
  return ::stat(p.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

// The input file (of `input`, a file or a model folder) that is the same file as `out`, or an empty path.
fs::path input_matching(const struct stat& out, const fs::path& input) {
  struct stat st {};
  if (::stat(input.c_str(), &st) != 0) return {};
  if (!S_ISDIR(st.st_mode)) {
    if (same_file(out, input)) return input;
    auto yaml = input;  // a checkpoint's sidecar config
    yaml.replace_extension(".yaml");
    return same_file(out, yaml) ? yaml : fs::path();
  }
  // A diffusers folder holds its files at most two levels down (model_index.json, unet/config.json, ...);
  // look a little deeper, never following folder links.
  std::error_code ec;
  fs::recursive_directory_iterator it(input, fs::directory_options::skip_permission_denied, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (it.depth() >= 3) it.disable_recursion_pending();
    if (same_file(out, it->path())) return it->path();
  }
  return {};
}

}  // namespace

void write_png(const std::filesystem::path& path, const Image& image, const PngText& text) {
  io::write_png(path, std::span<const uint8_t>(image.rgb), image.width, image.height, text);
}

void write_npy(const std::filesystem::path& path, const Tensor& tensor) {
  io::write_npy(path, tensor);
}

Tensor read_npy(const std::filesystem::path& path) {
  return io::read_npy(path);
}

ConvertedCheckpoint convert_checkpoint(const std::filesystem::path& checkpoint,
                                       const std::filesystem::path& output_dir,
                                       const ConvertOptions& options) {
  io::resolve_output_folder(output_dir);  // before reading a multi-gigabyte checkpoint
  loaders::SingleFileOptions open_options;
  open_options.prediction_type = options.prediction_type;
  const auto file = loaders::SingleFile::open(checkpoint, open_options);
  loaders::convert_to_diffusers(file, output_dir);
  return {loaders::sd_family_name(file.family()), file.prediction_type()};
}

void check_output_path(const std::filesystem::path& output,
                       const std::vector<std::filesystem::path>& inputs) {
  const fs::path target = io::resolve_output_file(output);
  struct stat out {};
  if (::stat(target.c_str(), &out) != 0) return;  // a new file cannot be an input
  for (const auto& input : inputs) {
    if (input.empty()) continue;
    if (const fs::path hit = input_matching(out, input); !hit.empty())
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}: is an input of this run ({}); refusing to overwrite it", output.string(),
                              hit.string()));
  }
}

void request_interrupt(int signo) noexcept {
  io::request_interrupt(signo);
}

int interrupt_signal() noexcept {
  return io::interrupt_signal();
}

}  // namespace sdrt
