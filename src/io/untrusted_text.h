// Untrusted bytes from a file (pickle strings, zip entry names) shown in error messages: one line of
// printable ASCII, other bytes as \xNN, quotes and backslashes escaped, cut after 200 bytes.
#pragma once

#include <string>
#include <string_view>

namespace sdrt::io {

std::string printable_ascii(std::string_view s);
// printable_ascii in double quotes.
std::string quoted_ascii(std::string_view s);

}  // namespace sdrt::io
