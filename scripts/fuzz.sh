#!/usr/bin/env bash
# Builds the libFuzzer targets with Clang and runs each for a bounded time (default 60 s, or $1 seconds).
# Exits non-zero when a fuzzer finds a crash, a sanitizer report or a leak.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)"
work="build/fuzz/run"
for target in safetensors npy pickle; do
  mkdir -p "$work/$target"
  dict=()
  if [ -f "tests/fuzz/$target.dict" ]; then dict=(-dict="tests/fuzz/$target.dict"); fi
  echo "== sdrt: fuzzing $target for ${seconds}s"
  "build/fuzz/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$work/$target/" "${dict[@]}" "$work/$target" "tests/fuzz/corpus/$target" 2>&1 | tail -n 12
done
echo "sdrt: fuzzing found nothing"
