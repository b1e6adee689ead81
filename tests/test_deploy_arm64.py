"""The arm64 end-to-end run (deploy/arm64-e2e.sh) as a test: an arm64 Debian root under
qemu-aarch64, the native module cross-compiled, every kernel path checked against the scalar
reference, then the arm64 daemon serving signed children to the arm64 bulletd-cli, whose
temperature-0 outputs must equal the shipped children's golden texts (child_models/golden.json).

Run: pytest tests/test_deploy_arm64.py -q -s   (about 70 s with a warm cache, ~100 s cold)

Downloads (the Debian root, arm64 wheels) are cached outside the checkout, in
$BULLET_ARM64_CACHE or ${XDG_CACHE_HOME:-~/.cache}/bullet-arm64. Needs root (debootstrap), and
debootstrap, qemu-user, g++-aarch64-linux-gnu; without them the test is skipped, except under
CI=true, where a missing tool is a failure.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from _deploy_util import DEPLOY, ROOT

TOOLS = ("debootstrap", "qemu-aarch64", "aarch64-linux-gnu-g++", "dpkg-deb", "cmake")


def _missing() -> list[str]:
    miss = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        miss.append("root (debootstrap)")
    return miss


@pytest.mark.timeout(1200)
def test_arm64_daemon_generates_with_neon_kernels(tmp_path):
    miss = _missing()
    if miss:
        msg = f"arm64 end-to-end needs {', '.join(miss)} (apt-get install debootstrap qemu-user g++-aarch64-linux-gnu cmake)"
        if os.environ.get("CI"):
            pytest.fail(msg + "; CI must install them")
        pytest.skip(msg)
    # the host's checks run on this interpreter (the one with the built module), whatever PATH holds
    r = subprocess.run(["bash", str(DEPLOY / "arm64-e2e.sh"), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, timeout=1150,
                       env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    m = re.search(r"dispatch chose (\S+) \| available \[([^\]]*)\]", out)
    assert m and m.group(1).startswith("neon"), out
    assert "'neon'" in m.group(2) and "'scalar'" in m.group(2), out
    for path in ("scalar", "neon", "neon_dot"):
        if f"'{path}'" in m.group(2):
            assert re.search(rf"{path}\s+max \|logit - scalar\| \S+ ok;", out), out
    assert "generated 32 tokens on arm64 (length)" in out, out
    golden = ROOT / "child_models" / "golden.json"
    if golden.exists():       # every shipped child's temperature-0 golden text, made on x86-64
        for name in json.loads(golden.read_text(encoding="utf-8")):
            assert f"golden {name}: identical" in out, out
    assert "loaded child small v1.0.0" in out and "INFO bulletd: stopped" in out, out
    assert re.search(r"OK: arm64 root, .* in \d+ s", out), out
