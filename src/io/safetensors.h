// safetensors reader: memory-mapped, strictly validated, converting F16/BF16/F32 to the requested dtype.
//
// Hand-written because the format is tiny (8-byte header length, JSON header, raw little-endian data) and no
// Debian package provides a C++ reader. Validation is strict because checkpoints are untrusted input:
//   - the header length fits in the file and the header is a JSON object of objects;
//   - every dtype is one safetensors defines; shape entries are non-negative integers;
//   - data_offsets are in bounds, begin <= end, numel * dtype size == end - begin, tensors do not overlap;
//   - "__metadata__" is an object of strings.
// Every error names the file, and the tensor when one is at fault.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt::io {

class MappedFile;  // read-only mmap of a whole file (io/mapped_file.h)

struct TensorInfo {
  std::string name;
  std::string dtype;  // as written in the file: "F32", "F16", "BF16", "I64", ...
  Shape shape;
  // Byte range within the data section (after the header). For a .ckpt tensor: within the checkpoint file;
  // for an in-memory tensor: [0, nbytes).
  uint64_t begin = 0;
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);
  // Parses and validates bytes already in memory without copying them: `data` must outlive the result.
  // `label` stands in for the file name in error messages. Used by the fuzzer.
  static SafetensorsFile parse_borrowed(const std::byte* data, size_t size,
                                        const std::filesystem::path& label);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // sorted
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming tensor and file
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Copies the tensor out of the mapping, converted to `dtype` (float dtypes only; others throw).
  Tensor load(const std::string& name, DType dtype = DType::kF32) const;
  // Raw bytes of a tensor inside the mapping (valid while this object lives).
  const std::byte* raw(const std::string& name) const;

 private:
  void parse();  // validates bytes_/size_ and fills the tables below

  std::filesystem::path path_;
  std::shared_ptr<MappedFile> file_;  // keeps bytes_ alive; null for parse_borrowed
  const std::byte* bytes_ = nullptr;  // the whole file
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> index_;
  std::map<std::string, std::string> metadata_;
};

class TorchCheckpoint;  // io/torch_checkpoint.h

// The weights of one model component: a single safetensors file, the shards listed by a
// `*.safetensors.index.json` ("weight_map": tensor name -> shard file name), a PyTorch zip checkpoint
// (.ckpt/.pt/.bin, read without running Python) or tensors already in memory.
class WeightStore {
 public:
  // Picks the reader by extension: .safetensors, .index.json, or .ckpt/.pt/.pth/.bin (torch zip format).
  static WeightStore open(const std::filesystem::path& file);
  // The state dict of a torch.save zip checkpoint (the dict under "state_dict" when there is one).
  static WeightStore from_ckpt(const std::filesystem::path& ckpt_path);
  // Serves `tensors` (host tensors of any dtype; info() reports their own dtype, load() converts and copies).
  // `label` stands in for a file name in error messages and source().
  static WeightStore from_tensors(std::map<std::string, Tensor> tensors, std::string label);
  static WeightStore from_file(const std::filesystem::path& safetensors_path);
  static WeightStore from_index(const std::filesystem::path& index_json_path);
  // Finds the weights of a diffusers component folder, e.g. (text_encoder/, "model") or (unet/,
  // "diffusion_pytorch_model"). Looks for <stem>.safetensors, then <stem>.safetensors.index.json, then the
  // ".fp16" variants of both (or the fp16 variant first when prefer_fp16). Throws naming the folder when none
  // exist.
  static WeightStore from_component_dir(const std::filesystem::path& dir, const std::string& stem,
                                        bool prefer_fp16 = false);

  std::vector<std::string> names() const;  // sorted, all shards
  bool contains(const std::string& name) const { return owner_.count(name) != 0 || raw_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor load(const std::string& name, DType dtype = DType::kF32) const;
  // A float tensor's stored bytes, not copied (valid while the store lives; any alignment), for loaders that
  // convert on their own (the CUDA backend converts on the GPU). Throws like load() for other dtypes.
  struct Bytes {
    const std::byte* data = nullptr;
    DType dtype = DType::kF32;  // as stored: F32, F16 or BF16
    int64_t numel = 0;
  };
  Bytes bytes(const std::string& name) const;
  // The file a tensor lives in (for error messages).
  const std::filesystem::path& file_of(const std::string& name) const;
  // Every file this store reads (one, or the shards; none for from_tensors).
  std::vector<std::filesystem::path> files() const;
  // What was opened: the .safetensors file, the .index.json, the .ckpt, or from_tensors' label.
  const std::filesystem::path& source() const { return source_; }

 private:
  const SafetensorsFile& file_for(const std::string& name) const;  // throws kModel naming the tensor

  std::filesystem::path source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_

  // .ckpt and in-memory stores: tensors as raw bytes owned by keep_alive_.
  struct RawTensor {
    TensorInfo info;
    const std::byte* data = nullptr;
  };
  std::map<std::string, RawTensor> raw_;
  std::shared_ptr<const void> keep_alive_;  // the TorchCheckpoint or the map of Tensors raw_ points into
  bool raw_is_file_ = false;                // raw_ comes from source_ (a .ckpt), not from memory
};

}  // namespace sdrt::io
