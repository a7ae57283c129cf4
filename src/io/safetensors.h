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
  uint64_t begin = 0;  // byte range within the data section (after the header)
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

// The weights of one model component: a single safetensors file or the shards listed by a
// `*.safetensors.index.json` ("weight_map": tensor name -> shard file name).
class WeightStore {
 public:
  static WeightStore from_file(const std::filesystem::path& safetensors_path);
  static WeightStore from_index(const std::filesystem::path& index_json_path);
  // Finds the weights of a diffusers component folder, e.g. (text_encoder/, "model") or (unet/,
  // "diffusion_pytorch_model"). Looks for <stem>.safetensors, then <stem>.safetensors.index.json, then the
  // ".fp16" variants of both (or the fp16 variant first when prefer_fp16). Throws naming the folder when none
  // exist.
  static WeightStore from_component_dir(const std::filesystem::path& dir, const std::string& stem,
                                        bool prefer_fp16 = false);

  std::vector<std::string> names() const;  // sorted, all shards
  bool contains(const std::string& name) const { return owner_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor load(const std::string& name, DType dtype = DType::kF32) const;
  // The file a tensor lives in (for error messages).
  const std::filesystem::path& file_of(const std::string& name) const;
  // Every file this store reads (one, or the shards).
  std::vector<std::filesystem::path> files() const;
  // What was opened: the .safetensors file or the .index.json.
  const std::filesystem::path& source() const { return source_; }

 private:
  const SafetensorsFile& file_for(const std::string& name) const;  // throws kModel naming the tensor

  std::filesystem::path source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> owner_;  // tensor name -> index into files_
};

}  // namespace sdrt::io
