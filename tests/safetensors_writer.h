// Test-only helpers for building safetensors files, valid or deliberately broken, in a temporary folder.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace sdrt::test {

// A fresh folder under the system temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "sdrt-test") {
    static std::atomic<int> counter{0};
    const auto base = std::filesystem::temp_directory_path();
    std::random_device rd;
    for (int attempt = 0; attempt < 100; ++attempt) {
      auto p = base / (tag + "-" + std::to_string(rd()) + "-" + std::to_string(counter++));
      if (std::filesystem::create_directory(p)) {
        path_ = std::move(p);
        return;
      }
    }
    throw std::runtime_error("TempDir: cannot create a unique folder under " + base.string());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("write_bytes: cannot write " + path.string());
}

// The 8-byte little-endian length prefix.
inline std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A complete file from any header text (need not be valid JSON) and data section.
inline std::string frame(const std::string& header, const std::string& data = {}) {
  return u64_le(header.size()) + header + data;
}

// Values as raw little-endian bytes (the tests run on little-endian hosts, as does the reader).
template <typename T>
std::string to_bytes(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!s.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

// Builds a well-formed file: tensors are laid out back to back in the order added.
class SafetensorsWriter {
 public:
  SafetensorsWriter& add(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                         const std::string& bytes) {
    header_[name] = {{"dtype", dtype},
                     {"shape", std::move(shape)},
                     {"data_offsets", {data_.size(), data_.size() + bytes.size()}}};
    data_ += bytes;
    return *this;
  }
  SafetensorsWriter& add_f32(const std::string& name, std::vector<int64_t> shape,
                             const std::vector<float>& v) {
    return add(name, "F32", std::move(shape), to_bytes(v));
  }
  // F16 or BF16 given as raw 16-bit patterns.
  SafetensorsWriter& add_u16(const std::string& name, const std::string& dtype, std::vector<int64_t> shape,
                             const std::vector<uint16_t>& bits) {
    return add(name, dtype, std::move(shape), to_bytes(bits));
  }
  SafetensorsWriter& metadata(const std::string& key, const std::string& value) {
    header_["__metadata__"][key] = value;
    return *this;
  }
  // Pads the header with trailing spaces to at least `n` bytes (the format allows it; writers align data).
  SafetensorsWriter& pad_header_to(size_t n) {
    pad_to_ = n;
    return *this;
  }

  std::string header() const {
    std::string h = header_.is_null() ? std::string("{}") : header_.dump();
    if (h.size() < pad_to_) h.append(pad_to_ - h.size(), ' ');
    return h;
  }
  std::string bytes() const { return frame(header(), data_); }
  std::filesystem::path write(const std::filesystem::path& path) const {
    write_bytes(path, bytes());
    return path;
  }

 private:
  nlohmann::json header_;
  std::string data_;
  size_t pad_to_ = 0;
};

}  // namespace sdrt::test
