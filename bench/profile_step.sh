#!/usr/bin/env bash
# Per-kernel GPU time of one UNet step (CUDA graph replay, batch 2, 64×64 latents) with Nsight Compute, on the
# GPU machine: bench_cuda marks one replay with the NVTX range "sdrt_unet_step", ncu times each kernel node of
# it (kernels run one at a time, clocks left alone), bench/kernel_summary.py groups them by family.
#   MODEL=/tmp/sd15-random-fp16 BENCH_CUDA=build/devpkg/bench_cuda bash bench/profile_step.sh
# Writes $OUT/ncu.csv, $OUT/kernels.txt (summary) and $OUT/kernel_order.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sdrt-profile}
MODEL=${MODEL:-/tmp/sd15-random-fp16}
BENCH_CUDA=${BENCH_CUDA:-build/release/bench_cuda}
mkdir -p "$OUT"
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
"$NCU" --clock-control none --graph-profiling node --nvtx --nvtx-include "sdrt_unet_step/" \
  --metrics gpu__time_duration.sum,launch__grid_size,launch__block_size --csv --page raw \
  --log-file "$OUT/ncu.csv" "$BENCH_CUDA" --model "$MODEL" --iterations 5 --steps 2 --size 512 > "$OUT/bench.json"
python3 bench/kernel_summary.py "$OUT/ncu.csv" --order "$OUT/kernel_order.txt" | tee "$OUT/kernels.txt"
