"""`python -m bulletd.bench.against REV`: another revision's native module built from git beside
this checkout's, decoding the same models in alternating processes (no speed asserted).

Run: pytest tests/test_bench_against.py -q
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bulletd import kernels as K
from bulletd.bench import against

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}"),
    pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                       reason="needs git and this repository's history"),
]


def test_an_unknown_revision_is_a_clear_error():
    r = subprocess.run([sys.executable, "-m", "bulletd.bench.against", "no-such-rev-42"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    assert "bulletd.bench.against: error: git archive no-such-rev-42" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unknown_shape_is_refused():
    r = subprocess.run([sys.executable, "-m", "bulletd.bench.against", "HEAD", "--shapes", "huge"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown shape 'huge'" in r.stderr


def test_report_names_both_sides_and_flags_differing_tokens():
    res = {"rev": "abc123", "rounds": 3, "passes": 5, "this_module": "/x/_native.so", "rev_module": "/y/_native.so",
           "rows": [{"case": "reference/avx2", "this_tok_s": 7200.0, "rev_tok_s": 6000.0, "ratio": 1.2,
                     "ratio_min": 1.1, "ratio_max": 1.3, "same_tokens": False},
                    {"case": "small/avx2", "this_tok_s": 40000.0, "rev_tok_s": 40000.0, "ratio": 1.0,
                     "ratio_min": 0.95, "ratio_max": 1.05, "same_tokens": True}]}
    text = against.report(res)
    ref = next(line for line in text.splitlines() if "reference/avx2" in line)
    assert "7200" in ref and "6000" in ref and "1.20x (1.10-1.30)" in ref and "the tokens differ" in ref
    small = next(line for line in text.splitlines() if "small/avx2" in line)
    assert "differ" not in small


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake (scripts/setup.sh --test installs it)")
def test_head_against_itself_builds_and_decodes_the_same_tokens(tmp_path):
    res = against.compare("HEAD", ["small"], ["scalar"], rounds=1, passes=1, workdir=tmp_path / "w")
    (row,) = res["rows"]
    assert row["case"] == "small/scalar" and row["this_tok_s"] > 0 and row["rev_tok_s"] > 0
    assert row["same_tokens"]                  # HEAD's kernels are this checkout's (committed) ones
    assert res["rev_module"] != res["this_module"] and res["rev_module"].startswith(str(tmp_path / "w" / "src"))
    # the kept tree is measured again without a rebuild
    so = Path(res["rev_module"])
    built = so.stat().st_mtime_ns
    again = against.compare("HEAD", ["small"], ["scalar"], rounds=1, passes=1, workdir=tmp_path / "w")
    assert again["rev_module"] == res["rev_module"] and so.stat().st_mtime_ns == built
