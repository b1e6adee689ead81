#!/usr/bin/env bash
# Set up a development environment in ./.venv on Debian / Raspberry Pi OS (x86-64 or arm64):
# the system packages that are missing (through apt-get, as root or with sudo), then the project
# with its native module, editable. `--test` adds what the test suite needs.
#
#   scripts/setup.sh          # runtime: python3-venv, compiler, mosquitto
#   scripts/setup.sh --test   # + test tools: cross compiler, qemu-user, shellcheck, debootstrap,
#                             #   llama-cpp-python (built once into ~/.cache/bullet-wheels),
#                             #   iproute2, iptables (the reliability run's network namespaces, packet loss)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

pkgs=(python3 python3-venv python3-dev python3-pip g++ make mosquitto mosquitto-clients)
if [ $want_test = 1 ]; then
  pkgs+=(shellcheck debootstrap systemd openssl cmake util-linux iproute2 iptables)
  # the ARM tests cross-compile and emulate from x86-64; on an arm64 machine they run natively
  [ "$(uname -m)" = x86_64 ] && pkgs+=(g++-aarch64-linux-gnu qemu-user)
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
# python3 from pyenv (as on CI machines) needs no python3-* packages if it has venv and headers
if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, sysconfig, os; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do case "$p" in python3|python3-venv|python3-dev|python3-pip) ;; *) filtered+=("$p");; esac; done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  echo "setup: Python >= 3.10 is required, found $("$PY" --version 2>&1)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
extra=""
[ $want_test = 1 ] && extra="[test]"
echo "setup: building and installing bullet-os${extra} into .venv (native module included)"
.venv/bin/python -m pip install -q -e ".${extra}"
.venv/bin/python -c 'import bulletd._native as n; print("setup: native module ok:", n.__file__)'

# The GGUF interop tests run exported children in llama.cpp itself, through llama-cpp-python.
# PyPI has it as source only: build it once (CPU only, no tuning to this machine's CPU, about
# 10 minutes on 2 cores) into a wheel cache, and install it from there afterwards. The version
# is pinned with the gguf package in pyproject.toml so that both speak the same GGUF.
LLAMA_CPP_PYTHON=0.3.36
if [ $want_test = 1 ] && ! .venv/bin/python -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON')" 2>/dev/null; then
  cache=${BULLET_WHEEL_CACHE:-$HOME/.cache/bullet-wheels}
  mkdir -p "$cache"
  if ! ls "$cache"/llama_cpp_python-$LLAMA_CPP_PYTHON-*.whl >/dev/null 2>&1; then
    echo "setup: building llama-cpp-python $LLAMA_CPP_PYTHON into $cache (once; about 10 minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF" \
      CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
      .venv/bin/python -m pip wheel -q --no-deps "llama-cpp-python==$LLAMA_CPP_PYTHON" -w "$cache"
  fi
  echo "setup: installing llama-cpp-python $LLAMA_CPP_PYTHON from $cache"
  .venv/bin/python -m pip install -q --find-links "$cache" "llama-cpp-python==$LLAMA_CPP_PYTHON"
fi
