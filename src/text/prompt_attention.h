// AUTOMATIC1111's emphasis syntax: splits a prompt into (text, weight) pieces exactly as A1111's
// modules/prompt_parser.py parse_prompt_attention does, so that sdrt encodes its prompts the same way.
//
//   (text)        weight x1.1            [text]   weight /1.1
//   (text:1.3)    weight x1.3            nesting multiplies; an unclosed bracket applies to the end
//   \( \) \[ \] \\  the literal character; a backslash before anything else is dropped
//   BREAK         (a whole word: no letter, digit or '_' touching it) starts a new 75-token chunk
//
// The weight after ':' is one or more of '.' and decimal digits (any Unicode Nd digit), with an optional
// sign and optional whitespace around it, directly followed by ')'. Anything else stays literal text:
// "(x:nan)", "(x:1e3)" and "(x: 1.3 apples)" close with x1.1 and keep ":nan" etc. as text. A weight of that
// form that is still not a number ("(x:1.2.3)", "(x:.)") fails in A1111 (ValueError) and throws here.
// Adjacent pieces of equal weight are merged, as in A1111 (so the tokenizer sees them as one text).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sdrt::text {

struct WeightedText {
  std::string text;
  double weight = 1.0;
  // A chunk break: text is "BREAK" and weight 1.0, neither meant to be encoded. A1111 marks a break as
  // ("BREAK", -1) and its encoder treats exactly that pair as one, so the same holds here: a BREAK inside
  // brackets, e.g. "(a BREAK b)", becomes the text "BREAK" weighted -1.1 (A1111 encodes it as a word), and
  // pieces that merge into ("BREAK", -1), e.g. "(BRE:-1)(AK:-1)", are a break.
  bool is_break = false;

  bool operator==(const WeightedText&) const = default;
};

// Never empty: an empty prompt gives {("", 1.0)}. Pieces with empty text stay where A1111 has them ("BREAK"
// alone gives "", BREAK, ""). Throws sdrt::Error(kInvalidArgument) when
//   - a weight is not a number (see above),
//   - a resulting weight is beyond ±100 or not finite: a sanity bound that A1111 does not have,
//   - text sits so deep in brackets that the weights would take over 2^24 + 16 x (prompt bytes)
//     multiplications (one per piece of text per bracket around it; A1111 would take quadratic time): "x"
//     inside 100,000 brackets costs 100,000; 100,000 pieces each inside thousands of brackets are refused.
// Otherwise linear in the prompt's length, and iterative: deep nesting costs no stack.
std::vector<WeightedText> parse_prompt_attention(std::string_view prompt);

}  // namespace sdrt::text
