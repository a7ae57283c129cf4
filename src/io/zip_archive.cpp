#include "io/zip_archive.h"

#include <algorithm>
#include <string_view>

#include <fmt/format.h>

#include "io/mapped_file.h"
#include "io/untrusted_text.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace {

namespace fs = std::filesystem;

constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint64_t kEocdSize = 22;
constexpr uint64_t kZip64LocatorSize = 20;
constexpr uint64_t kZip64EocdSize = 56;
constexpr uint64_t kCentralSize = 46;
constexpr uint64_t kLocalSize = 30;
constexpr uint64_t kMaxEntries =
    1u << 22;  // far more than any checkpoint; bounds the index for hostile files

[[noreturn]] void fail(ErrorKind kind, const fs::path& file, const std::string& message) {
  throw Error(kind, fmt::format("{}: {}", file.string(), message));
}

// Entry names are untrusted bytes: keep messages printable and on one line.
std::string quote(std::string_view s) {
  return quoted_ascii(s);
}

// Little-endian reads with the bounds checked by the caller.
uint64_t le(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | std::to_integer<uint64_t>(p[i]);
  return v;
}

}  // namespace

ZipArchive ZipArchive::open(const fs::path& path) {
  ZipArchive z;
  z.path_ = path;
  z.file_ = std::make_shared<MappedFile>(path);
  z.bytes_ = z.file_->data();
  z.size_ = z.file_->size();
  z.parse();
  return z;
}

ZipArchive ZipArchive::parse_borrowed(const std::byte* data, size_t size, const fs::path& label) {
  ZipArchive z;
  z.path_ = label;
  z.bytes_ = data;
  z.size_ = size;
  z.parse();
  return z;
}

void ZipArchive::parse() {
  const fs::path& f = path_;
  auto at = [&](uint64_t off, int n) { return le(bytes_ + off, n); };
  if (size_ < kEocdSize)
    fail(ErrorKind::kFormat, f, fmt::format("file is {} bytes, too short for a zip", size_));

  // The end record is the last 22 bytes plus a comment of up to 65535 bytes; its length must reach the end.
  uint64_t eocd = 0;
  bool found = false;
  const uint64_t lowest = size_ - kEocdSize > 65535 ? size_ - kEocdSize - 65535 : 0;
  for (uint64_t p = size_ - kEocdSize + 1; p-- > lowest;) {
    if (at(p, 4) == kEocdSig && p + kEocdSize + at(p + 20, 2) == size_) {
      eocd = p;
      found = true;
      break;
    }
  }
  if (!found) {
    const bool legacy = std::to_integer<unsigned>(bytes_[0]) == 0x80;  // a bare pickle: torch < 1.6
    fail(legacy ? ErrorKind::kUnsupported : ErrorKind::kFormat, f,
         legacy
             ? "legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a newer torch"
             : "not a zip archive (no end of central directory record)");
  }
  uint64_t disk = at(eocd + 4, 2), cd_disk = at(eocd + 6, 2);
  uint64_t count_here = at(eocd + 8, 2), count = at(eocd + 10, 2);
  uint64_t cd_size = at(eocd + 12, 4), cd_offset = at(eocd + 16, 4);
  uint64_t cd_limit = eocd;  // the central directory must end before the records that describe it

  if (eocd >= kZip64LocatorSize && at(eocd - kZip64LocatorSize, 4) == kZip64LocatorSig) {
    const uint64_t loc = eocd - kZip64LocatorSize;
    const uint64_t z64 = at(loc + 8, 8);
    if (at(loc + 4, 4) != 0 || at(loc + 16, 4) > 1)
      fail(ErrorKind::kUnsupported, f, "multi-disk (split) zip archives are not supported");
    if (z64 > loc || loc - z64 < kZip64EocdSize || at(z64, 4) != kZip64EocdSig)
      fail(ErrorKind::kFormat, f, fmt::format("ZIP64 end record offset {} is invalid", z64));
    disk = at(z64 + 16, 4);
    cd_disk = at(z64 + 20, 4);
    count_here = at(z64 + 24, 8);
    count = at(z64 + 32, 8);
    cd_size = at(z64 + 40, 8);
    cd_offset = at(z64 + 48, 8);
    cd_limit = z64;
  } else if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    fail(ErrorKind::kFormat, f, "end record needs ZIP64 values but the ZIP64 locator is missing");
  }
  if (disk != 0 || cd_disk != 0 || count_here != count)
    fail(ErrorKind::kUnsupported, f, "multi-disk (split) zip archives are not supported");
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail(ErrorKind::kFormat, f,
         fmt::format("central directory [{}, +{}) lies outside the file (end records at {})", cd_offset,
                     cd_size, cd_limit));
  if (count > kMaxEntries || count > cd_size / kCentralSize)
    fail(ErrorKind::kFormat, f,
         fmt::format("{} entries cannot fit a central directory of {} bytes", count, cd_size));

  const uint64_t cd_end = cd_offset + cd_size;
  uint64_t p = cd_offset;
  entries_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    const std::string who = fmt::format("central directory entry {}", i);
    if (cd_end - p < kCentralSize || at(p, 4) != kCentralSig)
      fail(ErrorKind::kFormat, f, fmt::format("{} at offset {} is truncated or has a bad signature", who, p));
    const uint64_t flags = at(p + 8, 2);
    ZipEntry e;
    e.method = static_cast<uint16_t>(at(p + 10, 2));
    e.encrypted = (flags & 1) != 0;
    e.compressed_size = at(p + 20, 4);
    e.size = at(p + 24, 4);
    const uint64_t name_len = at(p + 28, 2), extra_len = at(p + 30, 2), comment_len = at(p + 32, 2);
    const uint64_t start_disk = at(p + 34, 2);
    uint64_t local = at(p + 42, 4);
    if (cd_end - p - kCentralSize < name_len + extra_len + comment_len)
      fail(ErrorKind::kFormat, f, fmt::format("{}: name/extra/comment run past the central directory", who));
    e.name.assign(reinterpret_cast<const char*>(bytes_ + p + kCentralSize), name_len);
    const std::string what = fmt::format("entry {}", quote(e.name));
    if (e.name.empty()) fail(ErrorKind::kFormat, f, who + " has an empty name");

    // ZIP64 extra field (id 1): 8-byte values, present only for the fields saturated in the fixed header.
    const uint64_t extra = p + kCentralSize + name_len;
    bool need_u = e.size == 0xffffffff, need_c = e.compressed_size == 0xffffffff,
         need_o = local == 0xffffffff;
    for (uint64_t x = extra; x < extra + extra_len;) {
      if (extra + extra_len - x < 4) fail(ErrorKind::kFormat, f, what + ": truncated extra field");
      const uint64_t id = at(x, 2), len = at(x + 2, 2);
      x += 4;
      if (len > extra + extra_len - x) fail(ErrorKind::kFormat, f, what + ": extra field runs past its end");
      if (id == 1) {
        uint64_t y = x;
        auto take = [&](bool need, uint64_t& out) {
          if (!need) return;
          if (x + len - y < 8) fail(ErrorKind::kFormat, f, what + ": ZIP64 extra field is too short");
          out = at(y, 8);
          y += 8;
          need = false;
        };
        take(need_u, e.size);
        take(need_c, e.compressed_size);
        take(need_o, local);
        need_u = need_c = need_o = false;
      }
      x += len;
    }
    if (need_u || need_c || need_o)
      fail(ErrorKind::kFormat, f, what + ": sizes need ZIP64 values but there is no ZIP64 extra field");
    if (start_disk != 0 && start_disk != 0xffff)
      fail(ErrorKind::kUnsupported, f, "multi-disk (split) zip archives are not supported");

    if (local > cd_offset || cd_offset - local < kLocalSize || at(local, 4) != kLocalSig)
      fail(ErrorKind::kFormat, f, fmt::format("{}: local header offset {} is invalid", what, local));
    const uint64_t local_name = at(local + 26, 2), local_extra = at(local + 28, 2);
    e.data_offset = local + kLocalSize + local_name + local_extra;
    if (e.data_offset > cd_offset || e.compressed_size > cd_offset - e.data_offset)
      fail(ErrorKind::kFormat, f,
           fmt::format("{}: data [{}, +{}) runs past the central directory at {}", what, e.data_offset,
                       e.compressed_size, cd_offset));
    if (local_name != name_len ||
        std::string_view(reinterpret_cast<const char*>(bytes_ + local + kLocalSize), local_name) != e.name)
      fail(ErrorKind::kFormat, f, what + ": local header names a different file");
    if (e.method == 0 && e.compressed_size != e.size)
      fail(ErrorKind::kFormat, f,
           fmt::format("{}: stored entry has compressed size {} but size {}", what, e.compressed_size,
                       e.size));
    if (!index_.emplace(e.name, entries_.size()).second)
      fail(ErrorKind::kFormat, f, fmt::format("{} appears twice in the central directory", what));
    entries_.push_back(std::move(e));
    p += kCentralSize + name_len + extra_len + comment_len;
  }
  if (p != cd_end)
    fail(ErrorKind::kFormat, f,
         fmt::format("central directory has {} bytes after its last entry", cd_end - p));

  // Overlapping entries would let one tensor alias another's bytes (or a header): refuse them.
  std::vector<const ZipEntry*> sorted;
  for (const auto& e : entries_)
    if (e.compressed_size) sorted.push_back(&e);
  std::sort(sorted.begin(), sorted.end(),
            [](const ZipEntry* a, const ZipEntry* b) { return a->data_offset < b->data_offset; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i - 1]->data_offset + sorted[i - 1]->compressed_size > sorted[i]->data_offset)
      fail(ErrorKind::kFormat, f,
           fmt::format("entries {} and {} overlap", quote(sorted[i - 1]->name), quote(sorted[i]->name)));
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

std::span<const std::byte> ZipArchive::data(const ZipEntry& e) const {
  if (e.encrypted) fail(ErrorKind::kUnsupported, path_, fmt::format("entry {} is encrypted", quote(e.name)));
  if (e.method != 0)
    fail(
        ErrorKind::kUnsupported, path_,
        fmt::format("entry {} is compressed (method {}{}); only stored (uncompressed) entries are supported, "
                    "as torch.save writes them",
                    quote(e.name), e.method, e.method == 8 ? ", deflate" : ""));
  return {bytes_ + e.data_offset, e.size};
}

}  // namespace sdrt::io
