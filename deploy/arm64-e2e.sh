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
# The host's own bulletd: an installed one (its native module with it) when there is one; the
# checkout on PYTHONPATH otherwise. Putting the checkout first would hide an editable install's
# native module, which lives in site-packages, not in the source tree.
if "$HOST_PY" -c 'import bulletd._native' >/dev/null 2>&1; then HOST_PYPATH="${PYTHONPATH:-}"; else HOST_PYPATH="$SRC"; fi

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
    rm -f "$stage"/var/cache/apt/archives/*.deb     # unpacked; 50 MB the cache need not keep
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
# Run from WORK so that "-" and "-m" never pick up the checkout (sys.path[0] is the cwd).
arm_py() { (cd "$WORK" && PYTHONPATH="$WORK/site" PYTHONDONTWRITEBYTECODE=1 exec qemu-aarch64 -L "$ROOT" "$PYBIN" "$@"); }
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
arm_py - <<'PYEOF'
# Every kernel path this CPU offers (scalar, neon, neon_dot) runs the same random SMALL model;
# their logits must agree with the scalar reference, and each one's decode speed is printed.
import platform
import numpy as np
from bulletd import kernels as K
from bulletd.bench.kernels import bench_forward
print("arm64-e2e:     machine", platform.machine(), "numpy", np.__version__,
      "| dispatch chose", K.kernel_path(), "| available", K.available_kernels())
if not K.kernel_path().startswith("neon"):
    raise SystemExit(f"arm64-e2e: expected a NEON kernel path on aarch64, got {K.kernel_path()!r}")
cfg = dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=384, vocab_size=1024,
           max_seq_len=256, tied_embeddings=True)          # the SMALL shape (bulletd.format.synth)
tensors = K.random_bq4_tensors(cfg, seed=0)
ids = [1, 77, 512, 9, 300, 41]
logits = {}
for path in K.available_kernels():
    s = K.NativeModel(cfg, tensors, path).new_session()
    logits[path] = np.stack([s.forward(t, p) for p, t in enumerate(ids)])
ref = logits["scalar"]
for path, got in logits.items():
    err = float(np.max(np.abs(got - ref)))
    ok = err <= 1e-3 * max(1.0, float(np.max(np.abs(ref))))
    r = bench_forward(cfg, tensors, path, n_decode=32, prompt_len=32, repeats=1)
    print(f"arm64-e2e:     {path:8s} max |logit - scalar| {err:.2e} {'ok' if ok else 'MISMATCH'}; "
          f"decode {r['decode_tok_s']:.0f} tok/s, prefill 32 tokens {r['prefill_ms']:.0f} ms (under qemu)")
    if not ok:
        raise SystemExit(f"arm64-e2e: kernel path {path} disagrees with the scalar reference by {err}")
PYEOF
phase_end kernel
if [ "$KERNEL_ONLY" = 1 ]; then
    say "OK (kernel only) in $((SECONDS - T_ALL)) s"
    exit 0
fi

# ---------------------------------------------------------------- 5. daemon + CLI
phase_start "daemon"
# A signed child made on the host (format and signing are plain Python): SMALL-like shape, so the
# NEON mat-vecs do real work; the key is made here and lives only in WORK.
mkdir -p "$WORK/models" "$WORK/trust"
PYTHONPATH="$HOST_PYPATH" "$HOST_PY" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
from bulletd.format.synth import write_random_lm
from bulletd.signing import generate_keypair, sign_file
work = Path(sys.argv[1])
priv, pub = generate_keypair("arm64-e2e", work / "keys")
(work / "trust" / pub.name).write_bytes(pub.read_bytes())
arch = dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=4, hidden_dim=384, vocab_size=512, max_seq_len=256)
child = write_random_lm(work / "models" / "small.bullet", arch, seed=7, name="small", version="1.0.0")
sign_file(child, priv, name="small", version="1.0.0")
PYEOF
# The shipped children, mother and release key too: their golden outputs are checked below.
shopt -s nullglob
for f in "$SRC"/child_models/*.bullet; do cp "$f" "$f.sig" "$WORK/models/"; done
for f in "$SRC"/child_models/*.pem; do cp "$f" "$WORK/trust/"; done
shopt -u nullglob
cat >"$WORK/bulletd.yaml" <<YAMLEOF
device_id: arm64-e2e
model_dir: $WORK/models
log_level: info
socket:
  path: $WORK/bulletd.sock
trust:
  keys: [$WORK/trust]
scheduler:
  workers: 1
YAMLEOF
SOCK="$WORK/bulletd.sock"
t0=$SECONDS
# Started without the arm_py function so that $! is qemu itself (a function run with & would
# be a subshell that dies of SIGTERM while qemu goes on); qemu passes signals to the guest.
(cd "$WORK" && PYTHONPATH="$WORK/site" PYTHONDONTWRITEBYTECODE=1 exec qemu-aarch64 -L "$ROOT" "$PYBIN" \
    -m bulletd.daemon.main --config "$WORK/bulletd.yaml" >"$WORK/daemon.log" 2>&1) &
DAEMON_PID=$!
while [ ! -S "$SOCK" ]; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then cat "$WORK/daemon.log"; die "the arm64 daemon exited during start-up"; fi
    [ $((SECONDS - t0)) -lt 180 ] || { cat "$WORK/daemon.log"; die "no control socket after 180 s"; }
    sleep 0.5
done
say "    arm64 daemon up in $((SECONDS - t0)) s: $(grep -m1 'ready' "$WORK/daemon.log" | sed 's/.*INFO //')"
arm_py -m bulletd.cli --socket "$SOCK" list
arm_py -m bulletd.cli --socket "$SOCK" --json generate "Once upon a time" --child small \
    --max-tokens 32 --temperature 0 --no-stream >"$WORK/reply.json" \
    || { cat "$WORK/reply.json" "$WORK/daemon.log"; die "bulletd-cli generate failed"; }
# Each shipped child's temperature-0 golden output (child_models/golden.json, made on x86-64),
# generated by the arm64 bulletd-cli through the arm64 daemon: the text must be the same.
if [ -f "$SRC/child_models/golden.json" ]; then
    "$HOST_PY" - "$SRC/child_models/golden.json" "$WORK" "$ROOT" "$PYBIN" "$SOCK" <<'PYEOF'
import json, os, subprocess, sys
golden_path, work, root, pybin, sock = sys.argv[1:6]
env = dict(os.environ, PYTHONPATH=os.path.join(work, "site"), PYTHONDONTWRITEBYTECODE="1")
bad = []
for name, g in json.load(open(golden_path, encoding="utf-8")).items():
    cmd = ["qemu-aarch64", "-L", root, pybin, "-m", "bulletd.cli", "--socket", sock, "--json", "generate",
           g["prompt"], "--child", name, "--max-tokens", str(g["max_tokens"]), "--temperature", str(g["temperature"]),
           "--repetition-penalty", str(g.get("repetition_penalty", 1.0)), "--no-stream"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"arm64-e2e: generate for {name} failed ({p.returncode}): {p.stdout}{p.stderr}")
    r = json.loads(p.stdout)
    same = r["text"] == g["text"] and r["finish_reason"] == g["finish_reason"]
    print(f"arm64-e2e:     golden {name}: {'identical' if same else 'DIFFERENT'} "
          f"({r['tokens']} tokens, {r['finish_reason']}, {r['timing']['tokens_per_s']:.0f} tok/s under qemu): {r['text']!r}")
    if not same:
        bad.append(f"{name}: expected {g['text']!r} ({g['finish_reason']}), got {r['text']!r} ({r['finish_reason']})")
if bad:
    raise SystemExit("arm64-e2e: golden outputs differ on arm64:\n  " + "\n  ".join(bad))
PYEOF
fi
kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=""
[ "$rc" = 0 ] || { cat "$WORK/daemon.log"; die "the arm64 daemon exited with $rc after SIGTERM"; }
# The reply, and the same greedy generation by the host's NumPy reference forward.
PYTHONPATH="$HOST_PYPATH" "$HOST_PY" - "$WORK" <<'PYEOF'
import json, sys
from pathlib import Path
from bulletd.runtime import GenerationSettings, load_model
from bulletd.kernels import kernel_path
work = Path(sys.argv[1])
r = json.loads((work / "reply.json").read_text())
if not (r.get("ok") and r.get("tokens") == 32 and r.get("child") == "small"):
    raise SystemExit(f"arm64-e2e: unexpected reply {r}")
t = r["timing"]
print(f"arm64-e2e:     generated {r['tokens']} tokens on arm64 ({r['finish_reason']}): "
      f"first token {t['first_ms']:.0f} ms, {t['tokens_per_s']:.1f} tok/s under qemu (not Pi speed)")
print(f"arm64-e2e:     text {r['text']!r}")
# Informational: a random model's logits are nearly flat, so greedy choices can flip on float
# rounding differences between kernel paths (see the parity figures of the kernel phase).
for backend in ("native", "numpy"):
    m = load_model(work / "models" / "small.bullet", backend=backend)
    ref = "".join(m.generate("Once upon a time", GenerationSettings(max_tokens=32, temperature=0.0)))
    n = next((i for i, (a, b) in enumerate(zip(ref, r["text"])) if a != b), min(len(ref), len(r["text"])))
    same = "identical" if ref == r["text"] else f"first {n} characters identical"
    label = f"native {kernel_path()}" if backend == "native" else "NumPy reference"
    print(f"arm64-e2e:     vs the host's {label} backend: {same}")
PYEOF
grep -E "loaded child|stopped" "$WORK/daemon.log" | sed 's/^/arm64-e2e:     daemon: /'
phase_end daemon
say "OK: arm64 root, wheels, cross-compiled native module, NEON kernels, daemon and CLI in $((SECONDS - T_ALL)) s"
