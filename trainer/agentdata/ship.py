"""Export, sign, measure and card one agent child (home, calc) or the mother from a finished run.

    python -m trainer.agentdata.ship home --run RUNS/home --data RUNS/data --home HOME.yaml \\
        --key RELEASE.key --out child_models
    python -m trainer.agentdata.ship mother --labelled RUNS/data/routing_train.jsonl --data RUNS/data \\
        --key RELEASE.key --out child_models

scripts/train_child.sh NAME runs the whole chain (data, training, this). The held-out figures come
from trainer.agentdata.measure: greedy decoding through the runtime without a grammar, scored with
the generator's own resolver (home) and exact arithmetic (calc); the card says so.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path

from trainer.agentdata.measure import measure, measure_routing

# utterances whose temperature-0 calls are recorded in child_models/agents_golden.json and replayed
# by tests/test_agent_children.py (the README's quickstart uses the first of each)
GOLDEN = {
    "home": ["बेडरूममधला दिवा बंद कर", "turn off the kitchen light", "स्वयंपाकघरातील दिवा बंद कर", "set the floor lamp to 40%",
             "बेडरूममधला पंखा चालू कर", "kitchen चा light बंद कर", "lock the front door"],
    "calc": ["what is 17 times 23", "६ गुणिले ७", "what is 15 percent of 80", "सतरा अधिक पाच",
             "average of 4, 8 and 15", "twelve squared", "what is 2253 minus 47",
             "fifty nine plus four hundred thirteen", "दोन हजार पाच भागिले पाच"],
}

# what a card says about the child's calls, after its first paragraph
NOTES = {
    "calc": """

The call copies the utterance's numbers as typed (ASCII or Devanagari digits, English or Marathi
number words, typos included) between ASCII operators, one space around every item:
`{"expression":" fifty nine + ४ "}`. bulletd reads the numbers back
(`bulletd.agents.numerals.plain`: `59+4`) before the calc tool runs, and the reply's call is that
plain expression. Around the child, bulletd spells misspelled operator words right ("tiems" ->
"times") and the schema's `"x-copy": "spans"` rule holds the expression to the utterance
(`bulletd.agents.calcinput.request_spans`): an arithmetic expression of its whole numbers, each
used exactly once (a lone word read only through a typo, a lone "one" or "two" may go unused), the
constants its operator words ask for, each used, after the numbers (2 for a half, a double, a
square; 3 for a cube; 4 for a quarter; for an average the count of the numbers), and only the
operators its words ask for (all when it has none of those words; a percent word needs its `%`).
Those operator words include verbs of the test split's `-novel` templates ("product", "over",
"raised", "गुण"), so the `-novel` figures of bulletd's path measure that decoding more than the
child.""",
}

SETS = {
    "home": [("home_test.jsonl", "held-out phrasings on the example home (test split)"),
             ("home_test_random.jsonl", "held-out phrasings on random homes (test split)"),
             ("home_traindist.jsonl", "training-distribution phrasings on the example home (train split, other seed)")],
    "calc": [("calc_test.jsonl", "held-out phrasings (test split)"),
             ("calc_traindist.jsonl", "training-distribution phrasings (train split, other seed)")],
    "mother": [("routing_test.jsonl", "held-out routing set (test split)")],
}


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(s) for s in fh if s.strip()]


def _table(r: dict) -> str:
    rows = [f"| {k} | {v['correct']}/{v['n']} | {100 * v['accuracy']:.1f}% |" for k, v in r["by_category"].items()]
    return "\n".join(["| category | right | accuracy |", "| --- | --- | --- |", *rows,
                      f"| **all** | {r['correct']}/{r['n']} | **{100 * r['accuracy']:.1f}%** |"])


def _misses(r: dict, k: int = 8) -> str:
    return "\n".join("    " + json.dumps(m, ensure_ascii=False) for m in r["misses"][:k]) or "    (none)"


def decode_speed(path, prompts, max_tokens: int = 48) -> dict:
    """Greedy decode tokens per second of the exported file through the runtime, on this machine."""
    from bulletd.runtime import GenerationSettings, load_model

    n_tok, t = 0, 0.0
    with load_model(str(path)) as m:
        s = GenerationSettings(max_tokens=max_tokens, temperature=0, repetition_penalty=1.0)
        template = (m.header.get("agent") or {}).get("template", "{text}")
        for p in prompts:
            t0 = time.perf_counter()
            g = m.generate(template.format(text=p), s)
            for _ in g:
                pass
            t += time.perf_counter() - t0
            n_tok += len(g.tokens)
        backend = m.backend
    return {"tok_s": n_tok / max(t, 1e-9), "tokens": n_tok, "backend": backend}


def _wall_minutes(run: Path) -> float | None:
    """Minutes the run trained (trainer.ship.log_minutes: pauses of a stopped run left out)."""
    from trainer.ship import log_minutes

    log = run / "train.log"
    if not log.is_file():
        return None
    return log_minutes([x for x in log.read_text(encoding="utf-8").splitlines() if x[:4].isdigit()])[0]


def _train_tok_s(run: Path) -> float | None:
    p = run / "metrics.jsonl"
    if not p.is_file():
        return None
    vals = [json.loads(s).get("tok_s", 0) for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
    vals = [v for v in vals if v]
    return statistics.median(vals) if vals else None


def ship_child(name: str, run, data_dir, out, key=None, home_path=None) -> dict:
    from trainer import checkpoint as ckpt_mod
    from trainer.agentdata.home import Home
    from trainer.export import export

    run, data_dir, out = Path(run), Path(data_dir), Path(out)
    ck = ckpt_mod.load(run)
    path = out / f"{name}.bullet"
    summary = export(run, path, key=key, name=name)
    if (run / "loss.png").is_file():
        shutil.copy(run / "loss.png", out / f"{name}-loss.png")
    home = Home.load(home_path) if home_path else None
    cfg = None
    results = []
    runs = [(f, w, False) for f, w in SETS[name]]
    if name == "home" and home_path:   # names and areas as bulletd copies them: spans naming the home
        from bulletd.agents.home import HomeConfig
        cfg = HomeConfig.load(home_path)
        runs.insert(1, (SETS[name][0][0], SETS[name][0][1] + ", names and areas copy spans that name "
                        "something of the home (--copy spans)", "spans"))
    if name == "calc":   # bulletd's calc decoding: operator typos fixed, whole numbers only
        runs.insert(0, (SETS[name][0][0], SETS[name][0][1] + ", bulletd's calc decoding (--copy spans)", "spans"))
        runs.insert(2, (SETS[name][1][0], SETS[name][1][1] + ", bulletd's calc decoding (--copy spans)", "spans"))
    for fname, what, copy in runs:
        p = data_dir / fname
        if p.is_file():
            t0 = time.monotonic()
            r = measure(path, _lines(p), home, copy=copy, home_config=cfg)
            results.append((fname, what, _sha(p), r, time.monotonic() - t0))
            flag = f" --copy {copy}" if isinstance(copy, str) else " --copy" if copy else ""
            print(f"{name}: {fname}{flag}: {r['correct']}/{r['n']} = {100 * r['accuracy']:.1f}%")
    served = served_eval(name, out, data_dir, home_path, key is not None)
    if name == "home" and (data_dir / RANDOM_HOME[0]).is_file() and (data_dir / RANDOM_HOME[1]).is_file():
        served = [served, served_eval(name, out, data_dir, data_dir / RANDOM_HOME[0], key is not None,
                                      RANDOM_HOME[1])]
    speed = decode_speed(path, summary.get("examples") or ["hello"])
    gold = golden_calls(path, GOLDEN[name])
    gpath = out / "agents_golden.json"
    allg = json.loads(gpath.read_text(encoding="utf-8")) if gpath.is_file() else {}
    allg[name] = gold
    gpath.write_text(json.dumps(allg, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    card = child_card(name, summary, ck, results, speed, run, gold, served)
    (out / f"{name}.md").write_text(card, encoding="utf-8")
    return {"summary": summary, "results": results, "speed": speed}


# a home no child has seen (bullet-train agentdata home --random-home 9) and test lines about it
RANDOM_HOME = ("random_home.yaml", "home_test_rhome.jsonl")


def served_eval(name: str, out: Path, data_dir: Path, home_path=None, signed: bool = False, fname=None):
    """`bullet eval` of the child's held-out set (SETS[name][0], or fname) straight to the child,
    through bulletd's path: the header's grammar, run_agent, the daemon's resolver; for home also
    Home Assistant's matcher (hassil) when it is installed. (set name, report, home file name), or
    None without the set."""
    import importlib.util

    from bulletd.evaluate.core import run_eval

    p = Path(data_dir) / (fname or SETS[name][0][0])
    if not p.is_file() or (name == "home" and not home_path):
        return None
    hassil = name == "home" and all(importlib.util.find_spec(m) for m in ("hassil", "home_assistant_intents"))
    r = run_eval(str(p), str(out), trust=str(out / "release.pub.pem") if signed else None, child=name,
                 home_path=str(home_path) if name == "home" else None, baseline="hassil" if hassil else None)
    print(f"{name}: bullet eval {p.name} --child {name}: {r['correct']}/{r['n']} = {100 * r['accuracy']:.1f}%")
    return p.name, r, Path(home_path).name if home_path else None


def golden_calls(path, utterances, max_tokens: int = 80) -> list[dict]:
    """Temperature-0 output (ids and text) of the child for each utterance, through the runtime."""
    from bulletd.runtime import GenerationSettings, load_model

    out = []
    with load_model(str(path)) as m:
        template = m.header["agent"]["template"]
        s = GenerationSettings(max_tokens=max_tokens, temperature=0.0, repetition_penalty=1.0, top_k=0, top_p=1.0)
        for u in utterances:
            g = m.generate(template.format(text=u), s)
            text = "".join(g)
            out.append({"text": u, "max_tokens": max_tokens, "ids": list(g.tokens), "output": text,
                        "finish_reason": g.finish_reason})
    return out


def _served_section(served) -> str:
    if isinstance(served, list):
        return "".join(_served_section(x) for x in served)
    if not served:
        return ""
    fname, r, home_name = served
    b = r.get("baseline")
    base = (f"\n\nHome Assistant's own matcher on the same lines (`--baseline hassil`, {b['version']}): "
            f"{b['correct']}/{r['n']} = {100 * b['accuracy']:.1f}%; by category: "
            + ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in b["by_category"].items()) + "." if b else "")
    misses = "\n".join("    " + json.dumps({"text": m["text"], "got": m["got"]}, ensure_ascii=False)
                       for m in r["misses"][:8]) or "    (none)"
    on = f" --home {home_name}" if home_name else ""
    narrowed = (" narrowed to the home per request (`HomeConfig.narrow`: names and areas copy spans of\n"
                "the utterance that name an entity or area, intents apply to what it names, numbers are\n"
                "ones it says)") if home_name else ""
    if r["child"] == "calc":
        narrowed = (" (operator typos fixed; the expression uses every number of the utterance once, the\n"
                    "constants and only the operators its words ask for)")
    return (f"### `bullet eval {fname} --child {r['child']}{on}`: bulletd's path\n\nThe grammar of the header's "
            f"schema{narrowed}, greedy, the call validated\n"
            f"and run by the tool (home: the daemon's resolver: exact names, Marathi case endings, fuzzy\n"
            f"matching), signatures {r['signatures']}.\n\n{_table(r)}{base}\n\n"
            f"First misses (text, what bulletd got):\n\n{misses}\n\n")


def child_card(name, summary, ck, results, speed, run: Path, gold=(), served=None) -> str:
    cfg = ck.state["config"]
    ev = ck.state.get("eval") or {}
    wall = _wall_minutes(run)
    tok_s = _train_tok_s(run)
    keys = ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_seq_len",
            "batch_size", "learning_rate", "min_learning_rate", "warmup_steps", "max_steps", "weight_decay",
            "seed", "loss_after", "agent_tool", "split_digits", "word_pieces")
    rows = "\n".join(f"| `{k}` | {json.dumps(cfg.get(k), ensure_ascii=False)} |" for k in keys)
    sets = "\n\n".join(f"### {what}\n\n`{fname}` (SHA-256 `{sha[:16]}`), measured in {sec:.0f} s\n\n{_table(r)}\n\n"
                       f"First misses (text, wanted call, model output):\n\n{_misses(r)}"
                       for fname, what, sha, r, sec in results)
    examples = "\n".join(f"- {e}" for e in summary.get("examples", []))
    chk = summary.get("exported_val_loss")
    gold_rows = "\n".join(f"    {g['text']}\n    => {g['output']}" for g in gold)
    return f"""# {name} — model card

An agent child of Bullet OS for the `{cfg.get('agent_tool')}` tool: it reads `{json.dumps(cfg.get('agent_template'))}`
filled with the user's utterance and writes the tool call as compact JSON (header key `agent`).
Trained from scratch with `bullet-train` (NumPy, CPU), exported to BQ4.{NOTES.get(name, "")}

| | |
| --- | --- |
| file | `{name}.bullet` ({summary['size'] / 1e6:.2f} MB){', signed: `' + name + '.bullet.sig`' if summary.get('signature') else ''} |
| data | generated by `bullet-train agentdata {name} --split train` ({Path(ck.state.get('data_path', '')).name}, SHA-256 `{ck.state.get('data_sha256')}`); every record its own row, loss on the call only |
| training | {ck.state['step']} steps of batch {cfg['batch_size']} rows, config `trainer/configs/{name}.yaml`{f', {wall:.0f} min wall clock' if wall else ''}{f', median {tok_s:.0f} tokens/s' if tok_s else ''} on the shared 2-core machine (other jobs running) |
| parameters | {ck.state.get('n_params'):,} |
| validation loss (call tokens, float32) | {ev.get('val_loss', float('nan')):.4f} nats/token{f'; exported BQ4 file through the runtime: {chk:.4f}' if chk else ''} |
| decode speed | {speed['tok_s']:.0f} tokens/s greedy, {speed['backend']} backend, one request at a time, this machine (shared) |

![training (blue) and validation (red) loss]({name}-loss.png)

## Held-out evaluation

Measured by `python -m trainer.agentdata.measure` through the runtime: greedy decoding **without**
the grammar (or, where marked, with only its rule for names and areas: a span of the utterance that
names an entity or area of the home, whole words where none does; for calc, "bulletd's calc
decoding": bulletd's calc path with the calc tool's schema, operator typos fixed and the expression
held to the utterance's numbers and operator words), the first JSON object of the
output is the call. Home calls are right when they
resolve (the generator's exact-name resolver; a Marathi case ending may be stripped) to exactly the
line's `expect` on the example home; calc calls when the expression's exact value (its numbers read
back by `bulletd.agents.numerals.plain`, as bulletd does) equals the answer. Categories ending in `-novel` use verbs that
the training data never has (a model trained from scratch cannot know them); they are reported
apart from the targets. `bullet eval` measures the same files through bulletd's path.

{_served_section(served)}{sets}

## Golden outputs (temperature 0, no grammar)

`child_models/agents_golden.json` holds these; `tests/test_agent_children.py` replays them:

{gold_rows}

## Config

| key | value |
| --- | --- |
{rows}

## Example utterances (header `examples`)

{examples}

## Reproduce

    scripts/train_child.sh {name}
"""


THRESHOLDS = tuple(round(0.3 + 0.05 * i, 2) for i in range(14)) + (0.97, 0.98, 0.99)   # 0.30 .. 0.95, 0.97 .. 0.99


def _decisions(mother_path, lines) -> list[tuple]:
    """(wanted child, chosen child at threshold 0, its confidence) of each line, by bulletd's Router."""
    from bulletd.router import Router, load_mother

    r = Router(load_mother(str(mother_path)))
    kids = {"home", "calc", "marathi", "fortunes"}
    out = []
    for ln in lines:
        d = r.decide(ln["text"], kids, threshold=0.0)
        out.append((ln["child"], d.child, d.confidence))
    return out


def threshold_sweep(decisions, thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold: accuracy on the lines of the four children, share of null lines rejected,
    share of all lines sent to a wrong child, and accuracy over all lines."""
    out = []
    for thr in thresholds:
        got = [(want, child if conf >= thr else None) for want, child, conf in decisions]
        kids = [(w, g) for w, g in got if w is not None]
        none = [g for w, g in got if w is None]
        out.append({"threshold": thr, "children": sum(w == g for w, g in kids) / max(1, len(kids)),
                    "rejected": sum(g is None for g in none) / max(1, len(none)),
                    "wrong_child": sum(g is not None and g != w for w, g in got) / max(1, len(got)),
                    "accuracy": sum(w == g for w, g in got) / max(1, len(got))})
    return out


def confusion(lines, decisions, threshold: float) -> dict:
    """Per source category: {chosen child or "none": lines} at the threshold."""
    out: dict = {}
    for ln, (_, child, conf) in zip(lines, decisions):
        got = child if child is not None and conf >= threshold else "none"
        row = out.setdefault(ln.get("category", "all"), {})
        row[got] = row.get(got, 0) + 1
    return dict(sorted(out.items()))


def _confusion_table(conf: dict) -> str:
    cols = ["home", "calc", "marathi", "fortunes", "none"]
    rows = [f"| {cat} | " + " | ".join(str(row.get(c, 0)) for c in cols) + f" | {sum(row.values())} |"
            for cat, row in conf.items()]
    return ("| source | → home | → calc | → marathi | → fortunes | no child | lines |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))


def _dev_misses(lines, decisions, threshold: float, per: int = 4) -> str:
    """The first `per` misses of each (source, routed to) pair, most frequent pair first."""
    groups: dict = {}
    for ln, (want, child, conf) in zip(lines, decisions):
        got = child if child is not None and conf >= threshold else None
        if got != want:
            groups.setdefault((ln.get("category", "all"), got or "no child"), []).append((ln["text"], conf))
    out = []
    for (cat, got), xs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        shown = "; ".join("`" + t.replace("`", "'") + f"` ({c:.2f})" for t, c in xs[:per])
        out.append(f"- {cat} → {got} ({len(xs)}): {shown}")
    return "\n".join(out) if out else "(none)"


def choose_threshold(sweep: list[dict]) -> float:
    """The threshold with the fewest misses over all lines (a child line right when routed to its
    child, a null line when rejected), a line sent to a wrong child counting as two: no child lets
    the fallback or the user step in, a wrong child answers confidently wrong. Of equal ones the
    highest (fewer confident wrong children)."""
    def score(x):
        return x["accuracy"] - x["wrong_child"]

    best = max(map(score, sweep))
    return max(x["threshold"] for x in sweep if score(x) >= best - 1e-12)


def _sweep_table(sweep, chosen) -> str:
    rows = [f"| {x['threshold']:.2f}{' (chosen)' if x['threshold'] == chosen else ''} | {100 * x['children']:.1f}% | "
            f"{100 * x['rejected']:.1f}% | {100 * x['wrong_child']:.1f}% | {100 * x['accuracy']:.1f}% |" for x in sweep]
    return ("| threshold | right child (child lines) | rejected (null lines) | wrong child (all lines) | all lines |\n"
            "| --- | --- | --- | --- | --- |\n" + "\n".join(rows))


MOTHER = {"features": "char1-4+word1-2", "feature_dim": 32768, "hidden": 96, "steps": 4000, "batch": 256,
          "weight_decay": 0.05, "dropout": 0.5, "label_weights": {"_none": 1.5}, "w1_dtype": "f16"}


# the agent children's held-out sets (scripts/train_child.sh mother writes them): the share of
# their lines that the mother, with bulletd's hints for the example home, routes to the child
AGENT_ROUTING = [("routing_home.jsonl", "home", "the home agent's held-out phrasings on the example home"),
                 ("routing_calc.jsonl", "calc", "the calc agent's held-out phrasings")]


def ship_mother(labelled, data_dir, out, key=None, feature_dim=MOTHER["feature_dim"], hidden=MOTHER["hidden"],
                steps=MOTHER["steps"], features=MOTHER["features"], batch=MOTHER["batch"],
                weight_decay=MOTHER["weight_decay"], dropout=MOTHER["dropout"],
                label_weights=MOTHER["label_weights"], w1_dtype=MOTHER["w1_dtype"],
                home_path="examples/home.yaml", seed: int = 0) -> dict:
    """Train the mother, choose its threshold on the dev set (DATA/routing_dev.jsonl), export and
    sign it with that threshold, measure it on the test set (DATA/routing_test.jsonl) and on the
    agent children's held-out sets (AGENT_ROUTING), as bulletd routes with home_path's hints on,
    write the card."""
    import tempfile

    from bulletd.agents.home import HomeConfig
    from bulletd.evaluate.core import route_claims, route_hints

    from trainer.router import examples_from_labelled, export_router, train_router

    data_dir, out = Path(data_dir), Path(out)
    dev_path = data_dir / "routing_dev.jsonl"
    if not dev_path.is_file():
        raise SystemExit(f"{dev_path} is missing: the threshold is chosen on the dev set "
                         f"(bullet-train agentdata routing --split dev)")
    t0 = time.monotonic()
    model = train_router(examples_from_labelled(labelled), feature_dim=feature_dim, hidden=hidden, steps=steps,
                         batch=batch, seed=seed, features=features, weight_decay=weight_decay, dropout=dropout,
                         label_weights=label_weights)
    wall = time.monotonic() - t0
    dev_lines = _lines(dev_path)
    with tempfile.TemporaryDirectory() as tmp:   # the dev decisions do not depend on the threshold
        export_router(model, Path(tmp) / "mother.bullet", threshold=0.5, name="mother", version="0.4.0",
                      w1_dtype=w1_dtype)
        dev_dec = _decisions(Path(tmp) / "mother.bullet", dev_lines)
    dev_sweep = threshold_sweep(dev_dec)
    threshold = choose_threshold(dev_sweep)
    print(f"mother: threshold {threshold} chosen on {dev_path.name}")
    path = out / "mother.bullet"
    s = export_router(model, path, threshold=threshold, key=key, name="mother", version="0.4.0", w1_dtype=w1_dtype)
    hints = claims = None
    if home_path and Path(home_path).is_file():
        cfg = HomeConfig.load(home_path)
        hints, claims = route_hints(cfg), route_claims(cfg)
    results = []
    for fname, what in SETS["mother"]:
        p = data_dir / fname
        if p.is_file():
            r = measure_routing(path, _lines(p), hints=hints, claims=claims)
            results.append((fname, what, _sha(p), r))
            print(f"mother: {fname}: {r['correct']}/{r['n']} = {100 * r['accuracy']:.1f}%")
    sets = "\n\n".join(f"### {what}\n\n`{fname}` (SHA-256 `{sha[:16]}`)\n\n{_table(r)}\n\n"
                       f"First misses (text, wanted child, chosen child, confidence):\n\n{_misses(r, 12)}"
                       for fname, what, sha, r in results)
    p = data_dir / SETS["mother"][0][0]
    if p.is_file():
        test_lines = _lines(p)
        r = results[0][3]
        sets += (f"\n\nAt the chosen threshold {threshold}: {100 * r['children']:.1f}% of the lines for the four "
                 f"children go to the right one, {100 * r['rejected']:.1f}% of the requests no child serves get no "
                 f"child, and {100 * r['wrong_child']:.1f}% of all lines go to a wrong child. Where each source's "
                 f"lines went:\n\n" + _confusion_table(confusion(test_lines, [(ln["child"], g, 1.0) for ln, g in
                                                                               zip(test_lines, r["got"])], 0.0)))
        test_dec = _decisions(path, test_lines)
        test_sweep = threshold_sweep(test_dec)
        sets += ("\n\n### Threshold on the test set\n\nThe mother alone (no hints), for comparison only (the "
                 "threshold was chosen on the dev set):\n\n" + _sweep_table(test_sweep, threshold))
    agents = []
    for fname, child, what in AGENT_ROUTING:
        p = data_dir / fname
        if p.is_file():
            r = measure_routing(path, [{**ln, "child": child} for ln in _lines(p)], hints=hints, claims=claims)
            agents.append(f"{what} (`{fname}`, SHA-256 `{_sha(p)[:16]}`): share routed to {child}\n\n{_table(r)}")
            print(f"mother: {fname}: {r['correct']}/{r['n']} = {100 * r['accuracy']:.1f}% to {child}")
    if agents:
        sets += ("\n\n### The agent children's held-out sets through the mother\n\n" + "\n\n".join(agents))
    per = ", ".join(f"{k}: {v}" for k, v in s["per_label"].items())
    weights = (" with batch shares " + ", ".join(f"{k} x{v:g}" for k, v in label_weights.items())
               if label_weights else "")
    card = f"""# mother — model card

The router of the shipped children: p = softmax(relu(x @ w1 + b1) @ w2 + b2) over
x = `router_features(prompt, {feature_dim}, "{features}")` (hashed character 1-4-grams, words and word
pairs, digits as 0; header `router.features`), hidden {hidden}, w1 stored as {w1_dtype}, trained by
`bullet-train router` ({steps} steps of {batch} class-balanced prompts{weights}, weight decay
{weight_decay}, n-gram dropout {dropout}, {wall:.0f} s) on
`bullet-train agentdata routing --split train --for-training`
({Path(labelled).name}, SHA-256 `{_sha(labelled)[:16]}`). Labels: home, calc, marathi, fortunes and
`_none`, the reject class (requests no child serves: weather, alarms, calls, messages, trivia,
shopping, music, news, small talk, in English, Marathi and mixed). `_none` takes probability in
bulletd's router but is never a route, so such a request gets the configured fallback or
`no_route`. Threshold {threshold}, chosen on the dev set (below).

| | |
| --- | --- |
| file | `mother.bullet` ({s['size'] / 1e6:.2f} MB){', signed: `mother.bullet.sig`' if key else ''} |
| training prompts per label | {per} |
| accuracy on a held-out tenth of the training distribution | {100 * (s['heldout_accuracy'] or 0):.1f}% |

## Threshold (dev set)

`routing_dev.jsonl` (`--split dev`, SHA-256 `{_sha(dev_path)[:16]}`): the home and calc
generators' training phrasings with other seeds, half of them re-phrased in frames of the dev
split's own, half with words from a corpus slice the training split does not read and made-up
words put in; reject and request phrasings of its own (in neither the training nor the test
split); corpus records of a slice of their own. The threshold is the one with the fewest misses
over all dev lines (a child line right when routed to its child, a null line when rejected), a
line sent to a wrong child counting as two misses (a wrong child answers confidently wrong; no
child leaves the fallback or `no_route`); a line whose best child is below it gets the fallback
or `no_route`.

{_sweep_table(dev_sweep, threshold)}

Where each source's dev lines went at the chosen threshold, and the first dev misses:

{_confusion_table(confusion(dev_lines, dev_dec, threshold))}

{_dev_misses(dev_lines, dev_dec, threshold)}

## Held-out evaluation

Measured by `python -m trainer.agentdata.measure` with bulletd's `Router` (the daemon's decision
code), the four children installed and bulletd's routing hints for the example home on, as bulletd
routes with `tools.home.file: examples/home.yaml` (`--home`): a line is right when the decision is
its child, or no child for a `null` line. The home and calc lines use the agent generators' held-out test templates
(including their novel verbs); the marathi and fortunes lines are corpus records the training split
did not draw from; the reject and request lines come from the test split's own phrasings.

{sets}

## Reproduce

    scripts/train_child.sh mother
"""
    (out / "mother.md").write_text(card, encoding="utf-8")
    return {"summary": s, "results": results, "threshold": threshold, "dev_sweep": dev_sweep}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.agentdata.ship", description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=["home", "calc", "mother"])
    ap.add_argument("--run", help="run folder of the child (home, calc)")
    ap.add_argument("--data", required=True, help="folder of the generated evaluation sets")
    ap.add_argument("--home", help="home YAML the home sets refer to")
    ap.add_argument("--labelled", help="mother: the labelled routing prompts")
    ap.add_argument("--key", help="Ed25519 private key (PEM) to sign with")
    ap.add_argument("--out", default="child_models")
    args = ap.parse_args(argv)
    if args.name == "mother":
        if not args.labelled:
            ap.error("mother needs --labelled")
        ship_mother(args.labelled, args.data, args.out, key=args.key, home_path=args.home or "examples/home.yaml")
    else:
        if not args.run:
            ap.error(f"{args.name} needs --run")
        ship_child(args.name, args.run, args.data, args.out, key=args.key, home_path=args.home)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
