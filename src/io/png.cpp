#include "io/png.h"

#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "io/json_file.h"
#include "sdrt/error.h"

namespace sdrt::io {
namespace {

constexpr png_uint_32 kMaxSide = 16384;  // untrusted input: bounds what one image may allocate

// ---- Text encodings ---------------------------------------------------------------------------------------

// Decodes UTF-8 into code points; false on malformed input (overlong forms, surrogates, > U+10FFFF, NUL).
bool utf8_to_code_points(const std::string& s, std::vector<char32_t>& out) {
  out.clear();
  for (size_t i = 0; i < s.size();) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    const int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xe ? 3 : (b0 >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + static_cast<size_t>(len) > s.size()) return false;
    char32_t cp = len == 1 ? b0 : b0 & (0x7f >> len);
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((b & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3f);
    }
    static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp == 0 || cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return true;
}

std::string latin1_to_utf8(const char* s, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

// PNG keywords: 1-79 characters, no leading, trailing or consecutive spaces. sdrt writes ASCII ones only.
bool valid_key(const std::string& k) {
  if (k.empty() || k.size() > 79 || k.front() == ' ' || k.back() == ' ') return false;
  for (size_t i = 0; i < k.size(); ++i) {
    if (k[i] < 0x20 || k[i] > 0x7e) return false;
    if (k[i] == ' ' && i > 0 && k[i - 1] == ' ') return false;
  }
  return true;
}

// One text chunk, ready for libpng.
struct TextChunk {
  std::string key, value;  // value in the chunk's own encoding: Latin-1 for tEXt, UTF-8 for iTXt
  bool itxt = false;
};

// Pillow's rule, which A1111 inherits: tEXt when the value encodes as Latin-1, iTXt otherwise.
TextChunk make_chunk(const std::string& key, const std::string& value) {
  if (!valid_key(key))
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("write_png: text key \"{}\" is not a valid PNG keyword (1-79 printable ASCII "
                            "characters, no leading, trailing or doubled spaces)",
                            key));
  std::vector<char32_t> cps;
  if (!utf8_to_code_points(value, cps))
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("write_png: the value of text \"{}\" is not valid UTF-8 (or contains NUL)", key));
  TextChunk c{key, {}, false};
  for (char32_t cp : cps) c.itxt = c.itxt || cp > 0xff;
  if (c.itxt) {
    c.value = value;
  } else {
    for (char32_t cp : cps) c.value += static_cast<char>(static_cast<unsigned char>(cp));
  }
  return c;
}

// ---- libpng glue ------------------------------------------------------------------------------------------
// libpng reports errors by longjmp. The functions that call setjmp keep only trivially destructible locals,
// and every C++ allocation happens in callbacks that catch their own exceptions, so no destructor is ever
// skipped.

struct Context {
  char error[256] = "";
  // write: appends encoded bytes
  std::string* out = nullptr;
  // read
  const uint8_t* in = nullptr;
  size_t in_size = 0, in_pos = 0;
  std::vector<uint8_t>* pixels = nullptr;
  PngText* text = nullptr;
};

void on_error(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<Context*>(png_get_error_ptr(png));
  std::snprintf(ctx->error, sizeof ctx->error, "%s", msg);
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}

void on_write(png_structp png, png_bytep data, size_t n) {
  auto* ctx = static_cast<Context*>(png_get_io_ptr(png));
  bool ok = true;
  try {
    ctx->out->append(reinterpret_cast<const char*>(data), n);
  } catch (...) {
    ok = false;
  }
  if (!ok) png_error(png, "out of memory");
}

void on_flush(png_structp) {}

void on_read(png_structp png, png_bytep data, size_t n) {
  auto* ctx = static_cast<Context*>(png_get_io_ptr(png));
  if (n > ctx->in_size - ctx->in_pos) png_error(png, "unexpected end of file");
  std::memcpy(data, ctx->in + ctx->in_pos, n);
  ctx->in_pos += n;
}

bool resize_pixels(Context& ctx, size_t n) {
  try {
    ctx.pixels->resize(n);
    return true;
  } catch (...) {
    return false;
  }
}

bool collect_text(Context& ctx, png_structp png, png_infop info) {
  png_textp text = nullptr;
  const int n = png_get_text(png, info, &text, nullptr);
  try {
    for (int i = 0; i < n; ++i) {
      const png_text& t = text[i];
      const bool itxt =
          t.compression == PNG_ITXT_COMPRESSION_NONE || t.compression == PNG_ITXT_COMPRESSION_zTXt;
      std::string value = itxt ? std::string(t.text, t.itxt_length) : latin1_to_utf8(t.text, t.text_length);
      ctx.text->emplace_back(latin1_to_utf8(t.key, std::strlen(t.key)), std::move(value));
    }
    return true;
  } catch (...) {
    return false;
  }
}

bool encode_raw(Context& ctx, const uint8_t* rgb, png_uint_32 width, png_uint_32 height, png_text* text,
                int n_text) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    std::snprintf(ctx.error, sizeof ctx.error, "cannot create a libpng writer");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, &ctx, on_write, on_flush);
  png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (n_text > 0) png_set_text(png, info, text, n_text);
  png_write_info(png, info);
  for (png_uint_32 y = 0; y < height; ++y) png_write_row(png, rgb + static_cast<size_t>(y) * width * 3);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return true;
}

bool decode_raw(Context& ctx, png_uint_32* width, png_uint_32* height) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    std::snprintf(ctx.error, sizeof ctx.error, "cannot create a libpng reader");
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return false;
  }
  png_set_read_fn(png, &ctx, on_read);
  png_set_user_limits(png, kMaxSide, kMaxSide);
  png_read_info(png, info);
  const png_byte color = png_get_color_type(png, info);
  const png_byte depth = png_get_bit_depth(png, info);
  // Everything becomes 8-bit RGB: 16-bit is truncated, palettes and gray expanded, alpha dropped.
  if (depth == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  // Expanding a palette also turns its tRNS chunk into alpha; drop that too.
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) png_set_strip_alpha(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  *width = png_get_image_width(png, info);
  *height = png_get_image_height(png, info);
  const size_t row = static_cast<size_t>(*width) * 3;
  if (png_get_rowbytes(png, info) != row || png_get_channels(png, info) != 3)
    png_error(png, "unexpected pixel layout after conversion to RGB");
  if (!resize_pixels(ctx, row * *height)) png_error(png, "out of memory");
  uint8_t* pixels = ctx.pixels->data();
  for (int pass = 0; pass < passes; ++pass)
    for (png_uint_32 y = 0; y < *height; ++y) png_read_row(png, pixels + y * row, nullptr);
  png_read_end(png, info);  // text after the image data lands in `info` too
  if (!collect_text(ctx, png, info)) png_error(png, "out of memory");
  png_destroy_read_struct(&png, &info, nullptr);
  return true;
}

}  // namespace

std::string encode_png(std::span<const uint8_t> rgb8, int64_t width, int64_t height, const PngText& text) {
  if (width < 1 || height < 1 || width > kMaxSide || height > kMaxSide)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("write_png: image size {}x{} is outside 1..{} a side", width, height, kMaxSide));
  if (rgb8.size() != static_cast<size_t>(width * height * 3))
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("write_png: {} bytes of pixels, but {}x{} RGB needs {}", rgb8.size(), width,
                            height, width * height * 3));
  std::vector<TextChunk> chunks;
  for (const auto& [key, value] : text) chunks.push_back(make_chunk(key, value));
  std::vector<png_text> entries(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    png_text& e = entries[i];
    e.compression = chunks[i].itxt ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE;
    e.key = chunks[i].key.data();
    e.text = chunks[i].value.data();
    e.text_length = chunks[i].itxt ? 0 : chunks[i].value.size();
    e.itxt_length = chunks[i].itxt ? chunks[i].value.size() : 0;
    e.lang = nullptr;
    e.lang_key = nullptr;
  }
  std::string out;
  out.reserve(rgb8.size() / 2 + 1024);
  Context ctx;
  ctx.out = &out;
  if (!encode_raw(ctx, rgb8.data(), static_cast<png_uint_32>(width), static_cast<png_uint_32>(height),
                  entries.data(), static_cast<int>(entries.size())))
    throw Error(ErrorKind::kInternal, fmt::format("write_png: libpng failed: {}", ctx.error));
  return out;
}

void write_png(const std::filesystem::path& path, std::span<const uint8_t> rgb8, int64_t width,
               int64_t height, const PngText& text) {
  std::string bytes;
  try {
    bytes = encode_png(rgb8, width, height, text);
  } catch (const Error& e) {
    throw Error(e.kind(), fmt::format("{}: {}", path.string(), e.what()));
  }
  write_file_atomically(path, bytes);
}

PngImage decode_png_rgb8(std::span<const uint8_t> bytes, const std::string& label) {
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0)
    throw Error(ErrorKind::kFormat, fmt::format("{}: not a PNG file", label));
  PngImage img;
  Context ctx;
  ctx.in = bytes.data();
  ctx.in_size = bytes.size();
  ctx.pixels = &img.rgb8;
  ctx.text = &img.text;
  png_uint_32 width = 0, height = 0;
  if (!decode_raw(ctx, &width, &height))
    throw Error(ErrorKind::kFormat, fmt::format("{}: invalid PNG: {}", label, ctx.error));
  img.width = width;
  img.height = height;
  return img;
}

PngImage read_png_rgb8(const std::filesystem::path& path) {
  const std::string bytes = read_text_file(path);
  return decode_png_rgb8({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, path.string());
}

}  // namespace sdrt::io
