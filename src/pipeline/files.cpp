// include/sdrt/files.h: the public face of io/png.h, io/npy.h and loaders/single_file.h.
#include "sdrt/files.h"

#include <span>

#include "io/npy.h"
#include "io/png.h"
#include "loaders/single_file.h"

namespace sdrt {

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
  loaders::SingleFileOptions open_options;
  open_options.prediction_type = options.prediction_type;
  const auto file = loaders::SingleFile::open(checkpoint, open_options);
  loaders::convert_to_diffusers(file, output_dir);
  return {loaders::sd_family_name(file.family()), file.prediction_type()};
}

}  // namespace sdrt
