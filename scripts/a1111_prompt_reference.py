#!/usr/bin/env python3
"""Expected results for sdrt's A1111 emphasis parser (src/text/prompt_attention.cpp).

A small reimplementation, written for sdrt, of what AUTOMATIC1111's modules/prompt_parser.py
parse_prompt_attention returns, run over a list of prompts; it writes
tests/fixtures/prompt_attention_cases.json for tests/test_prompt_attention.cpp. Standard library only:

    python3 scripts/a1111_prompt_reference.py

The semantics, as read from A1111's current source (its weight pattern allows whitespace around the number;
older releases did not):
  - The prompt is cut, left to right, into the first of these that matches: a backslash escape of ( ) [ ] or
    a backslash (gives that character), a lone backslash (gives empty text), "(" or "[" (open), a weighted
    close ":" + optional whitespace + [+-]? + one or more of "." and decimal digits + optional whitespace +
    ")", ")" or "]" (close), a run of anything but \\ ( ) [ ] :, or a lone ":". Python's re is Unicode-aware,
    so whitespace and digits there are Unicode ones.
  - Every piece starts with weight 1.0. A close multiplies every piece since its opening bracket: 1.1 for
    ")", 1 / 1.1 for "]", float(number) for a weighted close (only when a "(" is open; float() failing,
    e.g. on "1.2.3", is an error). A close with nothing open is literal text, the weighted one included.
  - Literal text is split at BREAK with no word character next to it, taking the whitespace around it; each
    break is the piece ("BREAK", -1), which brackets multiply like any other piece.
  - At the end, open "(" then open "[" apply to everything after them, outermost first.
  - No pieces gives [("", 1.0)]; then neighbours of equal weight are merged, left to right.

Each case is {"prompt", "a1111": [[text, weight], ...]} or, where A1111 raises, {"prompt", "a1111_error"}.
"sdrt_error" is set where sdrt throws instead: A1111's error, or a weight beyond ±100 or not finite (written
as the string "inf", "-inf" or "nan" in "a1111").
"""

import json
import math
import os
import re

TOKEN = re.compile(
    r"""(?P<escape>\\[()\[\]\\])
      | (?P<backslash>\\)
      | (?P<open>[(\[])
      | (?P<weighted>:\s*(?P<number>[+-]?[.\d]+)\s*\))
      | (?P<close>[)\]])
      | (?P<text>[^\\()\[\]:]+)
      | (?P<colon>:)""",
    re.X,
)
# \b next to the word characters B and K is the same as "no word character on the other side".
BREAK_SPLIT = re.compile(r"\s*(?<!\w)BREAK(?!\w)\s*")
ROUND, SQUARE = 1.1, 1 / 1.1


def a1111_attention(prompt):
    pieces = []  # [text, weight]
    opened = {"(": [], "[": []}

    def scale_since(start, factor):
        for piece in pieces[start:]:
            piece[1] *= factor

    def literal(text):
        for n, part in enumerate(BREAK_SPLIT.split(text)):
            if n:
                pieces.append(["BREAK", -1])
            pieces.append([part, 1.0])

    for token in TOKEN.finditer(prompt):
        kind = token.lastgroup
        if kind == "escape":
            pieces.append([token.group()[1], 1.0])
        elif kind == "backslash":
            pieces.append(["", 1.0])
        elif kind == "open":
            opened[token.group()].append(len(pieces))
        elif kind == "weighted" and opened["("]:
            scale_since(opened["("].pop(), float(token.group("number")))
        elif kind == "close" and opened["(" if token.group() == ")" else "["]:
            bracket = "(" if token.group() == ")" else "["
            scale_since(opened[bracket].pop(), ROUND if bracket == "(" else SQUARE)
        else:
            literal(token.group())
    for start in opened["("]:
        scale_since(start, ROUND)
    for start in opened["["]:
        scale_since(start, SQUARE)
    if not pieces:
        return [["", 1.0]]
    merged = [pieces[0]]
    for text, weight in pieces[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return merged


# A1111's docstring examples, verbatim.
DOCSTRING = {
    "normal text": [["normal text", 1.0]],
    "an (important) word": [["an ", 1.0], ["important", 1.1], [" word", 1.0]],
    "(unbalanced": [["unbalanced", 1.1]],
    "\\(literal\\]": [["(literal]", 1.0]],
    "(unnecessary)(parens)": [["unnecessaryparens", 1.1]],
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).": [
        ["a ", 1.0], ["house", 1.5730000000000004], [" ", 1.1], ["on", 1.0], [" a ", 1.1], ["hill", 0.55],
        [", sun, ", 1.1], ["sky", 1.4641000000000006], [".", 1.1]],
}

CASES = list(DOCSTRING) + [
    # Ordinary use.
    "",
    "a BREAK b",
    "masterpiece, (best quality:1.2), [blurry], ((detailed eyes)), [[[lowres]]]",
    "(a (b (c:1.5) d) e)",
    "[a [b] c]",
    "(a[b)c]",  # round and square brackets nest independently
    "(x:0.5) (y:-1) (z:+2) (w:.5) (v:3.)",
    "(x: 1.3)", "(x:1.3 )", "(x:\t 2 \n)", "(x:\u00a01.5\u3000)",  # whitespace, Unicode included
    "(x:\uff11.\uff15)", "(x:\u0661\u066b\u0665)", "(x:\u0967.\u0968)",  # Unicode digits; U+066B is no "."
    # Literal where A1111 leaves it literal.
    "(x:nan)", "(x:inf)", "(x:1e3)", "(x:1.3 apples)", "(x:1.5:2)", "x:1.5)", "[x:1.5]", "[x:1.5)",
    "a:b:c", "time: 12:30", "smile :)", "(x:)", "(x:-)", "(:1.5)", "()", "[]", "(((", "]]]", ")(", "][",
    "a\\b", "a\\", "\\", "\\\\", "\\\\(x)", "\\\\\\(x\\)", "a\\:1.5)",
    # Unbalanced.
    "(a [b", "[a (b", "a) b] (c", "((a)", "(a))", "[[a]", "(a:1.2", "((a:1.2)",
    # BREAK.
    "BREAK", "a BREAK", "BREAK b", "a  BREAK  BREAK b", "a\tBREAK\nb", "a,BREAK,b", "aBREAK b", "a BREAKb",
    "a BREAK_b", "a _BREAK b", "a 1BREAK b", "a BREAKé b", "a éBREAK b", "a e\u0301BREAK b",
    "a BREAK\u3000b",
    "BREAKBREAK", "BREAK BREAK", "break Break", "(a BREAK b)", "[BREAK]", "(a BREAK b:-1)", "(BRE:-1)(AK:-1)",
    "(x)BREAK(x)", "a\\BREAK", "\\(BREAK\\)", "a(BREAK", "(a BREAK b:0)",
    # Merging, empty pieces and rounding.
    "[(a)]b", "[(a)](b)", "([a])b", "(a)[(b)]", "((a:1.21))(b:1.331)", "(a:1.1)(b)", "(a:1)b", "(a:0)(b:-0)",
    "a(\\:0.5)b", "(:2)a", "((a):1.1)((b))",
    # Unicode and emoji.
    "日本語 (猫:1.2) [犬]", "(😀) [😢:0.5]", "(\u00e9l\u00e8ve:1.1)",
    # Extreme weights (sdrt rejects beyond ±100).
    "(x:100)", "(x:-100)", "(x:100.0001)", "(x:1000)", "((x:1000):0.01)", "(x:" + "9" * 400 + ")",
    "(x:0." + "0" * 320 + "1)", "(x:0." + "0" * 400 + "1)", "(" * 48 + "x", "(" * 49 + "x",
    "(" * 1000 + "x", "(" * 1000 + "(x:0)",
    # Not a number to float(): A1111 raises.
    "(x:1.2.3)", "(x:.)", "(x:..)", "(x:+.)", "(a (x:1.2.3)",
    "x:1.2.3)", "[x:1.2.3)", "(x:-)x",  # no "(" open, or no digit: literal, no error
    # Deep but harmless.
    "([" * 500 + "x" + "])" * 500,
    "([" * 500 + "x",
]


def encode_weight(w):
    return w if math.isfinite(w) else ("nan" if math.isnan(w) else ("inf" if w > 0 else "-inf"))


def main():
    for prompt, expected in DOCSTRING.items():
        assert a1111_attention(prompt) == expected, (prompt, a1111_attention(prompt))
    cases = []
    for prompt in CASES:
        case = {"prompt": prompt}
        try:
            result = a1111_attention(prompt)
        except ValueError as e:
            case["a1111_error"] = f"ValueError: {e}"
            case["sdrt_error"] = "weight is not a number"
        else:
            case["a1111"] = [[text, encode_weight(w)] for text, w in result]
            if any(not abs(w) <= 100 for _, w in result):
                case["sdrt_error"] = "weight beyond ±100"
        cases.append(case)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "tests", "fixtures", "prompt_attention_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"source": "scripts/a1111_prompt_reference.py", "cases": cases}, f, ensure_ascii=False,
                  indent=1, allow_nan=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.relpath(path, root)}")


if __name__ == "__main__":
    main()
