// Writing .safetensors files: the counterpart of the reader in io/safetensors.h, kept in its own file so that
// the reader (and its fuzzer) stays free of output code.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "sdrt/tensor.h"

namespace sdrt::io {

// Writes tensors as one .safetensors file (sorted names, 8-byte aligned header, "__metadata__" {"format":
// "pt"}), atomically (io/atomic_file.h). F32, F16 and BF16 tensors are stored in their own dtype.
void write_safetensors(const std::filesystem::path& path, const std::map<std::string, Tensor>& tensors);

}  // namespace sdrt::io
