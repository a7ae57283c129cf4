#include "io/npy.h"

#include <cstring>
#include <string>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "io/json_file.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace {
constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;

[[noreturn]] void bad(const std::string& what, const std::string& why) {
  throw Error(ErrorKind::kFormat, fmt::format("{}: not a valid .npy file: {}", what, why));
}

// Extracts the value text of 'key' from the header dict, e.g. "'<f4'" or "(1, 77, 768)".
std::string dict_value(const std::string& header, const std::string& key, const std::string& what) {
  const std::string quoted = "'" + key + "'";
  const auto k = header.find(quoted);
  if (k == std::string::npos) bad(what, "header has no '" + key + "' entry");
  auto p = header.find(':', k + quoted.size());
  if (p == std::string::npos) bad(what, "header entry '" + key + "' has no value");
  ++p;
  while (p < header.size() && header[p] == ' ') ++p;
  size_t end = p;
  if (p < header.size() && header[p] == '(') {
    end = header.find(')', p);
    if (end == std::string::npos) bad(what, "unterminated shape tuple");
    ++end;
  } else {
    while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  }
  std::string value = header.substr(p, end - p);
  while (!value.empty() && value.back() == ' ') value.pop_back();
  return value;
}
}  // namespace

Tensor parse_npy(const void* data, size_t size, const std::string& what) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  if (size < 10 || std::memcmp(bytes, kMagic, kMagicSize) != 0) bad(what, "missing \\x93NUMPY magic");
  const int major = bytes[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = bytes[8] | static_cast<size_t>(bytes[9]) << 8;
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) bad(what, "truncated preamble");
    header_len = bytes[8] | static_cast<size_t>(bytes[9]) << 8 | static_cast<size_t>(bytes[10]) << 16 |
                 static_cast<size_t>(bytes[11]) << 24;
    header_start = 12;
  } else {
    bad(what, fmt::format("unsupported format version {}", major));
  }
  if (header_len > size - header_start)
    bad(what, fmt::format("header length {} exceeds file size {}", header_len, size));
  const std::string header(reinterpret_cast<const char*>(bytes + header_start), header_len);

  const std::string descr = dict_value(header, "descr", what);
  if (descr != "'<f4'")
    throw Error(ErrorKind::kFormat, fmt::format("{}: dtype {} is not float32 ('<f4')", what, descr));
  if (dict_value(header, "fortran_order", what) != "False")
    throw Error(ErrorKind::kFormat, fmt::format("{}: Fortran-ordered arrays are not supported", what));

  std::string tuple = dict_value(header, "shape", what);
  if (tuple.size() < 2 || tuple.front() != '(' || tuple.back() != ')') bad(what, "shape is not a tuple");
  tuple = tuple.substr(1, tuple.size() - 2);
  Shape shape;
  uint64_t numel = 1;
  size_t pos = 0;
  while (pos < tuple.size()) {
    while (pos < tuple.size() && (tuple[pos] == ' ' || tuple[pos] == ',')) ++pos;
    if (pos == tuple.size()) break;
    size_t end = pos;
    while (end < tuple.size() && tuple[end] >= '0' && tuple[end] <= '9') ++end;
    if (end == pos || end - pos > 12) bad(what, "shape entry is not a small non-negative integer");
    const uint64_t d = std::stoull(tuple.substr(pos, end - pos));
    shape.push_back(static_cast<int64_t>(d));
    if (d != 0 && numel > (uint64_t{1} << 40) / d) bad(what, "shape is too large");
    numel *= d;
    pos = end;
  }
  const size_t data_start = header_start + header_len;
  const uint64_t nbytes = numel * 4;
  if (nbytes != size - data_start)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: shape {} needs {} bytes of float32 data but the file has {}", what,
                            shape_to_string(shape), nbytes, size - data_start));
  Tensor t(shape, DType::kF32);
  if (nbytes) std::memcpy(t.raw_data(), bytes + data_start, nbytes);
  return t;
}

Tensor read_npy(const std::filesystem::path& path) {
  const std::string content = read_text_file(path);
  return parse_npy(content.data(), content.size(), path.string());
}

void write_npy(const std::filesystem::path& path, const Tensor& tensor) {
  const Tensor f32 = tensor.dtype() == DType::kF32 ? tensor : tensor.to(DType::kF32);
  std::string shape = "(";
  for (size_t i = 0; i < f32.shape().size(); ++i) shape += std::to_string(f32.shape()[i]) + ", ";
  if (f32.shape().size() > 1) shape.resize(shape.size() - 2);
  if (f32.shape().size() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that the data starts on a 64-byte boundary, and end the header with a newline.
  const size_t unpadded = kMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, kMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(f32.raw_data()), f32.nbytes());
  write_file_atomically(path, out);
}

}  // namespace sdrt::io
