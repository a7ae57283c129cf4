#!/usr/bin/env bash
# Trains, exports and evaluates the sdrt demo model on a GPU machine (training/README.md has the recipe and the
# commands that made the shipped model). Run from the repository root with diffusers 0.42.1 installed or its
# src/diffusers unpacked as .ref/diffusers:
#
#   bash training/run_device.sh --speed-probe --unet-time 1200 --max-wall 1500       # a fresh run
#   bash training/run_device.sh --resume out/resume --compile --unet-time 1200      # continue from a checkpoint
#   bash training/run_device.sh --init-from models/demo --unet-time 420 --unet-lr 2e-4   # continue the shipped model
#
# (for --resume, put an earlier run's ckpt.pt.000, ckpt.pt.001, ... in out/resume/). Everything goes to $OUT
# (default out/train; 7 files, each <= 16 MiB): train.log, log.json, vae_recon.png, eval_grid.png,
# sdrt-demo.tar.gz (folder demo/: `rm -rf models/demo && tar -xzf sdrt-demo.tar.gz -C models/`), ckpt.pt.000/.001.
# Extra arguments go to train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.ref${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/out/train}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.max.sm --format=csv,noheader || true
python3 -c "import torch, transformers, diffusers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'diffusers', diffusers.__version__, diffusers.__file__)"
python3 training/train.py --out "$OUT" --export-dir /tmp/sdrt-train/demo "$@"
ls -la "$OUT"
