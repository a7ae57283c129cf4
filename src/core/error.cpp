#include "sdrt/error.h"

namespace sdrt {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidArgument:
      return "invalid argument";
    case ErrorKind::kIo:
      return "i/o error";
    case ErrorKind::kFormat:
      return "format error";
    case ErrorKind::kModel:
      return "model error";
    case ErrorKind::kUnsupported:
      return "unsupported";
    case ErrorKind::kCancelled:
      return "cancelled";
    case ErrorKind::kInternal:
      return "internal error";
  }
  return "error";
}

}  // namespace sdrt
