#!/usr/bin/env bash
# Packs what a GPU machine without sdrt's build dependencies needs to run the CUDA tests and benchmark:
# stripped bench_cuda and sdrt_tests plus the Debian shared libraries they link (oneDNN, ICU, fmt, libpng,
# libgomp, the OpenCL loader) into build/devpkg.tar.xz (~22 MB). CUDA, cuBLASLt and cuDNN come from the
# machine (PyTorch's wheels or /usr/local/cuda). On the GPU machine:
#   mkdir -p build && tar xJf build/devpkg.tar.xz -C build && export LD_LIBRARY_PATH=$PWD/build/devpkg
#   SDRT_TESTS=build/devpkg/sdrt_tests BENCH_CUDA=build/devpkg/bench_cuda bash bench/run_cuda_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
PKG=build/devpkg
rm -rf "$PKG" && mkdir -p "$PKG"
strip -o "$PKG/bench_cuda" "$BUILD/bench_cuda"
strip -o "$PKG/sdrt_tests" "$BUILD/tests/sdrt_tests"
strip -o "$PKG/sdrt" "$BUILD/sdrt"  # the CLI, for the CLI golden tests (SDRT_CLI_PATH)
for lib in libdnnl.so.2 libicuuc.so.72 libicudata.so.72 libfmt.so.9 libpng16.so.16 libgomp.so.1 libOpenCL.so.1; do
  path=$(ldd "$BUILD/tests/sdrt_tests" "$BUILD/bench_cuda" | awk -v l="$lib" '$1 == l {print $3; exit}')
  [ -n "$path" ] && cp -L "$path" "$PKG/$lib"
done
tar cf - -C build devpkg | xz -9e -T0 > build/devpkg.tar.xz
ls -la build/devpkg.tar.xz
