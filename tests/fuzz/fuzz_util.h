// Helpers shared by the file-based libFuzzer targets: the parsers under test take paths (a model folder, a
// checkpoint next to its .yaml), so each input is written into one scratch folder per process first.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace sdrt::fuzz {

// A folder of this process under the temp dir, created on first use (libFuzzer runs one input at a time).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("sdrt-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(
          std::filesystem::temp_directory_path() / ("sdrt-fuzz-" + std::to_string(getpid())), ec);
    });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Splits `data` at every occurrence of `separator` into at most `max_parts` parts (the last keeps the rest).
inline std::vector<std::string_view> split(const uint8_t* data, size_t size, std::string_view separator,
                                           size_t max_parts) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  while (parts.size() + 1 < max_parts) {
    const auto at = rest.find(separator);
    if (at == std::string_view::npos) break;
    parts.push_back(rest.substr(0, at));
    rest.remove_prefix(at + separator.size());
  }
  parts.push_back(rest);
  return parts;
}

}  // namespace sdrt::fuzz
