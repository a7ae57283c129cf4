#!/usr/bin/env bash
# Builds the libFuzzer targets with Clang and runs each for a bounded time: the in-memory parsers (safetensors,
# npy, pickle, the A1111 prompt attention parser) $1 seconds each (default 60), the file-based ones (tokenizer
# folder, shard index, single-file .yaml and shape inference) half that each — 6 minutes in all by default.
# Exits non-zero when a fuzzer finds a crash, a sanitizer report or a leak.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
half=$(((seconds + 1) / 2))
memory_targets=(safetensors npy pickle prompt_attention)
file_targets=(tokenizer shard_index single_file_yaml single_file_shapes)
cmake --preset fuzz >/dev/null
build_targets=()
for target in "${memory_targets[@]}" "${file_targets[@]}"; do build_targets+=("fuzz_$target"); done
cmake --build --preset fuzz -j "$(nproc)" --target "${build_targets[@]}"
work="build/fuzz/run"
run_target() {
  local target="$1" limit="$2"
  mkdir -p "$work/$target"
  local dict=() corpus=()
  if [ -f "tests/fuzz/$target.dict" ]; then dict=(-dict="tests/fuzz/$target.dict"); fi
  if [ -d "tests/fuzz/corpus/$target" ]; then corpus=("tests/fuzz/corpus/$target"); fi
  echo "== sdrt: fuzzing $target for ${limit}s"
  # pipefail: a crash (non-zero exit of the fuzzer) fails the script even through tail.
  "build/fuzz/tests/fuzz/fuzz_$target" -max_total_time="$limit" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$work/$target/" "${dict[@]}" "$work/$target" "${corpus[@]}" 2>&1 | tail -n 12
}
for target in "${memory_targets[@]}"; do run_target "$target" "$seconds"; done
for target in "${file_targets[@]}"; do run_target "$target" "$half"; done
echo "sdrt: fuzzing found nothing"
