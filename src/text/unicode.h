// Small Unicode helpers for the CLIP tokenizer: UTF-8 <-> code points, and the character properties and
// normalisations that the `tokenizers` library applies (NFC, White_Space, \p{L}, \p{N}, per-character
// lower-casing). ICU supplies the Unicode data.
#pragma once

#include <string>
#include <string_view>

namespace sdrt::text {

// Decodes UTF-8; each invalid or truncated sequence becomes U+FFFD (Python strings never contain one, so this
// only matters for callers that pass raw bytes).
std::u32string utf8_to_u32(std::string_view s);
void append_utf8(std::string& out, char32_t c);
// The offset of the first byte that is not part of well-formed UTF-8 (a stray continuation byte, a truncated
// or overlong sequence, a surrogate, a code point above U+10FFFF), or npos when `s` is all valid.
size_t invalid_utf8_offset(std::string_view s);
std::string u32_to_utf8(std::u32string_view s);

// Canonical composition (Unicode NFC).
std::u32string nfc(const std::u32string& s);

// Oniguruma's \s with Unicode data: the White_Space property.
bool is_whitespace(char32_t c);
// \p{L}: general category Lu, Ll, Lt, Lm or Lo.
bool is_letter(char32_t c);
// \p{N}: general category Nd, Nl or No.
bool is_number(char32_t c);

// Rust's char::to_lowercase: the full lower-case mapping of one character without context (so capital sigma
// is always "σ", and U+0130 becomes "i" + U+0307). Appends the result to `out`.
void append_lowercase(std::u32string& out, char32_t c);

}  // namespace sdrt::text
