#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cctype>
#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/half.h"
#include "io/json_file.h"
#include "io/mapped_file.h"
#include "io/torch_checkpoint.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr int kMaxJsonDepth = 16;  // a valid header nests 3 deep; the limit only stops pathological input

struct DTypeSize {
  std::string_view name;
  uint64_t bytes;
};
constexpr DTypeSize kDTypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},  {"I32", 4},     {"I16", 2},     {"I8", 1},
    {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1},   {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

std::optional<uint64_t> dtype_bytes(std::string_view name) {
  for (const auto& d : kDTypes)
    if (d.name == name) return d.bytes;
  return std::nullopt;
}

std::optional<DType> float_dtype(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return std::nullopt;
}

// Names come from untrusted files: escape control characters (messages stay on one line) and cut long ones.
std::string quote_name(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  size_t shown = s.size();
  if (shown > kMaxShown) {
    shown = kMaxShown;
    while (shown > 0 && (static_cast<unsigned char>(s[shown]) & 0xc0) == 0x80) --shown;  // keep UTF-8 whole
  }
  std::string out = "\"";
  for (size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      if (c == '"' || c == '\\') out += '\\';
      out += static_cast<char>(c);
    }
  }
  if (shown < s.size()) out += "...";
  return out + "\"";
}

// A short description of a JSON value for "X is <value>, expected Y" messages.
std::string describe(const json& v) {
  if (v.is_string()) return quote_name(v.get_ref<const std::string&>());
  if (v.is_primitive()) return v.dump();
  return std::string("a JSON ") + v.type_name();
}

[[noreturn]] void fail(ErrorKind kind, const fs::path& file, const std::string& message) {
  throw Error(kind, fmt::format("{}: {}", file.string(), message));
}

std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());  // "-0"
  return std::nullopt;
}

std::string offsets_to_string(uint64_t begin, uint64_t end) {
  return fmt::format("[{}, {}]", begin, end);
}

// Builds the DOM through nlohmann's own DOM builder, adding what it lacks for untrusted input: duplicate keys
// are an error (nlohmann silently keeps the last one) and nesting depth is bounded.
class HeaderSax {
 public:
  explicit HeaderSax(json& root) : dom_(root, /*allow_exceptions=*/false) {}

  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) { return dom_.number_float(v, s); }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(size_t n) {
    if (!enter()) return false;
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& k) {
    if (!keys_.back().insert(k).second) {
      error_ = "header has duplicate key " + quote_name(k);
      return false;
    }
    return dom_.key(k);
  }
  bool end_object() {
    keys_.pop_back();
    --depth_;
    return dom_.end_object();
  }
  bool start_array(size_t n) { return enter() && dom_.start_array(n); }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  bool parse_error(size_t /*position*/, const std::string& /*last_token*/,
                   const nlohmann::detail::exception& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] "; the rest says where and what.
    std::string what = e.what();
    if (const auto pos = what.find("] "); pos != std::string::npos) what.erase(0, pos + 2);
    if (what.size() > 300) what = what.substr(0, 300) + "...";
    // The message quotes the offending input, which may be any bytes: keep it printable ASCII.
    std::string printable;
    for (const char c : what) {
      const auto u = static_cast<unsigned char>(c);
      printable += u < 0x20 || u >= 0x7f ? fmt::format("\\x{:02x}", u) : std::string(1, c);
    }
    error_ = "header is not valid JSON: " + printable;
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool enter() {
    if (++depth_ <= kMaxJsonDepth) return true;
    error_ = fmt::format("header JSON nests deeper than {} levels", kMaxJsonDepth);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::unordered_set<std::string>> keys_;
  int depth_ = 0;
  std::string error_;
};

json parse_header(const fs::path& file, const char* begin, const char* end) {
  json root;
  HeaderSax sax(root);
  bool ok = false;
  try {
    ok = json::sax_parse(begin, end, &sax, json::input_format_t::json, /*strict=*/true);
  } catch (const json::exception& e) {  // not expected from the text parser; kept so nothing escapes unnamed
    fail(ErrorKind::kFormat, file, fmt::format("header is not valid JSON: {}", e.what()));
  }
  if (!ok) fail(ErrorKind::kFormat, file, sax.error().empty() ? "header is not valid JSON" : sax.error());
  return root;
}

// Reports a malformed entry: "<file>: tensor "<name>": <what>".
struct EntryError {
  const fs::path& file;
  std::string who;
  [[noreturn]] void operator()(const std::string& what) const {
    fail(ErrorKind::kFormat, file, who + ": " + what);
  }
};

TensorInfo parse_entry(const fs::path& file, const std::string& name, const json& v, uint64_t data_size) {
  const EntryError bad{file, "tensor " + quote_name(name)};
  if (!v.is_object())
    bad(fmt::format("entry is {}, expected an object with dtype, shape and data_offsets", describe(v)));
  for (const auto& [key, value] : v.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      bad(fmt::format("unknown key {} (expected dtype, shape and data_offsets)", quote_name(key)));
  auto field = [&](const char* key) -> const json& {
    const auto it = v.find(key);
    if (it == v.end()) bad(fmt::format("missing \"{}\"", key));
    return *it;
  };

  TensorInfo info;
  info.name = name;
  const json& dtype = field("dtype");
  if (!dtype.is_string()) bad(fmt::format("dtype is {}, expected a string", describe(dtype)));
  info.dtype = dtype.get<std::string>();
  const std::optional<uint64_t> elem_bytes = dtype_bytes(info.dtype);
  if (!elem_bytes) bad(fmt::format("unknown dtype {}", quote_name(info.dtype)));

  const json& shape = field("shape");
  if (!shape.is_array())
    bad(fmt::format("shape is {}, expected an array of non-negative integers", describe(shape)));
  // Count elements exactly as shape_numel() will (left to right in int64), so it can never overflow there.
  constexpr auto kMaxI64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    const std::optional<uint64_t> d = as_u64(shape[i]);
    if (!d || *d > kMaxI64)
      bad(fmt::format("shape[{}] is {}, expected a non-negative integer", i, describe(shape[i])));
    info.shape.push_back(static_cast<int64_t>(*d));
    if (numel != 0 && *d > kMaxI64 / numel) overflow = true;
    numel *= *d;  // unsigned: wraps harmlessly once overflow is set
  }

  const json& offsets = field("data_offsets");
  if (!offsets.is_array()) bad(fmt::format("data_offsets is {}, expected [begin, end]", describe(offsets)));
  if (offsets.size() != 2)
    bad(fmt::format("data_offsets has {} entries, expected [begin, end]", offsets.size()));
  for (size_t i = 0; i < 2; ++i)
    if (!as_u64(offsets[i]))
      bad(fmt::format("data_offsets[{}] is {}, expected a non-negative integer", i, describe(offsets[i])));
  info.begin = *as_u64(offsets[0]);
  info.end = *as_u64(offsets[1]);
  const std::string range = offsets_to_string(info.begin, info.end);
  if (info.begin > info.end) bad(fmt::format("data_offsets {} has begin > end", range));
  if (info.end > data_size)
    bad(fmt::format("data_offsets {} exceed the data section of {} bytes", range, data_size));

  const std::string shape_text = shape_to_string(info.shape);
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / *elem_bytes)
    bad(fmt::format("shape {} of {} overflows a 64-bit size", shape_text, info.dtype));
  const uint64_t needed = numel * *elem_bytes;
  if (needed != info.end - info.begin)
    bad(fmt::format("data_offsets {} but shape {} of {} needs {} bytes", range, shape_text, info.dtype,
                    needed));
  return info;
}

std::map<std::string, std::string> parse_metadata(const fs::path& file, const json& v) {
  if (!v.is_object())
    fail(ErrorKind::kFormat, file,
         fmt::format("__metadata__ is {}, expected an object of strings", describe(v)));
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : v.items()) {
    if (!value.is_string())
      fail(ErrorKind::kFormat, file,
           fmt::format("__metadata__ {} is {}, expected a string", quote_name(key), describe(value)));
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

template <DType kDType>
float read_as_f32(const std::byte* p) {
  if constexpr (kDType == DType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  } else {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return kDType == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

template <DType kDType>
void write_from_f32(std::byte* p, float f) {
  if constexpr (kDType == DType::kF32) {
    std::memcpy(p, &f, 4);
  } else {
    const uint16_t h = kDType == DType::kF16 ? f32_to_f16(f) : f32_to_bf16(f);
    std::memcpy(p, &h, 2);
  }
}

// The source may sit at any alignment inside the mapping, hence byte pointers and memcpy throughout.
template <DType kSrc, DType kDst>
void convert(const std::byte* src, std::byte* dst, size_t n) {
  if constexpr (kSrc == DType::kF16 && kDst == DType::kF32) {  // the common case: fp16 checkpoints
    const float* table = f16_to_f32_table();
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      std::memcpy(dst + 4 * i, &table[h], 4);
    }
    return;
  }
  const size_t src_size = kSrc == DType::kF32 ? 4 : 2;
  const size_t dst_size = kDst == DType::kF32 ? 4 : 2;
  for (size_t i = 0; i < n; ++i)
    write_from_f32<kDst>(dst + i * dst_size, read_as_f32<kSrc>(src + i * src_size));
}

template <DType kSrc>
void convert_to(DType dst_type, const std::byte* src, std::byte* dst, size_t n) {
  switch (dst_type) {
    case DType::kF32:
      return convert<kSrc, DType::kF32>(src, dst, n);
    case DType::kF16:
      return convert<kSrc, DType::kF16>(src, dst, n);
    case DType::kBF16:
      return convert<kSrc, DType::kBF16>(src, dst, n);
  }
}

// Copies a tensor's bytes (`ti.dtype`, any alignment) into a new tensor of `dtype`; `src` holds
// numel(ti.shape) elements. Only float dtypes load; others throw kUnsupported naming the tensor and file.
Tensor load_raw(const fs::path& file, const TensorInfo& ti, const std::byte* src, DType dtype) {
  const std::optional<DType> src_type = float_dtype(ti.dtype);
  if (!src_type)
    fail(ErrorKind::kUnsupported, file,
         fmt::format("tensor {}: dtype {} cannot be loaded (only F32, F16 and BF16)", quote_name(ti.name),
                     ti.dtype));
  Tensor out(ti.shape, dtype);
  auto* dst = static_cast<std::byte*>(out.raw_data());
  const auto n = static_cast<size_t>(out.numel());
  if (n == 0) return out;
  switch (*src_type) {
    case DType::kF32:
      if (dtype == DType::kF32) break;
      convert_to<DType::kF32>(dtype, src, dst, n);
      return out;
    case DType::kF16:
      if (dtype == DType::kF16) break;
      convert_to<DType::kF16>(dtype, src, dst, n);
      return out;
    case DType::kBF16:
      if (dtype == DType::kBF16) break;
      convert_to<DType::kBF16>(dtype, src, dst, n);
      return out;
  }
  std::memcpy(dst, src, out.nbytes());  // same dtype
  return out;
}

std::string lower_ext(const fs::path& p) {
  std::string s = p.filename().string();
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The format a file that cannot be safetensors starts like, or nullptr. Only a file whose first 8 bytes are
// not a plausible header length followed by '{' is looked at, so a real safetensors file is never taken for
// something else.
const char* other_format(const std::byte* bytes, size_t size) {
  if (size >= 9) {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | std::to_integer<uint64_t>(bytes[i]);
    if (header_len <= size - 8 && header_len <= kMaxHeaderBytes && bytes[8] == std::byte{'{'}) return nullptr;
  }
  const auto starts = [&](std::string_view magic) {
    return size >= magic.size() && std::memcmp(bytes, magic.data(), magic.size()) == 0;
  };
  if (starts(std::string_view("PK\x03\x04", 4)))
    return "a zip archive, as a PyTorch .ckpt / .pt is: give it its .ckpt name";
  if (starts("\x80\x02") || starts("\x80\x03") || starts("\x80\x04") || starts("\x80\x05"))
    return "a Python pickle, as an old PyTorch .ckpt / .bin is";
  if (starts("GGUF")) return "a GGUF file";
  if (starts("\x89PNG")) return "a PNG image";
  if (starts(std::string_view("\x93NUMPY", 6))) return "a NumPy .npy file";
  if (starts("{") || starts("[")) return "a JSON file";
  return nullptr;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// ---- SafetensorsFile
// --------------------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = std::make_shared<MappedFile>(path);
  f.bytes_ = f.file_->data();
  f.size_ = f.file_->size();
  // A file of another format under a .safetensors name (a renamed .ckpt, ...): say what it looks like
  // rather than what its first 8 bytes mean as a header length.
  if (const char* other = other_format(f.bytes_, f.size_))
    fail(ErrorKind::kFormat, path, fmt::format("not a safetensors file (looks like {})", other));
  f.parse();
  return f;
}

SafetensorsFile SafetensorsFile::parse_borrowed(const std::byte* data, size_t size, const fs::path& label) {
  SafetensorsFile f;
  f.path_ = label;
  f.bytes_ = data;
  f.size_ = size;
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  if (size_ < 8)
    fail(ErrorKind::kFormat, path_,
         fmt::format("file is {} bytes, too short for the 8-byte header length", size_));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | std::to_integer<uint64_t>(bytes_[i]);
  if (header_len > size_ - 8)
    fail(ErrorKind::kFormat, path_, fmt::format("header length {} exceeds file size {}", header_len, size_));
  if (header_len > kMaxHeaderBytes)
    fail(ErrorKind::kFormat, path_,
         fmt::format("header length {} exceeds the limit of {}", header_len, kMaxHeaderBytes));

  const auto* text = reinterpret_cast<const char*>(bytes_ + 8);
  const json header = parse_header(path_, text, text + header_len);
  if (!header.is_object())
    fail(ErrorKind::kFormat, path_, fmt::format("header is {}, expected a JSON object", describe(header)));

  data_start_ = 8 + header_len;
  const uint64_t data_size = size_ - data_start_;
  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      metadata_ = parse_metadata(path_, value);
    } else {
      index_.emplace(key, parse_entry(path_, key, value, data_size));
    }
  }

  // Non-empty tensors must not share bytes; gaps between them are harmless and allowed.
  std::vector<const TensorInfo*> by_begin;
  for (const auto& [name, info] : index_)
    if (info.begin != info.end) by_begin.push_back(&info);
  std::sort(by_begin.begin(), by_begin.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->begin, a->end, a->name) < std::tie(b->begin, b->end, b->name);
  });
  const TensorInfo* furthest = nullptr;  // the tensor reaching furthest so far
  for (const TensorInfo* t : by_begin) {
    if (furthest && t->begin < furthest->end)
      fail(ErrorKind::kFormat, path_,
           fmt::format("tensors {} {} and {} {} overlap", quote_name(furthest->name),
                       offsets_to_string(furthest->begin, furthest->end), quote_name(t->name),
                       offsets_to_string(t->begin, t->end)));
    if (!furthest || t->end > furthest->end) furthest = t;
  }

  names_.reserve(index_.size());
  for (const auto& [name, info] : index_) names_.push_back(name);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end())
    fail(ErrorKind::kModel, path_, fmt::format("tensor {} not found", quote_name(name)));
  return it->second;
}

const std::byte* SafetensorsFile::raw(const std::string& name) const {
  return bytes_ + data_start_ + info(name).begin;
}

Tensor SafetensorsFile::load(const std::string& name, DType dtype) const {
  const TensorInfo& ti = info(name);
  return load_raw(path_, ti, bytes_ + data_start_ + ti.begin, dtype);
}

// ---- WeightStore
// ------------------------------------------------------------------------------------------------

WeightStore WeightStore::from_file(const fs::path& safetensors_path) {
  WeightStore ws;
  ws.source_ = safetensors_path;
  ws.files_.push_back(SafetensorsFile::open(safetensors_path));
  for (const auto& name : ws.files_[0].names()) ws.owner_.emplace(name, 0);
  return ws;
}

WeightStore WeightStore::from_ckpt(const fs::path& ckpt_path) {
  auto ckpt = std::make_shared<const TorchCheckpoint>(TorchCheckpoint::open(ckpt_path));
  WeightStore ws;
  ws.source_ = ckpt_path;
  ws.raw_is_file_ = true;
  for (const auto& [name, t] : ckpt->tensors()) {
    RawTensor r;
    r.info.name = name;
    r.info.dtype = t.dtype;
    r.info.shape = t.shape;
    r.info.begin = static_cast<uint64_t>(t.data - ckpt->file_data());
    r.info.end = r.info.begin + t.nbytes;
    r.data = t.data;
    ws.raw_.emplace(name, std::move(r));
  }
  ws.keep_alive_ = std::move(ckpt);
  return ws;
}

WeightStore WeightStore::from_tensors(std::map<std::string, Tensor> tensors, std::string label) {
  auto owned = std::make_shared<const std::map<std::string, Tensor>>(std::move(tensors));
  WeightStore ws;
  ws.source_ = std::move(label);
  for (const auto& [name, t] : *owned) {
    if (t.empty())
      fail(ErrorKind::kInvalidArgument, ws.source_,
           fmt::format("tensor {} has no storage", quote_name(name)));
    if (t.device() != Device::kHost)
      fail(ErrorKind::kUnsupported, ws.source_,
           fmt::format("tensor {} is not in host memory", quote_name(name)));
    RawTensor r;
    r.info.name = name;
    r.info.dtype = t.dtype() == DType::kF32 ? "F32" : t.dtype() == DType::kF16 ? "F16" : "BF16";
    r.info.shape = t.shape();
    r.info.end = t.nbytes();
    r.data = static_cast<const std::byte*>(t.raw_data());
    ws.raw_.emplace(name, std::move(r));
  }
  ws.keep_alive_ = std::move(owned);
  return ws;
}

WeightStore WeightStore::open(const fs::path& file) {
  const std::string name = lower_ext(file);
  if (ends_with(name, ".safetensors")) return from_file(file);
  if (ends_with(name, ".index.json")) return from_index(file);
  if (ends_with(name, ".ckpt") || ends_with(name, ".pt") || ends_with(name, ".pth") ||
      ends_with(name, ".bin"))
    return from_ckpt(file);
  fail(ErrorKind::kUnsupported, file,
       "unknown weights format (expected .safetensors, .safetensors.index.json, .ckpt, .pt, .pth or .bin)");
}

WeightStore WeightStore::from_index(const fs::path& index_json_path) {
  const fs::path& index = index_json_path;
  const json j = read_json_file(index);
  if (!j.is_object())
    fail(ErrorKind::kFormat, index,
         fmt::format("index is {}, expected a JSON object with \"weight_map\"", describe(j)));
  if (const auto it = j.find("metadata"); it != j.end() && !it->is_object() && !it->is_null())
    fail(ErrorKind::kFormat, index, fmt::format("\"metadata\" is {}, expected an object", describe(*it)));
  const auto wm = j.find("weight_map");
  if (wm == j.end()) fail(ErrorKind::kFormat, index, "missing \"weight_map\"");
  if (!wm->is_object())
    fail(ErrorKind::kFormat, index,
         fmt::format("\"weight_map\" is {}, expected an object of tensor name -> shard file", describe(*wm)));
  if (wm->empty()) fail(ErrorKind::kFormat, index, "\"weight_map\" is empty");

  WeightStore ws;
  ws.source_ = index;
  std::map<std::string, size_t> shard_ids;  // normalised shard name -> files_ index: each shard opened once
  for (const auto& [tensor, shard] : wm->items()) {
    const std::string who = "tensor " + quote_name(tensor);
    if (!shard.is_string())
      fail(ErrorKind::kFormat, index,
           fmt::format("{}: shard is {}, expected a file name", who, describe(shard)));
    const fs::path rel(shard.get<std::string>());
    // Shard names come from the index: never let them reach outside its folder.
    const bool escapes = rel.empty() || rel.has_root_path() ||
                         std::any_of(rel.begin(), rel.end(), [](const fs::path& c) { return c == ".."; });
    if (escapes)
      fail(ErrorKind::kFormat, index,
           fmt::format("{}: shard {} must be a relative path inside the index's folder", who,
                       describe(shard)));
    const std::string key = rel.lexically_normal().string();
    auto [it, inserted] = shard_ids.emplace(key, ws.files_.size());
    if (inserted) {
      try {
        ws.files_.push_back(SafetensorsFile::open(index.parent_path() / rel));
      } catch (const Error& e) {
        throw Error(e.kind(), fmt::format("{} (shard listed in {})", e.what(), index.string()));
      }
    }
    const SafetensorsFile& file = ws.files_[it->second];
    if (!file.contains(tensor))
      fail(ErrorKind::kModel, index,
           fmt::format("{} is mapped to shard {} but {} does not contain it", who, quote_name(key),
                       file.path().string()));
    ws.owner_.emplace(tensor, it->second);
  }

  // A tensor stored in two shards makes the checkpoint ambiguous, whichever one the index points at.
  std::map<std::string_view, size_t> seen;
  for (size_t i = 0; i < ws.files_.size(); ++i) {
    for (const auto& name : ws.files_[i].names()) {
      const auto [it, inserted] = seen.emplace(name, i);
      if (!inserted)
        fail(ErrorKind::kModel, index,
             fmt::format("tensor {} is in two shards: {} and {}", quote_name(name),
                         ws.files_[it->second].path().string(), ws.files_[i].path().string()));
    }
  }
  return ws;
}

WeightStore WeightStore::from_component_dir(const fs::path& dir, const std::string& stem, bool prefer_fp16) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory)
    fail(ErrorKind::kIo, dir, fmt::format("cannot access: {}", ec.message()));
  if (!fs::exists(st)) fail(ErrorKind::kIo, dir, "no such directory");
  if (!fs::is_directory(st)) fail(ErrorKind::kIo, dir, "not a directory");

  struct Candidate {
    std::string name;
    bool is_index;
  };
  const std::vector<Candidate> full = {{stem + ".safetensors", false},
                                       {stem + ".safetensors.index.json", true}};
  // diffusers names the fp16 index "<stem>.safetensors.index.fp16.json"; accept the regular spelling too.
  const std::vector<Candidate> fp16 = {{stem + ".fp16.safetensors", false},
                                       {stem + ".safetensors.index.fp16.json", true},
                                       {stem + ".fp16.safetensors.index.json", true}};
  std::vector<Candidate> order = prefer_fp16 ? fp16 : full;
  for (const auto& c : prefer_fp16 ? full : fp16) order.push_back(c);

  std::string looked_for;
  for (const auto& c : order) {
    const fs::path p = dir / c.name;
    // Present but not a regular file (a FIFO, a folder): opening it names what it is rather than "no
    // weights".
    if (fs::exists(fs::status(p, ec))) return c.is_index ? from_index(p) : from_file(p);
    looked_for += (looked_for.empty() ? "" : ", ") + c.name;
  }
  fail(ErrorKind::kIo, dir, fmt::format("no weights for {} (looked for {})", quote_name(stem), looked_for));
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(owner_.size() + raw_.size());
  for (const auto& [name, file] : owner_) out.push_back(name);
  for (const auto& [name, raw] : raw_) out.push_back(name);  // a store has either owner_ or raw_ entries
  return out;
}

const SafetensorsFile& WeightStore::file_for(const std::string& name) const {
  const auto it = owner_.find(name);
  if (it == owner_.end())
    fail(ErrorKind::kModel, source_, fmt::format("tensor {} not found", quote_name(name)));
  return files_[it->second];
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  if (const auto it = raw_.find(name); it != raw_.end()) return it->second.info;
  return file_for(name).info(name);
}

Tensor WeightStore::load(const std::string& name, DType dtype) const {
  if (const auto it = raw_.find(name); it != raw_.end())
    return load_raw(source_, it->second.info, it->second.data, dtype);
  return file_for(name).load(name, dtype);
}

WeightStore::Bytes WeightStore::bytes(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const std::optional<DType> type = float_dtype(ti.dtype);
  if (!type)
    fail(ErrorKind::kUnsupported, file_of(name),
         fmt::format("tensor {}: dtype {} cannot be loaded (only F32, F16 and BF16)", quote_name(name),
                     ti.dtype));
  const auto it = raw_.find(name);
  const std::byte* data = it != raw_.end() ? it->second.data : file_for(name).raw(name);
  return Bytes{data, *type, shape_numel(ti.shape)};
}

const fs::path& WeightStore::file_of(const std::string& name) const {
  if (raw_.count(name)) return source_;
  return file_for(name).path();
}

std::vector<fs::path> WeightStore::files() const {
  std::vector<fs::path> out;
  for (const auto& f : files_) out.push_back(f.path());
  if (raw_is_file_) out.push_back(source_);
  return out;
}

}  // namespace sdrt::io
