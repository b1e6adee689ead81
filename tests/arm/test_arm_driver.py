"""The C++ kernel test driver (tests/arm/driver.cpp), built and run without Python in the loop:

- cross-compiled with aarch64-linux-gnu-g++ -static and run under qemu-aarch64 as a Cortex-A72
  (Raspberry Pi 4: no dot-product instructions, must pick "neon") and a Cortex-A76 (Pi 5: has
  them, must pick "neon_dot"); every path the emulated CPU runs is checked against the scalar
  reference compiled into the same binary, kernels and a whole random model;
- on a72, calling an sdot kernel directly dies of SIGILL, which is why the dispatch asks first;
- built natively on x86-64 with the AVX2 file alone compiled with -mavx2 -mfma -mf16c and the
  AVX-512 VNNI file alone with -mavx512f -mavx512bw -mavx512vl -mavx512vnni, and the same static
  binary run under qemu-x86_64 as a Nehalem (no AVX: scalar path) and a Haswell (AVX2, no AVX-512:
  avx2 path; forcing avx512vnni there dies of SIGILL), so one build is shown to run on any x86-64;
  natively, on a CPU with AVX-512 VNNI, the driver picks and checks avx512vnni.

Skips (with the reason) only when the cross compiler or qemu-aarch64 is missing; .ci/run installs
g++-aarch64-linux-gnu and qemu-user. Run: pytest tests/arm -q
"""
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATIVE = ROOT / "native"
DRIVER = Path(__file__).resolve().parent / "driver.cpp"
COMMON = ["kernels_ref.cpp", "bq4_ref.cpp", "dispatch.cpp", "model.cpp"]
FLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-math-errno", f"-I{NATIVE}"]


def _run(cmd, timeout=300, env=None):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    print("$", " ".join(map(str, cmd)), "\n", r.stdout[-4000:], r.stderr[-4000:])
    return r


def _build(cxx, out: Path, arch_sources: list[tuple[str, list[str]]], extra=()):
    """Compile each arch file with its own flags (as native/CMakeLists.txt does), then link."""
    objs = []
    for src, flags in arch_sources:
        obj = out.parent / (Path(src).stem + ".o")
        r = _run([cxx, *FLAGS, *flags, "-c", NATIVE / src, "-o", obj])
        assert r.returncode == 0, f"compiling {src} failed:\n{r.stderr}"
        objs.append(obj)
    r = _run([cxx, *FLAGS, *extra, DRIVER, *[NATIVE / s for s in COMMON], *objs, "-o", out])
    assert r.returncode == 0, f"linking the driver failed:\n{r.stderr}"
    return out


@pytest.fixture(scope="module")
def arm_driver(tmp_path_factory):
    cxx = shutil.which("aarch64-linux-gnu-g++")
    if cxx is None:
        pytest.skip("aarch64-linux-gnu-g++ not installed (apt-get install g++-aarch64-linux-gnu)")
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("qemu-aarch64 not installed (apt-get install qemu-user)")
    out = tmp_path_factory.mktemp("arm") / "driver"
    return _build(cxx, out, [("kernels_neon.cpp", []), ("kernels_neon_dot.cpp", ["-march=armv8.2-a+dotprod"])],
                  extra=["-static"])


@pytest.mark.parametrize("cpu,path,others", [
    ("cortex-a72", "neon", ["scalar"]),
    ("cortex-a76", "neon_dot", ["scalar", "neon"]),
])
def test_arm_driver_picks_the_right_path_and_passes(arm_driver, cpu, path, others):
    r = _run(["qemu-aarch64", "-cpu", cpu, arm_driver, "--expect-path", path])
    assert f"kernel path: {path}\n" in r.stdout, f"{cpu}: dispatch did not report {path}"
    assert r.returncode == 0, f"{cpu}: driver failed:\n{r.stdout[-3000:]}"
    for p in [path, *others]:
        assert f"path {p}: " in r.stdout and f"path {p}: 0 checks" not in r.stdout, f"{cpu}: path {p} not checked"
        assert f"path {p}: " in r.stdout and ", 0 failed" in r.stdout.split(f"path {p}: ")[1].splitlines()[0]
    if cpu == "cortex-a72":
        assert "dotprod=0" in r.stdout and "path neon_dot" not in r.stdout
    else:
        assert "dotprod=1" in r.stdout
    assert "PASSED" in r.stdout


def test_arm_driver_fails_when_the_path_is_not_the_expected_one(arm_driver):
    r = _run(["qemu-aarch64", "-cpu", "cortex-a72", arm_driver, "--expect-path", "neon_dot"])
    assert r.returncode == 1
    assert "FAIL dispatch chose neon, expected neon_dot" in r.stdout


def test_sdot_faults_on_cortex_a72_and_runs_on_a76(arm_driver):
    r = _run(["qemu-aarch64", "-cpu", "cortex-a72", arm_driver, "--force", "neon_dot"])
    assert r.returncode in (-signal.SIGILL, 128 + signal.SIGILL), f"expected SIGILL, got {r.returncode}"
    r = _run(["qemu-aarch64", "-cpu", "cortex-a76", arm_driver, "--force", "neon_dot"])
    assert r.returncode == 0 and "ran neon_dot" in r.stdout


def test_arm_scalar_forced_by_environment(arm_driver):
    env = dict(os.environ, BULLET_KERNEL="scalar")
    r = _run(["qemu-aarch64", "-cpu", "cortex-a76", arm_driver, "--expect-path", "scalar"], env=env)
    assert r.returncode == 0 and "kernel path: scalar\n" in r.stdout


@pytest.fixture(scope="module")
def x86_driver(tmp_path_factory):
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 host only")
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no native C++ compiler")
    out = tmp_path_factory.mktemp("x86") / "driver"
    return _build(cxx, out, [("kernels_avx2.cpp", ["-mavx2", "-mfma", "-mf16c"]),
                             ("kernels_avx512.cpp", ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw",
                                                     "-mavx512vl", "-mavx512vnni"])],
                  extra=["-DBULLET_HAVE_AVX2=1", "-DBULLET_HAVE_AVX512VNNI=1", "-static"])


def test_x86_native_driver(x86_driver):
    exe = x86_driver
    r = _run([exe])
    assert r.returncode == 0, r.stdout[-3000:]
    has_avx2 = "avx2=1 fma=1 f16c=1" in r.stdout
    has_vnni = has_avx2 and "avx512f=1 avx512bw=1 avx512vl=1 avx512vnni=1" in r.stdout
    want = "avx512vnni" if has_vnni else "avx2" if has_avx2 else "scalar"
    assert f"kernel path: {want}\n" in r.stdout
    if has_avx2:
        assert "path avx2: " in r.stdout and "PASSED" in r.stdout
    if has_vnni:
        line = r.stdout.split("path avx512vnni: ")[1].splitlines()[0]
        assert line.endswith(", 0 failed") and not line.startswith("0 checks"), line
    r = _run([exe, "--expect-path", "avx2"], env=dict(os.environ, BULLET_KERNEL="avx2"))
    if has_avx2:
        assert r.returncode == 0 and "kernel path: avx2\n" in r.stdout
    r = _run([exe, "--expect-path", "scalar"], env=dict(os.environ, BULLET_KERNEL="scalar"))
    assert r.returncode == 0 and "kernel path: scalar\n" in r.stdout


@pytest.mark.parametrize("cpu,path", [("Nehalem", "scalar"), ("Haswell", "avx2")])
def test_one_x86_build_runs_on_cpus_with_and_without_avx2(x86_driver, cpu, path):
    """The same binary under qemu-x86_64: a pre-AVX CPU gets the scalar path, Haswell gets AVX2."""
    if shutil.which("qemu-x86_64") is None:
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user)")
    r = first = _run(["qemu-x86_64", "-cpu", cpu, x86_driver, "--expect-path", path])
    assert f"kernel path: {path}\n" in r.stdout
    assert r.returncode == 0 and "PASSED" in r.stdout, r.stdout[-3000:]
    if cpu == "Nehalem":
        assert "path avx2" not in r.stdout
        # the AVX2 table itself would not run there: the dispatch is what keeps the build portable
        r = _run(["qemu-x86_64", "-cpu", cpu, x86_driver, "--force", "avx2"])
        assert r.returncode in (-signal.SIGILL, 128 + signal.SIGILL), f"expected SIGILL, got {r.returncode}"
    # qemu emulates no AVX-512: the VNNI table must not be chosen, and would not run
    assert "avx512vnni=0" in first.stdout and "path avx512vnni" not in first.stdout
    r = _run(["qemu-x86_64", "-cpu", cpu, x86_driver, "--force", "avx512vnni"])
    assert r.returncode in (-signal.SIGILL, 128 + signal.SIGILL), f"expected SIGILL, got {r.returncode}"


@pytest.mark.parametrize("name,tag", [("kernels_avx2", "avx2"), ("kernels_avx512", "avx512vnni")])
def test_simd_objects_export_no_shared_inline_code(x86_driver, name, tag):
    """With per-file -m flags, an inline function emitted as a weak symbol in a SIMD object could
    be picked by the linker for the whole module and run AVX2 (or AVX-512) code on any CPU. There
    must be none."""
    nm = shutil.which("nm")
    obj = x86_driver.parent / f"{name}.o"
    if nm is None or not obj.exists():
        pytest.skip("nm or the object file is missing")
    r = _run([nm, "-C", obj])
    assert r.returncode == 0 and tag in r.stdout
    weak = [ln for ln in r.stdout.splitlines() if ln[17:19].strip() in ("W", "V", "u")]
    assert weak == [], f"weak (shared) symbols in {name}.o: {weak}"


def test_dotprod_object_exports_no_shared_inline_code(arm_driver):
    nm = shutil.which("aarch64-linux-gnu-nm")
    obj = arm_driver.parent / "kernels_neon_dot.o"
    if nm is None:
        pytest.skip("aarch64-linux-gnu-nm missing (binutils-aarch64-linux-gnu)")
    r = _run([nm, "-C", obj])
    assert r.returncode == 0 and "neon_dot" in r.stdout
    weak = [ln for ln in r.stdout.splitlines() if ln[17:19].strip() in ("W", "V", "u")]
    assert weak == [], f"weak (shared) symbols in kernels_neon_dot.o: {weak}"
