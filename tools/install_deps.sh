#!/usr/bin/env bash
# Installs the Debian 12 packages that dcp's build and tests need, and nothing
# else. Idempotent: packages already present are skipped, and apt-get is not
# called at all when nothing is missing. Must run as root (or via sudo).
set -euo pipefail

PACKAGES=(
  bazel-bootstrap       # Bazel 4.2.3, the build system (WORKSPACE mode, offline)
  g++                   # the C++17 toolchain Bazel autoconfigures
  libtorch-dev          # libtorch 1.13.1: ATen, c10, c10d
  libgloo-dev           # Gloo headers that c10d's ProcessGroupGloo.hpp includes
  libabsl-dev           # Abseil 20220623
  libgtest-dev          # GoogleTest 1.12.1
  libgmock-dev          # GoogleMock 1.12.1
  libgoogle-glog-dev    # glog 0.6
  libgflags-dev         # gflags 2.2
  libisal-dev           # Intel ISA-L: CRC-32 of torch.save zip records (//storage:crc32)
  zlib1g-dev            # zlib: the reference CRC-32 in tests and benchmarks
  time                  # /usr/bin/time -v: peak RSS in tools/peer/bench_side_by_side.sh
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    echo "install_deps: $pkg is already installed"
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install_deps: nothing to install"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install_deps: updating the package lists"
$SUDO apt-get update -q
echo "install_deps: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install_deps: done"
