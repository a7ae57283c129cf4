// Tests for PyTorch zip checkpoints (.ckpt): the zip reader, the restricted unpickler and WeightStore's
// .ckpt / in-memory backends. Good fixtures come from torch.save (scripts/make_ckpt_fixtures.py) with the
// expected tensors in a sibling .safetensors; every hostile fixture must be refused naming the file and why.
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/half.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "io/zip_archive.h"
#include "sdrt/error.h"

namespace sdrt::io {
namespace {

namespace fs = std::filesystem;

const fs::path kDir = fs::path(SDRT_FIXTURES_DIR) / "ckpt";

void expect_error(const std::function<void()>& fn, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(std::string(error_kind_name(e.kind())), error_kind_name(kind)) << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return;
  }
  ADD_FAILURE() << "expected sdrt::Error (" << error_kind_name(kind) << ")";
}

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}

DType native(const std::string& dtype) {
  return dtype == "F16" ? DType::kF16 : dtype == "BF16" ? DType::kBF16 : DType::kF32;
}

// Every float tensor of `ckpt` equals (bit for bit, in its own dtype and converted to F32) the expected file.
void expect_matches(const fs::path& ckpt, const std::vector<std::string>& float_names) {
  const WeightStore ws = WeightStore::from_ckpt(ckpt);
  const SafetensorsFile expected = SafetensorsFile::open(fs::path(ckpt.string() + ".expected.safetensors"));
  for (const auto& name : float_names) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(ws.contains(name));
    const TensorInfo& got = ws.info(name);
    const TensorInfo& want = expected.info(name);
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(got.end - got.begin, want.end - want.begin);
    EXPECT_EQ(bytes_of(ws.load(name, native(got.dtype))), bytes_of(expected.load(name, native(want.dtype))));
    EXPECT_EQ(bytes_of(ws.load(name, DType::kF32)), bytes_of(expected.load(name, DType::kF32)));
    EXPECT_EQ(ws.file_of(name), ckpt);
  }
}

TEST(CkptTest, NormalStateDictMatchesTorch) {
  const fs::path f = kDir / "normal.ckpt";
  expect_matches(f, {"w_f32", "w_f16", "w_bf16", "scalar", "empty", "view", "shared", "unit_dims", "param"});
  const WeightStore ws = WeightStore::from_ckpt(f);
  EXPECT_EQ(ws.names().size(), 10u);
  EXPECT_EQ(ws.info("view").shape, (Shape{3}));
  EXPECT_EQ(ws.load("view").data<float>()[0], 4.0f);  // storage offset honoured
  EXPECT_EQ(ws.info("position_ids").dtype, "I64");
  expect_error([&] { ws.load("position_ids"); }, ErrorKind::kUnsupported,
               {f.string(), "position_ids", "I64"});
  EXPECT_EQ(ws.files(), std::vector<fs::path>{f});
  EXPECT_EQ(ws.source(), f);
}

TEST(CkptTest, NestedStateDictIgnoresTrainingState) {
  const fs::path f = kDir / "nested.ckpt";
  expect_matches(f, {"weight", "bias", "model.f16"});
  const WeightStore ws = WeightStore::from_ckpt(f);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"bias", "model.f16", "weight"}));
  EXPECT_FALSE(ws.contains("epoch"));
  EXPECT_FALSE(ws.contains("global_step"));
}

TEST(CkptTest, OpenPicksReaderByExtension) {
  EXPECT_EQ(WeightStore::open(kDir / "normal.ckpt").names().size(), 10u);
  EXPECT_EQ(WeightStore::open(kDir / "normal.ckpt.expected.safetensors").names().size(), 10u);
  expect_error([] { WeightStore::open(kDir / "weights.onnx"); }, ErrorKind::kUnsupported, {"weights.onnx"});
  expect_error([] { WeightStore::open(kDir / "legacy.pt"); }, ErrorKind::kUnsupported,
               {"legacy.pt", "legacy"});
  expect_error([] { WeightStore::open(kDir / "missing.ckpt"); }, ErrorKind::kIo, {"missing.ckpt"});
}

TEST(CkptTest, HandmadeBaselineLoads) {
  const WeightStore ws = WeightStore::from_ckpt(kDir / "handmade_ok.ckpt");
  const Tensor t = ws.load("w");
  ASSERT_EQ(t.shape(), (Shape{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(i));
}

struct Hostile {
  const char* file;
  ErrorKind kind;
  std::vector<std::string> parts;
};

TEST(CkptTest, HostileFilesAreRefused) {
  const std::vector<Hostile> cases = {
      {"os_system.ckpt", ErrorKind::kUnsupported, {"refuses to load global os.system"}},
      {"posix_system.ckpt", ErrorKind::kUnsupported, {"refuses to load global posix.system"}},
      {"builtins_eval.ckpt", ErrorKind::kUnsupported, {"refuses to load global builtins.eval"}},
      {"stack_global_subprocess.ckpt", ErrorKind::kUnsupported, {"refuses to load global subprocess.Popen"}},
      {"reduce_inert.ckpt", ErrorKind::kUnsupported, {"refuses to call", "ModelCheckpoint"}},
      {"reduce_storage.ckpt", ErrorKind::kUnsupported, {"refuses to call"}},
      {"unknown_opcode.ckpt", ErrorKind::kUnsupported, {"opcode 0x81", "offset"}},
      {"beyond_storage.ckpt", ErrorKind::kFormat, {"tensor \"w\"", "exceed its storage of 6 elements"}},
      {"storage_size_mismatch.ckpt", ErrorKind::kFormat, {"storage \"0\" holds 24 bytes", "100"}},
      {"non_contiguous.ckpt", ErrorKind::kUnsupported, {"tensor \"w\"", "not contiguous"}},
      {"missing_storage.ckpt", ErrorKind::kFormat, {"archive/data/7"}},
      {"deflated.ckpt", ErrorKind::kUnsupported, {"archive/data/0", "compressed", "deflate"}},
      {"duplicate_entry.ckpt", ErrorKind::kFormat, {"archive/version", "twice"}},
      {"not_a_dict.ckpt", ErrorKind::kFormat, {"a list, expected a dict"}},
      {"truncated_pickle.ckpt", ErrorKind::kFormat, {"truncated"}},
      {"truncated.ckpt", ErrorKind::kFormat, {"not a zip archive"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    const fs::path f = kDir / c.file;
    std::vector<std::string> parts = c.parts;
    parts.push_back(f.string());
    try {
      WeightStore::from_ckpt(f);
      ADD_FAILURE() << "accepted " << f;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(std::string(error_kind_name(e.kind())), error_kind_name(c.kind)) << msg;
      for (const auto& p : parts)
        EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

// ---- unpickler on hand-written bytes

std::vector<PickledTensor> unpickle(const std::string& bytes, std::span<const std::byte> storage = {}) {
  const StorageResolver resolve = [&](const std::string&) { return storage; };
  return read_state_dict_pickle({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}, resolve,
                                "mem.pkl");
}

// Pickle builders: opcodes as named bytes, so no hand-counted string lengths.
std::string op(std::initializer_list<int> bytes) {
  std::string out;
  for (const int b : bytes) out += static_cast<char>(b);
  return out;
}
std::string short_str(const std::string& s) {
  return op({0x8c, static_cast<int>(s.size())}) + s;
}
std::string bin_str(const std::string& s) {
  return "X" + op({static_cast<int>(s.size()), 0, 0, 0}) + s;
}

TEST(CkptPickleTest, ContainersAndScalarsAreAcceptedAndIgnored) {
  // {"a": [1, -2, 3.0, -1, None, True, <memo 0>], "b": ("x", b"y"), "c": {1: 2}} with FRAME, MEMOIZE,
  // APPENDS.
  std::string p = op({0x80, 4, 0x95, 5, 0, 0, 0, 0, 0, 0, 0, '}', 0x94, '('});
  p +=
      short_str("a") + op({']', 0x94, '(', 'K', 1, 'J', 0xfe, 0xff, 0xff, 0xff, 'G', 0, 0, 0, 0, 0, 0, 0, 0});
  p += op({'N', 0x88, 0x8a, 1, 0xff, 'h', 0, 'e'});
  p += short_str("b") + short_str("x") + op({'C', 1, 'y', 0x86});
  p += short_str("c") + op({'}', 'K', 1, 'K', 2, 's', 'u', '.'});
  EXPECT_TRUE(unpickle(p).empty());
}

TEST(CkptPickleTest, BadStreamsAreRefused) {
  expect_error([] { unpickle(std::string("\x80\x02}i", 4)); }, ErrorKind::kUnsupported,
               {"mem.pkl", "offset 3", "opcode 0x69 ('i')"});
  expect_error([] { unpickle(std::string("\x80\x09}.", 4)); }, ErrorKind::kUnsupported, {"protocol 9"});
  expect_error([] { unpickle("0"); }, ErrorKind::kUnsupported, {"opcode 0x30"});
  expect_error([] { unpickle(std::string("\x80\x02s.", 4)); }, ErrorKind::kFormat, {"stack underflow"});
  expect_error([] { unpickle(std::string("\x80\x02}(.", 5)); }, ErrorKind::kFormat, {"MARK"});
  expect_error([] { unpickle(std::string("\x80\x02h\x05.", 5)); }, ErrorKind::kFormat, {"memo key 5"});
  expect_error([] { unpickle(std::string("\x80\x02X\xff\xff\xff\x7f", 7)); }, ErrorKind::kFormat,
               {"exceeds the limit"});
  expect_error([] { unpickle(std::string("\x80\x02}", 3)); }, ErrorKind::kFormat, {"truncated"});
  expect_error(
      [] {
        unpickle(op({0x80, 2}) + "ctorch\nfloat32\n" + op({'K', 1, 'b', '.'}));
      },
      ErrorKind::kFormat, {"BUILD on a global"});
  // A deep MARK stack is bounded, not a crash or an allocation spree.
  expect_error([] { unpickle(std::string(300'000, '(')); }, ErrorKind::kFormat, {"too many MARKs"});
  expect_error([] { unpickle(std::string(300'000, 'N')); }, ErrorKind::kFormat, {"stack deeper"});
}

// ---- zip reader: ZIP64, built by hand (a real > 4 GB file is too big for a fixture)

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
}

// A stored-entries zip whose central directory uses ZIP64 extra fields for sizes and offsets, and a ZIP64 end
// record, as writers do for > 4 GB archives.
std::string zip64(const std::vector<std::pair<std::string, std::string>>& files) {
  std::string out, cd;
  for (const auto& [name, data] : files) {
    const uint64_t local = out.size();
    put(out, 0x04034b50, 4), put(out, 45, 2), put(out, 0, 2), put(out, 0, 2), put(out, 0, 4), put(out, 0, 4);
    put(out, 0xffffffff, 4), put(out, 0xffffffff, 4), put(out, name.size(), 2), put(out, 0, 2);
    out += name + data;
    put(cd, 0x02014b50, 4), put(cd, 45, 2), put(cd, 45, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4);
    put(cd, 0, 4), put(cd, 0xffffffff, 4), put(cd, 0xffffffff, 4), put(cd, name.size(), 2), put(cd, 28, 2);
    put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 2), put(cd, 0, 4), put(cd, 0xffffffff, 4);
    cd += name;
    put(cd, 1, 2), put(cd, 24, 2), put(cd, data.size(), 8), put(cd, data.size(), 8), put(cd, local, 8);
  }
  const uint64_t cd_offset = out.size(), z64 = cd_offset + cd.size();
  out += cd;
  put(out, 0x06064b50, 4), put(out, 44, 8), put(out, 45, 2), put(out, 45, 2), put(out, 0, 4), put(out, 0, 4);
  put(out, files.size(), 8), put(out, files.size(), 8), put(out, cd.size(), 8), put(out, cd_offset, 8);
  put(out, 0x07064b50, 4), put(out, 0, 4), put(out, z64, 8), put(out, 1, 4);
  put(out, 0x06054b50, 4), put(out, 0, 4), put(out, 0xffff, 2), put(out, 0xffff, 2), put(out, 0xffffffff, 4);
  put(out, 0xffffffff, 4), put(out, 0, 2);
  return out;
}

TEST(CkptZipTest, Zip64ExtraFieldsAndEndRecord) {
  const std::string pkl =
      op({0x80, 2, '}'}) + bin_str("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + bin_str("storage") +
      "ctorch\nHalfStorage\n" + bin_str("0") + bin_str("cpu") +
      op({'K', 2, 't', 'Q', 'K', 0, 'K', 2, 0x85, 'K', 1, 0x85, 0x89, 'N', 't', 'R', 's', '.'});
  const std::string data("\x00\x3c\x00\xc0", 4);  // f16 1.0, -2.0
  const std::string bytes = zip64({{"m/data.pkl", pkl}, {"m/data/0", data}, {"m/version", "3\n"}});
  const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
  const ZipArchive zip = ZipArchive::parse_borrowed(p, bytes.size(), "z64.zip");
  ASSERT_EQ(zip.entries().size(), 3u);
  ASSERT_NE(zip.find("m/data/0"), nullptr);
  EXPECT_EQ(zip.find("m/data/0")->size, 4u);
  const TorchCheckpoint ckpt = TorchCheckpoint::parse_borrowed(p, bytes.size(), "z64.ckpt");
  ASSERT_EQ(ckpt.tensors().count("w"), 1u);
  const PickledTensor& t = ckpt.tensors().at("w");
  EXPECT_EQ(t.dtype, "F16");
  EXPECT_EQ(t.shape, (Shape{2}));
  EXPECT_EQ(std::memcmp(t.data, data.data(), 4), 0);

  // Every truncation is refused cleanly, never read out of bounds.
  for (size_t n = 0; n < bytes.size(); ++n)
    EXPECT_THROW(ZipArchive::parse_borrowed(p, n, "cut.zip"), Error) << n;
}

// ---- in-memory backend

TEST(WeightStoreMemoryTest, ServesTensorsInTheirOwnDtype) {
  std::map<std::string, Tensor> m;
  m["a"] = Tensor::from_f32({2}, std::vector<float>{1.5f, -2.0f});
  m["h"] = m["a"].to(DType::kF16);
  m["b"] = m["a"].to(DType::kBF16);
  const WeightStore ws = WeightStore::from_tensors(std::move(m), "<memory>");
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"a", "b", "h"}));
  EXPECT_EQ(ws.info("a").dtype, "F32");
  EXPECT_EQ(ws.info("h").dtype, "F16");
  EXPECT_EQ(ws.info("b").dtype, "BF16");
  EXPECT_EQ(ws.info("h").shape, (Shape{2}));
  for (const char* n : {"a", "h", "b"}) {
    const Tensor t = ws.load(n);
    EXPECT_EQ(t.dtype(), DType::kF32);
    EXPECT_EQ(t.data<float>()[0], 1.5f);
    EXPECT_EQ(t.data<float>()[1], -2.0f);
  }
  const Tensor h = ws.load("a", DType::kF16);
  EXPECT_EQ(h.dtype(), DType::kF16);
  uint16_t bits;
  std::memcpy(&bits, h.raw_data(), 2);
  EXPECT_EQ(bits, f32_to_f16(1.5f));
  Tensor copy = ws.load("a");
  copy.data<float>()[0] = 9.0f;  // load hands out copies
  EXPECT_EQ(ws.load("a").data<float>()[0], 1.5f);
  EXPECT_TRUE(ws.files().empty());
  EXPECT_EQ(ws.file_of("a"), fs::path("<memory>"));
  expect_error([&] { ws.load("zz"); }, ErrorKind::kModel, {"<memory>", "zz"});
}

TEST(WeightStoreMemoryTest, RejectsTensorWithoutStorage) {
  std::map<std::string, Tensor> m;
  m["x"] = Tensor();
  expect_error([&] { WeightStore::from_tensors(std::move(m), "mem"); }, ErrorKind::kInvalidArgument,
               {"mem", "\"x\""});
}

}  // namespace
}  // namespace sdrt::io
