// ZipArchive — a strict, zero-copy reader for the "stored" (uncompressed) entries of a zip file.
//
// PyTorch's torch.save (since 1.6) writes a zip whose entries are all stored, with tensor data 64-byte
// aligned, so a reader that only understands stored entries can hand out pointers straight into the memory
// mapping: no inflating, no copies, nothing read until a tensor is loaded. That is why this is hand-written
// rather than taken from libzip/minizip (both copy entries out through their own read calls).
//
// Validation (zip files are untrusted input): the end-of-central-directory record (and the ZIP64 one for
// archives over 4 GB or 65535 entries) must be well-formed; every central-directory entry, local header and
// data range must lie inside the file and before the central directory; names are unique and non-empty;
// data ranges do not overlap. Deflated (or otherwise compressed) and encrypted entries are listed but
// reading one throws kUnsupported. CRCs are not checked: that would read every byte at open time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sdrt::io {

class MappedFile;

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored, 8 = deflated, ...
  bool encrypted = false;
  uint64_t data_offset = 0;  // of the entry's bytes within the archive (after the local header)
  uint64_t compressed_size = 0;
  uint64_t size = 0;  // uncompressed
};

class ZipArchive {
 public:
  // Maps the file and reads its central directory. Throws sdrt::Error (kIo / kFormat / kUnsupported) naming
  // it.
  static ZipArchive open(const std::filesystem::path& path);
  // Same over bytes already in memory; `data` must outlive the result. `label` names it in errors.
  static ZipArchive parse_borrowed(const std::byte* data, size_t size, const std::filesystem::path& label);

  const std::filesystem::path& path() const { return path_; }
  const std::byte* bytes() const { return bytes_; }                  // the whole archive
  const std::vector<ZipEntry>& entries() const { return entries_; }  // in central-directory order
  const ZipEntry* find(const std::string& name) const;               // nullptr when absent
  // The bytes of a stored entry, pointing into the mapping. Throws kUnsupported for compressed or encrypted
  // entries, naming the entry and the file.
  std::span<const std::byte> data(const ZipEntry& entry) const;

 private:
  void parse();

  std::filesystem::path path_;
  std::shared_ptr<MappedFile> file_;  // keeps bytes_ alive; null for parse_borrowed
  const std::byte* bytes_ = nullptr;
  uint64_t size_ = 0;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace sdrt::io
