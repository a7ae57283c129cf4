#include "io/json_file.h"

#include <fmt/format.h>

#include "io/regular_file.h"
#include "sdrt/error.h"

namespace sdrt::io {

std::string read_text_file(const std::filesystem::path& path) {
  // Missing, a folder, a FIFO or a device: an error naming what it is (never a hang on a FIFO).
  return read_regular_file(path);
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // A syntax error (parse_error) or a number too large for a double (out_of_range 406, "1e309"). nlohmann's
    // message starts with "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
    std::string what = e.what();
    const auto pos = what.find("] ");
    if (pos != std::string::npos) what = what.substr(pos + 2);
    throw Error(ErrorKind::kFormat, fmt::format("{}: malformed JSON: {}", path.string(), what));
  }
}

namespace {

const nlohmann::json* find_field(const nlohmann::json& j, const std::string& key, const std::string& what) {
  if (!j.is_object()) throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", what));
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void wrong_type(const std::string& key, const std::string& expected, const std::string& what) {
  throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" must be {}", what, key, expected));
}

[[noreturn]] void missing(const std::string& key, const std::string& what) {
  throw Error(ErrorKind::kFormat, fmt::format("{}: missing field \"{}\"", what, key));
}

int64_t as_int(const nlohmann::json& v, const std::string& key, const std::string& what) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {  // some configs write 1.0 for an integer field
    const double d = v.get<double>();
    if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
  }
  wrong_type(key, "an integer", what);
}

}  // namespace

int64_t require_int(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) missing(key, what);
  return as_int(*v, key, what);
}

double require_number(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) missing(key, what);
  if (!v->is_number()) wrong_type(key, "a number", what);
  return v->get<double>();
}

std::string require_string(const nlohmann::json& j, const std::string& key, const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) missing(key, what);
  if (!v->is_string()) wrong_type(key, "a string", what);
  return v->get<std::string>();
}

int64_t get_int(const nlohmann::json& j, const std::string& key, int64_t fallback, const std::string& what) {
  const auto* v = find_field(j, key, what);
  return v ? as_int(*v, key, what) : fallback;
}

double get_number(const nlohmann::json& j, const std::string& key, double fallback, const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) return fallback;
  if (!v->is_number()) wrong_type(key, "a number", what);
  return v->get<double>();
}

std::string get_string(const nlohmann::json& j, const std::string& key, const std::string& fallback,
                       const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) return fallback;
  if (!v->is_string()) wrong_type(key, "a string", what);
  return v->get<std::string>();
}

bool get_bool(const nlohmann::json& j, const std::string& key, bool fallback, const std::string& what) {
  const auto* v = find_field(j, key, what);
  if (!v) return fallback;
  if (!v->is_boolean()) wrong_type(key, "true or false", what);
  return v->get<bool>();
}

}  // namespace sdrt::io
