#include "text/unicode.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::text {

size_t invalid_utf8_offset(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    int len = 0;
    char32_t min = 0, cp = 0;
    if ((b0 & 0xe0) == 0xc0) {
      len = 2, min = 0x80, cp = b0 & 0x1f;
    } else if ((b0 & 0xf0) == 0xe0) {
      len = 3, min = 0x800, cp = b0 & 0x0f;
    } else if ((b0 & 0xf8) == 0xf0) {
      len = 4, min = 0x10000, cp = b0 & 0x07;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xc0) != 0x80) return i;
      cp = (cp << 6) | (b & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

// Characters that ICU 72 (Unicode 15.0) leaves unassigned but that the `tokenizers` build behind transformers
// 5.23 already knows: its regex engine classifies them as \p{L} / \p{N} (Unicode 15.1-16) and Rust's
// to_lowercase maps some (Unicode 16-17). Found by checking every code point against transformers
// (scripts/tokenizer_probe.py prompts --codepoints); the bands are sorted and disjoint.
struct NewBand {
  char32_t lo, hi;
  char cls;  // 'L' letter, 'N' number
};
constexpr NewBand kNewBands[] = {
    {0x1C89, 0x1C8A, 'L'},   {0xA7CB, 0xA7CD, 'L'},   {0xA7DA, 0xA7DC, 'L'},   {0x105C0, 0x105F3, 'L'},
    {0x10D40, 0x10D49, 'N'}, {0x10D4A, 0x10D65, 'L'}, {0x10D6F, 0x10D85, 'L'}, {0x10EC2, 0x10EC4, 'L'},
    {0x11380, 0x11389, 'L'}, {0x1138B, 0x1138B, 'L'}, {0x1138E, 0x1138E, 'L'}, {0x11390, 0x113B5, 'L'},
    {0x113B7, 0x113B7, 'L'}, {0x113D1, 0x113D1, 'L'}, {0x113D3, 0x113D3, 'L'}, {0x116D0, 0x116E3, 'N'},
    {0x11BC0, 0x11BE0, 'L'}, {0x11BF0, 0x11BF9, 'N'}, {0x13460, 0x143FA, 'L'}, {0x16100, 0x1611D, 'L'},
    {0x16130, 0x16139, 'N'}, {0x16D40, 0x16D6C, 'L'}, {0x16D70, 0x16D79, 'N'}, {0x18CFF, 0x18CFF, 'L'},
    {0x1CCF0, 0x1CCF9, 'N'}, {0x1E5D0, 0x1E5ED, 'L'}, {0x1E5F0, 0x1E5F0, 'L'}, {0x1E5F1, 0x1E5FA, 'N'},
    {0x2EBF0, 0x2EE5D, 'L'},
};
// Lower-case mappings of those characters: [lo, hi] -> c + delta.
struct NewLower {
  char32_t lo, hi;
  int32_t delta;
};
constexpr NewLower kNewLower[] = {
    {0x1C89, 0x1C89, 1},      {0xA7CB, 0xA7CB, 0x264 - 0xA7CB},
    {0xA7CC, 0xA7CC, 1},      {0xA7CE, 0xA7CE, 1},
    {0xA7D2, 0xA7D2, 1},      {0xA7D4, 0xA7D4, 1},
    {0xA7DA, 0xA7DA, 1},      {0xA7DC, 0xA7DC, 0x19B - 0xA7DC},
    {0x10D50, 0x10D65, 0x20}, {0x16EA0, 0x16EB8, 0x1B},
};

char new_class(char32_t c) {
  for (const auto& b : kNewBands)
    if (c >= b.lo && c <= b.hi) return b.cls;
  return 0;
}

}  // namespace

std::u32string utf8_to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char b = p[i];
    if (b < 0x80) {
      out.push_back(b);
      ++i;
      continue;
    }
    int len = 0;
    char32_t cp = 0;
    char32_t min = 0;
    if ((b & 0xE0) == 0xC0) {
      len = 2, cp = b & 0x1F, min = 0x80;
    } else if ((b & 0xF0) == 0xE0) {
      len = 3, cp = b & 0x0F, min = 0x800;
    } else if ((b & 0xF8) == 0xF0) {
      len = 4, cp = b & 0x07, min = 0x10000;
    }
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) ok = false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not valid UTF-8 either.
    if (ok && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) ok = false;
    if (ok) {
      out.push_back(cp);
      i += len;
    } else {
      out.push_back(0xFFFD);
      ++i;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

std::string u32_to_utf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append_utf8(out, c);
  return out;
}

namespace {

std::u32string icu_nfc(std::u32string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* norm = icu::Normalizer2::getNFCInstance(status);
  if (U_FAILURE(status))
    throw Error(ErrorKind::kInternal, fmt::format("ICU NFC normaliser unavailable: {}", u_errorName(status)));
  const icu::UnicodeString in = icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                                              static_cast<int32_t>(s.size()));
  const icu::UnicodeString composed = norm->normalize(in, status);
  if (U_FAILURE(status))
    throw Error(ErrorKind::kInternal, fmt::format("ICU NFC normalisation failed: {}", u_errorName(status)));
  std::u32string out(static_cast<size_t>(composed.countChar32()), U'\0');
  composed.toUTF32(reinterpret_cast<UChar32*>(out.data()), static_cast<int32_t>(out.size()), status);
  if (U_FAILURE(status))
    throw Error(ErrorKind::kInternal, fmt::format("ICU UTF-32 conversion failed: {}", u_errorName(status)));
  return out;
}

}  // namespace

// `tokenizers` composes with Unicode 9.0 data (the unicode-normalization-alignments crate). Characters ICU
// knows as combining marks but that Unicode 9.0 did not have are starters there, so they neither reorder nor
// compose: text on either side of them is normalised separately.
bool mark_newer_than_unicode9(char32_t c) {
  if (c < 0x300 || u_getCombiningClass(static_cast<UChar32>(c)) == 0) return false;
  UVersionInfo age;
  u_charAge(static_cast<UChar32>(c), age);
  return age[0] > 9;
}

std::u32string nfc(const std::u32string& s) {
  // Nothing below U+0300 composes with a preceding character, so such text is already NFC.
  bool trivial = true;
  for (char32_t c : s) trivial = trivial && c < 0x300;
  if (trivial) return s;
  std::u32string out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (mark_newer_than_unicode9(s[i])) {
      out += icu_nfc(std::u32string_view(s).substr(start, i - start));
      out.push_back(s[i]);
      start = i + 1;
    } else if (i > 0 && s[i - 1] == 0x11935 && s[i] == 0x11930) {
      // U+11938 (Unicode 13) is the one composition ICU 72 makes that Unicode 9.0 could not.
      out += icu_nfc(std::u32string_view(s).substr(start, i - start));
      start = i;
    }
  }
  out += icu_nfc(std::u32string_view(s).substr(start));
  return out;
}

bool is_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

bool is_letter(char32_t c) {
  if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return true;
    case U_UNASSIGNED:
      return new_class(c) == 'L';
    default:
      return false;
  }
}

bool is_number(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  switch (u_charType(static_cast<UChar32>(c))) {
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return true;
    case U_UNASSIGNED:
      return new_class(c) == 'N';
    default:
      return false;
  }
}

void append_lowercase(std::u32string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(c >= 'A' && c <= 'Z' ? c + 32 : c);
    return;
  }
  // The only unconditional multi-character lower-case mapping in SpecialCasing.txt; every other character
  // lower-cases to its simple mapping.
  if (c == 0x130) {
    out.push_back(U'i');
    out.push_back(0x307);
    return;
  }
  if (u_charType(static_cast<UChar32>(c)) == U_UNASSIGNED) {
    for (const auto& m : kNewLower) {
      if (c >= m.lo && c <= m.hi) {
        out.push_back(static_cast<char32_t>(static_cast<int32_t>(c) + m.delta));
        return;
      }
    }
  }
  out.push_back(static_cast<char32_t>(u_tolower(static_cast<UChar32>(c))));
}

}  // namespace sdrt::text
