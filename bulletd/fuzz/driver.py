"""python -m bulletd.fuzz: run the fuzz targets (bulletd.fuzz.targets).

    python -m bulletd.fuzz TARGET [--runs N | --seconds S] [--corpus DIR] [--artifacts DIR]
    python -m bulletd.fuzz --all [--quick] [--runs N | --seconds S]
    python -m bulletd.fuzz TARGET --replay [DIR ...]   # each stored input once (what CI replays)
    python -m bulletd.fuzz TARGET --seeds DIR          # write the target's generated seeds

Engine: atheris (coverage-guided libFuzzer for Python, `pip install atheris`) when it imports,
else a built-in random mutator without coverage (it says so). Each target runs in a child
process; the parent counts executions and reports crashes (an exception the target does not
expect, a failed invariant, a native crash) and hangs (one input taking
longer than --timeout). The corpus starts from the target's generated seeds plus the stored,
minimised corpus of the checkout (tests/fuzz_corpus/TARGET) when it is there; new inputs go to
--corpus (a temporary directory by default). A crashing input is written to --artifacts and the
run stops there, exit status 1.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bulletd.fuzz.targets import TARGETS, scratch_base

STORED = Path(__file__).resolve().parent.parent.parent / "tests" / "fuzz_corpus"
QUICK_SECONDS = 8          # per target in --quick, after the stored corpus is replayed
DEFAULT_TIMEOUT = 10       # seconds one input may take


def stored_corpus(name: str) -> Path | None:
    d = STORED / name
    return d if d.is_dir() else None


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def write_seeds(name: str, out: Path) -> int:
    t = TARGETS[name]()
    t.setup()
    try:
        seeds = t.seeds()
    finally:
        t.cleanup()
    out.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (out / ("seed-" + hashlib.sha1(s).hexdigest()[:16])).write_bytes(s)
    return len(seeds)


# ------------------------------------------------------------------------------ replay

class _Hang(BaseException):
    pass


def _alarm(seconds: float):
    def fire(signum, frame):
        raise _Hang()
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return old


def _disarm(old) -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def replay(name: str, dirs: list[Path], timeout: float = DEFAULT_TIMEOUT, seeds: bool = True) -> list[str]:
    """Run every file of `dirs` (and the generated seeds) through the target once, in this
    process. Returns the failures, one line each (empty: all passed)."""
    t = TARGETS[name]()
    t.setup()
    failures: list[str] = []
    try:
        inputs = [(f"seed {i}", s) for i, s in enumerate(t.seeds())] if seeds else []
        for d in dirs:
            inputs += [(str(p), p.read_bytes()) for p in sorted(d.iterdir()) if p.is_file()]
        for label, data in inputs:
            old = _alarm(timeout)
            try:
                t.run(data)
            except _Hang:
                failures.append(f"{name}: {label}: hang (more than {timeout} s)")
            except Exception as exc:
                failures.append(f"{name}: {label}: {type(exc).__name__}: {exc}"[:2000] + "\n"
                                + "".join(traceback.format_exc(limit=-6)))
            finally:
                _disarm(old)
    finally:
        t.cleanup()
    return failures


# ------------------------------------------------------------------------------ engines (child)

def _mutate(rng: random.Random, data: bytes, pool: list[bytes], max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(8)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            j = min(i, len(b) - 1)
            b[j] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:
            del b[i:i + rng.randint(1, 16)]
        elif op == 4 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 32)]
        elif op == 5 and pool:
            other = rng.choice(pool)
            j = rng.randrange(len(other) + 1)
            b[i:] = other[j:]
        elif op == 6:
            w = rng.choice((1, 2, 4, 8))
            v = rng.choice((0, 1, 2 ** (8 * w - 1) - 1, 2 ** (8 * w - 1), 2 ** (8 * w) - 1, rng.getrandbits(8 * w)))
            b[i:i + w] = v.to_bytes(w, rng.choice(("little", "big")))
        elif op == 7 and b:
            j = rng.randrange(len(b))
            b[j] = rng.choice(b"{}[]\":,0-e.\x00 \\")
    return bytes(b[:max_len])


def _child_builtin(name: str, runs: int, seconds: float, corpus: list[Path], artifacts: Path,
                   timeout: float) -> int:
    t = TARGETS[name]()
    t.setup()
    pool = [p.read_bytes() for d in corpus for p in sorted(d.iterdir()) if p.is_file()]
    pool = [p for p in pool if len(p) <= t.max_len] or [b""]
    rng = random.Random(int(os.environ.get("BULLET_FUZZ_SEED", "0")) or None)
    n, t0 = 0, time.monotonic()
    rc = 0
    try:
        while True:
            if runs and n >= runs or seconds and time.monotonic() - t0 >= seconds:
                break
            data = pool[n] if n < len(pool) else _mutate(rng, rng.choice(pool), pool, t.max_len)
            old = _alarm(timeout)
            try:
                t.run(data)
            except _Hang:
                path = _save(artifacts, "timeout", data)
                print(f"builtin: hang: one input took more than {timeout} s; input written to {path}",
                      file=sys.stderr)
                rc = 1
            except Exception:
                traceback.print_exc()
                path = _save(artifacts, "crash", data)
                print(f"builtin: crash: input written to {path}", file=sys.stderr)
                rc = 1
            finally:
                _disarm(old)
            n += 1
            if rc:
                break
    finally:
        t.cleanup()
    print(f"builtin: Done {n} runs in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return rc


def _save(artifacts: Path, kind: str, data: bytes) -> Path:
    artifacts.mkdir(parents=True, exist_ok=True)
    p = artifacts / f"{kind}-{hashlib.sha1(data).hexdigest()}"
    p.write_bytes(data)
    return p


def _instrument_bulletd(atheris) -> int:
    """atheris.instrument_func on every function and method of the loaded bulletd modules (an
    editable install's import hook hides them from atheris.instrument_imports, and
    instrument_all would take half a minute over NumPy)."""
    import inspect
    done: set[int] = set()

    def visit(obj) -> None:
        f = getattr(obj, "__func__", obj)           # staticmethod / classmethod
        if inspect.isfunction(f) and id(f.__code__) not in done and f.__module__.startswith("bulletd"):
            atheris.instrument_func(f)
            done.add(id(f.__code__))
        elif isinstance(obj, property):
            for g in (obj.fget, obj.fset):
                if g is not None:
                    visit(g)

    for mname, mod in list(sys.modules.items()):
        if not mname.startswith("bulletd.") or mname.startswith("bulletd.fuzz"):
            continue
        for v in list(vars(mod).values()):
            if inspect.isclass(v) and v.__module__ == mname:
                for a in list(vars(v).values()):
                    visit(a)
            elif inspect.isfunction(v) and v.__module__ == mname:
                visit(v)
    return len(done)


def _child_atheris(name: str, runs: int, seconds: float, corpus: list[Path], artifacts: Path,
                   timeout: float, extra: list[str]) -> int:
    import atheris
    t = TARGETS[name]()
    # Coverage comes from the project's own functions: the target's setup and a first pass over
    # its seeds import what it reaches, then every function of those modules is instrumented.
    t.setup()
    for data in t.seeds():
        try:
            t.run(data)
        except Exception:
            pass
    print(f"bulletd.fuzz: instrumented {_instrument_bulletd(atheris)} functions of bulletd", file=sys.stderr)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [os.environ.get("BULLET_FUZZ_ARGV0", sys.argv[0]), f"-max_len={t.max_len}", f"-timeout={int(max(1, timeout))}",
            f"-artifact_prefix={artifacts}/", "-rss_limit_mb=3072", "-print_final_stats=1"]
    if runs:
        args.append(f"-runs={runs}")
    if seconds:
        args.append(f"-max_total_time={int(max(1, seconds))}")
    args += extra + [str(d) for d in corpus]
    atheris.Setup(args, t.run)
    atheris.Fuzz()
    return 0


# ------------------------------------------------------------------------------ parent

def run_target(name: str, *, runs: int = 0, seconds: float = 0, corpus: Path | None = None,
               artifacts: Path | None = None, timeout: float = DEFAULT_TIMEOUT, engine: str = "auto",
               extra: list[str] = (), log: Path | None = None, quiet: bool = False) -> dict:
    """Fuzz one target in a child process; returns {target, engine, runs, seconds, crashes,
    hangs, artifacts: [paths], tail}."""
    if engine == "auto":
        engine = "atheris" if have_atheris() else "builtin"
    tmp = tempfile.TemporaryDirectory(prefix=f"bullet-fuzz-{name}-")
    work = corpus or Path(tmp.name) / "corpus"
    artifacts = artifacts or Path(tmp.name) / "artifacts"
    if not work.exists() or not any(work.iterdir()):
        write_seeds(name, work)
    dirs = [work]
    if stored_corpus(name) is not None:
        dirs.append(stored_corpus(name))
    cmd = [sys.executable, "-m", "bulletd.fuzz", "--child", engine, name, "--runs", str(runs),
           "--seconds", str(seconds), "--timeout", str(timeout), "--artifacts", str(artifacts),
           "--corpus-dirs", *map(str, dirs)]
    if extra:
        cmd += ["--", *extra]
    log_path = log or Path(tmp.name) / "engine.log"
    # the engine ends the child with exit(): its targets' scratch files are removed here
    scratch = tempfile.mkdtemp(prefix=f"bullet-fuzz-{name}-", dir=scratch_base())
    t0 = time.monotonic()
    try:
        with open(log_path, "w") as logf:
            proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, text=True,
                                  env=dict(os.environ, BULLET_FUZZ_SCRATCH=scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    elapsed = time.monotonic() - t0
    text = log_path.read_text(errors="replace")
    done = re.findall(r"Done (\d+) runs in", text)
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    n = int(executed[-1]) if executed else int(done[-1]) if done else 0
    written = re.findall(r"(?:Test unit written to|input written to) (\S+)", text)
    hangs = len(re.findall(r"ERROR: libFuzzer: timeout|builtin: hang", text))
    crashes = len(written) - hangs if written else (0 if proc.returncode == 0 else 1)
    res = {"target": name, "engine": engine, "runs": n, "seconds": round(elapsed, 1),
           "crashes": max(crashes, 0), "hangs": hangs, "artifacts": written, "returncode": proc.returncode,
           "tail": "" if proc.returncode == 0 else text[-4000:]}
    tmp_keep = artifacts.is_relative_to(Path(tmp.name)) and written
    if tmp_keep:   # keep a crashing input past the temp dir
        keep = Path.cwd() / "fuzz-artifacts"
        keep.mkdir(exist_ok=True)
        res["artifacts"] = []
        for w in written:
            dst = keep / Path(w).name
            dst.write_bytes(Path(w).read_bytes())
            res["artifacts"].append(str(dst))
    tmp.cleanup()
    if not quiet:
        print(summary_line(res), flush=True)
        if res["tail"]:
            print(res["tail"], file=sys.stderr)
    return res


def summary_line(r: dict) -> str:
    rate = r["runs"] / r["seconds"] if r["seconds"] else 0.0
    s = (f"fuzz {r['target']:<9} {r['engine']:<7} {r['runs']:>10,} runs in {r['seconds']:>7.1f} s "
         f"({rate:>7,.0f}/s): {r['crashes']} crashes, {r['hangs']} hangs")
    for a in r["artifacts"]:
        s += f"\n    input: {a}"
    return s


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    if argv[:1] == ["--child"]:
        import logging
        logging.disable(logging.CRITICAL)    # rejected inputs are the norm here, not news
        ap = argparse.ArgumentParser(prog="python -m bulletd.fuzz --child")
        ap.add_argument("engine")
        ap.add_argument("target")
        ap.add_argument("--runs", type=int, default=0)
        ap.add_argument("--seconds", type=float, default=0)
        ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
        ap.add_argument("--artifacts", type=Path)
        ap.add_argument("--corpus-dirs", type=Path, nargs="+", default=[])
        a = ap.parse_args(argv[1:])
        if a.engine == "atheris":
            return _child_atheris(a.target, a.runs, a.seconds, a.corpus_dirs, a.artifacts, a.timeout, extra)
        return _child_builtin(a.target, a.runs, a.seconds, a.corpus_dirs, a.artifacts, a.timeout)

    ap = argparse.ArgumentParser(prog="python -m bulletd.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", choices=sorted(TARGETS), help="what to fuzz")
    ap.add_argument("--all", action="store_true", help="every target, one after the other")
    ap.add_argument("--quick", action="store_true",
                    help=f"the CI pass: the stored corpus, then {QUICK_SECONDS} s of fuzzing per target")
    ap.add_argument("--runs", type=int, default=0, help="executions per target (libFuzzer -runs)")
    ap.add_argument("--seconds", type=float, default=0, help="time per target (libFuzzer -max_total_time)")
    ap.add_argument("--corpus", type=Path, help="keep the growing corpus here (one target only)")
    ap.add_argument("--artifacts", type=Path, help="write crashing inputs here (default ./fuzz-artifacts)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds one input may take")
    ap.add_argument("--engine", choices=("auto", "atheris", "builtin"), default="auto")
    ap.add_argument("--log", type=Path, help="the engine's own output (one target only)")
    ap.add_argument("--replay", nargs="*", type=Path, metavar="DIR",
                    help="run each input of DIR (default: the stored corpus) once, in this process")
    ap.add_argument("--seeds", type=Path, metavar="DIR", help="write the target's generated seeds to DIR")
    ap.add_argument("--merge", nargs="+", type=Path, metavar=("OUT", "DIR"),
                    help="write to OUT the smallest set of inputs of the DIRs (and the seeds) that keeps "
                         "their coverage (libFuzzer -merge=1; atheris only): how tests/fuzz_corpus is made")
    a = ap.parse_args(argv)

    if a.engine == "atheris" and not have_atheris():
        print("bulletd.fuzz: atheris is not installed (pip install atheris)", file=sys.stderr)
        return 2
    names = sorted(TARGETS) if a.all else [a.target] if a.target else []
    if not names:
        ap.error("name a target or give --all")
    if a.seeds is not None:
        for n in names:
            print(f"{n}: {write_seeds(n, a.seeds if len(names) == 1 else a.seeds / n)} seeds")
        return 0
    if a.merge is not None:
        if len(names) != 1 or not have_atheris():
            ap.error("--merge takes one target and needs atheris")
        out, dirs = a.merge[0], a.merge[1:]
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            seeds = Path(tmp) / "seeds"
            write_seeds(names[0], seeds)
            # libFuzzer's merge runs argv[0] again with its own flags: give it a script
            child = [sys.executable, "-m", "bulletd.fuzz", "--child", "atheris", names[0], "--timeout",
                     str(a.timeout), "--artifacts", str(Path(tmp) / "artifacts")]
            script = Path(tmp) / "fuzz-child"
            script.write_text("#!/bin/sh\nexec " + " ".join(f"'{c}'" for c in child) + ' -- "$@"\n')
            script.chmod(0o755)
            env = dict(os.environ, BULLET_FUZZ_ARGV0=str(script))
            return subprocess.run([str(script), "-merge=1", str(out), str(seeds), *map(str, dirs)],
                                  env=env).returncode
    if a.replay is not None:
        bad = 0
        for n in names:
            dirs = a.replay or ([stored_corpus(n)] if stored_corpus(n) else [])
            fails = replay(n, dirs, a.timeout)
            count = sum(1 for d in dirs for p in d.iterdir() if p.is_file())
            print(f"replay {n}: {count} stored inputs and the seeds, {len(fails)} failures")
            for f in fails:
                print("  " + f)
            bad += len(fails)
        return 1 if bad else 0
    if a.quick:
        seconds, runs = a.seconds or QUICK_SECONDS, a.runs
    else:
        seconds, runs = a.seconds, a.runs
        if not seconds and not runs:
            runs = 1_000_000
    if len(names) > 1 and (a.corpus or a.log):
        ap.error("--corpus and --log take one target")
    results = []
    for n in names:
        results.append(run_target(n, runs=runs, seconds=seconds, corpus=a.corpus, artifacts=a.artifacts,
                                  timeout=a.timeout, engine=a.engine, extra=extra, log=a.log))
    if len(results) > 1:
        total = sum(r["runs"] for r in results)
        print(f"fuzz: {len(results)} targets, {total:,} runs, "
              f"{sum(r['crashes'] for r in results)} crashes, {sum(r['hangs'] for r in results)} hangs")
    return 1 if any(r["crashes"] or r["hangs"] or r["returncode"] for r in results) else 0
