// Tests for the safetensors reader and WeightStore: round trips, conversions, sharded indexes, component
// folders, and one test per way a file can be malformed (each must name the file and say what is wrong).
#include <bit>
#include <cmath>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/safetensors.h"
#include "safetensors_writer.h"
#include "sdrt/error.h"

namespace sdrt::io {
namespace {

namespace fs = std::filesystem;
using test::frame;
using test::SafetensorsWriter;
using test::TempDir;
using test::to_bytes;
using test::u64_le;
using test::write_bytes;

// Runs `fn`, expecting an sdrt::Error of `kind` whose one-line message contains every part.
void expect_error(const std::function<void()>& fn, ErrorKind kind, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(error_kind_name(e.kind()), std::string(error_kind_name(kind))) << msg;
    for (const auto& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "missing \"" << p << "\" in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return;
  }
  ADD_FAILURE() << "expected sdrt::Error (" << error_kind_name(kind) << ")";
}

template <typename T>
std::vector<T> values(const Tensor& t) {
  std::vector<T> v(static_cast<size_t>(t.numel()));
  if (!v.empty()) std::memcpy(v.data(), t.raw_data(), t.nbytes());
  return v;
}

uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

class SafetensorsTest : public ::testing::Test {
 protected:
  fs::path write(const std::string& name, const std::string& bytes) {
    write_bytes(dir_ / name, bytes);
    return dir_ / name;
  }
  // Writes a file whose header is `header` and whose data section is `data_size` zero bytes.
  fs::path write_header(const std::string& header, size_t data_size = 0) {
    return write("bad.safetensors", frame(header, std::string(data_size, '\0')));
  }
  void expect_format_error(const std::string& header, size_t data_size,
                           std::initializer_list<std::string> parts) {
    const fs::path p = write_header(header, data_size);
    std::vector<std::string> all(parts);
    all.push_back("bad.safetensors: ");
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << "expected a format error for header " << header;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.kind(), ErrorKind::kFormat) << msg;
      for (const auto& s : all)
        EXPECT_NE(msg.find(s), std::string::npos) << "missing \"" << s << "\" in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }

  TempDir dir_{"sdrt-safetensors"};
};

// ---- Well-formed files
// ---------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, F32RoundTripIsBitExact) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v = {1.5f, -0.0f, inf, -inf, 1e-45f /* subnormal */, 3.4028235e38f};
  const auto p = SafetensorsWriter().add_f32("w", {2, 3}, v).write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  const Tensor t = f.load("w");
  EXPECT_EQ(t.shape(), (Shape{2, 3}));
  EXPECT_EQ(t.dtype(), DType::kF32);
  const auto got = values<float>(t);
  ASSERT_EQ(got.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(bits(got[i]), bits(v[i])) << i;
}

TEST_F(SafetensorsTest, F16RoundTripAndToF32) {
  // zero, negative zero, smallest subnormal, largest subnormal, one, max normal, inf, -inf
  const std::vector<uint16_t> h = {0x0000, 0x8000, 0x0001, 0x03ff, 0x3c00, 0x7bff, 0x7c00, 0xfc00};
  const auto p = SafetensorsWriter().add_u16("h", "F16", {8}, h).write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(values<uint16_t>(f.load("h", DType::kF16)), h);
  const auto got = values<float>(f.load("h", DType::kF32));
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> want = {
      0.0f, -0.0f, std::ldexp(1.0f, -24), std::ldexp(1023.0f, -24), 1.0f, 65504.0f, inf, -inf};
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(bits(got[i]), bits(want[i])) << i;
}

TEST_F(SafetensorsTest, BF16RoundTripAndToF32) {
  const std::vector<uint16_t> b = {0x3f80, 0x8000, 0xff80, 0x0001, 0x4049};
  const auto p = SafetensorsWriter().add_u16("b", "BF16", {5}, b).write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(values<uint16_t>(f.load("b", DType::kBF16)), b);
  const auto got = values<float>(f.load("b"));
  const std::vector<float> want = {1.0f, -0.0f, -std::numeric_limits<float>::infinity(),
                                   std::ldexp(1.0f, -133), 3.140625f};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(bits(got[i]), bits(want[i])) << i;
}

TEST_F(SafetensorsTest, ConvertsBetweenFloatDtypes) {
  const std::vector<float> v = {1.0f, 1.0f / 3.0f, 65520.0f, std::ldexp(1.0f, -24), -0.0f, 1e-8f};
  const auto p = SafetensorsWriter()
                     .add_f32("f", {6}, v)
                     .add_u16("h", "F16", {2}, {0x3c00, 0xc000})
                     .add_u16("b", "BF16", {2}, {0x3f80, 0x4049})
                     .write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  const Tensor h = f.load("f", DType::kF16);
  EXPECT_EQ(h.dtype(), DType::kF16);
  EXPECT_EQ(values<uint16_t>(h), (std::vector<uint16_t>{0x3c00, 0x3555, 0x7c00, 0x0001, 0x8000, 0x0000}));
  EXPECT_EQ(values<uint16_t>(f.load("f", DType::kBF16))[0], 0x3f80);
  EXPECT_EQ(values<uint16_t>(f.load("h", DType::kBF16)), (std::vector<uint16_t>{0x3f80, 0xc000}));
  EXPECT_EQ(values<uint16_t>(f.load("b", DType::kF16)), (std::vector<uint16_t>{0x3c00, 0x4248}));
}

TEST_F(SafetensorsTest, NamesInfoRawAndMetadata) {
  const auto p = SafetensorsWriter()
                     .add_f32("z.weight", {1}, {2.0f})
                     .add_f32("a.bias", {}, {7.0f})  // a scalar: shape []
                     .metadata("format", "pt")
                     .metadata("note", "hello")
                     .write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a.bias", "z.weight"}));
  EXPECT_TRUE(f.contains("a.bias"));
  EXPECT_FALSE(f.contains("__metadata__"));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hello"}}));
  const TensorInfo& info = f.info("a.bias");
  EXPECT_EQ(info.dtype, "F32");
  EXPECT_TRUE(info.shape.empty());
  EXPECT_EQ(info.end - info.begin, 4u);
  float x;
  std::memcpy(&x, f.raw("a.bias"), 4);
  EXPECT_EQ(x, 7.0f);
  EXPECT_EQ(f.load("a.bias").numel(), 1);
}

TEST_F(SafetensorsTest, ZeroSizeTensorsAnywhereInBounds) {
  // "e" sits inside the bytes of "w": allowed, because it owns no bytes.
  const std::string header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("e":{"dtype":"F32","shape":[0,4],"data_offsets":[4,4]},)"
                             R"("end":{"dtype":"F16","shape":[3,0],"data_offsets":[8,8]}})";
  const auto p = write("a.safetensors", frame(header, to_bytes(std::vector<float>{1.0f, 2.0f})));
  const auto f = SafetensorsFile::open(p);
  const Tensor e = f.load("e");
  EXPECT_EQ(e.shape(), (Shape{0, 4}));
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(f.load("end", DType::kF16).numel(), 0);
  EXPECT_EQ(values<float>(f.load("w")), (std::vector<float>{1.0f, 2.0f}));
}

TEST_F(SafetensorsTest, HeaderPaddedWithSpacesAndUnalignedData) {
  // A 61-byte header puts the data at offset 69: every F32/F16 read is misaligned (UBSan checks the reader).
  const auto p = SafetensorsWriter()
                     .add_f32("f", {3}, {1.0f, -2.0f, 3.5f})
                     .add_u16("h", "F16", {1}, {0x3c00})
                     .pad_header_to(61)
                     .write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(values<float>(f.load("f")), (std::vector<float>{1.0f, -2.0f, 3.5f}));
  EXPECT_EQ(values<float>(f.load("h")), (std::vector<float>{1.0f}));
  EXPECT_EQ(values<uint16_t>(f.load("f", DType::kF16)), (std::vector<uint16_t>{0x3c00, 0xc000, 0x4300}));
}

TEST_F(SafetensorsTest, OtherDtypesParseButDoNotLoad) {
  const auto p = SafetensorsWriter()
                     .add("ids", "I64", {2}, std::string(16, '\0'))
                     .add("u", "U16", {1}, std::string(2, '\0'))
                     .add("f8", "F8_E4M3", {3}, std::string(3, '\0'))
                     .add("mask", "BOOL", {1}, std::string(1, '\1'))
                     .write(dir_ / "a.safetensors");
  const auto f = SafetensorsFile::open(p);
  EXPECT_EQ(f.info("ids").dtype, "I64");
  EXPECT_EQ(f.names().size(), 4u);
  expect_error([&] { f.load("ids"); }, ErrorKind::kUnsupported, {"a.safetensors: ", "\"ids\"", "I64"});
  expect_error([&] { f.load("f8", DType::kF16); }, ErrorKind::kUnsupported, {"\"f8\"", "F8_E4M3"});
}

// ---- Malformed files
// -----------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, FileShorterThanLengthPrefix) {
  expect_error([&] { SafetensorsFile::open(write("short.safetensors", "abc")); }, ErrorKind::kFormat,
               {"short.safetensors: ", "3 bytes", "too short"});
  expect_error([&] { SafetensorsFile::open(write("empty.safetensors", "")); }, ErrorKind::kFormat,
               {"empty.safetensors: ", "0 bytes"});
}

TEST_F(SafetensorsTest, MissingFileOrDirectory) {
  expect_error([&] { SafetensorsFile::open(dir_ / "nope.safetensors"); }, ErrorKind::kIo,
               {"nope.safetensors: ", "cannot open", "No such file"});
  expect_error([&] { SafetensorsFile::open(dir_.path()); }, ErrorKind::kIo,
               {dir_.path().string(), "not a regular file"});
}

TEST_F(SafetensorsTest, HeaderLengthBeyondFile) {
  expect_error([&] { SafetensorsFile::open(write("m.safetensors", u64_le(123456) + "{}")); },
               ErrorKind::kFormat, {"m.safetensors: header length 123456 exceeds file size 10"});
  expect_error([&] { SafetensorsFile::open(write("m.safetensors", u64_le(~0ull) + "{}")); },
               ErrorKind::kFormat, {"header length 18446744073709551615 exceeds file size 10"});
}

TEST_F(SafetensorsTest, HeaderNotJson) {
  expect_format_error("{not json", 0, {"header is not valid JSON"});
  expect_format_error("", 0, {"header is not valid JSON"});
  expect_format_error("{} trailing", 0, {"header is not valid JSON"});
  expect_format_error("{\"\xff\xfe\": 1}", 0, {"header is not valid JSON", "\\xff"});  // invalid UTF-8
  expect_format_error(std::string(100, '[') + std::string(100, ']'), 0, {"nests deeper"});
}

TEST_F(SafetensorsTest, HeaderNotAnObject) {
  expect_format_error("[1, 2]", 0, {"header is a JSON array, expected a JSON object"});
  expect_format_error("42", 0, {"header is 42"});
}

TEST_F(SafetensorsTest, DuplicateTensorName) {
  const std::string e = R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  expect_format_error(R"({"a":)" + e + R"(,"a":)" + e + "}", 4, {"duplicate key \"a\""});
}

TEST_F(SafetensorsTest, EntryStructure) {
  expect_format_error(R"({"a": 3})", 0, {"tensor \"a\": entry is 3, expected an object"});
  expect_format_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4,
                      {"tensor \"a\": unknown key \"extra\""});
  expect_format_error(R"({"a":{"dtype":"F32","data_offsets":[0,4]}})", 4,
                      {"tensor \"a\": missing \"shape\""});
  expect_format_error(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4,
                      {"dtype is 4, expected a string"});
}

TEST_F(SafetensorsTest, UnknownDtype) {
  expect_format_error(R"({"w":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", 4,
                      {"tensor \"w\": unknown dtype \"F12\""});
  expect_format_error(R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", 4,
                      {"unknown dtype \"f32\""});
}

TEST_F(SafetensorsTest, BadShapeEntries) {
  expect_format_error(R"({"w":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})", 0,
                      {"tensor \"w\": shape[1] is -1, expected a non-negative integer"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,0]}})", 0, {"shape[0] is 2.5"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, {"shape[0] is 2.0"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8,
                      {"shape[0] is \"2\""});
  expect_format_error(R"({"w":{"dtype":"F32","shape":3,"data_offsets":[0,12]}})", 12,
                      {"shape is 3, expected an array"});
}

TEST_F(SafetensorsTest, BadDataOffsets) {
  expect_format_error(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
                      {"tensor \"w\": data_offsets [0, 8] exceed the data section of 4 bytes"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8,
                      {"tensor \"w\": data_offsets [8, 4] has begin > end"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4,
                      {"data_offsets has 1 entries, expected [begin, end]"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4,
                      {"data_offsets[0] is -4"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}})", 4,
                      {"data_offsets[1] is 4.0"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}})", 4,
                      {"number overflow"});
}

TEST_F(SafetensorsTest, OverlappingTensors) {
  expect_format_error(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                      12, {"tensors \"a\" [0, 8] and \"b\" [4, 12] overlap"});
  // Same range twice, and a tensor nested inside a larger one.
  expect_format_error(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                      R"("b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
                      4, {"overlap"});
  expect_format_error(R"({"big":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                      R"("x":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},)"
                      R"("y":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})",
                      16, {"\"big\" [0, 16] and \"y\" [4, 8] overlap"});
}

TEST_F(SafetensorsTest, SizeMismatch) {
  expect_format_error(
      R"({"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,10]}})", 10,
      {"bad.safetensors: tensor \"a.weight\": data_offsets [0, 10] but shape [2, 3] of F32 needs 24 bytes"});
}

TEST_F(SafetensorsTest, HugeShapeOverflows) {
  expect_format_error(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0,
                      {"tensor \"w\": shape [4294967296, 4294967296, 16] of F32 overflows"});
  // Fits int64 as an element count, but not as a byte count.
  expect_format_error(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", 0,
                      {"overflows"});
  // A trailing zero does not rescue an element count that overflowed on the way.
  expect_format_error(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0,
                      {"overflows"});
  expect_format_error(R"({"w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,0]}})", 0,
                      {"shape[0] is 18446744073709551615"});
}

TEST_F(SafetensorsTest, BadMetadata) {
  expect_format_error(R"({"__metadata__":{"format":"pt","n":1}})", 0,
                      {"__metadata__ \"n\" is 1, expected a string"});
  expect_format_error(R"({"__metadata__":"pt"})", 0, {"__metadata__ is \"pt\", expected an object"});
}

TEST_F(SafetensorsTest, NamesWithControlCharactersStayOnOneLine) {
  expect_format_error("{\"a\\nb\":{\"dtype\":\"X\",\"shape\":[],\"data_offsets\":[0,0]}}", 0,
                      {"tensor \"a\\x0ab\": unknown dtype \"X\""});
}

TEST_F(SafetensorsTest, TensorNotFound) {
  const auto p = SafetensorsWriter().add_f32("w", {1}, {1.0f}).write(dir_ / "model.safetensors");
  const auto f = SafetensorsFile::open(p);
  expect_error([&] { f.load("missing.weight"); }, ErrorKind::kModel,
               {"model.safetensors: ", "tensor \"missing.weight\" not found"});
  expect_error([&] { f.info("x"); }, ErrorKind::kModel, {"model.safetensors: ", "\"x\""});
}

// ---- WeightStore
// -------------------------------------------------------------------------------------------

class WeightStoreTest : public SafetensorsTest {
 protected:
  // Two shards: a, b in shard 1; c in shard 2.
  void write_shards() {
    SafetensorsWriter()
        .add_f32("a", {1}, {1.0f})
        .add_f32("b", {2}, {2.0f, 3.0f})
        .write(dir_ / "m-00001.safetensors");
    SafetensorsWriter().add_u16("c", "F16", {1}, {0x4000}).write(dir_ / "m-00002.safetensors");
  }
  fs::path write_index(const nlohmann::json& weight_map,
                       const std::string& name = "m.safetensors.index.json") {
    const nlohmann::json j = {{"metadata", {{"total_size", 14}}}, {"weight_map", weight_map}};
    return write(name, j.dump());
  }
};

TEST_F(WeightStoreTest, FromFile) {
  const auto p = SafetensorsWriter().add_f32("w", {2}, {1.0f, 2.0f}).write(dir_ / "model.safetensors");
  const auto ws = WeightStore::from_file(p);
  EXPECT_EQ(ws.source(), p);
  EXPECT_EQ(ws.names(), std::vector<std::string>{"w"});
  EXPECT_EQ(ws.files(), std::vector<fs::path>{p});
  EXPECT_EQ(ws.file_of("w"), p);
  EXPECT_EQ(ws.info("w").shape, Shape{2});
  EXPECT_EQ(values<float>(ws.load("w")), (std::vector<float>{1.0f, 2.0f}));
  expect_error([&] { ws.load("v"); }, ErrorKind::kModel, {"model.safetensors: ", "tensor \"v\" not found"});
}

TEST_F(WeightStoreTest, ShardedIndexAcrossTwoShards) {
  write_shards();
  // "./" spelling of the same shard must not open it twice.
  const auto idx = write_index(
      {{"a", "m-00001.safetensors"}, {"b", "./m-00001.safetensors"}, {"c", "m-00002.safetensors"}});
  const auto ws = WeightStore::from_index(idx);
  EXPECT_EQ(ws.source(), idx);
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ws.files().size(), 2u);
  EXPECT_EQ(ws.file_of("c").filename(), "m-00002.safetensors");
  EXPECT_EQ(ws.file_of("b").filename(), "m-00001.safetensors");
  EXPECT_EQ(values<float>(ws.load("b")), (std::vector<float>{2.0f, 3.0f}));
  EXPECT_EQ(values<float>(ws.load("c")), (std::vector<float>{2.0f}));
  EXPECT_TRUE(ws.contains("a"));
  EXPECT_FALSE(ws.contains("d"));
}

TEST_F(WeightStoreTest, IndexShardMissing) {
  write_shards();
  const auto idx = write_index({{"a", "m-00001.safetensors"}, {"c", "m-00003.safetensors"}});
  expect_error([&] { WeightStore::from_index(idx); }, ErrorKind::kIo,
               {"m-00003.safetensors: cannot open", "m.safetensors.index.json"});
}

TEST_F(WeightStoreTest, IndexTensorMissingFromShard) {
  write_shards();
  const auto idx = write_index({{"a", "m-00001.safetensors"}, {"c", "m-00001.safetensors"}});
  expect_error([&] { WeightStore::from_index(idx); }, ErrorKind::kModel,
               {"m.safetensors.index.json: ", "tensor \"c\"", "m-00001.safetensors", "does not contain it"});
}

TEST_F(WeightStoreTest, IndexTensorInTwoShards) {
  write_shards();
  SafetensorsWriter().add_f32("b", {1}, {9.0f}).write(dir_ / "m-00003.safetensors");
  const auto idx = write_index({{"a", "m-00001.safetensors"}, {"b", "m-00003.safetensors"}});
  expect_error([&] { WeightStore::from_index(idx); }, ErrorKind::kModel,
               {"m.safetensors.index.json: ", "tensor \"b\" is in two shards", "m-00001.safetensors",
                "m-00003.safetensors"});
}

TEST_F(WeightStoreTest, IndexRejectsShardNamesOutsideItsFolder) {
  write_shards();
  expect_error(
      [&] {
        WeightStore::from_index(write_index({{"a", "../m-00001.safetensors"}}));
      },
      ErrorKind::kFormat,
      {"m.safetensors.index.json: ", "tensor \"a\"", "\"../m-00001.safetensors\"", "relative path"});
  expect_error(
      [&] {
        WeightStore::from_index(write_index({{"a", "sub/../../x.safetensors"}}));
      },
      ErrorKind::kFormat, {"relative path"});
  const std::string abs = (dir_ / "m-00001.safetensors").string();
  expect_error(
      [&] {
        WeightStore::from_index(write_index({{"a", abs}}));
      },
      ErrorKind::kFormat, {"relative path"});
  expect_error(
      [&] {
        WeightStore::from_index(write_index({{"a", ""}}));
      },
      ErrorKind::kFormat, {"relative path"});
}

TEST_F(WeightStoreTest, MalformedIndex) {
  expect_error([&] { WeightStore::from_index(write("i.json", "{\"weight_map\": ")); }, ErrorKind::kFormat,
               {"i.json: ", "malformed JSON"});
  expect_error([&] { WeightStore::from_index(write("i.json", "[]")); }, ErrorKind::kFormat,
               {"i.json: ", "expected a JSON object"});
  expect_error([&] { WeightStore::from_index(write("i.json", "{\"metadata\": {}}")); }, ErrorKind::kFormat,
               {"i.json: missing \"weight_map\""});
  expect_error([&] { WeightStore::from_index(write("i.json", "{\"weight_map\": []}")); }, ErrorKind::kFormat,
               {"i.json: \"weight_map\" is a JSON array"});
  expect_error([&] { WeightStore::from_index(write("i.json", "{\"weight_map\": {}}")); }, ErrorKind::kFormat,
               {"i.json: \"weight_map\" is empty"});
  expect_error([&] { WeightStore::from_index(write("i.json", "{\"weight_map\": {\"a\": 3}}")); },
               ErrorKind::kFormat, {"i.json: tensor \"a\": shard is 3"});
  expect_error([&] { WeightStore::from_index(dir_ / "none.json"); }, ErrorKind::kIo, {"none.json"});
}

TEST_F(WeightStoreTest, ComponentDirPrefersFullPrecisionUnlessAsked) {
  SafetensorsWriter().add_f32("w", {1}, {1.0f}).write(dir_ / "model.safetensors");
  SafetensorsWriter().add_u16("w", "F16", {1}, {0x4000}).write(dir_ / "model.fp16.safetensors");
  const auto full = WeightStore::from_component_dir(dir_.path(), "model");
  EXPECT_EQ(full.source().filename(), "model.safetensors");
  EXPECT_EQ(full.info("w").dtype, "F32");
  const auto half = WeightStore::from_component_dir(dir_.path(), "model", /*prefer_fp16=*/true);
  EXPECT_EQ(half.source().filename(), "model.fp16.safetensors");
  EXPECT_EQ(values<float>(half.load("w")), std::vector<float>{2.0f});
}

TEST_F(WeightStoreTest, ComponentDirFindsFp16Only) {
  SafetensorsWriter().add_u16("w", "F16", {1}, {0x3c00}).write(dir_ / "model.fp16.safetensors");
  EXPECT_EQ(WeightStore::from_component_dir(dir_.path(), "model").source().filename(),
            "model.fp16.safetensors");
}

TEST_F(WeightStoreTest, ComponentDirFindsIndexes) {
  write_shards();
  write_index({{"a", "m-00001.safetensors"}, {"c", "m-00002.safetensors"}}, "m.safetensors.index.json");
  EXPECT_EQ(WeightStore::from_component_dir(dir_.path(), "m").names(), (std::vector<std::string>{"a", "c"}));

  TempDir other("sdrt-safetensors-fp16");
  SafetensorsWriter().add_f32("a", {1}, {1.0f}).write(other / "u.fp16-1.safetensors");
  write_bytes(other / "u.safetensors.index.fp16.json", R"({"weight_map": {"a": "u.fp16-1.safetensors"}})");
  const auto ws = WeightStore::from_component_dir(other.path(), "u", /*prefer_fp16=*/true);
  EXPECT_EQ(ws.source().filename(), "u.safetensors.index.fp16.json");
  fs::rename(other / "u.safetensors.index.fp16.json", other / "u.fp16.safetensors.index.json");
  EXPECT_EQ(WeightStore::from_component_dir(other.path(), "u").source().filename(),
            "u.fp16.safetensors.index.json");
}

TEST_F(WeightStoreTest, ComponentDirEmptyOrMissing) {
  expect_error([&] { WeightStore::from_component_dir(dir_.path(), "model"); }, ErrorKind::kIo,
               {dir_.path().string() + ": no weights for \"model\"", "model.safetensors,",
                "model.fp16.safetensors", "model.safetensors.index.json"});
  expect_error([&] { WeightStore::from_component_dir(dir_ / "unet", "model"); }, ErrorKind::kIo,
               {"unet: no such directory"});
  const auto file = write("model.txt", "x");
  expect_error([&] { WeightStore::from_component_dir(file, "model"); }, ErrorKind::kIo,
               {"model.txt: not a directory"});
}

}  // namespace
}  // namespace sdrt::io
