// Writing output files so that a failure never leaves a partial file (or clobbers a good one).
#pragma once

#include <filesystem>
#include <string_view>

namespace sdrt::io {

// Writes `bytes` to a temporary file in the destination folder, then renames it over `path`.
// Throws sdrt::Error (kIo) naming the path when the folder is missing or the write fails.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace sdrt::io
