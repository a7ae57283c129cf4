#!/usr/bin/env bash
# Installs sdrt's build dependencies from Debian 12 packages.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build pkg-config \
  libdnnl-dev libicu-dev zlib1g-dev libpng-dev libomp-dev \
  nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev \
  clang libclang-rt-14-dev >/dev/null
echo "sdrt: build dependencies installed"
