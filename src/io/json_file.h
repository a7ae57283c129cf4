// Reading JSON files (config.json, model_index.json, vocab.json, ...) with errors that name the file and
// field.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace sdrt::io {

// Reads the whole file and parses it; throws sdrt::Error (kIo when missing, kFormat when malformed).
nlohmann::json read_json_file(const std::filesystem::path& path);
// Reads a whole regular file into a string; throws kIo naming the file and what it is when missing or not a
// regular file (io/regular_file.h).
std::string read_text_file(const std::filesystem::path& path);

// Typed field access for config files: `what` names the file in error messages.
// A present field of the wrong type is always an error; a missing one is an error only for require_*.
int64_t require_int(const nlohmann::json& j, const std::string& key, const std::string& what);
double require_number(const nlohmann::json& j, const std::string& key, const std::string& what);
std::string require_string(const nlohmann::json& j, const std::string& key, const std::string& what);
int64_t get_int(const nlohmann::json& j, const std::string& key, int64_t fallback, const std::string& what);
double get_number(const nlohmann::json& j, const std::string& key, double fallback, const std::string& what);
std::string get_string(const nlohmann::json& j, const std::string& key, const std::string& fallback,
                       const std::string& what);
bool get_bool(const nlohmann::json& j, const std::string& key, bool fallback, const std::string& what);

}  // namespace sdrt::io
