// 8-bit RGB PNG files with text metadata (libpng).
//
// Text chunks follow what AUTOMATIC1111 writes through Pillow: a value that Latin-1 can represent goes into a
// tEXt chunk (Latin-1 encoded, as the PNG spec requires), anything else into an uncompressed iTXt chunk
// (UTF-8). The generation parameters travel as key "parameters".
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace sdrt::io {

using PngText = std::vector<std::pair<std::string, std::string>>;  // key -> value, both UTF-8

// Encodes rgb8 (height rows of width · 3 bytes) and writes it with write_file_atomically: a failure leaves no
// partial file and never touches an existing one. Keys must be 1-79 printable ASCII characters without
// leading, trailing or doubled spaces; values valid UTF-8 without NUL. Throws kInvalidArgument for bad
// arguments, kIo naming the path when the file cannot be written.
void write_png(const std::filesystem::path& path, std::span<const uint8_t> rgb8, int64_t width,
               int64_t height, const PngText& text = {});

// The same PNG encoding in memory.
std::string encode_png(std::span<const uint8_t> rgb8, int64_t width, int64_t height,
                       const PngText& text = {});

struct PngImage {
  int64_t width = 0, height = 0;
  std::vector<uint8_t> rgb8;  // height · width · 3, row-major
  PngText text;               // tEXt / zTXt / iTXt chunks in file order, values converted to UTF-8
};

// Reads any PNG (gray, palette, 16-bit, interlaced, with alpha) as 8-bit RGB. Alpha is dropped, as Pillow's
// convert("RGB") does. Throws kIo when the file is missing, kFormat naming the path when it is not a valid
// PNG or is larger than 16384 pixels a side.
PngImage read_png_rgb8(const std::filesystem::path& path);
PngImage decode_png_rgb8(std::span<const uint8_t> bytes, const std::string& label);

}  // namespace sdrt::io
