// sdrt::Error — the one exception type the library throws.
//
// Every message names the file, tensor or field at fault so that the CLI can print it as a single line.
#pragma once

#include <stdexcept>
#include <string>

namespace sdrt {

enum class ErrorKind {
  kInvalidArgument,  // a caller-supplied option or value is out of range
  kIo,               // a file or folder is missing or cannot be read/written
  kFormat,           // a file exists but its contents are malformed (safetensors, JSON, vocab, ...)
  kModel,            // files parse but disagree with each other (weight shape vs config.json, ...)
  kUnsupported,      // well-formed input that sdrt does not handle (yet)
  kCancelled,        // a progress callback asked to stop
  kInternal,         // a bug in sdrt
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace sdrt
