// NumPy .npy files (format 1.0/2.0/3.0): float32 little-endian, C order — what reference outputs and
// --init-noise files use. Written by hand because the format is a 10-byte preamble plus a Python-dict header.
#pragma once

#include <filesystem>

#include "sdrt/tensor.h"

namespace sdrt::io {

// Writes a float32 .npy (an F16/BF16 tensor is converted). Writes to a temporary file next to `path` and
// renames it into place, so a failure never leaves a partial file behind.
void write_npy(const std::filesystem::path& path, const Tensor& tensor);

// Reads a float32 ('<f4') C-order .npy; anything else throws sdrt::Error naming the file and what is wrong.
Tensor read_npy(const std::filesystem::path& path);

// The same parser over bytes in memory (`what` names the source in errors); used by read_npy and the fuzzer.
Tensor parse_npy(const void* data, size_t size, const std::string& what);

}  // namespace sdrt::io
