"""Score an agent child on a generated set through the runtime (greedy decoding, no grammar).

This is the trainer's own check of a freshly exported child: the model reads
`template.format(text=utterance)`, its output up to the end of the first JSON object is the call.
  * home lines: right when the call resolves (trainer.agentdata.home.resolve, exact names) to
    exactly the line's `expect`;
  * calc lines: right when the expression's exact value (numbers as typed read back by
    bulletd.agents.numerals.plain, as bulletd does) is within 1e-9 * max(1, |answer|);
  * routing lines ({"text", "child"}): the daemon's Router with the mother (MODEL) and the four
    children installed; a null child is right when nothing is chosen. With --home, bulletd's
    routing hints for that home are on (as the daemon routes with tools.home.file); with --route
    CHILD, an agent child's set is routed and a line is right when it reaches CHILD.
With --copy, a "name" or "area" string may only grow into a substring of the utterance that starts
at the start of a word and ends at the end of one (the home schema's "x-copy": "words" rule, the
part of the grammar that matters most here; --copy chars: any substring; --copy spans: home lines
copy only the spans of the utterance that name an entity or area of --home, as bulletd decodes home
calls, and calc lines run through bulletd's calc path (run_agent) with the calc tool's own schema,
whatever the child's header holds: operator typos spelled right, the expression copying only whole
numbers of the utterance ("x-copy": "spans"); nothing else is constrained. `bullet eval` measures the
same sets through bulletd's own path (the header's grammar, tools).

    python -m trainer.agentdata.measure child_models/home.bullet home_test.jsonl --home examples/home.yaml
    python -m trainer.agentdata.measure child_models/mother.bullet home_test.jsonl --route home --home examples/home.yaml
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict

import numpy as np

from trainer.agentdata import TEMPLATE


def first_object(text: str):
    """The first JSON object in text, or None."""
    i = text.find("{")
    if i < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[i:])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def judge(line: dict, call, home=None) -> bool:
    if not isinstance(call, dict):
        return False
    if "expect" in line:
        from trainer.agentdata.home import resolve

        try:
            return resolve(call, home) == sorted(line["expect"], key=lambda c: c["entity_id"])
        except (ValueError, KeyError, TypeError):
            return False
    if "answer" in line:
        from bulletd.agents.numerals import plain
        from bulletd.errors import RequestError
        from trainer.agentdata.calc import evaluate

        a = line["answer"]
        try:
            got = evaluate(plain(str(call.get("expression", ""))))
            return abs(float(got) - a) <= 1e-9 * max(1.0, abs(a))
        except (AssertionError, ZeroDivisionError, IndexError, ValueError, TypeError, OverflowError, RequestError):
            return False        # malformed, or a value far beyond a float (never the answer)
    return call == line.get("call")


_OPEN_COPY = re.compile(rb'"(name|area)":"([^"]*)$')


def copy_greedy(model, prompt: str, source: str, pieces: list[bytes], max_tokens: int = 128,
                words: bool = True, spans: dict | None = None) -> str:
    """Greedy decoding where a "name" or "area" string may only hold a substring of `source` (the
    x-copy rule of the home schema; with `words`, whole words; nothing else is constrained); with
    `spans` ({"name": [...], "area": [...]}, HomeConfig.copy_spans), a key it lists only one of its
    strings. Stops at the first complete JSON object."""
    from bulletd.runtime.grammar import word_span

    src = source.encode("utf-8")
    only = {k.encode(): [x.encode("utf-8") for x in v] for k, v in (spans or {}).items()}
    ids = model.encode_prompt(prompt)
    session = model.new_session()
    logits = session.prefill(ids, 0)
    out, pos = b"", len(ids)
    for _ in range(max_tokens):
        m = _OPEN_COPY.search(out)
        chosen = None
        for t in np.argsort(-np.asarray(logits, dtype=np.float64)):
            t = int(t)
            if t in model.stop_ids:
                if m is None:
                    chosen = t
                    break
                continue
            if m is not None:
                head, quote, _ = pieces[t].partition(b'"')
                value = m.group(2) + head
                allowed = only.get(m.group(1))
                if allowed is not None:
                    if not any((x == value) if quote else x.startswith(value) for x in allowed):
                        continue
                elif value not in src or (quote and not value):
                    continue
                elif words and value and not word_span(src, value, bool(quote)):
                    continue
            chosen = t
            break
        if chosen is None or chosen in model.stop_ids or pos >= model.context:
            break
        out += pieces[chosen]
        if first_object(out.decode("utf-8", "ignore")) is not None:
            break
        logits = session.forward(chosen, pos)
        pos += 1
    return out.decode("utf-8", "replace")


def _calc_spans(model, line: dict, template: str, max_tokens: int) -> str:
    """The output of bulletd's calc path for the line (the calc tool's schema, spans), or the error."""
    from bulletd.agents.agent import AgentContext, run_agent
    from bulletd.agents.tools import TOOLS
    from bulletd.errors import RequestError

    header = {"agent": {"tool": "calc", "schema": TOOLS["calc"].schema, "template": template}}
    try:
        out = run_agent(model, line["text"], {"max_tokens": max_tokens}, AgentContext(), child_header=header)
    except RequestError as exc:
        return f"{exc.code}: {exc}"
    return out["text"]


def measure(model_path, lines, home=None, max_tokens: int = 128, copy: bool | str = False,
            home_config=None) -> dict:
    """copy: decode with the x-copy rule for names and areas (copy_greedy) instead of plain greedy;
    "chars" for any substring, "spans" for the spans of the utterance that name something of
    home_config (bulletd's HomeConfig; whole words where it has none) and, for calc lines, bulletd's
    calc path with the calc tool's schema (_calc_spans); otherwise (True, "words") whole words."""
    lines = list(lines)
    if copy == "spans" and home_config is None and any("answer" not in line for line in lines):
        raise ValueError("copy='spans' needs the home (home_config)")
    from bulletd.runtime import GenerationSettings, load_model

    by_cat = defaultdict(lambda: [0, 0])
    misses, correct = [], 0
    with load_model(str(model_path)) as model:
        template = (model.header.get("agent") or {}).get("template", TEMPLATE)
        settings = GenerationSettings(max_tokens=max_tokens, temperature=0, repetition_penalty=1.0)
        pieces = [model.tokenizer.piece_bytes(i) for i in range(model.arch["vocab_size"])] if copy else None
        max_tokens = min(max_tokens, model.arch["max_seq_len"])
        for line in lines:
            prompt = template.format(text=line["text"])
            if copy == "spans" and "answer" in line:
                text = _calc_spans(model, line, template, max_tokens)
            elif copy:
                spans = home_config.copy_spans(line["text"]) if copy == "spans" else None
                text = copy_greedy(model, prompt, line["text"], pieces, max_tokens, words=copy != "chars", spans=spans)
            else:
                text = "".join(model.generate(prompt, settings))
            call = first_object(text)
            ok = judge(line, call, home)
            cat = line.get("category", "all")
            by_cat[cat][1] += 1
            if ok:
                by_cat[cat][0] += 1
                correct += 1
            else:
                misses.append({"text": line["text"], "want": line.get("call"), "got": text})
    n = sum(t for _, t in by_cat.values())
    return {"n": n, "correct": correct, "accuracy": correct / max(1, n),
            "by_category": {k: {"correct": c, "n": t, "accuracy": c / t} for k, (c, t) in sorted(by_cat.items())},
            "misses": misses}


def measure_routing(mother_path, lines, children=("home", "calc", "marathi", "fortunes"), fallback="",
                    hints=None, claims=None) -> dict:
    """Routing lines {"text", "child"}: the daemon's Router with the mother and these children
    installed (and bulletd's routing hints and claims, bulletd.evaluate.core.route_hints and
    route_claims, if given); a null child is right when the decision is no child (or the fallback)."""
    from bulletd.router import Router, load_mother

    r = Router(load_mother(str(mother_path)))
    by_cat = defaultdict(lambda: [0, 0])
    misses, correct, got_all = [], 0, []
    for line in lines:
        d = r.decide(line["text"], set(children), fallback=fallback, hints=hints, claims=claims)
        got = None if d.reason in ("none", "fallback") else d.child
        got_all.append(got)
        ok = got == line["child"]
        cat = line.get("category", "all")
        by_cat[cat][1] += 1
        by_cat[cat][0] += ok
        correct += ok
        if not ok:
            misses.append({"text": line["text"], "want": line["child"], "got": got, "confidence": round(d.confidence, 3)})
    n = len(lines)
    kids = [(ln["child"], g) for ln, g in zip(lines, got_all) if ln["child"] is not None]
    none = [g for ln, g in zip(lines, got_all) if ln["child"] is None]
    return {"n": n, "correct": correct, "accuracy": correct / max(1, n),
            "by_category": {k: {"correct": c, "n": t, "accuracy": c / t} for k, (c, t) in sorted(by_cat.items())},
            "children": sum(w == g for w, g in kids) / max(1, len(kids)),
            "rejected": sum(g is None for g in none) / max(1, len(none)) if none else None,
            "wrong_child": sum(g is not None and g != ln["child"] for ln, g in zip(lines, got_all)) / max(1, n),
            "got": got_all, "misses": misses}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.agentdata.measure", description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("set")
    ap.add_argument("--home", help="home YAML the set's `expect` refers to")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--misses", type=int, default=10, help="misses to print")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--route", metavar="CHILD", help="MODEL is the mother: route the set's lines (an agent "
                    "child's set) and count those that reach CHILD; with --home, with bulletd's hints")
    ap.add_argument("--copy", nargs="?", const="words", choices=["words", "chars", "spans"],
                    help="names and areas may only copy whole words of the utterance (x-copy; chars: any "
                         "substring; spans: spans naming an entity or area of --home, as bulletd decodes; "
                         "calc lines through bulletd's calc path, whole numbers only)")
    args = ap.parse_args(argv)
    from trainer.agentdata.home import Home

    home = Home.load(args.home) if args.home else None
    with open(args.set, encoding="utf-8") as fh:
        lines = [json.loads(s) for s in fh if s.strip()]
    if args.limit:
        lines = lines[:args.limit]
    if args.copy == "spans" and not args.home:
        ap.error("--copy spans needs --home")
    cfg = None
    if args.copy == "spans":
        from bulletd.agents.home import HomeConfig
        cfg = HomeConfig.load(args.home)
    if lines and ("child" in lines[0] or args.route):
        hints = claims = None
        if args.home:       # route as bulletd does with this home: its hints and claims on
            from bulletd.agents.home import HomeConfig
            from bulletd.evaluate.core import route_claims, route_hints
            cfg = HomeConfig.load(args.home)
            hints, claims = route_hints(cfg), route_claims(cfg)
        if args.route:      # an agent child's set: the share of its lines the mother routes to it
            lines = [{**ln, "child": args.route} for ln in lines]
        r = measure_routing(args.model, lines, hints=hints, claims=claims)
    else:
        r = measure(args.model, lines, home, copy=args.copy or False, home_config=cfg)
    if args.json:
        print(json.dumps(r, ensure_ascii=False))
        return 0
    print(f"{args.set}: {r['correct']}/{r['n']} = {100 * r['accuracy']:.1f}%")
    for k, v in r["by_category"].items():
        print(f"  {k:12s} {v['correct']:5d}/{v['n']:<5d} {100 * v['accuracy']:.1f}%")
    for m in r["misses"][:args.misses]:
        print("  miss:", json.dumps(m, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
