// MappedFile — a read-only memory mapping of a whole file, unmapped on destruction.
//
// Weights are mapped rather than read so that opening a multi-gigabyte checkpoint costs nothing until a
// tensor is loaded, and only the pages actually touched are read from disk.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>

namespace sdrt::io {

class MappedFile {
 public:
  // Maps `path` (PROT_READ, MAP_PRIVATE). Throws sdrt::Error (kIo) naming the file and the OS error when it
  // is missing, not a regular file or cannot be mapped. A zero-length file is not mapped: data() is nullptr.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sdrt::io
