#!/usr/bin/env bash
# Checks the include rules, builds sdrt in release and in AddressSanitizer + UndefinedBehaviorSanitizer mode,
# runs the test suite in both, then runs the fuzzers for a bounded time. Exits non-zero when the include check,
# any build, test or fuzzer fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# The layers point one way (scripts/check_includes.py holds the rules); quick, so first.
echo "== sdrt: include rules"
python3 scripts/check_includes.py
jobs=$(nproc)
for preset in release asan; do
  echo "== sdrt: $preset build"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  echo "== sdrt: $preset tests"
  ctest --preset "$preset" -j "$jobs"
done
# The parsers of untrusted files (safetensors, npy) are fuzzed for a bounded time.
scripts/fuzz.sh "${SDRT_FUZZ_SECONDS:-60}"
echo "sdrt: all tests passed (release and asan builds, fuzzers)"
# GPU tests must not vanish silently: how many were compiled, run, skipped (no GPU) or left out (no nvcc).
for preset in release asan; do scripts/gpu_test_count.sh "build/$preset"; done
