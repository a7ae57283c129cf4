#!/usr/bin/env python3
"""Writes the small PyTorch checkpoints under tests/fixtures/ckpt/ used by tests/test_ckpt.cpp.

Good files come from torch.save itself; each has a <name>.expected.safetensors holding the same tensors (same
dtype and bits) for the C++ test to compare against. Hostile files are hand-written pickles (nothing here is
ever unpickled) placed in a zip laid out like torch's: <archive>/data.pkl, <archive>/data/<key>, ...

Run from the repository root:  python3 scripts/make_ckpt_fixtures.py
"""
import io
import json
import os
import struct
import sys
import types
import zipfile

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ckpt")
ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def write_safetensors(path, tensors):
    header, data = {}, b""
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, sort_keys=True).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


def save(name, obj, expected):
    torch.save(obj, os.path.join(OUT, name))
    write_safetensors(os.path.join(OUT, name + ".expected.safetensors"), expected)


def good_files():
    g = torch.Generator().manual_seed(1234)
    big = torch.arange(10, dtype=torch.float32)
    tensors = {
        "w_f32": torch.randn(2, 3, generator=g),
        "w_f16": torch.randn(4, generator=g).half(),
        "w_bf16": torch.randn(3, 2, generator=g).bfloat16(),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "view": big[4:7],  # contiguous view: storage offset 4 into a 10-element storage
        "shared": big,  # same storage as "view"
        "unit_dims": torch.randn(1, 3, 1, generator=g),
    }
    flat = dict(tensors)
    flat["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))  # _rebuild_parameter
    flat["position_ids"] = torch.arange(5)  # int64: listed, not loadable
    expected = {k: v.detach() for k, v in flat.items()}
    save("normal.ckpt", flat, expected)

    # Lightning-style: weights under "state_dict", plus non-tensor training state and a callback keyed by its
    # class (pickled as a GLOBAL reference) holding a numpy scalar, as real SD 1.x checkpoints do.
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = mod.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    for part in ("pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__):
        sys.modules.setdefault(part, types.ModuleType(part))
    sys.modules[mod.__name__] = mod
    lin = torch.nn.Linear(3, 2)
    sd = lin.state_dict()  # an OrderedDict with _metadata (REDUCE + BUILD)
    sd["model.f16"] = tensors["w_f16"]
    nested = {
        "epoch": 4,
        "global_step": 123456789012,
        "pytorch-lightning_version": "1.4.2",
        "callbacks": {ModelCheckpoint: {"best_model_score": np.float64(0.5), "best_model_path": "x.ckpt"}},
        "state_dict": sd,
        "lr": 1.5e-4,
    }
    save("nested.ckpt", nested, {k: v.detach() for k, v in sd.items()})

    # Pre-1.6 format: a bare pickle stream (refused with a hint).
    torch.save({"a": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)
    with open(os.path.join(OUT, "normal.ckpt"), "rb") as f:
        data = f.read()
    with open(os.path.join(OUT, "truncated.ckpt"), "wb") as f:
        f.write(data[: len(data) // 2])


# ---- hand-written pickles ------------------------------------------------------------------------------------
def s(text):  # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i1(v):  # BININT1 / BININT
    return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)


def tup(items):
    return b"(" + b"".join(items) + b"t"


def tensor_pickle(name="w", storage="FloatStorage", key="0", numel=6, offset=0, size=(2, 3), stride=(3, 1)):
    pid = tup([s("storage"), b"ctorch\n" + storage.encode() + b"\n", s(key), s("cpu"), i1(numel)])
    args = tup([pid + b"Q", i1(offset), tup([i1(x) for x in size]), tup([i1(x) for x in stride]), b"\x89",
                b"ccollections\nOrderedDict\n)R"])
    return b"\x80\x02}" + s(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


def write_zip(name, pickle, storages=None, deflate=(), duplicate=False):
    storages = {"0": struct.pack("<6f", *range(6))} if storages is None else storages
    with zipfile.ZipFile(os.path.join(OUT, name), "w") as z:
        z.writestr("archive/data.pkl", pickle)
        for key, raw in storages.items():
            method = zipfile.ZIP_DEFLATED if key in deflate else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo("archive/data/" + key), raw, compress_type=method)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        if duplicate:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z.writestr("archive/version", "3\n")


def call(global_line, arg=b"X\x04\x00\x00\x00echo"):  # GLOBAL, one-argument tuple, REDUCE, in a dict
    return b"\x80\x02}" + s("w") + b"c" + global_line + b"\n" + arg + b"\x85Rs."


def hostile_files():
    write_zip("handmade_ok.ckpt", tensor_pickle())  # the baseline the others break
    write_zip("os_system.ckpt", call(b"os\nsystem"))
    write_zip("posix_system.ckpt", call(b"posix\nsystem"))
    write_zip("builtins_eval.ckpt", call(b"builtins\neval"))
    write_zip("stack_global_subprocess.ckpt",
              b"\x80\x04}" + s("w") + b"\x8c\x0asubprocess\x8c\x05Popen\x93" + s("ls") + b"\x85Rs.")
    # ModelCheckpoint is allowed as an inert value, never as something to call.
    write_zip("reduce_inert.ckpt",
              call(b"pytorch_lightning.callbacks.model_checkpoint\nModelCheckpoint", b"N"))
    write_zip("reduce_storage.ckpt", call(b"torch\nFloatStorage", b"K\x06"))
    write_zip("unknown_opcode.ckpt", b"\x80\x02}" + s("w") + b"ctorch\nFloatStorage\n)\x81s.")  # NEWOBJ
    write_zip("beyond_storage.ckpt", tensor_pickle(offset=3))  # 3 + 6 elements > 6
    write_zip("storage_size_mismatch.ckpt", tensor_pickle(numel=100))  # entry holds 6 floats
    write_zip("non_contiguous.ckpt", tensor_pickle(stride=(1, 2)))
    write_zip("missing_storage.ckpt", tensor_pickle(key="7"))
    write_zip("deflated.ckpt", tensor_pickle(), deflate=("0",))
    write_zip("duplicate_entry.ckpt", tensor_pickle(), duplicate=True)
    write_zip("not_a_dict.ckpt", b"\x80\x02]." )
    write_zip("truncated_pickle.ckpt", tensor_pickle()[:40])


def main():
    os.makedirs(OUT, exist_ok=True)
    good_files()
    hostile_files()
    # Seeds for the fuzzer: the raw pickles (bare pickle bytes) and a few whole archives.
    corpus = os.path.join(OUT, "..", "..", "fuzz", "corpus", "pickle")
    os.makedirs(corpus, exist_ok=True)
    for name in ("normal.ckpt", "nested.ckpt", "handmade_ok.ckpt", "non_contiguous.ckpt"):
        with zipfile.ZipFile(os.path.join(OUT, name)) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
            with open(os.path.join(corpus, "pkl-" + name.replace(".ckpt", "")), "wb") as f:
                f.write(z.read(pkl))
    for name in ("handmade_ok.ckpt", "deflated.ckpt"):
        with open(os.path.join(OUT, name), "rb") as src, open(os.path.join(corpus, "zip-" + name), "wb") as dst:
            dst.write(src.read())
    print("wrote", len(os.listdir(OUT)), "files to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
