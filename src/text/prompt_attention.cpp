#include "text/prompt_attention.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::text {
namespace {

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;  // the same double as Python's 1 / 1.1
constexpr double kMaxWeight = 100;
// Weight multiplications allowed: 2^24 plus 16 per prompt byte, so any sane nesting depth passes.
constexpr uint64_t kMultiplicationsBase = uint64_t{1} << 24;
constexpr uint64_t kMultiplicationsPerByte = 16;
constexpr std::string_view kBreak = "BREAK";

// One character of the prompt: its code point and byte length. An invalid byte reads as U+FFFD (length 1),
// which is neither a space, a digit nor a word character; it still passes through as text.
struct Char {
  char32_t cp;
  size_t len;
};

Char decode_at(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return {b0, 1};
  size_t len = 0;
  char32_t cp = 0, min = 0;
  if ((b0 & 0xe0) == 0xc0) {
    len = 2, cp = b0 & 0x1f, min = 0x80;
  } else if ((b0 & 0xf0) == 0xe0) {
    len = 3, cp = b0 & 0x0f, min = 0x800;
  } else if ((b0 & 0xf8) == 0xf0) {
    len = 4, cp = b0 & 0x07, min = 0x10000;
  } else {
    return {0xfffd, 1};
  }
  if (i + len > s.size()) return {0xfffd, 1};
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return {0xfffd, 1};
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return {0xfffd, 1};
  return {cp, len};
}

// The character that ends at byte `end` (> floor), not reaching below `floor`.
Char decode_before(std::string_view s, size_t end, size_t floor) {
  size_t lead = end - 1;
  while (lead > floor && end - lead < 4 && (static_cast<unsigned char>(s[lead]) & 0xc0) == 0x80) --lead;
  const Char c = decode_at(s, lead);
  if (lead + c.len == end) return c;
  return {0xfffd, 1};
}

// Python's re on str: \s is str.isspace() (Unicode White_Space plus U+001C..U+001F), \d is category Nd,
// \w is a letter, a number (categories L*, N*) or '_'.
bool is_py_space(char32_t c) {
  if (c < 0x80) return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
  return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
         c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
bool is_py_digit(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return u_charType(static_cast<UChar32>(c)) == U_DECIMAL_DIGIT_NUMBER;
}
bool is_py_word(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return (U_GET_GC_MASK(static_cast<UChar32>(c)) & (U_GC_L_MASK | U_GC_N_MASK)) != 0;
}

std::string excerpt(std::string_view text) {
  if (text.size() <= 40) return std::string(text);
  size_t cut = 40;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;
  return std::string(text.substr(0, cut)) + "...";
}

// Python's float() of a string matching [+-]?[.\d]+: Unicode digits count as their value; more than one '.'
// or no digit at all is a ValueError in A1111.
double parse_weight(std::string_view token) {
  std::string ascii;
  size_t digits = 0, dots = 0;
  bool nonzero_int_part = false;
  for (size_t i = 0; i < token.size();) {
    const Char c = decode_at(token, i);
    i += c.len;
    if (c.cp == '.') {
      ++dots;
      ascii += '.';
    } else if (c.cp == '+' || c.cp == '-') {
      if (c.cp == '-') ascii += '-';
    } else {
      const int value =
          c.cp < 0x80 ? static_cast<int>(c.cp - '0') : u_charDigitValue(static_cast<UChar32>(c.cp));
      ++digits;
      if (value != 0 && dots == 0) nonzero_int_part = true;
      ascii += static_cast<char>('0' + value);
    }
  }
  if (digits == 0 || dots > 1)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("prompt: emphasis weight \"{}\" is not a number", excerpt(token)));
  double value = 0;
  const auto [end, ec] = std::from_chars(ascii.data(), ascii.data() + ascii.size(), value);
  if (ec == std::errc::result_out_of_range) {
    // Python rounds to inf or to 0 here rather than failing; either way the sign stays.
    value = nonzero_int_part ? HUGE_VAL : 0.0;
    if (ascii[0] == '-') value = -value;
  } else if (ec != std::errc() || end != ascii.data() + ascii.size()) {
    throw Error(ErrorKind::kInternal, fmt::format("prompt: cannot convert weight \"{}\"", excerpt(token)));
  }
  return value;
}

// Consecutive pieces of one group, whose weights are therefore equal: A1111 would merge them anyway.
struct Run {
  size_t begin, size;  // in Parser::text_; a BREAK marker has no text there
  size_t group;
  bool is_break;
};

// A1111 keeps one weight per piece and multiplies every piece after an opening bracket when it closes.
// Pieces appended between two bracket events always get the same multipliers in the same order, so they share
// one weight ("group"); multiplying each group in the same order keeps A1111's rounding, hence its merges.
class Parser {
 public:
  explicit Parser(std::string_view prompt)
      : p_(prompt), max_multiplications_(kMultiplicationsBase + kMultiplicationsPerByte * prompt.size()) {}

  std::vector<WeightedText> run() {
    const size_t n = p_.size();
    size_t i = 0;
    while (i < n) {
      const char c = p_[i];
      if (c == '\\') {
        const bool escape = i + 1 < n && std::string_view("()[]\\").find(p_[i + 1]) != std::string_view::npos;
        add(p_.substr(i + 1, escape ? 1 : 0));  // a lone backslash becomes an empty piece
        i += escape ? 2 : 1;
      } else if (c == '(') {
        open(round_), ++i;
      } else if (c == '[') {
        open(square_), ++i;
      } else if (c == ':') {
        size_t number_begin = 0, number_end = 0;
        const size_t end = match_weight(i, number_begin, number_end);
        if (end != 0 && !round_.empty()) {
          close(round_, parse_weight(p_.substr(number_begin, number_end - number_begin)));
        } else {
          literal(i, end != 0 ? end : i + 1);
        }
        i = end != 0 ? end : i + 1;
      } else if (c == ')' || c == ']') {
        auto& stack = c == ')' ? round_ : square_;
        if (!stack.empty()) {
          close(stack, c == ')' ? kRoundMultiplier : kSquareMultiplier);
        } else {
          literal(i, i + 1);
        }
        ++i;
      } else {
        const size_t end = std::min(p_.find_first_of("\\()[]:", i), n);
        literal(i, end);
        i = end;
      }
    }
    // Unclosed brackets apply to the end: all round ones, outermost first, then the square ones.
    for (const size_t start : round_) multiply_from(start, kRoundMultiplier);
    for (const size_t start : square_) multiply_from(start, kSquareMultiplier);
    return finish();
  }

 private:
  void add(std::string_view text, bool is_break = false) {
    if (new_group_) {
      // Every bracket open now will multiply this group once: count that work before doing it.
      multiplications_ += round_.size() + square_.size();
      if (multiplications_ > max_multiplications_)
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("prompt: brackets nest too deeply around too much text (weights would take "
                                "over {} multiplications)",
                                max_multiplications_));
      weights_.push_back(1.0);
      new_group_ = false;
    }
    const size_t group = weights_.size() - 1;
    if (is_break || runs_.empty() || runs_.back().is_break || runs_.back().group != group)
      runs_.push_back({text_.size(), 0, group, is_break});
    text_ += text;
    runs_.back().size += text.size();
  }

  void open(std::vector<size_t>& stack) {
    stack.push_back(weights_.size());
    new_group_ = true;
  }

  void close(std::vector<size_t>& stack, double multiplier) {
    multiply_from(stack.back(), multiplier);
    stack.pop_back();
    new_group_ = true;
  }

  void multiply_from(size_t group, double multiplier) {
    for (; group < weights_.size(); ++group) weights_[group] *= multiplier;
  }

  // A1111's `:\s*([+-]?[.\d]+)\s*\)` at the ':' at `i`: the end of the match (0 when none) and the number.
  // No backtracking is needed: what each part may give back cannot start the part after it.
  size_t match_weight(size_t i, size_t& number_begin, size_t& number_end) const {
    size_t j = skip_spaces(i + 1);
    number_begin = j;
    if (j < p_.size() && (p_[j] == '+' || p_[j] == '-')) ++j;
    const size_t digits_begin = j;
    while (j < p_.size()) {
      const Char c = decode_at(p_, j);
      if (c.cp != '.' && !is_py_digit(c.cp)) break;
      j += c.len;
    }
    if (j == digits_begin) return 0;
    number_end = j;
    j = skip_spaces(j);
    return j < p_.size() && p_[j] == ')' ? j + 1 : 0;
  }

  size_t skip_spaces(size_t j) const {
    while (j < p_.size()) {
      const Char c = decode_at(p_, j);
      if (!is_py_space(c.cp)) break;
      j += c.len;
    }
    return j;
  }

  // Literal text, split like A1111's re.split(r"\s*\bBREAK\b\s*", text): a BREAK with no word character
  // next to it (within this text) takes the whitespace around it; the parts between, even empty, are kept.
  void literal(size_t begin, size_t end) {
    size_t part = begin, from = begin;
    while (true) {
      const size_t k = p_.substr(0, end).find(kBreak, from);
      if (k == std::string_view::npos) break;
      const size_t after = k + kBreak.size();
      const bool word_before = k > begin && is_py_word(decode_before(p_, k, begin).cp);
      const bool word_after = after < end && is_py_word(decode_at(p_, after).cp);
      if (word_before || word_after) {
        from = k + 1;
        continue;
      }
      size_t match_begin = k;
      while (match_begin > part) {
        const Char c = decode_before(p_, match_begin, part);
        if (!is_py_space(c.cp)) break;
        match_begin -= c.len;
      }
      add(p_.substr(part, match_begin - part));
      add({}, true);
      part = from = skip_spaces_until(after, end);
    }
    add(p_.substr(part, end - part));
  }

  size_t skip_spaces_until(size_t j, size_t end) const {
    while (j < end) {
      const Char c = decode_at(p_.substr(0, end), j);
      if (!is_py_space(c.cp)) break;
      j += c.len;
    }
    return j;
  }

  std::vector<WeightedText> finish() const {
    std::vector<WeightedText> out;
    if (runs_.empty()) return {WeightedText{"", 1.0, false}};
    for (const Run& run : runs_) {
      // A1111's break marker starts at -1, so it ends as the exact negative of its group's weight.
      const double weight = run.is_break ? -weights_[run.group] : weights_[run.group];
      const std::string_view text =
          run.is_break ? kBreak : std::string_view(text_).substr(run.begin, run.size);
      if (!out.empty() && out.back().weight == weight) {
        out.back().text += text;
      } else {
        out.push_back({std::string(text), weight, false});
      }
    }
    for (WeightedText& piece : out) {
      if (!(std::fabs(piece.weight) <= kMaxWeight))
        throw Error(ErrorKind::kInvalidArgument,
                    fmt::format("prompt: emphasis weight {} of \"{}\" is beyond ±100", piece.weight,
                                excerpt(piece.text)));
      // A1111's encoder takes exactly ("BREAK", -1) for a chunk break.
      if (piece.weight == -1 && piece.text == kBreak) piece = {std::string(kBreak), 1.0, true};
    }
    return out;
  }

  std::string_view p_;
  const uint64_t max_multiplications_;
  std::string text_;  // the text of all runs, in order
  std::vector<Run> runs_;
  std::vector<double> weights_;         // one per group
  std::vector<size_t> round_, square_;  // the first group of each open bracket
  bool new_group_ = true;
  uint64_t multiplications_ = 0;
};

}  // namespace

std::vector<WeightedText> parse_prompt_attention(std::string_view prompt) {
  return Parser(prompt).run();
}

}  // namespace sdrt::text
