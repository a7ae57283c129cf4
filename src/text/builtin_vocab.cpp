#include "text/builtin_vocab.h"

#include <zlib.h>

#include <fmt/format.h>

#include "sdrt/error.h"

#ifndef SDRT_CLIP_VOCAB_GZ_PATH
#error "SDRT_CLIP_VOCAB_GZ_PATH must name data/clip/bpe_simple_vocab_16e6.txt.gz (set by CMakeLists.txt)"
#endif

// The gzip file is embedded byte for byte; the assembler resolves the path at build time.
__asm__(
    ".section .rodata\n"
    ".global sdrt_clip_vocab_gz_start\n"
    ".global sdrt_clip_vocab_gz_end\n"
    ".balign 16\n"
    "sdrt_clip_vocab_gz_start:\n"
    ".incbin \"" SDRT_CLIP_VOCAB_GZ_PATH
    "\"\n"
    "sdrt_clip_vocab_gz_end:\n"
    ".byte 0\n"
    ".previous\n");

extern "C" const unsigned char sdrt_clip_vocab_gz_start[];
extern "C" const unsigned char sdrt_clip_vocab_gz_end[];

namespace sdrt::text {
namespace {

std::string gunzip(const unsigned char* data, size_t size) {
  z_stream zs{};
  // 16 + MAX_WBITS: expect a gzip header rather than a raw zlib stream.
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
    throw Error(ErrorKind::kInternal, "built-in CLIP vocabulary: inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error(ErrorKind::kInternal,
                  fmt::format("built-in CLIP vocabulary: corrupt gzip data (zlib {})", rc));
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
    if (rc == Z_OK && zs.avail_in == 0 && zs.avail_out != 0) {  // input ended before the stream did
      inflateEnd(&zs);
      throw Error(ErrorKind::kInternal, "built-in CLIP vocabulary: truncated gzip data");
    }
  }
  inflateEnd(&zs);
  return out;
}

}  // namespace

const std::string& builtin_clip_merges_text() {
  static const std::string text = gunzip(
      sdrt_clip_vocab_gz_start, static_cast<size_t>(sdrt_clip_vocab_gz_end - sdrt_clip_vocab_gz_start));
  return text;
}

}  // namespace sdrt::text
