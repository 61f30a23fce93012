#!/usr/bin/env bash
# Installs what building and testing Hotstage needs on Debian 12, and
# configures the build tree. Idempotent: a second run installs nothing and
# leaves an existing build tree alone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${HOTSTAGE_BUILD_DIR:-$root/build}

packages=(
  cmake ninja-build python3
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools
  clang-22 libclang-rt-22-dev   # the compiler, and libFuzzer for the fuzzer
  libgtest-dev                  # runtime unit tests
  libdnnl-dev                   # GEMMs of the host target (oneDNN)
  openmpi-bin libopenmpi-dev    # multi-rank training (pipelines, data parallel)
  python3-torch python3-numpy   # the PyTorch references of the e2e tests and bench/
  python3-pip                   # fetches the pinned cuDNN frontend headers
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# cuDNN's frontend: the header-only C++ graph API through which the CUDA
# target runs fused attention, pinned, from its PyPI wheel (only include/
# is used; nothing of it runs at build time).
cudnn_frontend=1.32.0
cudnn_frontend_wheel=nvidia_cudnn_frontend-$cudnn_frontend-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
cudnn_frontend_sha256=c6006556017a4d1c914c52a556c71b1267f2d6a0500f742e7b4edef539878df0
deps=$root/.deps/cudnn-frontend-$cudnn_frontend
if [[ ! -f $deps/include/cudnn_frontend.h ]]; then
  echo "setup: fetching the cuDNN frontend $cudnn_frontend headers"
  download=$(mktemp -d)
  /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 \
    "nvidia-cudnn-frontend==$cudnn_frontend" -d "$download"
  echo "$cudnn_frontend_sha256  $download/$cudnn_frontend_wheel" | sha256sum -c --quiet
  mkdir -p "$deps"
  /usr/bin/python3 - "$download/$cudnn_frontend_wheel" "$deps" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist() if n.startswith("include/")])
PY
  rm -rf "$download"
fi

if [[ ! -f $build/build.ninja ]]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir \
    -DLLVM_EXTERNAL_LIT=/usr/lib/llvm-22/bin/lit >/dev/null
fi
