#include "io/diffusers_folder.h"

#include <algorithm>

#include <fmt/format.h>

#include "io/json_file.h"
#include "io/regular_file.h"
#include "io/untrusted_text.h"
#include "sdrt/error.h"

namespace sdrt::io {

DiffusersFolder DiffusersFolder::open(const std::filesystem::path& root) {
  std::error_code ec;
  if (!std::filesystem::exists(root, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: no such model folder", root.string()));
  if (!std::filesystem::is_directory(root, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: is {}, not a diffusers model folder", root.string(),
                                            describe_file_type(root)));
  const auto index_path = root / "model_index.json";
  if (!std::filesystem::exists(index_path, ec))
    throw Error(
        ErrorKind::kIo,
        fmt::format("{}: no model_index.json, so this is not a diffusers model folder", root.string()));
  const auto index = read_json_file(index_path);
  const std::string what = index_path.string();
  if (!index.is_object()) throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", what));

  DiffusersFolder f;
  f.root_ = root;
  f.pipeline_class_ = get_string(index, "_class_name", "", what);
  f.diffusers_version_ = get_string(index, "_diffusers_version", "", what);
  for (const auto& [key, value] : index.items()) {
    if (key.starts_with("_")) continue;
    // Components are ["library", "ClassName"]; other fields (e.g. "requires_safety_checker") are plain
    // values.
    if (!value.is_array()) continue;
    if (value.size() != 2)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" must be [library, class] (a list of two)", what, key));
    if (value[0].is_null() && value[1].is_null()) continue;
    // The name becomes a folder under the model: nothing that leaves it or hides in it.
    if (key.empty() || key == "." || key == ".." || key.find_first_of("/\\") != std::string::npos ||
        key.find('\0') != std::string::npos || key.find("..") != std::string::npos ||
        std::any_of(key.begin(), key.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x20; }))
      throw Error(
          ErrorKind::kFormat,
          fmt::format("{}: component name {} is not a plain folder name (no path separators, no \"..\", "
                      "no control characters)",
                      what, quoted_ascii(key)));
    if (!value[0].is_string() || !value[1].is_string())
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" must be [library, class] strings", what, key));
    f.components_.push_back({key, value[0].get<std::string>(), value[1].get<std::string>()});
  }
  return f;
}

const DiffusersComponent* DiffusersFolder::find(const std::string& name) const {
  for (const auto& c : components_)
    if (c.name == name) return &c;
  return nullptr;
}

std::filesystem::path DiffusersFolder::component_dir(const std::string& name) const {
  if (!find(name))
    throw Error(ErrorKind::kModel, fmt::format("{}: model_index.json lists no \"{}\" component",
                                               (root_ / "model_index.json").string(), name));
  const auto dir = root_ / name;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: component folder missing (model_index.json lists \"{}\")",
                                            dir.string(), name));
  return dir;
}

}  // namespace sdrt::io
