// PNG writer and reader: pixels and text metadata round-trip, text chunk kinds as Pillow / A1111 write them,
// other PNG flavours read as RGB8, and failed writes leave nothing behind.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <random>

#include <gtest/gtest.h>

#include "io/png.h"
#include "sdrt/error.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::TempDir;

std::vector<uint8_t> random_rgb(int64_t w, int64_t h, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(static_cast<size_t>(w * h * 3));
  for (auto& b : v) b = static_cast<uint8_t>(rng() & 0xff);
  return v;
}

template <typename Fn>
void expect_error(Fn fn, ErrorKind kind, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected an sdrt::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), kind) << msg;
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

// ---- Raw libpng access, independent of sdrt's reader and writer -------------------------------------------

struct RawText {
  int compression;
  std::string key, text;  // bytes as stored
};

// Reads a PNG's text chunks with libpng. Plain C inside: libpng reports errors by longjmp.
bool raw_read_text(const char* path, RawText* out, int max, int* count) {
  FILE* f = std::fopen(path, "rb");
  if (!f) return false;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    std::fclose(f);
    return false;
  }
  png_init_io(png, f);
  png_read_info(png, info);
  png_textp text = nullptr;
  const int n = png_get_text(png, info, &text, nullptr);
  *count = n;
  for (int i = 0; i < n && i < max; ++i) {
    const bool itxt = text[i].compression >= PNG_ITXT_COMPRESSION_NONE;
    out[i].compression = text[i].compression;
    out[i].key.assign(text[i].key);
    out[i].text.assign(text[i].text, itxt ? text[i].itxt_length : text[i].text_length);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  std::fclose(f);
  return true;
}

// Writes an arbitrary PNG flavour (rows already packed for color_type / bit_depth).
bool raw_write(const char* path, png_uint_32 w, png_uint_32 h, int color_type, int bit_depth, int interlace,
               const uint8_t* rows, size_t row_bytes, const png_color* palette, int n_palette,
               const uint8_t* trns, int n_trns) {
  FILE* f = std::fopen(path, "wb");
  if (!f) return false;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(f);
    return false;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, w, h, bit_depth, color_type, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (palette) png_set_PLTE(png, info, palette, n_palette);
  if (trns) png_set_tRNS(png, info, trns, n_trns, nullptr);
  png_write_info(png, info);
  const int passes = png_set_interlace_handling(png);
  for (int p = 0; p < passes; ++p)
    for (png_uint_32 y = 0; y < h; ++y) png_write_row(png, rows + y * row_bytes);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  std::fclose(f);
  return true;
}

// ---- Tests ------------------------------------------------------------------------------------------------

TEST(Png, RoundTrip) {
  TempDir tmp;
  for (auto [w, h] : {std::pair<int64_t, int64_t>{37, 23}, {1, 1}, {512, 8}}) {
    const auto rgb = random_rgb(w, h, static_cast<uint32_t>(w * 1000 + h));
    const auto path = tmp / "out.png";
    io::write_png(path, rgb, w, h, {{"parameters", "a cat\nSteps: 20, Seed: 42"}, {"Software", "sdrt"}});
    const auto img = io::read_png_rgb8(path);
    EXPECT_EQ(img.width, w);
    EXPECT_EQ(img.height, h);
    EXPECT_EQ(img.rgb8, rgb);
    ASSERT_EQ(img.text.size(), 2u);
    EXPECT_EQ(img.text[0], (std::pair<std::string, std::string>{"parameters", "a cat\nSteps: 20, Seed: 42"}));
    EXPECT_EQ(img.text[1], (std::pair<std::string, std::string>{"Software", "sdrt"}));
  }
}

// Chunk kinds as Pillow writes them for A1111: tEXt (Latin-1) when possible, iTXt (UTF-8) otherwise.
TEST(Png, TextChunksAsA1111Writes) {
  TempDir tmp;
  const auto path = tmp / "meta.png";
  const std::string ascii =
      "masterpiece, a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a";
  const std::string latin1 = "caf\xc3\xa9 na\xc3\xafve";  // "café naïve"
  const std::string cjk =
      "\xe6\x9d\xb1\xe4\xba\xac\xe3\x81\xae\xe5\xa4\x9c \xf0\x9f\x90\xb1";  // "東京の夜 🐱"
  io::write_png(path, random_rgb(4, 4, 1), 4, 4, {{"parameters", ascii}, {"latin", latin1}, {"prompt", cjk}});
  RawText text[8];
  int n = 0;
  ASSERT_TRUE(raw_read_text(path.c_str(), text, 8, &n));
  ASSERT_EQ(n, 3);
  EXPECT_EQ(text[0].key, "parameters");
  EXPECT_EQ(text[0].compression, PNG_TEXT_COMPRESSION_NONE);
  EXPECT_EQ(text[0].text, ascii);
  EXPECT_EQ(text[1].key, "latin");
  EXPECT_EQ(text[1].compression, PNG_TEXT_COMPRESSION_NONE);
  EXPECT_EQ(text[1].text, "caf\xe9 na\xefve");  // stored as Latin-1
  EXPECT_EQ(text[2].key, "prompt");
  EXPECT_EQ(text[2].compression, PNG_ITXT_COMPRESSION_NONE);
  EXPECT_EQ(text[2].text, cjk);  // stored as UTF-8

  // sdrt's reader gives every value back as UTF-8.
  const auto img = io::read_png_rgb8(path);
  ASSERT_EQ(img.text.size(), 3u);
  EXPECT_EQ(img.text[1].second, latin1);
  EXPECT_EQ(img.text[2].second, cjk);
}

TEST(Png, RejectsBadTextAndPixels) {
  TempDir tmp;
  const auto path = tmp / "bad.png";
  const auto rgb = random_rgb(4, 4, 2);
  expect_error([&] { io::write_png(path, rgb, 4, 4, {{"", "x"}}); }, ErrorKind::kInvalidArgument, {"key"});
  expect_error(
      [&] {
        io::write_png(path, rgb, 4, 4, {{" lead", "x"}});
      },
      ErrorKind::kInvalidArgument, {"key"});
  expect_error(
      [&] {
        io::write_png(path, rgb, 4, 4, {{std::string(80, 'k'), "x"}});
      },
      ErrorKind::kInvalidArgument, {"key"});
  expect_error(
      [&] {
        io::write_png(path, rgb, 4, 4, {{"k", "bad \xff utf8"}});
      },
      ErrorKind::kInvalidArgument, {"UTF-8"});
  expect_error(
      [&] {
        io::write_png(path, rgb, 4, 4, {{"k", std::string("nul\0x", 5)}});
      },
      ErrorKind::kInvalidArgument, {"UTF-8"});
  expect_error([&] { io::write_png(path, rgb, 5, 4); }, ErrorKind::kInvalidArgument, {path.string(), "5x4"});
  expect_error([&] { io::write_png(path, {}, 0, 0); }, ErrorKind::kInvalidArgument, {"0x0"});
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Png, MissingFolderIsAnIoErrorAndLeavesNoFile) {
  TempDir tmp;
  const auto path = tmp / "no-such-folder" / "out.png";
  expect_error([&] { io::write_png(path, random_rgb(2, 2, 3), 2, 2); }, ErrorKind::kIo, {path.string()});
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(tmp / "no-such-folder"));
}

TEST(Png, FailedWriteKeepsTheExistingFile) {
  TempDir tmp;
  const auto path = tmp / "keep.png";
  const auto rgb = random_rgb(8, 8, 4);
  io::write_png(path, rgb, 8, 8, {{"parameters", "first"}});
  const std::string before = testing::read_file(path);
  // Fails while encoding (bad text), then while writing (the target is a folder).
  EXPECT_THROW(io::write_png(path, rgb, 8, 8, {{"bad key ", "second"}}), Error);
  EXPECT_EQ(testing::read_file(path), before);
  std::filesystem::create_directory(tmp / "dir.png");
  expect_error([&] { io::write_png(tmp / "dir.png", rgb, 8, 8); }, ErrorKind::kIo,
               {(tmp / "dir.png").string()});
  // Nothing but the good file and the folder: no temporary left over.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(tmp.path())) ++entries;
  EXPECT_EQ(entries, 2);
  // A successful overwrite replaces the file.
  io::write_png(path, rgb, 8, 8, {{"parameters", "second"}});
  EXPECT_EQ(io::read_png_rgb8(path).text.at(0).second, "second");
}

TEST(Png, ReadsOtherFlavoursAsRgb8) {
  TempDir tmp;
  const png_uint_32 w = 5, h = 3;
  const auto path = (tmp / "flavour.png").string();
  // Gray 8-bit with alpha: gray replicated into RGB, alpha dropped.
  {
    std::vector<uint8_t> rows;
    for (png_uint_32 i = 0; i < w * h; ++i) rows.insert(rows.end(), {static_cast<uint8_t>(i * 10), 77});
    ASSERT_TRUE(raw_write(path.c_str(), w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, PNG_INTERLACE_NONE, rows.data(),
                          w * 2, nullptr, 0, nullptr, 0));
    const auto img = io::read_png_rgb8(path);
    ASSERT_EQ(img.rgb8.size(), size_t{w * h * 3});
    for (png_uint_32 i = 0; i < w * h; ++i)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(img.rgb8[i * 3 + c], i * 10);
  }
  // RGBA, Adam7-interlaced.
  {
    std::vector<uint8_t> rows, want;
    for (png_uint_32 i = 0; i < w * h; ++i) {
      const uint8_t px[4] = {static_cast<uint8_t>(i), static_cast<uint8_t>(100 + i),
                             static_cast<uint8_t>(200 - i), static_cast<uint8_t>(i * 3)};
      rows.insert(rows.end(), px, px + 4);
      want.insert(want.end(), px, px + 3);
    }
    ASSERT_TRUE(raw_write(path.c_str(), w, h, PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_ADAM7, rows.data(),
                          w * 4, nullptr, 0, nullptr, 0));
    EXPECT_EQ(io::read_png_rgb8(path).rgb8, want);
  }
  // 16-bit RGB: the high byte survives.
  {
    std::vector<uint8_t> rows, want;
    for (png_uint_32 i = 0; i < w * h * 3; ++i) {
      rows.insert(rows.end(), {static_cast<uint8_t>(i * 7), 0x80});  // big-endian samples
      want.push_back(static_cast<uint8_t>(i * 7));
    }
    ASSERT_TRUE(raw_write(path.c_str(), w, h, PNG_COLOR_TYPE_RGB, 16, PNG_INTERLACE_NONE, rows.data(), w * 6,
                          nullptr, 0, nullptr, 0));
    EXPECT_EQ(io::read_png_rgb8(path).rgb8, want);
  }
  // 4-bit palette with transparency.
  {
    const png_color palette[3] = {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}};
    const uint8_t trns[3] = {0, 128, 255};
    std::vector<uint8_t> rows(3 * h, 0), want;
    for (png_uint_32 y = 0; y < h; ++y)
      for (png_uint_32 x = 0; x < w; ++x) {
        const uint8_t idx = static_cast<uint8_t>((x + y) % 3);
        rows[y * 3 + x / 2] |= static_cast<uint8_t>(idx << (x % 2 ? 0 : 4));
        want.insert(want.end(), {palette[idx].red, palette[idx].green, palette[idx].blue});
      }
    ASSERT_TRUE(raw_write(path.c_str(), w, h, PNG_COLOR_TYPE_PALETTE, 4, PNG_INTERLACE_NONE, rows.data(), 3,
                          palette, 3, trns, 3));
    EXPECT_EQ(io::read_png_rgb8(path).rgb8, want);
  }
  // 1-bit gray.
  {
    std::vector<uint8_t> rows(h, 0), want;
    for (png_uint_32 y = 0; y < h; ++y)
      for (png_uint_32 x = 0; x < w; ++x) {
        const bool on = (x + y) % 2 == 0;
        if (on) rows[y] |= static_cast<uint8_t>(0x80 >> x);
        want.insert(want.end(), 3, on ? 255 : 0);
      }
    ASSERT_TRUE(raw_write(path.c_str(), w, h, PNG_COLOR_TYPE_GRAY, 1, PNG_INTERLACE_NONE, rows.data(), 1,
                          nullptr, 0, nullptr, 0));
    EXPECT_EQ(io::read_png_rgb8(path).rgb8, want);
  }
}

TEST(Png, ReadErrors) {
  TempDir tmp;
  expect_error([&] { io::read_png_rgb8(tmp / "missing.png"); }, ErrorKind::kIo,
               {(tmp / "missing.png").string()});
  testing::write_file(tmp / "text.png", "definitely not a png");
  expect_error([&] { io::read_png_rgb8(tmp / "text.png"); }, ErrorKind::kFormat,
               {(tmp / "text.png").string(), "not a PNG"});
  io::write_png(tmp / "good.png", random_rgb(16, 16, 5), 16, 16);
  const std::string good = testing::read_file(tmp / "good.png");
  testing::write_file(tmp / "cut.png", good.substr(0, good.size() / 2));
  expect_error([&] { io::read_png_rgb8(tmp / "cut.png"); }, ErrorKind::kFormat, {(tmp / "cut.png").string()});
  std::string corrupt = good;
  corrupt[good.size() / 2] ^= 0x55;  // inside IDAT: CRC or zlib error
  testing::write_file(tmp / "corrupt.png", corrupt);
  expect_error([&] { io::read_png_rgb8(tmp / "corrupt.png"); }, ErrorKind::kFormat,
               {(tmp / "corrupt.png").string()});
}

}  // namespace
}  // namespace sdrt
