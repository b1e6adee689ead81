"""One build of bulletd._native runs on any x86-64: the installed module itself (built with the
AVX2 file alone compiled with -mavx2 -mfma -mf16c, and LTO) is imported by this same Python under
qemu-x86_64 as a CPU without AVX2 (Nehalem, or Sandy Bridge when NumPy itself needs AVX: must
pick the scalar path and compute the same logits as
the scalar path here) and as Haswell (must pick avx2 and match this machine's AVX2 logits).

Skips with the reason when qemu-x86_64 is missing (.ci/run installs qemu-user) or the host is not
x86-64. Run: pytest tests/test_native_portability.py -q
"""
import json
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bulletd import kernels as K

pytestmark = [
    pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}"),
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host only"),
]

CFG = dict(K.SMALL, tied_embeddings=True, max_seq_len=16)
SCRIPT = """
import json, sys
from bulletd import kernels as K
cfg = json.loads(sys.argv[1])
s = K.NativeModel(cfg, K.random_bq4_tensors(cfg, seed=3)).new_session()
a = s.prefill(list(range(8)), 0)
b = s.forward(5, 8)
print(json.dumps({"path": K.kernel_path(), "features": K.cpu_features(),
                  "prefill": a.tolist(), "forward": b.tolist()}))
"""


def _run_under(cpu: str) -> dict:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user)")
    r = subprocess.run([qemu, "-cpu", cpu, sys.executable, "-c", SCRIPT, json.dumps(CFG)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"python under qemu -cpu {cpu} failed ({r.returncode}):\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def _here(path: str):
    s = K.NativeModel(CFG, K.random_bq4_tensors(CFG, seed=3), path).new_session()
    return s.prefill(list(range(8)), 0), s.forward(5, 8)


def _oldest_cpu_numpy_runs_on(qemu: str) -> str:
    """Nehalem (no AVX at all) when this NumPy runs there; NumPy 2.4's wheels need AVX, and then
    Sandy Bridge (AVX, but no AVX2, FMA or F16C) is the oldest CPU the Python side can start on."""
    for cpu in ("Nehalem", "SandyBridge"):
        r = subprocess.run([qemu, "-cpu", cpu, sys.executable, "-c", "import numpy"], capture_output=True,
                           timeout=300)
        if r.returncode == 0:
            return cpu
    pytest.fail(f"NumPy {np.__version__} does not start under qemu -cpu Nehalem or SandyBridge")


def test_installed_module_runs_on_a_cpu_without_avx2():
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user)")
    got = _run_under(_oldest_cpu_numpy_runs_on(qemu))
    assert got["features"]["avx2"] is False and got["features"]["fma"] is False
    assert got["path"] == "scalar"
    a, b = _here("scalar")
    np.testing.assert_allclose(got["prefill"], a, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["forward"], b, rtol=0, atol=1e-5)


@pytest.mark.skipif("avx2" not in K.available_kernels(), reason="this CPU has no AVX2 to compare with")
def test_installed_module_picks_avx2_on_haswell():
    got = _run_under("Haswell")
    assert got["path"] == "avx2"
    a, b = _here("avx2")
    np.testing.assert_allclose(got["prefill"], a, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["forward"], b, rtol=0, atol=1e-5)
