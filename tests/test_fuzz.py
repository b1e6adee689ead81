"""The fuzz targets (bulletd.fuzz): the stored, minimised corpus in tests/fuzz_corpus/TARGET and
each target's generated seeds replay with no failure (tests/test_sanitize.py replays them under
ASan + UBSan too); the driver catches a failing input; a short `--all --quick` pass of the
shipped command runs clean. Longer campaigns: python -m bulletd.fuzz TARGET --runs 1000000.
"""
import subprocess
import sys
from pathlib import Path

import pytest

from bulletd.fuzz import TARGETS, Target
from bulletd.fuzz import driver

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_stored_corpus_replays_clean(name):
    d = CORPUS / name
    assert d.is_dir() and any(d.iterdir()), f"no stored corpus in {d}"
    failures = driver.replay(name, [d], timeout=30)
    assert failures == [], "\n".join(failures)


class _Boom(Target):
    name = "boom"

    def run(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise KeyError("a bug")

    def seeds(self) -> list[bytes]:
        return [b"fine"]


def test_replay_and_the_builtin_engine_report_a_failing_input(tmp_path, monkeypatch):
    monkeypatch.setitem(TARGETS, "boom", _Boom)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a").write_bytes(b"ok")
    (tmp_path / "in" / "b").write_bytes(b"boom!")
    failures = driver.replay("boom", [tmp_path / "in"])
    assert len(failures) == 1 and "KeyError" in failures[0] and str(tmp_path / "in" / "b") in failures[0]
    rc = driver._child_builtin("boom", 100, 0, [tmp_path / "in"], tmp_path / "art", timeout=5)
    assert rc == 1
    (crash,) = (tmp_path / "art").iterdir()
    assert crash.name.startswith("crash-") and crash.read_bytes() == b"boom!"


def test_seeds_are_valid_inputs_of_their_target(tmp_path):
    """The generated seeds get past each target's first gate (a fuzzer starting from inputs that
    are all refused at once would explore little)."""
    from bulletd.format import BulletFile
    out = tmp_path / "bullet"
    assert driver.write_seeds("bullet", out) == 3
    for p in out.iterdir():
        with BulletFile.open(p) as bf:
            assert bf.kind in ("lm", "router")


@pytest.mark.slow
def test_quick_fuzz_pass_of_every_target_is_clean(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bulletd.fuzz", "--all", "--quick", "--seconds", "4",
                        "--artifacts", str(tmp_path / "art")], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("fuzz ") and " runs in " in ln]
    assert sorted(ln.split()[1] for ln in lines) == sorted(TARGETS), r.stdout
    for ln in lines:
        runs = int(ln.split()[3].replace(",", ""))
        assert runs > 10 and ln.endswith("0 crashes, 0 hangs"), ln
