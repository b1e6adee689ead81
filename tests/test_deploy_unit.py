"""deploy/bulletd.service checked by Debian's own systemd tools (no running systemd needed).

Run: pytest tests/test_deploy_unit.py -q

`systemd-analyze verify` returns 0 on unknown keys and bad values (it only prints a warning), so
any output at all fails the test. It also insists that ExecStart's program exists, so the test
checks a copy whose ExecStart points at an executable made in a temporary folder; nothing else
in the unit changes. `systemd-analyze security --offline=yes` must rate the unit 2.0 or lower.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _deploy_util import UNIT

MAX_EXPOSURE = 2.0
SA = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(SA is None, reason="systemd-analyze is not installed (apt-get install systemd)")


def unit_keys(text: str) -> dict[str, list[str]]:
    """section.key -> values (keys may repeat, e.g. SystemCallFilter)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        out.setdefault(f"{section}.{k.strip()}", []).append(v.strip())
    return out


def unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart's program replaced by an executable that exists here."""
    text = UNIT.read_text() if text is None else text
    exe = tmp_path / "opt" / "bulletd" / "venv" / "bin" / "bulletd"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    new, n = re.subn(r"^ExecStart=/opt/bulletd/venv/bin/bulletd ", f"ExecStart={exe} ", text, flags=re.M)
    assert n == 1, "ExecStart=/opt/bulletd/venv/bin/bulletd ... not found in deploy/bulletd.service"
    unit = tmp_path / "bulletd.service"
    unit.write_text(new)
    return unit


def verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SA, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=unit.parent)


def test_unit_passes_systemd_analyze_verify_without_any_output(tmp_path):
    r = verify(unit_copy(tmp_path))
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", \
        f"rc={r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"


def test_the_documented_verify_commands_print_nothing(tmp_path):
    """docs/DEPLOY.md's way to verify the unit from a checkout, run as written (with /tmp moved
    to this test's folder); and the reason it is needed: the checkout's unit names a program
    that only an install creates."""
    from _deploy_util import ROOT
    doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    m = re.search(r"^(sed 's\|\^ExecStart=.*)\n(systemd-analyze verify .*)$", doc, flags=re.M)
    assert m, "the sed + systemd-analyze verify lines are not in docs/DEPLOY.md"
    for cmd in m.groups():
        r = subprocess.run(cmd.replace("/tmp/", f"{tmp_path}/"), shell=True, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (cmd, r.returncode, r.stdout, r.stderr)
    assert (tmp_path / "bulletd.service").is_file()
    r = verify(UNIT)
    if not Path("/opt/bulletd/venv/bin/bulletd").exists():
        assert r.returncode == 1 and "/opt/bulletd/venv/bin/bulletd is not executable" in r.stderr, r.stderr


def test_verify_check_catches_a_misspelt_key(tmp_path):
    # The rule above (any output fails) is what catches this: verify itself still exits 0.
    bad = UNIT.read_text().replace("WatchdogSec=30s", "WatchdogSecs=30s")
    r = verify(unit_copy(tmp_path, bad))
    assert "Unknown key 'WatchdogSecs'" in r.stderr, r.stderr


def test_security_exposure_is_at_most_2(tmp_path):
    r = subprocess.run([SA, "security", "--offline=yes", "--no-pager", str(unit_copy(tmp_path))],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    m = re.search(r"Overall exposure level for bulletd\.service: (\d+\.\d+)", r.stdout)
    assert m, f"no score in the output (rc={r.returncode}):\n{r.stdout}\n{r.stderr}"
    score = float(m.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{r.stdout}"


def test_unit_has_the_service_contract():
    k = unit_keys(UNIT.read_text())
    want = {
        "Service.Type": ["notify"], "Service.NotifyAccess": ["main"], "Service.Restart": ["on-failure"],
        "Service.User": ["bulletd"], "Service.Group": ["bulletd"],
        "Service.StateDirectory": ["bulletd"], "Service.RuntimeDirectory": ["bulletd"],
        "Service.ConfigurationDirectory": ["bulletd"], "Service.ProtectSystem": ["strict"],
        "Service.PrivateTmp": ["yes"], "Service.NoNewPrivileges": ["yes"],
        "Service.RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "Service.ExecStart": ["/opt/bulletd/venv/bin/bulletd --config /etc/bulletd/bulletd.yaml"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in want.items():
        assert k.get(key) == value, f"{key}: expected {value}, found {k.get(key)}"
    assert "Service.WatchdogSec" in k and "Service.MemoryMax" in k
    assert k["Service.SystemCallFilter"][0] == "@system-service"
