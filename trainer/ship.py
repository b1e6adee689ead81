"""Build the shipped children of child_models/ from finished training runs: export + sign each
child, record its temperature-0 golden output, train and sign the mother, write the model cards.

    python -m trainer.ship --key /work/team/release-key/release.key --out child_models \\
        --child marathi=runs/small_marathi --child fortunes=runs/small_fortunes \\
        --labelled trainer/configs/mother_prompts.jsonl

The private key lives outside the repository; only its public half (release.pub.pem) is shipped.
golden.json holds, per child, the prompt, settings, token ids and text of a greedy run, which
tests/test_trainer_children.py replays through the runtime; entries of children not shipped by
this call are kept.

Text children measured on their run's own split (`--eval NAME=PROMPTS.jsonl`, `bullet eval`):

    python -m trainer.ship --key RELEASE.key --out child_models --no-mother \
        --child marathi=runs/marathi --config marathi=trainer/configs/marathi_reference.yaml \
        --eval marathi=eval/marathi_prompts.jsonl --golden-prompt marathi=जर

writes the validation split's bits per byte beside the character 5-gram, xz and PPMd baselines
(trained on the training split), the share of distinct 4-grams in greedy output (200 tokens
from each prompt) and the greedy tokens/s of this machine into the card.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

from trainer import checkpoint as ckpt_mod
from trainer.export import export
from trainer.plot import write_loss_png
from trainer.router import examples_from_labelled, examples_from_source, export_router, train_router

GOLDEN_TOKENS = 40
GAP_MIN = 15   # minutes between two lines of a run's log beyond which the run counts as stopped


def golden(path, prompt: str, n: int = GOLDEN_TOKENS) -> dict:
    from bulletd.runtime import GenerationSettings, load_model

    with load_model(str(path)) as m:
        n = min(n, m.context // 2)
        s = GenerationSettings(max_tokens=n, temperature=0.0, repetition_penalty=1.0, top_k=0, top_p=1.0)
        g = m.generate(prompt, s)
        text = "".join(g)
        return {"prompt": prompt, "max_tokens": n, "temperature": 0.0, "repetition_penalty": 1.0,
                "ids": list(g.tokens), "text": text, "finish_reason": g.finish_reason, "backend": m.backend}


def measure(out: Path, name: str, ck, prompts: str, tokens: int = 200, baselines: str | None = None) -> dict:
    """`bullet eval` figures of the exported child: the run's validation split as a text set
    (with the baselines trained on its training split), greedy distinct 4-grams over `prompts`,
    and greedy decoding speed. `baselines`: a `bullet eval --json` report of the same split whose
    baselines are taken instead of computed again (they do not depend on the child)."""
    import tempfile
    import time

    from bulletd.evaluate.baselines import join_lines
    from bulletd.evaluate.core import Models, eval_distinct, eval_text
    from bulletd.evaluate.sets import load_set
    from trainer.config import config_from_dict
    from trainer.data import load_jsonl, split

    cfg = config_from_dict(ck.state["config"])
    corpus = load_jsonl(cfg.dataset_path, field_name=cfg.text_field, on_bad_line="skip")
    train, val = split(corpus.texts, cfg.validation_fraction, cfg.seed)
    models = Models(out, trust=str(out / "release.pub.pem"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            paths = {}
            for part, texts in (("train", train), ("val", val)):
                paths[part] = Path(tmp) / f"{part}.jsonl"
                paths[part].write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                                       encoding="utf-8")
            if baselines is None:
                text = eval_text(models, load_set(paths["val"])[1], name, str(paths["train"]))
            else:
                text = eval_text(models, load_set(paths["val"])[1], name, None)
                text["baselines"] = b = json.loads(Path(baselines).read_text(encoding="utf-8"))["baselines"]
                if b.get("bytes") != text["bytes"] or b.get("train_bytes") != len(join_lines(train).encode("utf-8")):
                    raise SystemExit(f"--baselines {baselines}: measured on another split ({b.get('bytes')} validation "
                                     f"bytes, this split has {text['bytes']})")
                text["best_baseline_bpb"] = min(b[k] for k in ("kn5", "xz", "ppmd8") if b.get(k) is not None)
                text["vs_best_baseline"] = text["bpb"] / text["best_baseline_bpb"] - 1.0
        t0 = time.perf_counter()
        dist = eval_distinct(models, load_set(prompts, distinct=True)[1], name, tokens)
        dt = time.perf_counter() - t0
    finally:
        models.close()
    return {"text": text, "distinct": dist, "prompts": prompts, "greedy_tok_s": dist["tokens"] / dt,
            "n_train": len(train), "n_val": len(val)}


def run_folder(ck) -> Path:
    """The run folder of a checkpoint (its train.log and metrics.jsonl): the checkpoint's parent,
    or the run folder above best/ for the checkpoint `keep_best` kept."""
    p = Path(ck.path).parent
    return p.parent if p.name == "best" and (p.parent / "train.log").is_file() else p


def measured_rows(m: dict | None, ck) -> str:
    if m is None:
        return ""
    t, d, b = m["text"], m["distinct"], m["text"]["baselines"]
    best = min(("kn5", "xz", "ppmd8"), key=lambda k: b[k] if b.get(k) is not None else float("inf"))
    metrics = run_folder(ck) / "metrics.jsonl"
    rate = [json.loads(x)["tok_s"] for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    train_rate = f"; training {sorted(rate)[len(rate) // 2]:,} tok/s (median)" if rate else ""
    ppmd = "-" if b.get("ppmd8") is None else f"{b['ppmd8']:.4f}"
    return f"""
## Measured with `bullet eval`

| | |
| --- | --- |
| validation split | {m['n_val']} documents ({t['bytes']:,} bytes), each scored alone (`<s> text <s>`) |
| **bits per byte, this child (BQ4)** | **{t['bpb']:.4f}** |
| baselines trained on the {m['n_train']} training documents | character 5-gram (Kneser-Ney) {b['kn5']:.4f}, xz -9e {b['xz']:.4f}, PPMd order 8 {ppmd} |
| against the best baseline ({best}) | {100 * t['vs_best_baseline']:+.1f}% |
| greedy output, {d['max_tokens']} tokens from each of the {d['n']} prompts of `{m['prompts']}` | share of distinct token 4-grams {d['distinct4']:.4f} (all outputs pooled), {d['distinct4_mean']:.4f} (mean per output); of word 4-grams {d['distinct4_words']:.4f} |
| speed on the shared 2-core build machine | greedy generation {m['greedy_tok_s']:.0f} tok/s (one session, native backend, prompts included){train_rate} |
"""


def log_minutes(lines: list[str]) -> tuple[float, bool]:
    """Minutes a run's log (its timestamped lines) spent training: the time between consecutive
    lines, without gaps of more than GAP_MIN minutes (the run was stopped, e.g. between sessions);
    and whether such a gap was left out."""
    import datetime as _dt

    stamps = [_dt.datetime.strptime(x[:19], "%Y-%m-%d %H:%M:%S") for x in lines]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:])]
    return sum(g for g in gaps if g <= 60 * GAP_MIN) / 60, any(g > 60 * GAP_MIN for g in gaps)


def card(name: str, summary: dict, ck, gold: dict, pub_key_id: str, data_note: str,
         config: str | None = None, measured: dict | None = None) -> str:
    config = config or f"trainer/configs/small_{name}.yaml"
    cfg = ck.state["config"]
    ev = ck.state.get("eval") or {}
    chk = {k: summary.get(k) for k in ("f32_val_loss", "exported_val_loss", "exported_val_bpb", "relative_increase")}
    rows = "\n".join(f"| `{k}` | {cfg[k]} |" for k in ("vocab_size", "dim", "n_layers", "n_heads",
                                                      "hidden_dim", "max_seq_len", "batch_size",
                                                      "learning_rate", "min_learning_rate", "warmup_steps",
                                                      "max_steps", "weight_decay", "grad_clip", "dropout",
                                                      "seed") if k in cfg)
    examples = "\n".join(f"- {e}" for e in summary.get("examples", []))
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_child.sh"
    best = "/best" if Path(ck.path).parent.name == "best" else ""
    init = f" --init-from {Path(cfg['init_from']).name}" if cfg.get("init_from") else ""
    wall = ""
    log = run_folder(ck) / "train.log"
    if log.is_file():  # the run's log, up to the shipped checkpoint
        lines = [x for x in log.read_text(encoding="utf-8").splitlines() if x[:4].isdigit()]
        # up to the shipped checkpoint when the log names it (the run may have gone on)
        end = next((x for x in lines if x.endswith((f"checkpoint {ck.path}", f"so far: {ck.path}"))), lines[-1])
        busy, stopped = log_minutes(lines[:lines.index(end) + 1])
        wall = f", {busy:.0f} min wall clock on the shared 2-core machine"
        if stopped:
            wall += f" (without the time the run was stopped: gaps of more than {GAP_MIN} min between log lines)"
        # a run resumed with another --steps changed its cosine's length on the way
        spans = [m.groups() for x in lines[:lines.index(end) + 1] if (m := re.search(r"steps (\d+)->(\d+)$", x))]
        if len({b for _, b in spans}) > 1:
            wall += "; schedule length " + ", ".join(f"{b} from step {a}" for a, b in spans)
    if Path(ck.path).parent.name == "best":
        wall += f"; the checkpoint of the lowest validation loss (`keep_best`) of a {cfg['max_steps']}-step run"
    if init:
        from trainer.export import init_provenance

        before = init_provenance(cfg["init_from"]).get("steps")
        wall += (f"; started from the child `{Path(cfg['init_from']).name}` (`init_from`"
                 + (f", {before} steps before these)" if before else ")"))
    if script.is_file() and re.search(rf"^{re.escape(name)}\)", script.read_text(encoding="utf-8"), re.M):
        reproduce = (f"\n    scripts/train_child.sh {name}\n\n"
                     "(`BULLET_KEY`, `BULLET_CORPORA`, `BULLET_RUNS`, `STEPS`: see the script's header.)\n")
    else:
        reproduce = (f"\n    bullet-train train --config {config} --output-dir runs/{name}{init}\n"
                     f"    python -m trainer.ship --key RELEASE.key --out child_models --child {name}=runs/{name}{best} "
                     f"--config {name}={config} ...\n")
    return f"""# {name} — model card

A Bullet OS child trained with `bullet-train` (NumPy, CPU) and exported to BQ4 `.bullet`.

| | |
| --- | --- |
| file | `{name}.bullet` ({summary['size'] / 1e6:.2f} MB), signature `{name}.bullet.sig` (key id `{pub_key_id}`, public key `release.pub.pem`) |
| data | `{Path(ck.state.get('data_path', '')).name}` (SHA-256 `{ck.state.get('data_sha256')}`), {data_note} |
| training | {ck.state['step']} steps, batch {cfg['batch_size']} x {cfg['max_seq_len']} tokens, config `{config}`{wall} |
| parameters | {ck.state.get('n_params'):,} (float32 during training) |
| validation loss (float32 checkpoint) | {ev.get('val_loss', float('nan')):.4f} nats/token, **{ev.get('val_bpb', float('nan')):.4f} bits per byte** ({ev.get('val_tokens')} tokens) |
| validation loss (exported BQ4 file, runtime, {summary.get('windows', 16)} windows) | float32 {chk['f32_val_loss']:.4f} -> BQ4 {chk['exported_val_loss']:.4f} nats/token ({100 * chk['relative_increase']:+.2f}%), {chk['exported_val_bpb']:.4f} bits/byte |
| verification vectors | {summary['vectors']} (prompt -> greedy ids, replayed by `bulletd.ota.smoke`) |

![training (blue) and validation (red) loss]({name}-loss.png)

Bits per byte = total negative log-likelihood of the validation tokens / ln 2 / the UTF-8 bytes
they stand for (a `<s>` separator counts as one byte), so models with different tokenizers compare.

## Config

| key | value |
| --- | --- |
{rows}

Tokenizer: byte-fallback BPE trained on the training split by `trainer.bpe` ({cfg['vocab_size']} entries).
{measured_rows(measured, ck)}
## Golden output (temperature 0)

Prompt `{gold['prompt']}`, {gold['max_tokens']} tokens, greedy (temperature 0, repetition penalty 1),
{gold['backend']} backend; `tests/test_trainer_children.py` replays it through the runtime:

```
{gold['prompt']}{gold['text']}
```

## Example prompts (header `examples`, used for routing)

{examples}

## Reproduce
{reproduce}
Limits: a {ck.state.get('n_params', 0) / 1e6:.1f}M-parameter model trained on a shared 2-core CPU;
it produces text in the style of its corpus, not reliable answers.
"""


def mother_card(summary: dict, labels, sources, pub_key_id: str) -> str:
    src = "\n".join(f"- {s}" for s in sources)
    per = ", ".join(f"{k}: {v}" for k, v in summary["per_label"].items())
    return f"""# mother — model card

The router of the shipped children: p = softmax(relu(x @ w1 + b1) @ w2 + b2) over
x = `router_features(prompt, 1024)` (hashed character 1-3-grams), trained by `bullet-train router`.

| | |
| --- | --- |
| file | `mother.bullet` ({summary['size']} bytes), signature `mother.bullet.sig` (key id `{pub_key_id}`) |
| labels | {', '.join(labels)} |
| prompts | {summary['n_train']} for training, {summary['n_heldout']} held out ({per}) |
| accuracy | training {summary['train_accuracy']:.3f}, held-out {summary['heldout_accuracy']:.3f} |
| threshold | 0.5 (header `router.threshold`) |

Prompt sources:
{src}
"""


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.ship")
    ap.add_argument("--key", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--child", action="append", required=True, help="NAME=RUN_DIR")
    ap.add_argument("--golden-prompt", action="append", default=[], help="NAME=PROMPT")
    ap.add_argument("--labelled", action="append", default=[])
    ap.add_argument("--per-child", type=int, default=1500)
    ap.add_argument("--config", action="append", default=[], help="NAME=CONFIG (the config named in the card)")
    ap.add_argument("--eval", action="append", default=[], help="NAME=PROMPTS.jsonl: measure the child with "
                                                                 "`bullet eval` on its split and these prompts")
    ap.add_argument("--baselines", action="append", default=[], help="NAME=REPORT.json: take the text baselines "
                                                                      "from a `bullet eval --json` report of the same split")
    ap.add_argument("--no-mother", action="store_true", help="ship the children only (keep the mother)")
    args = ap.parse_args(argv)
    from cryptography.hazmat.primitives import serialization

    from bulletd.errors import BulletError
    from bulletd.signing import key_id as _key_id, load_private_key

    key = Path(args.key)
    try:   # before anything is written: a wrong key leaves the shipped files as they are
        private = load_private_key(key)
    except BulletError as exc:
        raise SystemExit(f"python -m trainer.ship: error: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_id = _key_id(private.public_key())
    _write_atomic(out / "release.pub.pem", private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    prompts = dict(p.split("=", 1) for p in args.golden_prompt)
    configs = dict(p.split("=", 1) for p in args.config)
    evals = dict(p.split("=", 1) for p in args.eval)
    cached = dict(p.split("=", 1) for p in args.baselines)
    gpath = out / "golden.json"
    goldens = json.loads(gpath.read_text(encoding="utf-8")) if gpath.is_file() else {}
    mother_examples, sources = [], []
    for spec in args.child:
        name, run = spec.split("=", 1)
        ck = ckpt_mod.load(run)
        path = out / f"{name}.bullet"
        summary = export(run, path, key=key, name=name)
        prompt = prompts.get(name) or summary["examples"][0].split()[0]
        gold = golden(path, prompt)
        # the curves up to the shipped checkpoint, from its own history (a stopped run has no loss.png)
        write_loss_png(out / f"{name}-loss.png", [tuple(x) for x in ck.state.get("history", [])],
                       [tuple(x) for x in ck.state.get("val_history", [])])
        goldens[name] = gold
        data_path = Path(ck.state["data_path"])
        frac = ck.state["config"]["validation_fraction"]
        note = f"split {100 - 100 * frac:.0f}/{100 * frac:.0f} into training/validation by the run's seed"
        measured = measure(out, name, ck, evals[name], baselines=cached.get(name)) if name in evals else None
        _write_atomic(out / f"{name}.md", card(name, summary, ck, gold, key_id, note, configs.get(name),
                                                measured).encode("utf-8"))
        ex = examples_from_source(name, data_path, args.per_child, seed=11)
        mother_examples += ex
        sources.append(f"{len(ex)} records of `{data_path.name}` cut to prompt length (label `{name}`)")
        print(f"{name}: {summary['size']} bytes, val {ck.state['eval']['val_bpb']:.4f} bits/byte, golden {gold['text'][:60]!r}")
    _write_atomic(gpath, (json.dumps(goldens, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    if args.no_mother:
        return 0
    for lab in args.labelled:
        ex = examples_from_labelled(lab)
        mother_examples += ex
        sources.append(f"{len(ex)} hand-written prompts from `{Path(lab).name}`")
    model = train_router(mother_examples, feature_dim=1024, hidden=64, steps=400, seed=0)
    ms = export_router(model, out / "mother.bullet", key=key, threshold=0.5, name="mother")
    _write_atomic(out / "mother.md", mother_card(ms, model.labels, sources, key_id).encode("utf-8"))
    print(f"mother: {ms['size']} bytes, held-out accuracy {ms['heldout_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
