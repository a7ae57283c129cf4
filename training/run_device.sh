#!/usr/bin/env bash
# Trains, exports and evaluates the sdrt demo model in one call on the GPU machine (the `run` device tool).
# Run from the repository root with .ref/diffusers (diffusers 0.42.1's src/diffusers) present; carrying only
# the packed .ref/diffusers.tar.xz (1.9 MB) and unpacking it first is the quickest:
#
#   tar xJf .ref/diffusers.tar.xz -C .ref && bash training/run_device.sh    # a fresh run (~7 minutes, one H100)
#
#   # continue the shipped model (models/demo is in the tree): VAE kept, UNet + text encoder trained on with
#   # the hard scene kinds oversampled; about 8 minutes in all, capped by train.py --max-wall 530
#   tar xJf .ref/diffusers.tar.xz -C .ref && bash training/run_device.sh --init-from models/demo --unet-time 420 --unet-lr 2e-4
#
#   training/run_device.sh --resume out/resume --unet-time 300 --unet-lr 2e-4   # continue from a checkpoint
#
# (for --resume, put the earlier run's ckpt.pt.000, ckpt.pt.001, ... in out/resume/ and carry "out/resume").
# The new model is $OUT/sdrt-demo.tar.gz: `rm -rf models/demo && tar -xzf sdrt-demo.tar.gz -C models/`.
# Extra arguments go to train.py. Everything that comes back is under $OUT (7 files, each <= 16 MiB):
# train.log, log.json, vae_recon.png, eval_grid.png, sdrt-demo.tar.gz (folder demo/), ckpt.pt.000/.001.
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
