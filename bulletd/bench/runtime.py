"""`bullet bench`: runtime speed and memory for the SMALL and REFERENCE shapes (bulletd.format.synth).

For each shape it writes a random model with BQ4 weights (fixed seed) to a temporary file, then
measures on one thread, in this process:
  - model open time (load_model: map + validate + build the backend), median of several opens
  - decode tokens/s: one forward call per token over the whole context, median of passes
  - where a token's time goes (matvecs by kind, attention, norms/rope/activation, sampling; the
    session's step profile) beside the roofline of the model on this machine (bulletd.bench.roofline)
  - generate tokens/s: the same through Model.generate (sampling and detokenising included)
  - the user path: a streamed request with the daemon's sampling settings from a short prompt
    through Model.generate, `bullet run` (its own tokens/s line) and bulletd.client over the Unix
    socket of a bulletd started for it, each beside the raw decode loop in rounds alternating
    (targets: >= 0.9x the raw loop on REFERENCE, >= 0.8x on SMALL)
  - prefill of a 128-token prompt: ms and tokens/s (one prefill call), median of runs
  - time to first token for that prompt (prefill + first sample + decode), median
  - the NumPy reference backend measured the same way (the baseline) and native / NumPy ratios,
    in both of its weight modes (BULLET_NUMPY_WEIGHTS), passes alternating: "mapped", the fallback
    as it runs by default (bq4 weights read from the mapping, dequantised at every product; its
    decode over the first 128 positions by default, --numpy-tokens), and "f32" (dequantised once
    at load: 4 bytes a weight of private memory, 6.4x the bq4 bytes; over the whole context,
    --numpy-f32-tokens). The ">= 50x NumPy" target is checked against the fallback; the ratio to
    the f32 variant is printed beside it
  - KV-cache bytes per session and the RSS one extra session adds (context filled)
  - the native decode loop (sampling on) of one session on one thread, beside one session on two
    threads (threads per request), two sessions on two threads at once (aggregate tokens/s), the
    same with each thread pinned to a core of its own, two sessions in two processes at once
    (nothing shared but the machine), and one session pinned to each core in turn (what two at
    once can reach on this VM's cores)
  - structured output ("grammar", REFERENCE shape with a 4,096-token vocabulary): the vocabulary
    trie, schema compile and first-mask times for the home-call and calc schemas, the first
    request (cold caches) and later ones, and decode with a grammar beside the same requests
    without one (same prompts and token counts, runs alternating)
  - when the active kernel path has a narrower sibling (avx512vnni -> avx2), that path's decode
    and prefill too, as a baseline from the same file in the same process, in passes alternating
    with the active path's (the speed-up is the ratio of those medians)
and prints them beside the targets (TARGETS). BLAS is pinned to one thread (the process re-executes
itself with OPENBLAS_NUM_THREADS=1 etc. when they are not set), so the NumPy baseline is one
thread too.

    bullet bench                 # both shapes
    bullet bench --shapes reference --json
    python -m bulletd.bench.runtime --quick
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bulletd.bench import roofline

_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BULLET_THREADS")

# Active kernel path -> the path also measured in the same process as its baseline
BASELINE_PATHS = {"avx512vnni": "avx2"}

# Decode positions timed on the NumPy fallback with mapped weights (~12 ms a token on REFERENCE;
# the cost per token hardly depends on the position: dequantising the weights dominates)
NUMPY_MAPPED_TOKENS = 128

TARGETS = {  # the runtime's targets: REFERENCE shape, one thread; "NumPy" = the fallback (mapped)
    "decode_tok_s": 2000.0,
    "decode_vs_numpy": 50.0,
    "prefill128_ms": 20.0,
    "session_rss_mb": 30.0,
    "threads2_vs_one": 1.6,     # one session on two threads vs one thread, idle machine
    "parallel2_vs_one": 1.7,    # two sessions on two threads vs one, cores of even speed
}


# The user path (Model.generate, `bullet run`, bulletd.client over the socket) vs the raw decode loop
USER_TARGETS = {"reference": 0.9, "small": 0.8}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", default="small,reference,grammar",
                   help="comma list of small, reference, grammar (structured output on REFERENCE, vocab 4096)")
    p.add_argument("--passes", type=int, default=5, help="decode passes over the context (median)")
    p.add_argument("--numpy-tokens", type=int, default=NUMPY_MAPPED_TOKENS,
                   help="decode positions timed on the NumPy fallback, weights mapped "
                        f"(default {NUMPY_MAPPED_TOKENS}; 0 = the whole context, as native)")
    p.add_argument("--numpy-f32-tokens", type=int, default=0,
                   help="decode positions timed on NumPy with f32 weights (default 0 = the whole context)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions (for a smoke test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def _median_time(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _decode_rate(model, ids: list[int], passes: int) -> float:
    """tokens/s of single-token forward calls over positions 0..len(ids)-1 (median pass)."""
    s = model.new_session()
    rates = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for pos, t in enumerate(ids):
            s.forward(t, pos)
        rates.append(len(ids) / (time.perf_counter() - t0))
    return statistics.median(rates)


def _loop(session, ctx: int, threads: int = 1) -> float:
    """tokens/s of the native decode loop (sampling on, the daemon's settings) from BOS to the end
    of the context on one session, in calls of 64 tokens as a generation makes them (each call
    drops the GIL for its whole batch)."""
    impl = session._impl
    impl.set_threads(threads)
    coins = np.random.default_rng(0).random(64)
    seen = np.array([1], dtype=np.int64)
    stop = np.zeros(0, dtype=np.int64)
    logits = np.array(impl.prefill([1], 0), dtype=np.float32)
    t0 = time.perf_counter()
    pos, pending, n = 1, -1, 0
    while pos < ctx:
        k = min(64, ctx - pos + (pending < 0))
        toks, _, pos = impl.decode(logits, pending, pos, k, coins, seen, 0.8, 40, 0.95, 1.1, stop)
        pending, n = toks[-1], n + len(toks)
    return n / (time.perf_counter() - t0)


def _parallel_rate(model, ctx: int, sessions: int = 2, cpus: list[int] | None = None) -> float:
    """Aggregate tokens/s of `sessions` sessions running the decode loop at once, each on its own
    thread (one request each, as two daemon workers run two requests); with `cpus`, thread i
    pinned to cpus[i]."""
    import threading
    ss = [model.new_session() for _ in range(sessions)]
    rates = [0.0] * sessions
    barrier = threading.Barrier(sessions + 1)

    def work(i):
        if cpus:
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})   # this thread only
        barrier.wait()
        rates[i] = _loop(ss[i], ctx)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(sessions)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return sessions * (ctx - 1) / (time.perf_counter() - t0)


def loop_probe(path: str) -> None:
    """One session's decode loop in a process of its own (nothing shared with another session
    but the machine): loads, warms up, says "ready", waits for a line on stdin, then prints its
    start, end (time.perf_counter: CLOCK_MONOTONIC, the same clock in every process) and tokens."""
    from bulletd.runtime.model import load_model
    model = load_model(path, backend="native")
    s = model.new_session()
    _loop(s, model.context)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    _loop(s, model.context)
    print(json.dumps({"start": t0, "end": time.perf_counter(), "tokens": model.context - 1}), flush=True)


def _processes_rate(path: Path, sessions: int = 2) -> float:
    """Aggregate tokens/s of `sessions` decode loops in as many processes, started together: what
    the machine gives sessions that share no memory, allocator or interpreter (beside
    _parallel_rate, it tells shared state in this process from limits of the cores or caches)."""
    ps = [subprocess.Popen([sys.executable, "-m", "bulletd.bench.runtime", "--loop-probe", str(path)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(sessions)]
    try:
        for p in ps:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a decode-loop probe process failed to start")
        for p in ps:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.stdout.readline()) for p in ps]
    finally:
        for p in ps:
            p.kill()
            p.wait()
    return sum(o["tokens"] for o in outs) / (max(o["end"] for o in outs) - min(o["start"] for o in outs))


def _side_by_side(r: dict, model, rounds: int) -> None:
    """The decode loop: one session on one thread; one session on two threads (threads per
    request); two sessions on two threads at once; and one session pinned to each core in turn
    (a virtual machine's cores need not be equally fast: that bounds what two at once can reach).
    Rounds alternate, so load from other processes falls on all alike; medians."""
    ctx = model.context
    one, two_threads, two_sessions, two_pinned, two_procs = [], [], [], [], []
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    per_core: dict[int, list[float]] = {c: [] for c in cores}
    s = model.new_session()
    _loop(s, ctx)                                           # warm-up
    for _ in range(rounds):
        one.append(_loop(s, ctx))
        two_threads.append(_loop(s, ctx, threads=2))
        two_sessions.append(_parallel_rate(model, ctx))
        two_procs.append(_processes_rate(model.path))
        if len(cores) > 1:
            two_pinned.append(_parallel_rate(model, ctx, cpus=cores))
        if len(cores) > 1:
            try:
                for c in cores:
                    os.sched_setaffinity(0, {c})
                    per_core[c].append(_loop(s, ctx))
            finally:
                os.sched_setaffinity(0, cores)
    s.set_threads(1)
    med = statistics.median
    r["loop_tok_s"] = med(one)
    r["threads2_tok_s"] = med(two_threads)
    r["threads2_vs_one"] = r["threads2_tok_s"] / r["loop_tok_s"]
    r["parallel2_tok_s"] = med(two_sessions)
    r["parallel2_vs_one"] = r["parallel2_tok_s"] / r["loop_tok_s"]
    r["processes2_tok_s"] = med(two_procs)
    r["processes2_vs_one"] = r["processes2_tok_s"] / r["loop_tok_s"]
    if two_pinned:
        r["pinned2_tok_s"] = med(two_pinned)
        r["pinned2_vs_one"] = r["pinned2_tok_s"] / r["loop_tok_s"]
    if len(cores) > 1:
        speeds = {str(c): med(v) for c, v in per_core.items()}
        best = sorted(speeds.values(), reverse=True)
        r["core_tok_s"] = speeds
        r["two_cores_ceiling"] = (best[0] + best[1]) / best[0]


def _generate_rate(model, passes: int) -> float:
    from bulletd.runtime.sampling import GenerationSettings
    s = model.new_session()
    rates = []
    for i in range(passes):
        st = GenerationSettings(max_tokens=model.context - 1, temperature=0.8, top_k=40, top_p=0.95,
                                repetition_penalty=1.1, seed=i)
        g = model.generate_ids([1], st, session=s)
        t0 = time.perf_counter()
        for _ in g:
            pass
        n = len(g.tokens) + (g.finish_reason == "eos")
        rates.append(n / (time.perf_counter() - t0))
        s.reset()
    return statistics.median(rates)


USER_PROMPT = "Once upon a time"
USER_SETTINGS = dict(temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.1)   # the daemon's defaults


def _full_length_seeds(model, n: int) -> list[int]:
    """Seeds whose generation from USER_PROMPT runs to the end of the context (a random model
    draws its end-of-text id now and then; a shorter run would cover fewer positions)."""
    from bulletd.runtime.sampling import GenerationSettings
    want = model.context - len(model.encode_prompt(USER_PROMPT))
    seeds = []
    for seed in range(200):
        g = model.generate(USER_PROMPT, GenerationSettings(max_tokens=want, seed=seed, stream=False, **USER_SETTINGS))
        for _ in g:
            pass
        if len(g.tokens) == want:
            seeds.append(seed)
            if len(seeds) == n:
                break
    return seeds or [0]


def _user_generate(model, seed: int) -> float:
    """tokens/s of one streamed Model.generate from a text prompt to the end of the context, as a
    user of the runtime gets them: from the call to the last piece (tokenizer, prefill, sampling,
    detokenising and the streamed pieces included)."""
    from bulletd.runtime.sampling import GenerationSettings
    t0 = time.perf_counter()
    g = model.generate(USER_PROMPT, GenerationSettings(max_tokens=model.context, seed=seed, stream=True,
                                                       **USER_SETTINGS))
    for _ in g:
        pass
    return len(g.tokens) / (time.perf_counter() - t0)


def _user_run(path: Path, seed: int) -> float:
    """tokens/s that `bullet run` prints for the same request (its own clock: from the generate
    call to the last piece written, so the interpreter's start-up is not in it)."""
    import re
    out = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "run", str(path), "-p", USER_PROMPT, "-n", "0",
                          "--seed", str(seed), "-t", str(USER_SETTINGS["temperature"]), "--top-k",
                          str(USER_SETTINGS["top_k"]), "--top-p", str(USER_SETTINGS["top_p"]), "--repeat-penalty",
                          str(USER_SETTINGS["repetition_penalty"]), "--quiet-prompt"],
                         capture_output=True, text=True, timeout=300)
    m = re.search(r"([0-9.]+) tok/s", out.stderr)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"bullet run failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return float(m.group(1))


class _Daemon:
    """bulletd serving one child over its Unix socket only (no MQTT), and a client to it."""

    def __init__(self, path: Path, workdir: Path):
        import shutil
        from bulletd.client import Client
        models = workdir / "daemon-models"
        models.mkdir(exist_ok=True)
        shutil.copy(path, models / "child.bullet")
        self.sock = str(workdir / "bulletd.sock")
        self.log = open(workdir / "bulletd.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bulletd.daemon", "--models", str(models), "--socket",
                                      self.sock, "--allow-unsigned", "--log-level", "warning"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while True:
            try:
                self.client = Client(self.sock, timeout=120)
                self.client.ping()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.close()
                    raise RuntimeError(f"bulletd did not start; see {workdir / 'bulletd.log'}")
                time.sleep(0.1)

    def rate(self, seed: int, max_tokens: int) -> float:
        """tokens/s of one streamed request through bulletd.client: from sending it to the final reply."""
        t0 = time.perf_counter()
        s = self.client.stream(USER_PROMPT, "child", max_tokens=max_tokens, seed=seed, **USER_SETTINGS)
        for _ in s:
            pass
        return s.result.tokens / (time.perf_counter() - t0)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _user_path(r: dict, model, path: Path, ids: list[int], workdir: Path, rounds: int) -> None:
    """The user path beside the raw decode loop, rounds alternating (load from other processes
    falls on all alike): Model.generate, `bullet run` and bulletd.client over the socket, each a
    streamed request with the daemon's sampling settings from a short prompt to the end of the
    context; the raw loop is one forward call per token over the same positions, no sampling."""
    seeds = _full_length_seeds(model, rounds)
    daemon = _Daemon(path, workdir)
    try:
        want = model.context - len(model.encode_prompt(USER_PROMPT))
        daemon.rate(seeds[0], want)                       # warm-up: load, first session
        raw, gen, run, sock = [], [], [], []
        for i in range(rounds):
            seed = seeds[i % len(seeds)]
            raw.append(_decode_rate(model, ids, 1))
            gen.append(_user_generate(model, seed))
            run.append(_user_run(path, seed))
            sock.append(daemon.rate(seed, want))
    finally:
        daemon.close()
    med = statistics.median
    r["user_raw_decode_tok_s"] = med(raw)
    r["user_generate_tok_s"] = med(gen)
    r["user_run_tok_s"] = med(run)
    r["user_socket_tok_s"] = med(sock)
    for k in ("generate", "run", "socket"):
        r[f"user_{k}_vs_raw"] = r[f"user_{k}_tok_s"] / r["user_raw_decode_tok_s"]


def _prefill_ms(model, prompt: list[int], runs: int) -> float:
    s = model.new_session()
    return 1e3 * _median_time(lambda: s.prefill(prompt, 0), runs)


def _ttft_ms(model, prompt: list[int], runs: int) -> float:
    from bulletd.runtime.sampling import GenerationSettings
    s = model.new_session()
    ts = []
    for i in range(runs):
        s.reset()   # no prefix reuse: the whole prompt is processed every time
        t0 = time.perf_counter()
        g = model.generate_ids(prompt, GenerationSettings(max_tokens=1, seed=i), session=s)
        for _ in g:
            pass
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def _baseline(r: dict, model, bm, ids: list[int], prompt: list[int], passes: int, runs: int) -> None:
    """Decode and prefill of the baseline path `bm` in passes alternating with the active path's
    (`model`), so that load from other processes falls on both alike; ratios from those pairs."""
    ws = bm.new_session()
    for pos, t in enumerate(ids):
        ws.forward(t, pos)
    del ws
    dec, dec_b, pre, pre_b = [], [], [], []
    for _ in range(max(passes, 3)):
        dec.append(_decode_rate(model, ids, 1))
        dec_b.append(_decode_rate(bm, ids, 1))
    for _ in range(runs):
        pre.append(_prefill_ms(model, prompt, 1))
        pre_b.append(_prefill_ms(bm, prompt, 1))
    r["baseline_breakdown"] = roofline.measure(bm._native, 1 if runs < 20 else 3)
    r["baseline_kernel_path"] = bm.kernel_path
    r["baseline_decode_tok_s"] = statistics.median(dec_b)
    r["baseline_prefill128_ms"] = statistics.median(pre_b)
    r["decode_vs_baseline"] = statistics.median(dec) / r["baseline_decode_tok_s"]
    r["prefill_vs_baseline"] = r["baseline_prefill128_ms"] / statistics.median(pre)
    bm.close()


def bench_shape(label: str, arch: dict, workdir: Path, args) -> dict:
    from bulletd.format.synth import write_random_lm
    from bulletd.runtime.model import load_model

    path = workdir / f"{label}.bullet"
    write_random_lm(path, arch, seed=0, dtype="bq4", name=f"bench-{label}")
    quick = args.quick
    rng = np.random.default_rng(1)
    ctx = arch["max_seq_len"]
    ids = [int(t) for t in rng.integers(3, arch["vocab_size"], size=ctx)]
    prompt = [1] + ids[:127]
    r: dict = {"shape": label, "arch": arch, "file_bytes": path.stat().st_size}

    opens = []
    for _ in range(3 if quick else 7):
        t0 = time.perf_counter()
        m = load_model(path, backend="native")
        opens.append(time.perf_counter() - t0)
        m.close()
    r["open_ms"] = 1e3 * statistics.median(opens)

    model = load_model(path, backend="native")
    r["kernel_path"] = model.kernel_path
    warm = model.new_session()
    for pos, t in enumerate(ids):          # touch every weight page and warm the caches
        warm.forward(t, pos)
    passes = 1 if quick else args.passes
    r["decode_tok_s"] = _decode_rate(model, ids, passes)
    r["breakdown"] = roofline.measure(model._native, 1 if quick else 3)
    r["generate_tok_s"] = _generate_rate(model, 1 if quick else 3)
    _side_by_side(r, model, 1 if quick else 3)
    r["prefill128_ms"] = _prefill_ms(model, prompt, 3 if quick else 20)
    r["prefill128_tok_s"] = 128 / (r["prefill128_ms"] / 1e3)
    r["ttft128_ms"] = _ttft_ms(model, prompt, 3 if quick else 10)
    _user_path(r, model, path, ids, workdir, 1 if quick else 3)

    base = BASELINE_PATHS.get(r["kernel_path"])
    if base is not None:  # the narrower SIMD path, same file, same process: what the wider one gains
        from bulletd import kernels as K
        if base in K.available_kernels():
            _baseline(r, model, load_model(path, backend="native", kernel=base), ids, prompt, passes,
                      3 if quick else 20)

    r["kv_cache_bytes"] = warm.kv_bytes
    del warm
    model.close()

    # memory, in a fresh process so memory freed by the sessions above cannot hide it
    probe = subprocess.run([sys.executable, "-m", "bulletd.bench.runtime", "--rss-probe", str(path)],
                           capture_output=True, text=True, timeout=600)
    if probe.returncode != 0:
        raise RuntimeError(f"RSS probe failed: {probe.stderr.strip()[-500:]}")
    r.update(json.loads(probe.stdout))

    _numpy_baselines(r, path, ids, prompt, args)
    return r


def _numpy_baselines(r: dict, path: Path, ids: list[int], prompt: list[int], args) -> None:
    """The NumPy backend in both weight modes, passes alternating (load from other processes falls
    on both alike): "numpy_*" = mapped (the fallback), "numpy_f32_*" = dequantised once."""
    from bulletd.runtime.model import load_model
    ctx = len(ids)
    models, n = {}, {}
    for key, mode, tokens in (("numpy", "mapped", args.numpy_tokens), ("numpy_f32", "f32", args.numpy_f32_tokens)):
        models[key] = load_model(path, backend="numpy", numpy_weights=mode)
        n[key] = ctx if tokens <= 0 else min(tokens, ctx)
        if args.quick:
            n[key] = min(n[key], 32)
    dec = {k: [] for k in models}
    pre = {k: [] for k in models}
    for _ in range(1 if args.quick else 3):
        for k, m in models.items():
            dec[k].append(_decode_rate(m, ids[:n[k]], 1))
            pre[k].append(_prefill_ms(m, prompt, 1))
    r["numpy_bq4_bytes"] = sum(b.nbytes for b in models["numpy"]._ref.bq4.values())       # mapped, shared
    r["numpy_f32_weight_bytes"] = sum(models["numpy_f32"]._ref.w[n].nbytes for n in models["numpy"]._ref.bq4)
    for k, m in models.items():
        r[f"{k}_weights"] = m.numpy_weights
        r[f"{k}_decode_tok_s"] = statistics.median(dec[k])
        r[f"{k}_prefill128_ms"] = statistics.median(pre[k])
        r[f"{k}_decode_positions"] = n[k]
        r[f"decode_vs_{k}"] = r["decode_tok_s"] / r[f"{k}_decode_tok_s"]
        r[f"prefill_vs_{k}"] = r[f"{k}_prefill128_ms"] / r["prefill128_ms"]
        m.close()


# The agents contract's tool-call schemas (bulletd.agents.tools keeps the shipped ones)
HOME_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassClimateSetTemperature",
                            "HassSetPosition", "HassGetState", "HassOpenCover", "HassCloseCover", "HassLockLock",
                            "HassLockUnlock"]},
        "name": {"type": "string", "x-copy": True},
        "area": {"type": "string", "x-copy": True},
        "domain": {"enum": ["light", "switch", "fan", "climate", "cover", "lock", "media_player", "sensor"]},
        "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
        "temperature": {"type": "number", "minimum": -50, "maximum": 100},
        "position": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["intent"],
    "anyOf": [{"required": ["name"]}, {"required": ["area"]}],
}
# the shipped home schema copies whole words ("x-copy": "words"); "home" above copies any substring
HOME_WORDS_SCHEMA = {**HOME_SCHEMA, "properties": {k: ({**v, "x-copy": "words"} if "x-copy" in v else v)
                                                   for k, v in HOME_SCHEMA["properties"].items()}}
CALC_SCHEMA = {"type": "object", "properties": {"expression": {"type": "string", "maxLength": 160}},
               "required": ["expression"]}
GRAMMAR_REQUESTS = {
    "home": (HOME_SCHEMA, ["turn on the kitchen light", "set the bedroom lamp to 40 percent",
                           "close the garage door", "is the front door locked",
                           "set the living room thermostat to 21.5", "किचन की लाइट बंद करो",
                           "open the office blinds halfway", "toggle the hallway fan"]),
    "home_words": (HOME_WORDS_SCHEMA, ["turn on the kitchen light", "set the bedroom lamp to 40 percent",
                                       "close the garage door", "is the front door locked",
                                       "set the living room thermostat to 21.5", "किचन की लाइट बंद करो",
                                       "open the office blinds halfway", "toggle the hallway fan"]),
    # home_words as bulletd decodes a home request: names/areas, intents and numbers narrowed to
    # what the utterance pins on the example home (HomeConfig.narrow; its time is not counted here)
    "home_narrow": (HOME_WORDS_SCHEMA, ["turn on the kitchen light", "set the bedroom lamp to 40 percent",
                                        "close the garage door", "is the front door locked",
                                        "set the living room thermostat to 21.5", "किचन चा लाइट बंद करो",
                                        "open the office blinds halfway", "toggle the hallway fan"]),
    "calc": (CALC_SCHEMA, ["what is 17 times 23", "15 percent of 80", "2 to the power of 10",
                           "(3.5 + 4) / 2", "12 divided by 7", "९ गुणा ८"]),
}


def bench_grammar(workdir: Path, args) -> dict:
    """Structured output on the REFERENCE shape with a 4,096-token vocabulary."""
    from bulletd.format.synth import REFERENCE, write_random_lm
    from bulletd.runtime import grammar as G
    from bulletd.runtime.model import load_model
    from bulletd.runtime.sampling import GenerationSettings

    arch = dict(REFERENCE, vocab_size=4096)
    path = workdir / "grammar.bullet"
    write_random_lm(path, arch, seed=0, dtype="bq4", name="bench-grammar")
    model = load_model(path, backend="native")
    r: dict = {"shape": "grammar", "arch": arch, "kernel_path": model.kernel_path}
    quick = args.quick
    pieces = [None if e.type == 2 else bytes(e.piece) for e in model.bf.vocab]
    r["trie_ms"] = 1e3 * _median_time(lambda: G.Vocab(pieces, "bench"), 3 if quick else 7)
    r["trie_nodes"] = G.Vocab(pieces, "bench").nodes
    vocab = model.grammar_vocab
    warm = model.new_session()
    rng = np.random.default_rng(1)
    for pos, t in enumerate(rng.integers(3, arch["vocab_size"], size=arch["max_seq_len"])):
        warm.forward(int(t), pos)
    del warm
    home = None
    for name, (schema, texts) in GRAMMAR_REQUESTS.items():
        r[f"{name}_compile_ms"] = 1e3 * _median_time(lambda: G._build_core(schema), 5 if quick else 21)
        limits = {}
        if name == "home_narrow":
            from bulletd.agents.home import HomeConfig
            home = home or HomeConfig.load(Path(__file__).resolve().parents[2] / "examples" / "home.yaml")
            for text in texts:
                spans, values = home.narrow(schema, text)
                limits[text] = {"copy_spans": spans or None, "values": values or None}

        def compiled(text):
            return G.compile_schema(schema, copy_source=text, **limits.get(text, {}))

        def first_mask():
            g = G.Grammar(G._build_core(schema), texts[0])
            g.runner(vocab, model.stop_ids).row(g._walker().start)
        r[f"{name}_first_mask_ms"] = 1e3 * _median_time(first_mask, 3 if quick else 9)
        st = GenerationSettings(max_tokens=arch["max_seq_len"] - 32, temperature=0.0, stream=False)

        def request(grammar, text, max_tokens=None):
            s = st if max_tokens is None else GenerationSettings(max_tokens=max_tokens, temperature=0.0, stream=False)
            t0 = time.perf_counter()
            g = model.generate(f"{text}\n=>", s, grammar=grammar)
            for _ in g:
                pass
            total = time.perf_counter() - t0
            return g, total, total - g.prefill_s
        # the first request meets cold caches: compile, masks, native rows
        G._CORES.clear()
        g0, t_first, _ = request(compiled(texts[0]), texts[0])
        r[f"{name}_first_request_ms"] = 1e3 * t_first
        tok = {"grammar": 0, "free": 0}
        sec = {"grammar": 0.0, "free": 0.0}
        later, ratios = [], []
        for k in range(1 if quick else 8):
            rt = {"grammar": 0, "free": 0}
            rs = {"grammar": 0.0, "free": 0.0}
            for text in texts:
                # each pair: with the grammar, then the same prompt and token count without one
                # (or the other way round, every other round: drift from other load falls on both)
                n = None
                for mode in (("grammar", "free") if k % 2 == 0 else ("free", "grammar")):
                    if mode == "grammar":
                        g, total, dec = request(compiled(text), text)
                        later.append(total)
                        got = len(g.tokens)
                    else:
                        if n is None:   # the free run first: as many tokens as the grammar run had before
                            n = r.get(f"_{name}_{text}", 32)
                        u, _, dec = request(None, text, max_tokens=max(1, n))
                        got = len(u.tokens)
                    rt[mode] += got
                    rs[mode] += dec
                    if mode == "grammar":
                        n = r[f"_{name}_{text}"] = max(1, got)
            for mode in rt:
                tok[mode] += rt[mode]
                sec[mode] += rs[mode]
            ratios.append((rt["grammar"] / rs["grammar"]) / (rt["free"] / rs["free"]))
        for key in [k for k in r if k.startswith(f"_{name}_")]:
            del r[key]
        r[f"{name}_request_ms"] = 1e3 * statistics.median(later)
        r[f"{name}_tokens_per_request"] = tok["grammar"] / len(later)
        r[f"{name}_decode_tok_s"] = tok["grammar"] / sec["grammar"]
        r[f"{name}_free_decode_tok_s"] = tok["free"] / sec["free"]
        r[f"{name}_decode_vs_free"] = statistics.median(ratios)
        r[f"{name}_example"] = g0.text
    model.close()
    return r


def report_grammar(r: dict) -> list[str]:
    a = r["arch"]
    lines = [f"== STRUCTURED OUTPUT: REFERENCE shape, vocab {a['vocab_size']} (byte-level + pieces), "
             f"{r['kernel_path']}, one thread, greedy",
             f"  vocabulary trie        {r['trie_ms']:9.2f} ms  ({r['trie_nodes']:,} nodes; once per vocabulary)"]
    for name in GRAMMAR_REQUESTS:
        lines.append(f"  {name + ' schema':22s} compile {r[name + '_compile_ms']:.2f} ms, first mask "
                     f"{r[name + '_first_mask_ms']:.2f} ms, first request {r[name + '_first_request_ms']:.1f} ms "
                     f"(cold caches), later requests {r[name + '_request_ms']:.1f} ms "
                     f"({r[name + '_tokens_per_request']:.1f} tokens each)")
        ok = r[name + "_decode_vs_free"] >= 0.8
        lines.append(f"  {'':22s} decode with the grammar {r[name + '_decode_tok_s']:7.1f} tok/s, without "
                     f"{r[name + '_free_decode_tok_s']:7.1f} tok/s: {r[name + '_decode_vs_free']:.2f}x "
                     f"(>= 0.80: {_check(ok)}; median over rounds of the same prompts and token counts, "
                     f"after prefill)")
        lines.append(f"  {'':22s} e.g. {r[name + '_example'][:100]}")
    return lines


def rss_probe(path: str) -> dict:
    """RSS one extra session adds, weights already paged in by a first session (fresh process)."""
    from bulletd.runtime.model import load_model
    model = load_model(path, backend="native")
    ctx = model.context
    ids = [int(t) for t in np.random.default_rng(1).integers(3, model.arch["vocab_size"], size=ctx)]
    first = model.new_session()
    first.prefill(ids[:128], 0)
    for pos in range(128, ctx):
        first.forward(ids[pos], pos)
    gc.collect()
    before = _rss()
    extra = model.new_session()
    extra.prefill(ids[:128], 0)
    for pos in range(128, ctx):
        extra.forward(ids[pos], pos)
    after = _rss()
    return {"session_rss_bytes": after - before, "rss_with_one_session": before}


def _check(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        if r["shape"] == "grammar":
            lines += report_grammar(r)
            continue
        a = r["arch"]
        lines.append(f"== {r['shape'].upper()}: dim {a['dim']}, {a['n_layers']} layers, {a['n_heads']} heads "
                     f"/ {a['n_kv_heads']} kv, hidden {a['hidden_dim']}, vocab {a['vocab_size']}, "
                     f"context {a['max_seq_len']}, BQ4 weights ({r['file_bytes']:,} bytes), one thread")
        lines.append(f"  kernel path            {r['kernel_path']}")
        lines.append(f"  model open             {r['open_ms']:9.2f} ms")
        lines.append(f"  decode                 {r['decode_tok_s']:9.1f} tok/s")
        if "baseline_kernel_path" in r:
            lines.append(f"  {'decode, ' + r['baseline_kernel_path'] + ' (baseline)':22s} "
                         f"{r['baseline_decode_tok_s']:9.1f} tok/s   prefill 128 {r['baseline_prefill128_ms']:.2f} ms"
                         f"   ({r['kernel_path']} / {r['baseline_kernel_path']}, passes alternating in this process: "
                         f"decode {r['decode_vs_baseline']:.2f}x, prefill {r['prefill_vs_baseline']:.2f}x)")
        if "breakdown" in r:
            lines += roofline.report_lines(r["breakdown"], "  ")
        if "baseline_breakdown" in r:
            lines.append(f"  the baseline path, {r['baseline_kernel_path']}:")
            lines += roofline.report_lines(r["baseline_breakdown"], "    ")
        lines.append(f"  generate (sampling)    {r['generate_tok_s']:9.1f} tok/s   (temperature 0.8, top-k 40, top-p 0.95, penalty 1.1)")
        want = USER_TARGETS[r["shape"]]
        lines.append(f"  user path: a streamed request from a {len(USER_PROMPT)}-character prompt to the end of the context, "
                     f"sampling on (the daemon's defaults), beside the raw decode loop in the same rounds "
                     f"({r['user_raw_decode_tok_s']:.1f} tok/s; target >= {want:.2f}x)")
        for k, label in (("generate", "Model.generate"), ("run", "bullet run"), ("socket", "client, Unix socket")):
            x = r[f"user_{k}_vs_raw"]
            lines.append(f"    {label:20s} {r[f'user_{k}_tok_s']:9.1f} tok/s   {x:.2f}x the raw loop: {_check(x >= want)}")
        lines.append(f"  decode loop, sampling  {r['loop_tok_s']:9.1f} tok/s   (one session, one thread: the baseline "
                     f"of the next lines, rounds alternating)")
        t2 = TARGETS["threads2_vs_one"] if r["shape"] == "reference" else None
        lines.append(f"  1 session, 2 threads   {r['threads2_tok_s']:9.1f} tok/s   ({r['threads2_vs_one']:.2f}x one thread"
                     + (f"; target >= {t2:.1f}x on an idle machine: {_check(r['threads2_vs_one'] >= t2)})" if t2 else ")"))
        cores = r.get("core_tok_s")
        ceiling = (f"; each core alone: " + ", ".join(f"cpu{c} {v:.1f}" for c, v in cores.items())
                   + f" tok/s, so two at once can reach {r['two_cores_ceiling']:.2f}x") if cores else ""
        lines.append(f"  2 sessions, 2 threads  {r['parallel2_tok_s']:9.1f} tok/s in total   "
                     f"({r['parallel2_vs_one']:.2f}x one session{ceiling}; target >= "
                     f"{TARGETS['parallel2_vs_one']:.1f}x when the cores are even: "
                     f"{_check(r['parallel2_vs_one'] >= TARGETS['parallel2_vs_one'])})")
        lines.append(f"  2 processes, 1 session each {r['processes2_tok_s']:9.1f} tok/s in total   "
                     f"({r['processes2_vs_one']:.2f}x one session: nothing shared but the machine; about the "
                     f"same as the line above means no shared state of the process holds two sessions back)")
        if "pinned2_tok_s" in r:
            lines.append(f"  2 sessions, each thread pinned to a core of its own {r['pinned2_tok_s']:9.1f} tok/s in total   "
                         f"({r['pinned2_vs_one']:.2f}x one session: above the unpinned line, the system's placement "
                         f"of the two threads is what holds them back)")
        lines.append(f"  prefill 128 tokens     {r['prefill128_ms']:9.2f} ms  = {r['prefill128_tok_s']:9.1f} tok/s")
        lines.append(f"  time to first token    {r['ttft128_ms']:9.2f} ms  (128-token prompt)")
        f32_label = "numpy, weights dequantised once to f32"
        if r.get("numpy_bq4_bytes"):
            f32_label += (f" (+{r['numpy_f32_weight_bytes'] / 1e6:.1f} MB, "
                          f"{r['numpy_f32_weight_bytes'] / r['numpy_bq4_bytes']:.1f}x the bq4)")
        for k, label in (("numpy", "numpy (weights read from the map each step, the fallback)"), ("numpy_f32", f32_label)):
            lines.append(f"  {label:64s} decode {r[k + '_decode_tok_s']:7.1f} tok/s (native {r['decode_vs_' + k]:5.1f}x, "
                         f"over {r[k + '_decode_positions']} positions)   prefill 128 {r[k + '_prefill128_ms']:7.2f} ms "
                         f"(native {r['prefill_vs_' + k]:4.1f}x)")
        lines.append(f"  KV cache per session   {r['kv_cache_bytes'] / 2**20:9.2f} MiB")
        lines.append(f"  RSS added by a session {r['session_rss_bytes'] / 2**20:9.2f} MiB  (context filled; "
                     f"process RSS with one session {r['rss_with_one_session'] / 2**20:.1f} MiB)")
        if r["shape"] == "reference":
            t = TARGETS
            lines.append("  targets (REFERENCE):")
            lines.append(f"    decode >= {t['decode_tok_s']:.0f} tok/s: {_check(r['decode_tok_s'] >= t['decode_tok_s'])}")
            lines.append(f"    decode >= {t['decode_vs_numpy']:.0f}x NumPy (the fallback, weights mapped): "
                         f"{_check(r['decode_vs_numpy'] >= t['decode_vs_numpy'])} ({r['decode_vs_numpy']:.1f}x; "
                         f"vs NumPy with f32 weights {r['decode_vs_numpy_f32']:.1f}x)")
            lines.append(f"    prefill 128 <= {t['prefill128_ms']:.0f} ms: {_check(r['prefill128_ms'] <= t['prefill128_ms'])}")
            lines.append(f"    session RSS <= {t['session_rss_mb']:.0f} MB: "
                         f"{_check(r['session_rss_bytes'] <= t['session_rss_mb'] * 1e6)}")
    return "\n".join(lines)


def _pin_threads_or_reexec(argv) -> None:
    """One thread for BLAS too: set the variables and re-execute before NumPy starts its pool."""
    if all(os.environ.get(v) == "1" for v in _THREAD_VARS):
        return
    env = dict(os.environ)
    for v in _THREAD_VARS:
        env[v] = "1"
    os.execve(sys.executable, [sys.executable, "-m", "bulletd.bench.runtime", *argv], env)


def main(args=None) -> int:
    from bulletd.runtime.model import _native_kernels
    from bulletd.format.synth import REFERENCE, SMALL
    if isinstance(args, list) and args[:1] == ["--loop-probe"]:
        loop_probe(args[1])
        return 0
    if isinstance(args, list) and args[:1] == ["--rss-probe"]:
        print(json.dumps(rss_probe(args[1])))
        return 0
    if isinstance(args, list) or args is None:
        p = argparse.ArgumentParser(prog="bullet bench", description=__doc__.splitlines()[0])
        add_arguments(p)
        args = p.parse_args(args)
    argv = ["--shapes", args.shapes, "--passes", str(args.passes), "--numpy-tokens", str(args.numpy_tokens),
            "--numpy-f32-tokens", str(args.numpy_f32_tokens)]
    argv += ["--quick"] * bool(args.quick) + ["--json"] * bool(args.json)
    _pin_threads_or_reexec(argv)
    kernels, why = _native_kernels()
    if kernels is None:
        print(f"bullet bench: error: {why}; the benchmark compares the native backend with NumPy",
              file=sys.stderr)
        return 1
    shapes = {"small": SMALL, "reference": REFERENCE, "grammar": None}
    wanted = [s.strip().lower() for s in args.shapes.split(",") if s.strip()]
    for s in wanted:
        if s not in shapes:
            print(f"bullet bench: error: unknown shape {s!r}; expected small, reference, grammar", file=sys.stderr)
            return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="bullet-bench-") as d:
        for s in wanted:
            if s == "grammar":
                results.append(bench_grammar(Path(d), args))
            else:
                results.append(bench_shape(s, dict(shapes[s]), Path(d), args))
    if args.json:
        print(json.dumps({"results": results, "targets": TARGETS}, indent=2))
    else:
        la = os.getloadavg()
        print(f"bullet bench (figures from this machine, now: load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} "
              f"on {os.cpu_count()} CPUs; other load shows up here)")
        print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
