#include "io/untrusted_text.h"

#include <fmt/format.h>

namespace sdrt::io {

std::string printable_ascii(std::string_view s) {
  constexpr size_t kMaxShown = 200;
  std::string out;
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      if (c == '"' || c == '\\') out += '\\';
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

std::string quoted_ascii(std::string_view s) {
  std::string out = "\"";
  out += printable_ascii(s);
  out += '"';
  return out;
}

}  // namespace sdrt::io
