#!/usr/bin/env python3
"""Prints one markdown table comparing sdrt's CUDA numbers with PyTorch's (bench/torch_bench.py).

    python3 bench/report.py --sdrt sdrt.json --torch torch.json [--parity parity.json]

sdrt.json, as written by build/release/bench_cuda --json (every key optional; a missing one prints "—"):
{
  "device":          "NVIDIA H100 80GB HBM3",   # cudaGetDeviceProperties name
  "unet_step_ms":    3.1,    # median ms of one UNet call: batch 2 (CFG), 4x64x64 latents, 77x768 context, fp16,
                             #   CUDA events after warm-up, >= 30 runs (graph replay if sdrt uses one)
  "e2e_50_s":        0.25,   # prompt -> decoded 512x512 image in host memory, 50 steps, CFG 7.5, the folder's
                             #   scheduler (PNDM), timed end to end on the host clock, median of runs
  "vae_decode_ms":   12.0,   # VAE decode 1x4x64x64 -> 1x3x512x512
  "text_encoder_ms": 2.0,    # CLIP text encoder, batch 2 (prompt + negative), 77 tokens
  "load_s":          1.2,    # diffusers folder (page cache warm) -> all three models ready on the GPU,
                             #   CUDA context creation excluded
  "peak_gpu_gib":    2.4,    # peak device memory of the end-to-end run, GiB (2^30 bytes), allocations only
  "device_memory_in_use_gib": 3.0,  # total - free from cudaMemGetInfo after the e2e run (context included)
  "breakdown_ms": {          # optional: GPU time of one UNet step by kernel family, ms
    "conv": 1.0, "gemm": 0.8, "attention": 0.5, "norm": 0.2, "elementwise": 0.3, "other": 0.1
  }
}
Extra keys are ignored. torch.json is bench/torch_bench.py's output; parity.json is unet_parity.py compare --json.
"""
import argparse
import json
from pathlib import Path

MODES = [("eager", "torch fp16 eager"), ("eager_graph", "eager + CUDA graph"),
         ("compile_graph", "compile + CUDA graph")]


def load(path):
    if not path or not Path(path).exists():
        return {}
    try:
        return json.loads(Path(path).read_text())
    except ValueError:
        return {}


def num(v, fmt):
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sdrt", help="sdrt.json from bench_cuda")
    ap.add_argument("--torch", help="torch.json from torch_bench.py")
    ap.add_argument("--parity", help="parity.json from unet_parity.py compare --json")
    args = ap.parse_args()
    s, t, p = load(args.sdrt), load(args.torch), load(args.parity)
    unet = t.get("unet", {})
    mode = lambda m, k: unet.get(m, {}).get(k)
    sd_ms = s.get("unet_step_ms")
    eager_only = lambda v: [v] + [None] * (len(MODES) - 1)  # pipeline-level numbers are measured eager

    size = s.get("size", 512)
    steps = s.get("e2e_steps", 50)
    rows = [
        (f"UNet ms/step (batch 2, {size // 8}×{size // 8} latents)", "{:.2f}", sd_ms, [mode(m, "ms_median") for m, _ in MODES]),
        ("UNet it/s", "{:.1f}", 1000 / sd_ms if isinstance(sd_ms, (int, float)) and sd_ms > 0 else None,
         [mode(m, "it_s") for m, _ in MODES]),
        ("sdrt ms/step ÷ this", "{:.2f}×", 1.0 if isinstance(sd_ms, (int, float)) else None,
         [sd_ms / v if isinstance(sd_ms, (int, float)) and isinstance(v, (int, float)) and v > 0 else None
          for v in (mode(m, "ms_median") for m, _ in MODES)]),
        (f"{steps}-step e2e (s)", "{:.3f}", s.get("e2e_50_s"), eager_only(t.get("e2e", {}).get("s_median"))),
        (f"VAE decode {size}² (ms)", "{:.2f}", s.get("vae_decode_ms"), eager_only(t.get("vae_decode", {}).get("ms_median"))),
        ("text encoder (ms)", "{:.2f}", s.get("text_encoder_ms"), eager_only(t.get("text_encoder", {}).get("ms_median"))),
        ("load time (s)", "{:.2f}", s.get("load_s"), eager_only(t.get("load", {}).get("warm_s"))),
        ("peak GPU memory, UNet (GiB)", "{:.2f}", None, [mode(m, "peak_alloc_gib") for m, _ in MODES]),
        ("peak GPU memory, e2e (GiB)", "{:.2f}", s.get("peak_gpu_gib"), eager_only(t.get("e2e", {}).get("peak_alloc_gib"))),
        ("GPU memory in use after e2e (GiB, cudaMemGetInfo)", "{:.2f}", s.get("device_memory_in_use_gib"),
         eager_only(t.get("e2e", {}).get("device_in_use_gib"))),
    ]
    if p:
        rows.append(("UNet rel L2 vs fp32", "{:.2e}", p.get("candidate_vs_fp32", {}).get("rel_l2"),
                     eager_only(p.get("torch_fp16", {}).get("rel_l2"))))
    for fam, ms in (s.get("breakdown_ms") or {}).items():
        rows.append((f"sdrt UNet step: {fam} (ms)", "{:.3f}", ms, eager_only(None)))

    env = t.get("env", {})
    print(f"sdrt on {s.get('device', '—')}; torch {env.get('torch', '—')} on {env.get('device', '—')}"
          f" (diffusers {env.get('diffusers', '—')}, e2e scheduler {t.get('e2e', {}).get('scheduler', '—')},"
          f" compile: {mode('compile_graph', 'mode') or '—'})\n")
    print("| measurement | sdrt | " + " | ".join(name for _, name in MODES) + " |")
    print("|---|" + "---:|" * (len(MODES) + 1))
    for label, fmt, sd, others in rows:
        print(f"| {label} | {num(sd, fmt)} | " + " | ".join(num(v, fmt) for v in others) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
