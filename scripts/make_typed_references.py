#!/usr/bin/env python3
"""Computes the reference values that sdrt's unit tests used to carry as typed-in literals, with the libraries
sdrt mirrors (torch, diffusers, transformers, numpy; CPU only), and writes them to
tests/fixtures/typed_references.json.

Run from the repository root (the development venv has the libraries):

    /work/venv/bin/python scripts/make_typed_references.py          # writes tests/fixtures/typed_references.json
    /work/venv/bin/python scripts/make_typed_references.py --check  # exit 1 when the committed file differs

The output is deterministic: no randomness, no timestamps, keys in a fixed order; it changes only when the
inputs below or the libraries' behaviour change (their versions are recorded in "versions").

Sections, and the tests that read them:

  postprocess        tests/test_vae.cpp (Vae.ImageToRgb8MatchesDiffusersPostprocess): the uint8 that diffusers'
                     VaeImageProcessor.postprocess(output_type="pil") gives for each float32 input value, on the
                     same [1, 3, 1, n] image the test builds (case i at x = (i + c) % n of channel c). "bits" is
                     the input's float32 bit pattern; "tie" marks inputs where (x * 0.5 + 0.5) * 255 lands
                     exactly on k + 0.5 in float32, where numpy rounds half to even.
  upsample_nearest   tests/test_cpu_ops.cpp (CpuOps.UpsampleNearestMatchesTorch): for each (in, out) length, the
                     source index of every output index under torch.nn.functional.interpolate(mode="nearest");
                     every pair of cases is also checked here to be separable (2-D result = rows x columns).
  tokenizer          tests/test_clip_tokenizer.cpp, tests/test_cli.cpp, tests/test_single_file.cpp: ids from
                     transformers' CLIPTokenizer on tests/fixtures/tiny-sd{1,2}/tokenizer (sd1, sd2) and on
                     altered copies of the SD 1.x folder made exactly as the tests make them ("folders").
                     vocab_ids are vocab.json look-ups (null: not in the vocabulary; sdrt's token_id gives -1).
  scheduler_timesteps  tests/test_schedulers.cpp: timesteps of diffusers' `Target.from_config(source.config)`
                     after set_timesteps(steps), for the configs the tests parse.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import diffusers
import transformers
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler
from diffusers.image_processor import VaeImageProcessor
from transformers import CLIPTokenizer

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
OUT = FIXTURES / "typed_references.json"

# ---- postprocess ------------------------------------------------------------------------------------------
# Inputs (float32, as hex): the first nine land exactly on k + 0.5 after (x * 0.5 + 0.5) * 255; then the ends,
# the middle, values outside [-1, 1], and the last values that still round to 255 / 0.
POSTPROCESS_INPUTS = [
    "-0x1.f9f9fap-2", "-0x1.f9f9f8p-2", "-0x1.f1f1f2p-2", "0x1.c1c1c4p-4", "0x1.c1c1c0p-4", "0x1.e1e1e2p-4",
    "0x1.fdfdfep-1", "0x1.fdfe00p-1", "0x1.fdfdfcp-1", "-0x1p+0", "0x1p+0", "0x0p+0", "-0x1.4p+1", "0x1.8p+1",
    "0x1p-1", "-0x1p-2", "0x1.ff7ceep-1", "-0x1.ff7ceep-1",
]

# ---- upsample_nearest -------------------------------------------------------------------------------------
# (input length, output length); 3 -> 123 is where torch's float32 scale differs from the exact ratio.
NEAREST_SIZES = [(4, 8), (5, 13), (7, 3), (6, 9), (10, 7), (1, 3), (3, 123)]

# ---- tokenizer --------------------------------------------------------------------------------------------
VOCAB_TOKENS = ["a</w>", "photo</w>", "!", "cat</w>", "<|startoftext|>", "<|endoftext|>", "not-a-token"]
# tokenizer(prompt, padding="max_length", max_length=model_max_length, truncation=True)["input_ids"]
ENCODE = [
    ("sd1", "a photo of an astronaut riding a horse on mars"),
    ("sd2", "cat " * 100),
    ("sd2", ""),
    ("short", "a photo of"),
    ("short", "a"),
]
# tokenizer.encode(text, add_special_tokens=False)
ENCODE_WORDS = [
    ("sd1", "a photo"),
    ("sd1", "hello! world!!!"),
    ("sd2", "hello! world!!!"),
    ("sd1", "x<|ENDOFTEXT|>y"),
    ("sd2", "x<|ENDOFTEXT|>y"),
    ("sd1", "İstanbul ΣΊΣΥΦΟΣ"),
    ("plain", "x<|ENDOFTEXT|>y"),
    ("plain", "x<|endoftext|>y"),
]
# Copies of tiny-sd1/tokenizer altered as the tests alter theirs: files written (JSON) or removed (None).
FOLDERS = {
    # ClipTokenizer.AddedTokensFollowTheFolderConfig: plain-string special tokens.
    "plain": {
        "special_tokens_map.json": None,
        "tokenizer_config.json": {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                  "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                                  "model_max_length": 77},
    },
    # ClipTokenizer.TruncationAndPadding: five positions.
    "short": {"tokenizer_config.json": {"model_max_length": 5}},
    # ClipTokenizer.SpecialTokensMapOverridesTokenizerConfig.
    "map_over_config": {
        "tokenizer_config.json": {"pad_token": "<|endoftext|>", "model_max_length": 77},
        "special_tokens_map.json": {"pad_token": "!"},
    },
}

# ---- scheduler timesteps ----------------------------------------------------------------------------------
# The raw configs of tests/test_schedulers.cpp (kSd15, and the one of Scheduler.ExplicitSpacingCarriesOver).
SD15 = {
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
    "clip_sample": False,
}
TRAILING = {"_class_name": "PNDMScheduler", "timestep_spacing": "trailing"}
SOURCES = {"PNDMScheduler": PNDMScheduler}
# sdrt's scheduler names -> diffusers classes.
TARGETS = {"pndm": PNDMScheduler, "ddim": DDIMScheduler, "euler": EulerDiscreteScheduler,
           "dpmpp_2m": DPMSolverMultistepScheduler}
# (case name, config, sdrt scheduler name, steps)
SCHEDULER_CASES = [
    ("sd15_pndm", SD15, "pndm", 4),
    ("sd15_ddim", SD15, "ddim", 4),
    ("sd15_euler", SD15, "euler", 4),
    ("sd15_dpmpp_2m", SD15, "dpmpp_2m", 4),
    ("trailing_euler", TRAILING, "euler", 4),
]


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def postprocess() -> dict:
    values = np.array([float.fromhex(h) for h in POSTPROCESS_INPUTS], dtype=np.float32)
    assert all(float(v) == float.fromhex(h) for v, h in zip(values, POSTPROCESS_INPUTS)), "not float32 values"
    n = len(values)
    image = np.zeros((1, 3, 1, n), dtype=np.float32)
    for c in range(3):
        for i in range(n):
            image[0, c, 0, (i + c) % n] = values[i]
    pil = VaeImageProcessor().postprocess(torch.from_numpy(image), output_type="pil")[0]
    rgb = np.asarray(pil)  # [1, n, 3] uint8
    assert rgb.shape == (1, n, 3) and rgb.dtype == np.uint8
    cases = []
    for i, (h, v) in enumerate(zip(POSTPROCESS_INPUTS, values)):
        got = [int(rgb[0, (i + c) % n, c]) for c in range(3)]
        assert got[0] == got[1] == got[2], f"channels disagree for {h}: {got}"
        # diffusers' arithmetic: torch (x * 0.5 + 0.5).clamp(0, 1) in float32, then numpy * 255 in float32.
        scaled = (torch.tensor(v) * 0.5 + 0.5).clamp(0, 1).numpy() * np.float32(255)
        tie = bool(scaled - np.floor(scaled) == np.float32(0.5))
        cases.append({"x": h, "bits": f32_bits(float(v)), "byte": got[0], "tie": tie})
    return {"cases": cases}


def nearest_indices(n_in: int, n_out: int) -> list[int]:
    x = torch.arange(n_in, dtype=torch.float32).reshape(1, 1, n_in, 1)
    y = torch.nn.functional.interpolate(x, size=(n_out, 1), mode="nearest")
    return [int(v) for v in y.flatten().tolist()]


def upsample_nearest() -> dict:
    cases = [{"in": i, "out": o, "src": nearest_indices(i, o)} for i, o in NEAREST_SIZES]
    # The test crosses row and column cases; torch's 2-D resize must be exactly that.
    for rows in cases:
        for cols in cases:
            x = torch.arange(rows["in"] * cols["in"], dtype=torch.float32).reshape(1, 1, rows["in"], cols["in"])
            y = torch.nn.functional.interpolate(x, size=(rows["out"], cols["out"]), mode="nearest")[0, 0]
            want = torch.tensor([[r * cols["in"] + c for c in cols["src"]] for r in rows["src"]],
                                dtype=torch.float32)
            assert torch.equal(y, want), (rows["in"], rows["out"], cols["in"], cols["out"])
    return {"cases": cases}


def tokenizer() -> dict:
    sd1_dir = FIXTURES / "tiny-sd1" / "tokenizer"
    sd2_dir = FIXTURES / "tiny-sd2" / "tokenizer"
    with tempfile.TemporaryDirectory() as tmp:
        toks = {"sd1": CLIPTokenizer.from_pretrained(sd1_dir), "sd2": CLIPTokenizer.from_pretrained(sd2_dir)}
        for name, files in FOLDERS.items():
            folder = Path(tmp) / name
            shutil.copytree(sd1_dir, folder)
            for file, content in files.items():
                if content is None:
                    (folder / file).unlink()
                else:
                    (folder / file).write_text(json.dumps(content))
            toks[name] = CLIPTokenizer.from_pretrained(folder)

        vocab = toks["sd1"].get_vocab()
        special = {
            name: {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id,
                   "model_max_length": tok.model_max_length, "vocab_size": tok.vocab_size}
            for name, tok in toks.items()
        }
        encode = []
        for name, prompt in ENCODE:
            tok = toks[name]
            ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, truncation=True)["input_ids"]
            encode.append({"tokenizer": name, "prompt": prompt, "ids": ids})
        words = [{"tokenizer": name, "text": text, "ids": toks[name].encode(text, add_special_tokens=False)}
                 for name, text in ENCODE_WORDS]
    return {
        "folders": {name: {file: content for file, content in files.items()} for name, files in FOLDERS.items()},
        "vocab_ids": {t: vocab.get(t) for t in VOCAB_TOKENS},
        "special": special,
        "encode": encode,
        "encode_words": words,
    }


def scheduler_timesteps() -> list:
    cases = []
    for name, config, target, steps in SCHEDULER_CASES:
        source = SOURCES[config["_class_name"]].from_config(config)
        s = TARGETS[target].from_config(source.config)
        s.set_timesteps(steps)
        cases.append({"name": name, "config": config, "scheduler": target, "steps": steps,
                      "timesteps": [float(t) for t in s.timesteps.tolist()]})
    return cases


def build() -> str:
    doc = {
        "generator": "scripts/make_typed_references.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "postprocess": postprocess(),
        "upsample_nearest": upsample_nearest(),
        "tokenizer": tokenizer(),
        "scheduler_timesteps": scheduler_timesteps(),
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args()
    text = build()
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT.relative_to(REPO)}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
