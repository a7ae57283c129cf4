#!/usr/bin/env bash
# Prints one line saying how many GPU tests (every gtest name matching *Cuda*) a build compiled, how many its
# last ctest run ran and skipped (no usable GPU), and how many GPU test definitions it left out (built without
# nvcc: tests/test_cuda_*.cpp compile to nothing). Usage: scripts/gpu_test_count.sh [BUILD_DIR]
# (default build/release; run ctest there first). GPU tests must never vanish silently.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/release}"
bin="$build/tests/sdrt_tests"
if [ ! -x "$bin" ]; then
  echo "sdrt: GPU tests: no test binary at $bin" >&2
  exit 1
fi
# Test names are the indented lines of --gtest_list_tests (suites are not indented).
compiled=$("$bin" --gtest_list_tests --gtest_filter='*Cuda*' | grep -c '^  ' || true)
# ctest's log of the last run: each test's block names it ("N/M Test: NAME"), then ends with "Test Passed.",
# "Test Failed." or, for a GTEST_SKIP (gtest_discover_tests' skip regex), "Skip regular expression found ...",
# then '"NAME" end time: ...'.
log="$build/Testing/Temporary/LastTest.log"
run=0 skipped=0 failed=0
if [ -f "$log" ]; then
  read -r run skipped failed < <(awk '
    /^[0-9]+\/[0-9]+ Test: / { name = $3; status = "" }
    /^Test Passed\./ { status = "run" }
    /^Test Failed\./ { status = "failed" }
    /^Skip regular expression found/ { status = "skipped" }
    / end time: / {
      if (name ~ /Cuda/) {
        if (status == "skipped") s++; else if (status == "failed") f++; else if (status == "run") r++
      }
      name = ""
    }
    END { print r + 0, s + 0, f + 0 }' "$log")
  run=$((run + failed))
else
  echo "sdrt: GPU tests: no ctest log at $log (run ctest first)" >&2
fi
# Left out: the GPU test definitions of tests/test_cuda_*.cpp when the build has no CUDA backend.
left_out=0
if ! grep -q '^SDRT_HAVE_CUDA:INTERNAL=ON\|SDRT_HAVE_CUDA=1' "$build/CMakeCache.txt" "$build/build.ninja" 2>/dev/null; then
  left_out=$(cat tests/test_cuda_*.cpp | grep -cE '^(TEST|TEST_F|TEST_P)\(' || true)
fi
echo "sdrt: GPU tests ($build): $compiled compiled, $run run ($failed failed), $skipped skipped (no usable GPU)," \
  "$left_out left out (test definitions in tests/test_cuda_*.cpp not built: no CUDA backend — no nvcc, or SDRT_CUDA=OFF)"
