#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (`ncu --csv --page raw --metrics gpu__time_duration.sum,...`) of one UNet
step: total GPU time, time per kernel family, the kernels that take longest, and every kernel in launch order.

    python3 bench/kernel_summary.py ncu.csv [--top 40] [--order order.txt]
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict

FAMILIES = [  # first match wins
    ("group_norm", r"group_norm"),
    ("layer_norm", r"layer_norm"),
    ("attention", r"sdpa|fmha|flash|softmax|attention"),
    ("conv", r"fprop|conv|implicit|dgrad|wgrad|xmma_fprop"),
    ("gemm", r"gemm|cutlass|sm90_xmma|cublas"),
    ("elementwise", r"."),
]


def family(name: str) -> str:
    for fam, pattern in FAMILIES:
        if re.search(pattern, name, re.IGNORECASE):
            return fam
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--order", help="write every kernel in launch order here")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu prints its own messages too
    rows = list(csv.DictReader(lines))
    kernels = []
    for r in rows:
        if not r.get("ID", "").isdigit():
            continue  # the units row
        t = r.get("gpu__time_duration.sum", "").replace(",", "")
        try:
            us = float(t) / 1e3  # ns -> us
        except ValueError:
            continue
        grid, block = r.get("launch__grid_size", ""), r.get("launch__block_size", "")
        kernels.append((r.get("Kernel Name", "?"), us, grid, block))
    total = sum(k[1] for k in kernels)
    print(f"kernels: {len(kernels)}, total GPU time {total / 1e3:.3f} ms (serialised by the profiler)")
    fam = defaultdict(lambda: [0.0, 0])
    for name, us, _, _ in kernels:
        fam[family(name)][0] += us
        fam[family(name)][1] += 1
    print("\nfamily        ms      count")
    for k, (us, n) in sorted(fam.items(), key=lambda kv: -kv[1][0]):
        print(f"{k:12s} {us / 1e3:7.3f} {n:6d}")
    by_name = defaultdict(lambda: [0.0, 0])
    for name, us, _, _ in kernels:
        by_name[name[:110]][0] += us
        by_name[name[:110]][1] += 1
    print(f"\ntop {args.top} kernel names by total time (us, count)")
    for name, (us, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{us:9.1f} {n:4d}  {name}")
    if args.order:
        with open(args.order, "w") as f:
            for i, (name, us, grid, block) in enumerate(kernels):
                f.write(f"{i:4d} {us:8.2f} us  grid={grid} block={block}  {family(name):11s} {name[:160]}\n")


if __name__ == "__main__":
    main()
