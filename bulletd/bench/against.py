"""Decode speed of this checkout's native kernels beside another git revision's, in the same run:

    python -m bulletd.bench.against REV [--shapes reference,small] [--paths avx2,avx512vnni] [--rounds 3]

REV's tree is taken with `git archive` into a temporary directory (or --workdir, kept for later
runs) and its native module built there with CMake (the compiler flags of its own
native/CMakeLists.txt). Then both modules decode
random BQ4 models of the REFERENCE and SMALL shapes (bulletd.format.synth, the same seed) in
processes that alternate, round after round (and which goes first alternates too), so that
load from other processes falls on both alike: the native decode loop with sampling (the daemon's settings) over the whole context, one
thread, tokens per second of the thread's CPU time, the best pass of each round, and the median
over rounds. Both must compute the same tokens (printed when they do not: a kernel change that
moves the logits shows here). The checkout's module is the one this Python imports.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import site
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

# Runs in each process; only API that older revisions have too.
MEASURE = r"""
import json, sys, time
import numpy as np
from bulletd import kernels as K
from bulletd.format.synth import REFERENCE, SMALL
spec = json.loads(sys.argv[1])
out = {"module": K.native_module().__file__, "rates": {}, "tokens": {}}
for shape in spec["shapes"]:
    cfg = dict({"reference": REFERENCE, "small": SMALL}[shape], tied_embeddings=True)
    tensors = K.random_bq4_tensors(cfg, seed=0)
    ctx = cfg["max_seq_len"]
    for path in spec["paths"]:
        if path not in K.available_kernels():
            continue
        s = K.NativeModel(cfg, tensors, path).new_session()
        def loop():
            coins = np.random.default_rng(0).random(64)
            seen = np.array([1], np.int64)
            stop = np.zeros(0, np.int64)
            logits = np.array(s.prefill([1], 0), np.float32)
            c0 = time.thread_time()
            pos, pending, toks = 1, -1, []
            while pos < ctx:
                k = min(64, ctx - pos + (pending < 0))
                got, _, pos = s.decode(logits, pending, pos, k, coins, seen, 0.8, 40, 0.95, 1.1, stop)
                pending = got[-1]
                toks += list(got)
            return len(toks) / (time.thread_time() - c0), toks
        loop()
        best, toks = 0.0, []
        for _ in range(spec["passes"]):
            r, toks = loop()
            best = max(best, r)
        out["rates"][f"{shape}/{path}"] = best
        out["tokens"][f"{shape}/{path}"] = [int(t) for t in toks]
print(json.dumps(out))
"""


def _repo() -> Path:
    return Path(__file__).resolve().parents[2]


def build_revision(rev: str, workdir: Path) -> Path:
    """REV's tree with its native module built in place; returns the tree's root."""
    repo = _repo()
    r = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"git archive {rev}: no such revision in {repo}")
    src = workdir / "src"
    src.mkdir()
    git = subprocess.Popen(["git", "-C", str(repo), "archive", r.stdout.strip()], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    with tarfile.open(fileobj=git.stdout, mode="r|") as tar:
        tar.extractall(src, filter="data")
    if git.wait() != 0:
        raise RuntimeError(f"git archive {rev}: {git.stderr.read().decode().strip()}")
    import pybind11
    build = workdir / "build"
    for cmd in (["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                 f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)]):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed for {rev}:\n{(r.stdout + r.stderr)[-2000:]}")
    mods = sorted(build.rglob("_native*.so"))
    if not mods:
        raise RuntimeError(f"no _native module was built for {rev}")
    shutil.copy(mods[0], src / "bulletd" / mods[0].name)
    return src


def _run(spec: dict, tree: Path | None, cwd: Path) -> dict:
    """One measuring process: this checkout's module (tree None) or the tree's, imported first
    (-S: no site hooks such as an editable install's; the site-packages for NumPy come after)."""
    env = dict(os.environ)
    cmd = [sys.executable]
    if tree is not None:
        cmd.append("-S")
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *site.getsitepackages()])
    r = subprocess.run(cmd + ["-c", MEASURE, json.dumps(spec)], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"measuring {'this checkout' if tree is None else tree}: {r.stderr.strip()[-1500:]}")
    return json.loads(r.stdout)


def compare(rev: str, shapes: list[str], paths: list[str], rounds: int, passes: int = 5,
            workdir: Path | None = None) -> dict:
    """workdir: where REV's tree is built and kept (a second call with the same one skips the
    build); by default a temporary directory, removed afterwards."""
    spec = {"shapes": shapes, "paths": paths, "passes": passes}
    with tempfile.TemporaryDirectory(prefix="bullet-against-") as d:
        work = Path(workdir) if workdir is not None else Path(d)
        work.mkdir(parents=True, exist_ok=True)
        built = sorted((work / "src" / "bulletd").glob("_native*.so"))
        tree = work / "src" if built else build_revision(rev, work)
        this, other = [], []
        for i in range(rounds):  # which side goes first alternates too
            if i % 2 == 0:
                this.append(_run(spec, None, Path(d)))
                other.append(_run(spec, tree, Path(d)))
            else:
                other.append(_run(spec, tree, Path(d)))
                this.append(_run(spec, None, Path(d)))
    res = {"rev": rev, "rounds": rounds, "passes": passes, "this_module": this[0]["module"],
           "rev_module": other[0]["module"], "rows": []}
    for key in this[0]["rates"]:
        if key not in other[0]["rates"]:
            continue
        a = statistics.median(r["rates"][key] for r in this)
        b = statistics.median(r["rates"][key] for r in other)
        ratios = [t["rates"][key] / o["rates"][key] for t, o in zip(this, other)]
        res["rows"].append({"case": key, "this_tok_s": a, "rev_tok_s": b, "ratio": a / b,
                            "ratio_min": min(ratios), "ratio_max": max(ratios),
                            "same_tokens": this[0]["tokens"][key] == other[0]["tokens"][key]})
    return res


def report(res: dict) -> str:
    lines = [f"decode loop (sampling on, whole context, one thread), tok/s per CPU second, median of "
             f"{res['rounds']} alternating rounds (best of {res['passes']} passes each)",
             f"  this checkout: {res['this_module']}", f"  {res['rev']}: {res['rev_module']}",
             f"  {'case':24s} {'this':>9s} {res['rev'][:12]:>12s}   this / rev (range over rounds)"]
    for r in res["rows"]:
        same = "" if r["same_tokens"] else "   (the tokens differ)"
        lines.append(f"  {r['case']:24s} {r['this_tok_s']:9.0f} {r['rev_tok_s']:12.0f}   {r['ratio']:.2f}x "
                     f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}){same}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bulletd.bench.against", description=__doc__.splitlines()[0])
    p.add_argument("rev", help="a git revision of this repository (commit, tag, branch)")
    p.add_argument("--shapes", default="reference,small")
    p.add_argument("--paths", default="", help="comma list of kernel paths (default: every SIMD path this CPU runs)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--workdir", type=Path, default=None,
                   help="build REV's tree here and keep it (a later run with the same directory measures at once)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    from bulletd.kernels import available_kernels
    paths = [s for s in a.paths.split(",") if s] or [k for k in available_kernels() if k != "scalar"] or ["scalar"]
    shapes = [s.strip().lower() for s in a.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in ("reference", "small"):
            print(f"bulletd.bench.against: error: unknown shape {s!r}; expected reference, small", file=sys.stderr)
            return 2
    try:
        res = compare(a.rev, shapes, paths, max(1, a.rounds), max(1, a.passes), a.workdir)
    except RuntimeError as exc:
        print(f"bulletd.bench.against: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2) if a.json else report(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
