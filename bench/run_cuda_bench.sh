#!/usr/bin/env bash
# The one device command: sdrt's CUDA benchmark and parity check next to PyTorch's numbers, on random SD 1.5 weights.
#
#   bash bench/run_cuda_bench.sh [--quick]      (--quick: no torch.compile, fewer e2e runs)
#
# Expects in the checkout (carried to the device): build/release/bench_cuda, .ref/diffusers or .ref/diffusers.tar.xz,
# optionally build/devlibs/ or build/devlibs.tar.xz (shared libraries bench_cuda needs that the machine lacks).
# Writes under $OUT (default /tmp/sdrt-bench): run.log, sdrt.json, sdrt_unet.npy, parity.json, torch.json, report.md.
# PROFILE=1: also bench/profile_step.sh (ncu per-kernel times) into $OUT/profile; SKIP_TORCH=1: sdrt only.
# FAMILY=sdxl: full-size random SDXL base weights (bench/make_random_sdxl.py) at SIZE=1024, STEPS=30 by default;
# the UNet parity check is SD 1.5's only.
# Extra arguments: $TORCH_BENCH_ARGS for torch_bench.py (e.g. "--channels-last"), $PARITY_ARGS for make-inputs.
# Exit status: 0 when every step ran and the UNet parity passed.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
OUT=${OUT:-/tmp/sdrt-bench}
mkdir -p "$OUT"
rm -f "$OUT"/{run.log,sdrt.json,sdrt_unet.npy,parity.json,torch.json,report.md}
DEVICE=${BENCH_DEVICE:-cuda}          # BENCH_DEVICE=cpu MODEL=tests/fixtures/tiny-sd1: a local smoke test of this script
FAMILY=${FAMILY:-sd15}
if [ "$FAMILY" = sdxl ]; then
  MODEL=${MODEL:-/tmp/sdxl-random-fp16}; SIZE=${SIZE:-1024}; STEPS=${STEPS:-30}
else
  MODEL=${MODEL:-/tmp/sd15-random-fp16}; SIZE=${SIZE:-512}; STEPS=${STEPS:-50}
fi  # the model is made here unless it exists
INPUTS=/tmp/sdrt-unet-inputs
BENCH_CUDA=${BENCH_CUDA:-build/release/bench_cuda}
FAILED=()
step() {  # step NAME TIMEOUT_S COMMAND...: runs one step with a time limit, logs its wall time, goes on after failure
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $name: rc=$rc, $((SECONDS - t0)) s"
  [ $rc -ne 0 ] && FAILED+=("$name(rc=$rc)")
  return $rc
}

main() {
  # Libraries: cuDNN 9 from PyTorch's wheels, the CUDA toolkit's, and the carried Debian .so files.
  mapfile -t SITE < <(python3 -c 'import site; print("\n".join(site.getsitepackages()))')
  CUDNN=$(find "${SITE[@]}" -name 'libcudnn.so.9' 2>/dev/null | head -1)
  [ -z "$CUDNN" ] && CUDNN=$(find / -name 'libcudnn.so.9' 2>/dev/null | head -1)
  LIBS=${CUDNN:+$(dirname "$CUDNN")}
  [ -d /usr/local/cuda/lib64 ] && LIBS="$LIBS:/usr/local/cuda/lib64"
  if [ -f build/devlibs.tar.xz ] && [ ! -d build/devlibs ]; then mkdir -p build/devlibs && tar xJf build/devlibs.tar.xz -C build/devlibs; fi
  if [ -d build/devlibs ]; then
    for d in $(find build/devlibs -name '*.so*' -printf '%h\n' | sort -u); do LIBS="$LIBS:$PWD/$d"; done
  fi
  export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # diffusers as source (the machine has none).
  if [ ! -d .ref/diffusers ] && [ -f .ref/diffusers.tar.xz ]; then tar xJf .ref/diffusers.tar.xz -C .ref; fi
  export PYTHONPATH="$PWD/.ref${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

  echo "=== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null) quick=$QUICK"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv,noheader 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  python3 -c 'import torch, transformers, diffusers; print("torch", torch.__version__, "transformers", transformers.__version__, "diffusers", diffusers.__version__, diffusers.__file__)'

  # Optional: the CUDA unit tests first (SDRT_TESTS=path/to/sdrt_tests), against this checkout's fixtures.
  if [ -n "${SDRT_TESTS:-}" ]; then
    SDRT_FIXTURES_DIR="$PWD/tests/fixtures" step cuda_tests 240 "$SDRT_TESTS" --gtest_filter="${SDRT_TEST_FILTER:-*Cuda*}"
  fi

  [ -d "$MODEL" ] || step make_model 240 python3 "bench/make_random_$FAMILY.py" "$MODEL" --fp16 --device "$DEVICE"
  local parity=()
  if [ "$FAMILY" = sd15 ]; then
    # shellcheck disable=SC2086
    step make_inputs 180 python3 bench/unet_parity.py make-inputs --model "$MODEL" --out "$INPUTS" --device "$DEVICE" \
      ${PARITY_ARGS:-}
    parity=(--unet-inputs "$INPUTS" --unet-output "$OUT/sdrt_unet.npy")
  fi

  if [ -x "$BENCH_CUDA" ]; then
    ldd "$BENCH_CUDA" | grep -i 'not found'
    step bench_cuda "${SDRT_TIMEOUT:-240}" "$BENCH_CUDA" --model "$MODEL" "${parity[@]}" --size "$SIZE" \
      --steps "$STEPS" --json "$OUT/sdrt.json"
    if [ "$FAMILY" != sd15 ]; then
      :
    elif [ -f "$OUT/sdrt_unet.npy" ]; then
      step parity 60 python3 bench/unet_parity.py compare --ref "$INPUTS" --candidate "$OUT/sdrt_unet.npy" \
        --json "$OUT/parity.json"
    else
      echo "=== parity: no $OUT/sdrt_unet.npy"; FAILED+=("parity(no output)")
    fi
  else
    echo "=== bench_cuda: $BENCH_CUDA missing (carry it)"; FAILED+=("bench_cuda(missing)")
  fi

  # Optional: per-kernel times of one graph-replayed step under Nsight Compute (bench/profile_step.sh).
  if [ "${PROFILE:-0}" = 1 ] && [ -x "$BENCH_CUDA" ]; then
    OUT="$OUT/profile" MODEL="$MODEL" BENCH_CUDA="$BENCH_CUDA" step profile 300 bash bench/profile_step.sh
  fi

  TB=(--model "$MODEL" --out "$OUT/torch.json" --device "$DEVICE" --size "$SIZE" --steps "$STEPS")
  [ $QUICK = 1 ] && TB+=(--no-compile --e2e-runs 2)
  # shellcheck disable=SC2086
  [ "${SKIP_TORCH:-0}" = 1 ] || step torch_bench 420 python3 bench/torch_bench.py "${TB[@]}" ${TORCH_BENCH_ARGS:-}

  python3 bench/report.py --sdrt "$OUT/sdrt.json" --torch "$OUT/torch.json" --parity "$OUT/parity.json" | tee "$OUT/report.md"
  echo "=== done in $SECONDS s; failed: ${FAILED[*]:-none}"
  [ ${#FAILED[@]} -eq 0 ]
}

main "$@" 2>&1 | tee -a "$OUT/run.log"
exit "${PIPESTATUS[0]}"
