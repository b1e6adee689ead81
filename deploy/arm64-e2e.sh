#!/bin/bash
# arm64 end-to-end run of Bullet OS on an x86-64 machine, without an ARM board or binfmt_misc.
#
#   deploy/arm64-e2e.sh [--cache DIR] [--work DIR] [--keep] [--kernel-only] [--mirror URL]
#
# What it does, in order (each phase prints its wall time):
#   1. root     an arm64 Debian 12 root: `debootstrap --arch=arm64 --foreign --variant=minbase`
#               (python3 + libpython3.11-dev included), completed by `dpkg-deb -x` of every .deb
#               debootstrap left in its apt cache (the second stage would need to run arm64 code
#               as root inside the tree; unpacking is enough to run Python under qemu).
#               Cached under the cache folder; built in a temporary folder and moved into place.
#   2. wheels   the runtime dependencies as arm64 wheels from PyPI (`pip download --platform`),
#               cached, then `pip install --target` into WORK/site (outside the root).
#   3. native   the pybind11 module cross-compiled with aarch64-linux-gnu-g++ through the
#               project's own CMakeLists.txt and the root's Python headers.
#   4. kernel   `qemu-aarch64 -L ROOT ROOT/usr/bin/python3.X` imports bulletd, prints the kernel
#               path the CPU dispatch chose (must be a NEON one) and times a BQ4 mat-vec.
#   5. daemon   starts `bulletd --config` as an arm64 process with a signed child in its model
#               folder, waits for its control socket, generates tokens with the arm64
#               `bulletd-cli`, and stops the daemon with SIGTERM.
# --kernel-only stops after phase 4.
#
# The cache (default ${XDG_CACHE_HOME:-~/.cache}/bullet-arm64, or $BULLET_ARM64_CACHE) lives
# outside the checkout; nothing downloaded is ever written into the repository.
# Needs (Debian): debootstrap qemu-user g++-aarch64-linux-gnu cmake (or the pip cmake), python3
# with pip, pybind11, numpy, pyyaml, cryptography installed (the project's dev install).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/.." && pwd)"
CACHE="${BULLET_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bullet-arm64}"
MIRROR="http://deb.debian.org/debian"
SUITE="bookworm"
WORK=""
KEEP=0
KERNEL_ONLY=0
HOST_PY="${PYTHON:-python3}"

die() { echo "arm64-e2e: error: $*" >&2; exit 1; }
say() { echo "arm64-e2e: $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cache) CACHE="${2:?--cache needs a folder}"; shift 2 ;;
        --work) WORK="${2:?--work needs a folder}"; shift 2 ;;
        --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --kernel-only) KERNEL_ONLY=1; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (expected --cache, --work, --mirror, --keep, --kernel-only)" ;;
    esac
done

for tool in debootstrap dpkg-deb qemu-aarch64 aarch64-linux-gnu-g++ "$HOST_PY"; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (apt-get install debootstrap qemu-user g++-aarch64-linux-gnu)"
done
CMAKE="$(command -v cmake || true)"
[ -n "$CMAKE" ] || die "cmake not found (pip install cmake, or apt-get install cmake)"
[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root, or in a container)"

mkdir -p "$CACHE"
if [ -z "$WORK" ]; then
    WORK="$(mktemp -d /tmp/bullet-arm64-e2e.XXXXXX)"
else
    mkdir -p "$WORK"
fi
DAEMON_PID=""
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        sleep 2
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 0 ]; then rm -rf "$WORK"; else say "kept work folder $WORK"; fi
}
trap cleanup EXIT

T_ALL=$SECONDS
phase_start() { T_PHASE=$SECONDS; say "--- $1"; }
phase_end() { say "    $1 took $((SECONDS - T_PHASE)) s"; }

# ---------------------------------------------------------------- 1. arm64 root
ROOT="$CACHE/root-$SUITE-arm64"
phase_start "root ($ROOT)"
if [ ! -f "$ROOT/.bullet-complete" ]; then
    stage="$CACHE/.root-stage.$$"
    rm -rf "$stage"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,libpython3.11-dev "$SUITE" "$stage" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
        || { rm -rf "$stage"; die "debootstrap failed, see $CACHE/debootstrap.log"; }
    for deb in "$stage"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$stage"
    done
    touch "$stage/.bullet-complete"
    rm -rf "$ROOT"
    mv "$stage" "$ROOT"
else
    say "    cached"
fi
PYBIN="$(find "$ROOT/usr/bin" -maxdepth 1 -name 'python3.[0-9]*' -type f | sort | tail -n1)"
[ -n "$PYBIN" ] || die "no python3.X in $ROOT/usr/bin"
PYVER="${PYBIN##*/python}"          # e.g. 3.11
PYTAG="cp${PYVER/./}"               # e.g. cp311
arm_py() { PYTHONPATH="$WORK/site" PYTHONDONTWRITEBYTECODE=1 qemu-aarch64 -L "$ROOT" "$PYBIN" "$@"; }
say "    $(arm_py -c 'import platform, sys; print("arm64 python", sys.version.split()[0], platform.machine())')"
phase_end root

# ---------------------------------------------------------------- 2. wheels
phase_start "wheels"
PLAT=(--only-binary=:all: --python-version "$PYVER" --implementation cp --abi "$PYTAG" --abi abi3 --abi none
      --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64
      --platform any)
DEPS=(numpy msgpack pyyaml psutil aiomqtt cryptography)
mkdir -p "$CACHE/wheels-$PYTAG"
if ! "$HOST_PY" -m pip install -q --no-index --find-links "$CACHE/wheels-$PYTAG" "${PLAT[@]}" \
        --target "$WORK/site" "${DEPS[@]}" 2>/dev/null; then
    "$HOST_PY" -m pip download -q --dest "$CACHE/wheels-$PYTAG" "${PLAT[@]}" "${DEPS[@]}"
    rm -rf "$WORK/site"
    "$HOST_PY" -m pip install -q --no-index --find-links "$CACHE/wheels-$PYTAG" "${PLAT[@]}" \
        --target "$WORK/site" "${DEPS[@]}"
fi
phase_end wheels

# ---------------------------------------------------------------- 3. native module
phase_start "native (cross-compile)"
cat >"$WORK/aarch64.cmake" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
EOF
PYBIND_DIR="$("$HOST_PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')"
EXT=".cpython-${PYVER/./}-aarch64-linux-gnu.so"
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
# Debian's /usr/include/python3.X/pyconfig.h includes <aarch64-linux-gnu/python3.X/pyconfig.h>,
# hence the extra -I of the root's /usr/include. The interpreter found is the host's; only its
# headers and extension suffix matter, and both are overridden with the arm64 ones.
"$CMAKE" -S "$SRC" -B "$WORK/build" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_TOOLCHAIN_FILE="$WORK/aarch64.cmake" -Dpybind11_DIR="$PYBIND_DIR" \
    -DPython_EXECUTABLE="$(command -v "$HOST_PY")" -DPython_INCLUDE_DIR="$ROOT/usr/include/python$PYVER" \
    -DPYTHON_MODULE_EXTENSION="$EXT" -DCMAKE_CXX_FLAGS="-I$ROOT/usr/include" >"$WORK/cmake.log" 2>&1 \
    || { cat "$WORK/cmake.log"; die "cmake configure failed"; }
"$CMAKE" --build "$WORK/build" -j 2 >>"$WORK/cmake.log" 2>&1 || { tail -40 "$WORK/cmake.log"; die "cross-compile failed"; }
SO="$(find "$WORK/build" -name "_native$EXT" | head -n1)"
[ -n "$SO" ] || die "the build made no _native$EXT"
phase_end native

# ---------------------------------------------------------------- install the project
mkdir -p "$WORK/site"
# The Python packages as pip would lay them out (no host build: the native module is the arm64 one).
for pkg in bulletd trainer; do
    [ -d "$SRC/$pkg" ] || continue
    (cd "$SRC" && find "$pkg" -name '*.py' -o -name '*.yaml' -o -name '*.json' -o -name '*.txt') |
        while read -r f; do mkdir -p "$WORK/site/$(dirname "$f")"; cp "$SRC/$f" "$WORK/site/$f"; done
done
cp "$SO" "$WORK/site/bulletd/"

# ---------------------------------------------------------------- 4. kernel
phase_start "kernel"
arm_py - <<'EOF'
import platform, time
import numpy as np
from bulletd import _native
path = _native.kernel_path() if hasattr(_native, "kernel_path") else "(kernel_path() not built yet)"
print("arm64-e2e:     machine", platform.machine(), "numpy", np.__version__, "kernel path", path)
if hasattr(_native, "kernel_path") and not path.startswith("neon"):
    raise SystemExit(f"arm64-e2e: expected a NEON kernel path on aarch64, got {path!r}")
rng = np.random.default_rng(0)
rows, cols = 768, 256
w = rng.standard_normal((rows, cols)).astype(np.float32)
try:
    from bulletd.format import quantize_bq4, dequantize_bq4
    blocks = quantize_bq4(w)
    ref = dequantize_bq4(blocks, cols)
except ImportError:   # format package not there yet: hand-made blocks (scale 1/64, q from the bytes)
    blocks = rng.integers(0, 256, size=(rows, cols // 32 * 20), dtype=np.uint8)
    b = blocks.reshape(rows, -1, 20)
    b[:, :, 0:2] = np.frombuffer(np.float16(1 / 64).tobytes(), np.uint8)
    b[:, :, 2:4] = 0
    ref = _native.bq4_dequantize(blocks, rows, cols)
x = rng.standard_normal(cols).astype(np.float32)
y = _native.bq4_matvec_f32(blocks, rows, cols, x)
err = float(np.max(np.abs(y - ref @ x)))
if err > 1e-3 * max(1.0, float(np.max(np.abs(ref @ x)))):
    raise SystemExit(f"arm64-e2e: bq4_matvec_f32 differs from the NumPy reference by {err}")
n = 200
t = time.perf_counter()
for _ in range(n):
    _native.bq4_matvec_f32(blocks, rows, cols, x)
dt = (time.perf_counter() - t) / n
t = time.perf_counter()
for _ in range(n):
    ref @ x
dn = (time.perf_counter() - t) / n
print(f"arm64-e2e:     bq4_matvec_f32 {rows}x{cols}: {dt*1e3:.3f} ms native vs {dn*1e3:.3f} ms numpy f32 "
      f"(under qemu emulation, not Pi speed); max err {err:.2e}")
EOF
phase_end kernel
if [ "$KERNEL_ONLY" = 1 ]; then
    say "OK (kernel only) in $((SECONDS - T_ALL)) s"
    exit 0
fi

# ---------------------------------------------------------------- 5. daemon + CLI
phase_start "daemon"
die "the daemon phase needs bulletd.daemon (not in this checkout yet)"
