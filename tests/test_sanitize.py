"""The native module under AddressSanitizer + UndefinedBehaviorSanitizer: the same sources built
with -DBULLET_SANITIZE=ON into a temp dir, then the kernel, model, runtime and grammar tests and
the fuzz corpus replay (hostile .bullet files among them) run in a Python that loads that build.
Every sanitizer report is fatal there, so the run must pass with 0 reports.

About 2 minutes to build and 2-4 to run on a 2-core machine. Run:
    pytest tests/test_sanitize.py -q
"""
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.system() != "Linux", reason="the sanitizer runtimes are set up for Linux/gcc"),
]

ROOT = Path(__file__).resolve().parent.parent
SUITES = ["tests/test_kernels.py", "tests/test_kernels_avx512.py", "tests/test_native_model.py",
          "tests/test_sampling_native.py", "tests/test_decode_batch.py", "tests/test_runtime.py",
          "tests/test_grammar.py", "tests/test_fuzz.py", "tests/test_threads.py"]
# Loads the sanitized build as bulletd._native before anything imports it, then runs pytest.
BOOT = """
import importlib.util, sys
import bulletd
spec = importlib.util.spec_from_file_location("bulletd._native", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
sys.modules["bulletd._native"] = mod
spec.loader.exec_module(mod)
bulletd._native = mod
from bulletd import kernels as K
assert K.native_available() and K._native.__file__ == sys.argv[1], K.native_error()
print("sanitized native:", mod.__file__, K.kernel_path(), flush=True)
import pytest
sys.exit(pytest.main(sys.argv[2:]))
"""


def _runtime(name: str) -> str:
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed (scripts/setup.sh installs it)")
    path = subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"{name} not found by g++ (the gcc sanitizer runtime is missing)")
    return path


@pytest.fixture(scope="module")
def sanitized_module(tmp_path_factory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed (scripts/setup.sh --test installs it)")
    pybind11 = pytest.importorskip("pybind11")
    build = tmp_path_factory.mktemp("san-build")
    conf = subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DBULLET_SANITIZE=ON",
                           "-DCMAKE_BUILD_TYPE=Debug", f"-DPython_EXECUTABLE={sys.executable}",
                           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
                          capture_output=True, text=True, timeout=300)
    assert conf.returncode == 0, conf.stdout[-2000:] + conf.stderr[-3000:]
    b = subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)],
                       capture_output=True, text=True, timeout=1200)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    found = list((build / "native").glob("_native*.so"))
    assert len(found) == 1, f"no module built in {build / 'native'}"
    return found[0]


def test_sanitized_build_is_instrumented(sanitized_module):
    """The option really instruments the code: the module calls the ASan and UBSan runtimes."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    syms = subprocess.run([nm, "-D", "--undefined-only", str(sanitized_module)], capture_output=True,
                          text=True, check=True).stdout
    assert "__asan_report_load" in syms, "no AddressSanitizer checks in the module"
    assert "__ubsan_handle_" in syms, "no UndefinedBehaviorSanitizer checks in the module"


def _san_env(logs: Path) -> dict:
    env = dict(os.environ)
    # libstdc++ preloaded too: ASan's __cxa_throw interceptor needs it at start-up (python does
    # not link it), or the first C++ exception aborts the process.
    env["LD_PRELOAD"] = f"{_runtime('libasan.so')} {_runtime('libstdc++.so')}"
    env["ASAN_OPTIONS"] = f"detect_leaks=0:abort_on_error=0:log_path={logs}"
    env["UBSAN_OPTIONS"] = f"print_stacktrace=1:halt_on_error=1:log_path={logs}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_a_sanitizer_report_is_caught(tmp_path):
    """The run below would notice a report: a use after free through an intercepted memset in
    a Python started the same way leaves a report in the log directory and a failing status."""
    bad = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
           "p = libc.malloc(64); libc.free(ctypes.c_void_p(p)); ctypes.memset(p, 0, 64)")
    r = subprocess.run([sys.executable, "-c", bad], env=_san_env(tmp_path / "san"), capture_output=True,
                       text=True, timeout=120)
    reports = list(tmp_path.glob("san*"))
    assert r.returncode != 0 and reports, (r.returncode, r.stderr[-2000:])
    assert "heap-use-after-free" in reports[0].read_text()


def test_native_tests_pass_under_asan_and_ubsan(sanitized_module, tmp_path):
    logs = tmp_path / "san"
    env = _san_env(logs)
    r = subprocess.run([sys.executable, "-c", BOOT, str(sanitized_module), "-q", "-p", "no:cacheprovider",
                        "-m", "not slow", *SUITES], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    reports = sorted(tmp_path.glob("san*"))
    text = "\n".join(p.read_text(errors="replace")[:6000] for p in reports)
    assert not reports, f"{len(reports)} sanitizer report(s):\n{text}"
    assert "sanitized native:" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert " passed" in r.stdout.splitlines()[-1], r.stdout[-2000:]
