#!/usr/bin/env python3
"""Compare sdrt's CLIP tokenizer with transformers' CLIPTokenizer (development aid; no test needs it).

Prompts go out as JSON lines (one JSON string per line); ids come back the same way (one JSON list per line),
so any program that tokenises with sdrt can be checked:

  scripts/tokenizer_probe.py prompts > /tmp/prompts.jsonl            # the probe prompts
  scripts/tokenizer_probe.py prompts --codepoints > /tmp/cp.jsonl    # one prompt per Unicode code point
  <sdrt tool> < /tmp/prompts.jsonl > /tmp/sdrt_ids.jsonl
  scripts/tokenizer_probe.py check --tokenizer DIR /tmp/prompts.jsonl /tmp/sdrt_ids.jsonl
  scripts/tokenizer_probe.py show --tokenizer DIR "some prompt"      # ids and tokens of one prompt

`check` compares what `tokenizer(p, padding="max_length", max_length=model_max_length, truncation=True)` gives
(77 ids); with --words it compares `encode(p, add_special_tokens=False)` instead.
"""
import argparse
import json
import sys

PROBES = [
    "a photo of an astronaut riding a horse on mars",
    "",
    " ",
    "A Photo Of A CAT",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "hello, world! how's it going?",
    "I'm sure they'll say we've done what you'd've liked, can't you?",
    "it's the cat's toy; THEY'RE here, 'tis 'sup 'S 'LL",
    "1234 1234567890 3.14159 1,000,000 v1.5 2x 4k 8K 0.25",
    "café naïve résumé façade Ångström",
    "e\u0301 combining acute, A\u030a ring, n\u0303 tilde",
    "Zoë's über-cool straße, GROẞE, Maße",
    "ΣΊΣΥΦΟΣ and Οδυσσέας, ΟΔΟΣ ΣΟΦΙΑΣ",
    "İstanbul and DİYARBAKIR, ıi Iİ",
    "東京の夜景, 美しい風景",
    "한국어 텍스트와 中文字符, ﾊﾝｶｸ katakana",
    "a cute cat 🐱 with sparkles ✨✨ and a 🚀, 👍🏽",
    "👨\u200d👩\u200d👧\u200d👦 family emoji with zero width joiners",
    "tom &amp; jerry &lt;3 &quot;quoted&quot; &#39;x&#39; &nbsp;",
    "runs   of    spaces\tand\ttabs\nand\n\nnewlines\r\n crlf \x0b\x0c",
    "   leading and trailing whitespace   ",
    "masterpiece, best quality, (ultra detailed:1.2), [blurry], {sharp}, ((cat)), <lora:x:0.8>",
    "a <|startoftext|> in the middle and <|endoftext|> too",
    "cat<|endoftext|>dog <|ENDOFTEXT|> <|EndOfText|>x <|StartOfText|>",
    "<| endoftext |> <|endoftext <|endoftext|<|endoftext|>|>",
    "hello! world!!! ! !? !hi",
    "e = mc^2 + α·β − γ/δ ≈ 42 ± 0.5 %",
    "snake_case_words and kebab-case-words and CamelCaseWords",
    "https://example.com/path?query=1&x=y#frag user@mail.org",
    "¡Hola! ¿Qué tal? ça va… «bien» — “quotes” ‘single’",
    "ﬁne ligatures ﬀ and fullwidth ＡＢＣ１２３",
    "non\xa0breaking\u2003em space\u3000ideographic\u2028line\u0085nel\u200bzwsp",
    "!!!???...,,,;;;:::",
    "''' quoted''s ''re triple 'd've",
    "Roman numerals Ⅻ and ½ ¾ superscript² digits ٣٤٥ ①②",
    "Ελληνικά κείμενο, русский текст, עברית, العربية, हिन्दी",
    "ǅungla ǈ Ǉ titlecase, ʰmodifier, ＩＴＡＬＩＣ",
    "\U0001d400\U0001d401 math bold, \U0001f1fa\U0001f1f8 flag",
    "tab\tonly",
    "word " * 80,
    ", ".join(f"detail number {i}" for i in range(40)),
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 300,
]


def load(tokenizer_dir):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tokenizer_dir)


def reference_ids(tok, prompt, words):
    if words:
        return tok.encode(prompt, add_special_tokens=False)
    return tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]


def codepoint_prompts():
    # Each code point alone, between letters and capitalised, to exercise the normaliser and the splitter.
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        yield f"a{c}b {c}{c}A{c}1"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="write probe prompts as JSON lines")
    p.add_argument("--codepoints", action="store_true", help="one prompt per Unicode code point")
    c = sub.add_parser("check", help="compare ids (JSON lines) with transformers")
    c.add_argument("--tokenizer", required=True, help="a diffusers tokenizer/ folder")
    c.add_argument("--words", action="store_true", help="ids without bos/eos/padding")
    c.add_argument("prompts")
    c.add_argument("ids")
    s = sub.add_parser("show", help="print transformers' ids and tokens")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("prompt", nargs="+")
    args = ap.parse_args()

    if args.cmd == "prompts":
        for prompt in codepoint_prompts() if args.codepoints else PROBES:
            print(json.dumps(prompt))
        return 0

    tok = load(args.tokenizer)
    if args.cmd == "show":
        for prompt in args.prompt:
            ids = tok.encode(prompt, add_special_tokens=False)
            print(json.dumps(prompt), ids, tok.convert_ids_to_tokens(ids))
        return 0

    with open(args.prompts, encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f]
    with open(args.ids, encoding="utf-8") as f:
        got = [json.loads(line) for line in f]
    if len(prompts) != len(got):
        print(f"{len(prompts)} prompts but {len(got)} id lists", file=sys.stderr)
        return 1
    if args.words:
        expected = [e.ids for e in tok.backend_tokenizer.encode_batch(prompts, add_special_tokens=False)]
    else:
        expected = [reference_ids(tok, prompt, False) for prompt in prompts]
    bad = 0
    for prompt, exp, ids in zip(prompts, expected, got):
        if exp != ids:
            bad += 1
            if bad <= 30:
                print(f"MISMATCH {json.dumps(prompt)}\n  transformers {exp}\n  sdrt         {ids}")
    print(f"{len(prompts) - bad}/{len(prompts)} match")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
