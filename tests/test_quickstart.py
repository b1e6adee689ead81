"""The README's first command after its set-up step: scripts/demo.sh starts bulletd on the shipped
child_models/ with examples/home.yaml and answers four requests through the mother, in order: a
Marathi light command (home, a dry run), an English sum (calc), a Marathi prompt (marathi) and a
fortune (fortunes)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)


def test_the_quickstart_answers_four_requests_through_the_mother():
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("BULLETD_SOCKET", None)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), "--once"], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=170)
    assert r.returncode == 0, r.stdout
    out = r.stdout
    # ask prints "child NAME (mother, p)"; generate prints "[NAME via mother, ...]" (on stderr)
    names = [a or b for a, b in re.findall(r"^(?:child\s+(\w+) \(mother|\[(\w+) via mother)", out, re.M)]
    assert names == ["home", "calc", "marathi", "fortunes"], (names, out)
    assert re.search(r"^actions\s+light\.turn_off light\.bedroom$", out, re.M), out
    assert "nothing published" in out
    assert re.search(r"^result\s+391$", out, re.M), out
