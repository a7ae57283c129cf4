#!/usr/bin/env bash
# Installs sdrt's build dependencies from Debian 12 packages.
# (ocl-icd-opencl-dev: Debian's oneDNN CMake package looks for OpenCL, a Recommends that --no-install-recommends skips.)
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libdnnl-dev ocl-icd-opencl-dev libicu-dev zlib1g-dev libpng-dev libomp-dev \
  nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev \
  clang libclang-rt-14-dev >/dev/null

# The cuDNN C++ front end (header-only, MIT) for the CUDA backend's fused attention graphs: PyPI's wheel carries
# the headers; unpack them into .deps/ (git-ignored). Only needed when nvcc is present.
FRONTEND_VERSION=1.32.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
  if [ ! -f "$ROOT/.deps/cudnn-frontend/include/cudnn_frontend.h" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" \
      "nvidia-cudnn-frontend==$FRONTEND_VERSION"
    mkdir -p "$ROOT/.deps/cudnn-frontend"
    python3 -m zipfile -e "$tmp"/nvidia_cudnn_frontend-*.whl "$tmp/wheel"
    rm -rf "$ROOT/.deps/cudnn-frontend/include"
    cp -r "$tmp/wheel/include" "$ROOT/.deps/cudnn-frontend/include"
    rm -rf "$tmp"
  fi
fi
echo "sdrt: build dependencies installed"
