// A restricted unpickler for PyTorch state dicts: it understands the data-only subset of pickle protocols
// 2-5 that torch.save writes and never executes anything.
//
// Python's pickle can call any importable function (GLOBAL + REDUCE), which is how a malicious .ckpt runs
// code. Here GLOBAL resolves only an allow-list of names to inert markers, and REDUCE "calls" only the few
// that build tensors or containers (_rebuild_tensor_v2, _rebuild_parameter, OrderedDict) plus a handful of
// data-only constructors that real Stable Diffusion checkpoints use outside their weights (numpy scalars in
// the Lightning callback state); those yield opaque placeholders. Any other global — os.system,
// builtins.eval, ... — is refused at GLOBAL time; any other opcode is refused naming it and its offset.
// Memo size, stack depth, value count and string length are bounded so hostile input cannot exhaust memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt::io {

// A tensor found in the pickle, pointing into its storage bytes (which the resolver provided).
struct PickledTensor {
  std::string name;
  std::string
      dtype;  // safetensors spelling: "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL"
  Shape shape;
  const std::byte* data = nullptr;  // the first element (storage + offset)
  uint64_t nbytes = 0;
};

// Returns the bytes of the storage a persistent id names (e.g. the zip entry "<archive>/data/<key>").
// Throws sdrt::Error when there is no such storage.
using StorageResolver = std::function<std::span<const std::byte>(const std::string& key)>;

// Unpickles `pickle` and returns the tensors of the top-level dict, or of the dict under "state_dict" when
// the top level has one (as Lightning checkpoints do). Non-tensor values are ignored. Only contiguous tensors
// that fit their storage are accepted. Errors are sdrt::Error (kFormat / kUnsupported) naming `label`.
std::vector<PickledTensor> read_state_dict_pickle(std::span<const std::byte> pickle,
                                                  const StorageResolver& resolve,
                                                  const std::filesystem::path& label);

// `s` (untrusted bytes from a checkpoint) quoted for an error message: printable ASCII, one line, cut if
// long.
std::string quote_pickle_string(std::string_view s);

}  // namespace sdrt::io
