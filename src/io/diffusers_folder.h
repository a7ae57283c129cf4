// A diffusers pipeline folder: model_index.json names the components, each in its own sub-folder
// (tokenizer/, text_encoder/, unet/, vae/, scheduler/), each with its own config.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sdrt::io {

struct DiffusersComponent {
  std::string name;        // "text_encoder"
  std::string library;     // "transformers"
  std::string class_name;  // "CLIPTextModel"
};

class DiffusersFolder {
 public:
  // Reads <root>/model_index.json; throws sdrt::Error naming the folder or file when either is
  // missing/malformed.
  static DiffusersFolder open(const std::filesystem::path& root);

  const std::filesystem::path& root() const { return root_; }
  const std::string& pipeline_class() const { return pipeline_class_; }
  const std::string& diffusers_version() const { return diffusers_version_; }
  // Components listed with a class (entries such as "safety_checker": [null, null] are skipped).
  const std::vector<DiffusersComponent>& components() const { return components_; }
  const DiffusersComponent* find(const std::string& name) const;
  // The folder of a listed component; throws when model_index.json does not list it or the folder is missing.
  std::filesystem::path component_dir(const std::string& name) const;

 private:
  std::filesystem::path root_;
  std::string pipeline_class_;
  std::string diffusers_version_;
  std::vector<DiffusersComponent> components_;
};

}  // namespace sdrt::io
