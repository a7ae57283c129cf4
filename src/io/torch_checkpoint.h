// TorchCheckpoint — the tensors of a PyTorch zip checkpoint (.ckpt / .pt / .bin written by torch.save
// >= 1.6), read without running any Python: the zip is read by ZipArchive, data.pkl by the restricted
// unpickler (io/pickle.h), and tensor bytes stay in the memory mapping until loaded.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/pickle.h"

namespace sdrt::io {

class ZipArchive;

class TorchCheckpoint {
 public:
  // Throws sdrt::Error naming the file: kIo (cannot read), kFormat (malformed), kUnsupported (deflated
  // entries, legacy format, refused globals or opcodes, non-contiguous tensors).
  static TorchCheckpoint open(const std::filesystem::path& path);
  // Same over bytes in memory (`data` must outlive the result); `label` names it in errors. For the fuzzer.
  static TorchCheckpoint parse_borrowed(const std::byte* data, size_t size,
                                        const std::filesystem::path& label);

  const std::filesystem::path& path() const { return path_; }
  // The state dict's tensors by name; `data` points into the mapping and lives as long as this object.
  const std::map<std::string, PickledTensor>& tensors() const { return tensors_; }
  // The start of the archive bytes (tensor data pointers minus this = offsets in the file).
  const std::byte* file_data() const;

 private:
  void parse();

  std::filesystem::path path_;
  std::shared_ptr<const ZipArchive> zip_;  // owns the mapping the tensors point into
  std::map<std::string, PickledTensor> tensors_;
};

}  // namespace sdrt::io
