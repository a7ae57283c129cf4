// sdrt::Model — a Stable Diffusion checkpoint loaded for inference, and the stage calls on it.
//
//   auto model = sdrt::Model::load("models/sd15");              // diffusers folder
//   std::vector<int32_t> ids = model.tokenize("a red circle");    // 77 ids
//   sdrt::Tensor emb = model.encode_prompt("a red circle");       // [1, 77, hidden]
//
// Errors are thrown as sdrt::Error with a message naming the file, tensor or field at fault.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sdrt/tensor.h"

namespace sdrt {

struct LoadOptions {
  bool prefer_fp16_variant = false;  // pick <name>.fp16.safetensors over <name>.safetensors when both exist
};

// What `sdrt info` shows: the components found and their key configuration values.
struct ComponentInfo {
  std::string name;        // "text_encoder"
  std::string class_name;  // "CLIPTextModel"
  std::vector<std::pair<std::string, std::string>> details;  // ("hidden_size", "768"), ...
};
struct ModelInfo {
  std::string path;
  std::string pipeline_class;
  std::vector<ComponentInfo> components;
};

struct PromptEncoding {
  Tensor last_hidden_state;           // [1, 77, hidden] — what the UNet cross-attends to
  std::vector<Tensor> hidden_states;  // every layer's output [1, 77, hidden] (embeddings first), for clip skip
  Tensor pooler_output;               // [1, hidden] at the end-of-text token
};

class Model {
 public:
  // Loads the tokenizer and text encoder of a diffusers folder.
  static Model load(const std::filesystem::path& path, const LoadOptions& options = {});
  // Describes a model without loading its weights (reads configs and safetensors headers only).
  static ModelInfo inspect(const std::filesystem::path& path);

  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;
  ~Model();

  // The text encoder's input: BOS, ids, EOS, truncated and padded to 77 with the model's pad token.
  std::vector<int32_t> tokenize(std::string_view prompt) const;
  // last_hidden_state of the text encoder for one prompt: [1, 77, hidden], float32.
  Tensor encode_prompt(std::string_view prompt) const;
  PromptEncoding encode_prompt_full(std::string_view prompt) const;
  PromptEncoding encode_ids(const std::vector<int32_t>& ids) const;

 private:
  struct Impl;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace sdrt
