"""`bullet eval`'s work: load a model directory as bulletd does, route each line as bulletd does,
run each child through the code bulletd runs, and count.

    from bulletd.evaluate.core import Models, evaluate
    models = Models("child_models", trust="child_models/release.pub.pem")
    report = evaluate(models, "calc.jsonl")            # the dict `bullet eval --json` prints
    report = run_eval("calc.jsonl", "child_models", trust=..., child="calc")   # the same, opened and closed

Loading: children are `NAME.bullet` in the directory (hidden files and the mother skipped, as
the registry scans), the mother is `mother.bullet` there. With a trust store every file must
carry a signature by one of its keys (bulletd's `open_child` / `verify_trust`, the
`trust.allow_unsigned: false` policy); without one, signatures are not checked and each body's
checksum is verified instead.

Routing: bulletd's Router with the mother and the header examples of every child, threshold,
fallback and centroid threshold as in bulletd's `router:` config. With `child` a line goes
straight to that child.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bulletd.errors import BulletError, RequestError
from bulletd.evaluate.sets import EvalError, Item, load_set, load_texts
from bulletd.router import Router, load_mother

SUFFIX = ".bullet"


class Models:
    """The children and the mother of one directory, loaded on first use, closed by close()."""

    def __init__(self, directory, *, trust: str | None = None, mother: str | None = None, fallback: str = "",
                 threshold: float = -1.0, centroid_threshold: float = 0.35):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise EvalError(f"--models {directory}: not a directory")
        self.trust = None
        if trust is not None:
            from bulletd.daemon.registry import load_trust_store
            self.trust = load_trust_store((str(trust),))
            if self.trust is None:
                raise EvalError(f"--trust {trust}: no such key file or directory")
        self.fallback, self.threshold, self.centroid_threshold = fallback, threshold, centroid_threshold
        mp = Path(mother) if mother else self.dir / "mother.bullet"
        self.mother_path = str(mp) if mp.exists() else None
        if mother and self.mother_path is None:
            raise EvalError(f"--mother {mother}: no such file")
        self.paths = self._scan()
        self.loaded: dict[str, Any] = {}          # name -> (model, header, signer, closer)
        self.router: Router | None = None
        self.mother = None

    def _scan(self) -> dict[str, str]:
        from bulletd.names import check_name
        mother = os.path.realpath(self.mother_path) if self.mother_path else None
        found = {}
        for e in sorted(os.scandir(self.dir), key=lambda e: e.name):
            if e.name.startswith(".") or not e.name.endswith(SUFFIX) or not e.is_file():
                continue
            if mother and os.path.realpath(e.path) == mother:
                continue
            name = e.name[:-len(SUFFIX)]
            try:
                check_name(name)
            except RequestError:
                continue
            found[name] = e.path
        return found

    @property
    def signatures(self) -> str:
        return "checked" if self.trust is not None else "not checked, no --trust"

    def child(self, name: str):
        """(model, header, signer) of child `name`, loading it the first time."""
        got = self.loaded.get(name)
        if got is None:
            path = self.paths.get(name)
            if path is None:
                raise EvalError(f"no child named {name!r} in {self.dir} "
                                f"(children: {', '.join(sorted(self.paths)) or 'none'})")
            got = self.loaded[name] = _open(path, self.trust)
        return got[0], got[1], got[2]

    def load_router(self) -> Router:
        """The Router bulletd would build: the mother (checked like the children) and the header
        examples of every child (all children are loaded for that, as a preloading daemon does)."""
        if self.router is not None:
            return self.router
        mother = None
        if self.mother_path:
            if self.trust is not None:
                from bulletd.daemon.registry import verify_trust
                try:
                    verify_trust(self.mother_path, trust=self.trust, allow_unsigned=False)
                except RequestError as exc:
                    raise EvalError(f"mother: {exc.message}") from None
            mother = load_mother(self.mother_path)
        r = Router(mother)
        for name in self.paths:
            _, header, _ = self.child(name)
            r.set_examples(name, header.get("examples"))
        self.mother, self.router = mother, r
        return r

    def route(self, text: str, child: str | None = None, hints: dict | None = None, claims: dict | None = None):
        """bulletd's routing decision for `text` (child None = no_route); hints, claims: Router.decide's."""
        if child is not None:
            if child not in self.paths:
                raise EvalError(f"--child {child}: no such child in {self.dir} "
                                f"(children: {', '.join(sorted(self.paths)) or 'none'})")
            return Router(None).decide(text, set(self.paths), child=child)
        r = self.load_router()
        return r.decide(text, set(self.paths), threshold=self.threshold, fallback=self.fallback,
                        centroid_threshold=self.centroid_threshold, hints=hints,
                                         claims=claims)

    def close(self) -> None:
        for got in self.loaded.values():
            got[3]()
        self.loaded.clear()


def _open(path: str, trust) -> tuple:
    """bulletd's child loading: signature (when a trust store is given) before anything else."""
    from bulletd.daemon.registry import open_child
    if trust is not None:
        try:
            return open_child(path, trust=trust, allow_unsigned=False)
        except RequestError as exc:
            raise EvalError(f"{exc.message} [{exc.code}]") from None
    from bulletd.format import BulletFile
    from bulletd.runtime import load_model
    bf = BulletFile.open(path)
    try:
        if bf.kind != "lm":
            raise EvalError(f"{path}: expected a child (kind 'lm'), found kind {bf.kind!r}")
        bf.verify_body()
        model = load_model(bf)
    except BaseException:
        bf.close()
        raise

    def closer():
        model.close()
        bf.close()
    return model, bf.header, None, closer


# ---------------------------------------------------------------------------------------- scoring
def _canon(v: Any) -> Any:
    """Numbers compare by value (40 == 40.0), maps by key."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return int(v) if float(v).is_integer() else float(v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _canon(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_canon(x) for x in v)
    return repr(v)


def call_set(calls: list[dict]) -> frozenset:
    """A set of service calls as a comparable value; absent and empty data are the same."""
    return frozenset((c.get("service"), c.get("entity_id"), _canon(c.get("data") or {})) for c in calls)


def calc_right(got: Any, answer: float) -> bool:
    if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isfinite(got):
        return False
    return abs(got - answer) <= 1e-9 * max(1.0, abs(answer))


def route_hints(home) -> dict:
    """The router's hints as bulletd's defaults set them (tools.home.route_names: home,
    tools.calc.route_sums: calc): for a line the mother is unsure of, the home child when it names
    something of `home` (if given), then the calc child when it reads as arithmetic."""
    from bulletd.agents.calcinput import is_arithmetic
    hints = {"home": home.names_something} if home is not None else {}
    hints["calc"] = is_arithmetic
    return hints


def route_claims(home) -> dict:
    """The router's claims as bulletd's defaults set them (tools.home.route_commands: true): the
    home child takes a line that commands something of `home` (if given), whatever the mother's
    choice."""
    return {"home": home.commands_something} if home is not None else {}


def _agent_result(models: Models, item: Item, child: str | None, home) -> dict:
    """Route and run one line through the agent path; the `got` record of the line."""
    d = models.route(item.text, child, hints=route_hints(home), claims=route_claims(home))
    if d.child is None:
        return {"child": None, "error": "no_route"}
    model, header, _ = models.child(d.child)
    if not isinstance(header.get("agent"), dict):
        return {"child": d.child, "error": "not_an_agent", "message": f"{d.child} is not an agent child"}
    from bulletd.agents.agent import AgentContext, run_agent
    ctx = AgentContext(home=home, act=False)
    try:
        res = run_agent(model, item.text, None, ctx, child_header=header)   # a request's defaults
    except BulletError as exc:          # RequestError codes; ModelError and the like as a miss too
        from bulletd.daemon.protocol import request_code
        code = request_code(exc)            # what bulletd answers for the request
        return {"child": d.child, "error": code or getattr(exc, "code", None) or type(exc).__name__,
                "message": getattr(exc, "message", None) or str(exc)}
    out = {"child": d.child, "call": res.get("call"), "result": res.get("result"),
           "actions": res.get("actions") or []}
    if res.get("call") is None:
        out["text"] = res.get("text")
    return out


def _counts(items: list[Item], right: list[bool]) -> tuple[int, dict]:
    by: dict[str, dict] = {}
    for it, ok in zip(items, right):
        c = by.setdefault(it.category or "-", {"n": 0, "correct": 0})
        c["n"] += 1
        c["correct"] += int(ok)
    for c in by.values():
        c["accuracy"] = c["correct"] / c["n"]
    return sum(right), dict(sorted(by.items()))


def _miss(it: Item, got: Any) -> dict:
    m = {"line": it.line, "text": it.text, "expected": it.expected, "got": got}
    if it.category:
        m["category"] = it.category
    return m


def _accuracy_report(kind: str, items: list[Item], right: list[bool], gots: list[Any]) -> dict:
    correct, by = _counts(items, right)
    return {"kind": kind, "n": len(items), "correct": correct, "accuracy": correct / len(items),
            "by_category": by, "misses": [_miss(it, g) for it, ok, g in zip(items, right, gots) if not ok]}


def eval_calc(models: Models, items: list[Item], child: str | None) -> dict:
    right, gots = [], []
    for it in items:
        got = _agent_result(models, it, child, None)
        value = (got.get("result") or {}).get("value") if isinstance(got.get("result"), dict) else None
        right.append(calc_right(value, it.expected))
        gots.append(got)
    return _accuracy_report("calc", items, right, gots)


def eval_home(models: Models, items: list[Item], child: str | None, home, baseline: str | None = None,
              home_path: str | None = None) -> dict:
    right, gots = [], []
    for it in items:
        got = _agent_result(models, it, child, home)
        right.append("error" not in got and call_set(got["actions"]) == call_set(it.expected))
        gots.append(got)
    rep = _accuracy_report("home", items, right, gots)
    if baseline == "hassil":
        from bulletd.evaluate.hassil_baseline import HassilBaseline
        hb = HassilBaseline(home, home_path)
        b_right, b_gots = [], []
        for it in items:
            got = hb.run(it.text)
            ok = "error" not in got and call_set(got["actions"]) == call_set(it.expected)
            b_right.append(ok)
            b_gots.append(got)
        b = _accuracy_report("home", items, b_right, b_gots)
        rep["baseline"] = {"name": "hassil", "version": hb.version, "correct": b["correct"],
                           "accuracy": b["accuracy"], "by_category": b["by_category"], "misses": b["misses"]}
    return rep


def eval_routing(models: Models, items: list[Item], home=None) -> dict:
    """home: route as bulletd with that home does (route_hints, route_claims)."""
    right, gots = [], []
    hints, claims = route_hints(home), route_claims(home)
    for it in items:
        d = models.route(it.text, hints=hints, claims=claims)
        if it.expected is None:
            ok = d.child is None or d.reason == "fallback"
        else:
            ok = d.child == it.expected
        right.append(ok)
        gots.append({"child": d.child, "reason": d.reason, "confidence": round(float(d.confidence), 4)})
    return _accuracy_report("routing", items, right, gots)


def line_bits(model, text: str) -> tuple[float, int]:
    """Bits the child needs for `text` as a document of its training stream: <s> text <s> (the
    trainer's separator ends the line) -> (bits, tokens scored). Lines longer than the context
    are scored in windows that overlap by half a context, each token once."""
    tok = model.tokenizer
    bos = tok.bos_id if tok.bos_id is not None else tok.eos_id
    ids = tok.encode(text, bos=True) + [bos]
    ctx = model.context
    stride = max(1, ctx // 2)
    bits, done, start = 0.0, 1, 0          # done: index of the next target to score
    session = model.new_session()
    while done < len(ids):
        window = ids[start:start + ctx]
        session.reset()
        for pos, t in enumerate(window[:-1]):
            logits = session.forward(t, pos).astype(np.float64)
            target = start + pos + 1
            if target < done:
                continue
            m = logits.max()
            lse = m + math.log(float(np.exp(logits - m).sum()))
            bits += (lse - logits[ids[target]]) / math.log(2)
            done = target + 1
        start += stride
    return bits, len(ids) - 1


def eval_text(models: Models, items: list[Item], child: str | None, train: str | None, order: int = 5) -> dict:
    from bulletd.evaluate.baselines import text_baselines
    bits = nbytes = tokens = 0
    by: dict[str, dict] = {}
    children: dict[str, int] = {}
    unrouted = []
    for it in items:
        d = models.route(it.text, child)
        if d.child is None:
            unrouted.append(_miss(it, {"child": None, "error": "no_route"}))
            continue
        model, _, _ = models.child(d.child)
        b, n = line_bits(model, it.text)
        nb = len(it.text.encode("utf-8")) + 1          # + the line end
        bits, nbytes, tokens = bits + b, nbytes + nb, tokens + n
        children[d.child] = children.get(d.child, 0) + 1
        c = by.setdefault(it.category or "-", {"n": 0, "bits": 0.0, "bytes": 0})
        c["n"] += 1
        c["bits"] += b
        c["bytes"] += nb
    for c in by.values():
        c["bpb"] = c.pop("bits") / c["bytes"]
    rep = {"kind": "text", "n": len(items), "correct": None, "accuracy": None, "by_category": dict(sorted(by.items())),
           "misses": unrouted, "children": children, "bytes": nbytes, "tokens": tokens,
           "bpb": bits / nbytes if nbytes else None}
    if train:
        scored = [it.text for it in items if all(m["line"] != it.line for m in unrouted)]
        rep["baselines"] = text_baselines(load_texts(train), scored, order=order)
        best = min((v for k, v in rep["baselines"].items() if k in (f"kn{order}", "xz", "ppmd8") and v is not None))
        rep["best_baseline_bpb"] = best
        if rep["bpb"] is not None:
            rep["vs_best_baseline"] = rep["bpb"] / best - 1.0
    else:
        rep["baselines"] = None
    return rep


def distinct_share(seqs: list[list], n: int = 4) -> tuple[float | None, float | None]:
    """(pooled, mean per sequence) share of distinct n-grams: unique / total n-grams."""
    pooled: list[tuple] = []
    shares = []
    for s in seqs:
        grams = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
        if grams:
            shares.append(len(set(grams)) / len(grams))
            pooled += grams
    return (len(set(pooled)) / len(pooled) if pooled else None,
            sum(shares) / len(shares) if shares else None)


def greedy_ids(model, prompt: str, n: int) -> list[int]:
    """n greedy tokens (argmax, no penalty) after `prompt`, through end-of-document tokens as the
    trainer's stream has them. When the context is full, the last half context is read again and
    generation goes on from there (a context shift), so any n can be asked of any child."""
    ids = model.tokenizer.encode(prompt, bos=True)
    ctx = model.context
    if len(ids) >= ctx:
        raise RequestError("too_long", f"the prompt is {len(ids)} tokens; the context is {ctx}")
    session = model.new_session()
    logits = session.prefill(ids, 0)
    seq, out, pos = list(ids), [], len(ids)
    for _ in range(n):
        t = int(np.argmax(logits))
        out.append(t)
        seq.append(t)
        if len(out) == n:
            break
        if pos >= ctx:
            keep = seq[-max(1, ctx // 2):]
            session.reset()
            logits, pos = session.prefill(keep, 0), len(keep)
        else:
            logits, pos = session.forward(t, pos), pos + 1
    return out


def eval_distinct(models: Models, items: list[Item], child: str | None, tokens: int = 200) -> dict:
    if tokens < 4:
        raise EvalError(f"--tokens {tokens}: at least 4 are needed for a 4-gram")
    outs, seqs, words = [], [], []
    for it in items:
        d = models.route(it.text, child)
        if d.child is None:
            outs.append({"line": it.line, "text": it.text, "child": None, "error": "no_route"})
            continue
        model, _, _ = models.child(d.child)
        try:
            ids = greedy_ids(model, it.text, tokens)
        except RequestError as exc:
            outs.append({"line": it.line, "text": it.text, "child": d.child, "error": exc.code})
            continue
        text = model.tokenizer.decode(ids)
        seqs.append(ids)
        words.append(text.split())
        outs.append({"line": it.line, "text": it.text, "child": d.child, "output": text, "tokens": len(ids),
                     "distinct4": distinct_share([ids])[0]})
    pooled, mean = distinct_share(seqs)
    wpooled, _ = distinct_share(words)
    return {"kind": "distinct", "n": len(items), "correct": None, "accuracy": None, "by_category": {},
            "misses": [o for o in outs if "error" in o], "max_tokens": tokens,
            "tokens": sum(len(s) for s in seqs), "distinct4": pooled, "distinct4_mean": mean,
            "distinct4_words": wpooled, "outputs": outs}


def _load_home(home_path):
    from bulletd.agents.home import HomeConfig
    try:
        return HomeConfig.load(home_path)
    except BulletError as exc:
        raise EvalError(f"--home {home_path}: {exc}") from None


def evaluate(models: Models, set_path, *, child: str | None = None, home_path: str | None = None,
             baseline: str | None = None, train: str | None = None, distinct: bool = False,
             tokens: int = 200, order: int = 5) -> dict:
    """Evaluate one set; the report dict (`bullet eval --json`)."""
    t0 = time.monotonic()
    kind, items = load_set(set_path, distinct=distinct)
    if baseline is not None and (baseline != "hassil" or kind != "home"):
        raise EvalError(f"--baseline {baseline}: only 'hassil' on a home set is known (this set is {kind})")
    if train is not None and kind != "text":
        raise EvalError(f"--train is for text sets (this set is {kind})")
    if kind == "routing" and child is not None:
        raise EvalError("a routing set measures the mother's choice; --child would bypass it")
    if child is not None:
        models.child(child)       # fail early (unknown name, bad signature)
    if kind == "calc":
        rep = eval_calc(models, items, child)
    elif kind == "home":
        if home_path is None:
            raise EvalError("a home set needs --home FILE (the home the calls are resolved in)")
        rep = eval_home(models, items, child, _load_home(home_path), baseline, home_path)
    elif kind == "routing":
        rep = eval_routing(models, items, _load_home(home_path) if home_path is not None else None)
    elif kind == "text":
        rep = eval_text(models, items, child, train, order)
    else:
        rep = eval_distinct(models, items, child, tokens)
    rep["set"] = str(set_path)
    rep["models"] = str(models.dir)
    rep["child"] = child
    rep["signatures"] = models.signatures
    rep["elapsed_s"] = round(time.monotonic() - t0, 3)
    return rep


def run_eval(set_path, models_dir, *, trust: str | None = None, mother: str | None = None, fallback: str = "",
             threshold: float = -1.0, centroid_threshold: float = 0.35, **kw) -> dict:
    """`bullet eval` as a function: open the directory, evaluate, close. Keywords as evaluate()."""
    models = Models(models_dir, trust=trust, mother=mother, fallback=fallback, threshold=threshold,
                    centroid_threshold=centroid_threshold)
    try:
        return evaluate(models, set_path, **kw)
    finally:
        models.close()
