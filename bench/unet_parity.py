#!/usr/bin/env python3
"""UNet parity for sdrt's CUDA path: one SD UNet call against diffusers in fp32 (TF32 off).

    make-inputs --model DIR --out DIR [--device cuda]
        writes, in DIR (all NCHW / NLC float32 .npy, C order):
          sample.npy     [2, 4, 64, 64]   seeded randn (torch CPU generator)
          context.npy    [2, 77, 768]     seeded randn
          inputs.json    {"timestep": 981, "seed": 0, "model": ..., "sample": [...], "context": [...]}
                         (one timestep shared by both batch entries)
          reference.npy  [2, 4, 64, 64]   diffusers UNet, fp32 weights (the folder's, upcast), TF32 disabled
          reference16.npy                 diffusers UNet in fp16 (output upcast), for context
    compare --ref DIR --candidate FILE.npy [--tol 5e-3] [--json FILE]
        prints rel L2 (||a-b|| / ||b||), cosine and max abs of the candidate against reference.npy, and of
        torch fp16 (reference16.npy) for context; exits 1 when the candidate's rel L2 exceeds --tol
        (sdrt's bar for fp16 CUDA), 2 when shapes differ or values are not finite.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np


def make_inputs(args):
    import torch
    from diffusers import UNet2DConditionModel

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_grad_enabled(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(str(Path(args.model) / "unet"), dtype=torch.float32)
    unet = unet.to(args.device).eval()
    g = torch.Generator("cpu").manual_seed(args.seed)
    lat = args.size // 8
    sample = torch.randn(2, unet.config.in_channels, lat, lat, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    np.save(out / "sample.npy", sample.numpy())
    np.save(out / "context.npy", context.numpy())
    (out / "inputs.json").write_text(json.dumps({
        "timestep": args.timestep, "seed": args.seed, "model": str(args.model),
        "sample": list(sample.shape), "context": list(context.shape)}, indent=1))
    t = torch.tensor([args.timestep] * 2, device=args.device)
    for dtype, name in [(torch.float32, "reference.npy"), (torch.float16, "reference16.npy")]:
        if dtype == torch.float16 and args.device == "cpu":
            continue  # fp16 kernels on CPU are neither fast nor what sdrt's CUDA path is compared with
        m = unet.to(dtype)
        y = m(sample.to(args.device, dtype), t, encoder_hidden_states=context.to(args.device, dtype)).sample
        y = y.float().cpu().numpy()
        np.save(out / name, y)
        print(f"{name}: shape {list(y.shape)}, std {y.std():.4f}, finite {bool(np.isfinite(y).all())}", flush=True)
    print(f"wrote {out}")
    return 0


def metrics(a, b):
    """a against the reference b."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return {"rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
            "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
            "max_abs": float(np.abs(a - b).max()), "ref_max_abs": float(np.abs(b).max())}


def fmt(m):
    return (f"rel_l2 {m['rel_l2']:.3e}  cosine {m['cosine']:.8f}  max_abs {m['max_abs']:.3e}"
            f"  (reference max abs {m['ref_max_abs']:.3g})")


def compare(args):
    ref_dir = Path(args.ref)
    ref = np.load(ref_dir / "reference.npy")
    cand = np.load(args.candidate)
    result = {"tol_rel_l2": args.tol, "candidate": str(args.candidate)}
    if (ref_dir / "reference16.npy").exists():
        result["torch_fp16"] = metrics(np.load(ref_dir / "reference16.npy"), ref)
        print("torch fp16 vs fp32: " + fmt(result["torch_fp16"]))
    code = 0
    if cand.shape != ref.shape or not np.isfinite(cand).all():
        print(f"candidate: shape {cand.shape} (reference {ref.shape}), finite {bool(np.isfinite(cand).all())}")
        result["error"] = "shape mismatch or non-finite values"
        code = 2
    else:
        result["candidate_vs_fp32"] = m = metrics(cand, ref)
        print("candidate vs fp32:  " + fmt(m))
        code = 0 if m["rel_l2"] <= args.tol else 1
        print(f"{'PASS' if code == 0 else 'FAIL'}: rel L2 {m['rel_l2']:.3e} (bar {args.tol:g})")
    result["pass"] = code == 0
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return code


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make-inputs")
    mk.add_argument("--model", required=True, help="diffusers SD 1.x folder")
    mk.add_argument("--out", required=True)
    mk.add_argument("--device", default="cuda")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--timestep", type=int, default=981)
    mk.add_argument("--size", type=int, default=512, help="image size; latents are size/8")
    cmp = sub.add_parser("compare")
    cmp.add_argument("--ref", required=True, help="folder written by make-inputs")
    cmp.add_argument("--candidate", required=True, help="[2,4,64,64] float32 .npy")
    cmp.add_argument("--tol", type=float, default=5e-3, help="largest rel L2 error that passes")
    cmp.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    return make_inputs(args) if args.cmd == "make-inputs" else compare(args)


if __name__ == "__main__":
    sys.exit(main())
