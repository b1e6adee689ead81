"""Build the shipped children of child_models/ from finished training runs: export + sign each
child, record its temperature-0 golden output, train and sign the mother, write the model cards.

    python -m trainer.ship --key /work/team/release-key/release.key --out child_models \\
        --child marathi=runs/small_marathi --child fortunes=runs/small_fortunes \\
        --labelled trainer/configs/mother_prompts.jsonl

The private key lives outside the repository; only its public half (release.pub.pem) is shipped.
golden.json holds, per child, the prompt, settings, token ids and text of a greedy run, which
tests/test_trainer_children.py replays through the runtime.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from trainer import checkpoint as ckpt_mod
from trainer.export import export
from trainer.router import examples_from_labelled, examples_from_source, export_router, train_router

GOLDEN_TOKENS = 40


def golden(path, prompt: str, n: int = GOLDEN_TOKENS) -> dict:
    from bulletd.runtime import GenerationSettings, load_model

    with load_model(str(path)) as m:
        s = GenerationSettings(max_tokens=n, temperature=0.0, repetition_penalty=1.0, top_k=0, top_p=1.0)
        g = m.generate(prompt, s)
        text = "".join(g)
        return {"prompt": prompt, "max_tokens": n, "temperature": 0.0, "repetition_penalty": 1.0,
                "ids": list(g.tokens), "text": text, "finish_reason": g.finish_reason, "backend": m.backend}


def card(name: str, summary: dict, ck, gold: dict, pub_key_id: str, data_note: str) -> str:
    cfg = ck.state["config"]
    ev = ck.state.get("eval") or {}
    chk = {k: summary.get(k) for k in ("f32_val_loss", "exported_val_loss", "exported_val_bpb", "relative_increase")}
    rows = "\n".join(f"| `{k}` | {cfg[k]} |" for k in ("vocab_size", "hidden_size", "num_layers", "num_heads",
                                                      "intermediate_size", "max_seq_len", "batch_size",
                                                      "learning_rate", "min_learning_rate", "warmup_steps",
                                                      "max_steps", "weight_decay", "grad_clip", "seed"))
    examples = "\n".join(f"- {e}" for e in summary.get("examples", []))
    wall = ""
    log = Path(ck.path).parent / "train.log"
    if log.is_file():  # first and last timestamps of the run's log
        import datetime as _dt

        lines = [x for x in log.read_text(encoding="utf-8").splitlines() if x[:4].isdigit()]
        t0, t1 = (_dt.datetime.strptime(x[:19], "%Y-%m-%d %H:%M:%S") for x in (lines[0], lines[-1]))
        wall = f", {(t1 - t0).total_seconds() / 60:.0f} min wall clock on the shared 2-core machine"
    return f"""# {name} — model card

A Bullet OS child trained with `bullet-train` (NumPy, CPU) and exported to BQ4 `.bullet`.

| | |
| --- | --- |
| file | `{name}.bullet` ({summary['size'] / 1e6:.2f} MB), signature `{name}.bullet.sig` (key id `{pub_key_id}`, public key `release.pub.pem`) |
| data | `{Path(ck.state.get('data_path', '')).name}` (SHA-256 `{ck.state.get('data_sha256')}`), {data_note} |
| training | {ck.state['step']} steps, batch {cfg['batch_size']} x {cfg['max_seq_len']} tokens, config `trainer/configs/small_{name}.yaml`{wall} |
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

## Golden output (temperature 0)

Prompt `{gold['prompt']}`, {gold['max_tokens']} tokens, greedy (temperature 0, repetition penalty 1),
{gold['backend']} backend; `tests/test_trainer_children.py` replays it through the runtime:

```
{gold['prompt']}{gold['text']}
```

## Example prompts (header `examples`, used for routing)

{examples}

## Reproduce

    bullet-train train --config trainer/configs/small_{name}.yaml
    python -m trainer.ship --key RELEASE.key --out child_models --child {name}=runs/small_{name} ...

Limits: a {ck.state.get('n_params', 0) / 1e6:.1f}M-parameter model trained for minutes on a shared 2-core CPU;
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
    goldens = {}
    mother_examples, sources = [], []
    for spec in args.child:
        name, run = spec.split("=", 1)
        ck = ckpt_mod.load(run)
        path = out / f"{name}.bullet"
        summary = export(run, path, key=key, name=name)
        prompt = prompts.get(name) or summary["examples"][0].split()[0]
        gold = golden(path, prompt)
        if (Path(run) / "loss.png").is_file():
            shutil.copy(Path(run) / "loss.png", out / f"{name}-loss.png")
        goldens[name] = gold
        data_path = Path(ck.state["data_path"])
        note = "split 98/2 into training/validation by the run's seed; see `shared/data/README.md` for sources and licences"
        _write_atomic(out / f"{name}.md", card(name, summary, ck, gold, key_id, note).encode("utf-8"))
        ex = examples_from_source(name, data_path, args.per_child, seed=11)
        mother_examples += ex
        sources.append(f"{len(ex)} records of `{data_path.name}` cut to prompt length (label `{name}`)")
        print(f"{name}: {summary['size']} bytes, val {ck.state['eval']['val_bpb']:.4f} bits/byte, golden {gold['text'][:60]!r}")
    for lab in args.labelled:
        ex = examples_from_labelled(lab)
        mother_examples += ex
        sources.append(f"{len(ex)} hand-written prompts from `{Path(lab).name}`")
    model = train_router(mother_examples, feature_dim=1024, hidden=64, steps=400, seed=0)
    ms = export_router(model, out / "mother.bullet", key=key, threshold=0.5, name="mother")
    _write_atomic(out / "mother.md", mother_card(ms, model.labels, sources, key_id).encode("utf-8"))
    _write_atomic(out / "golden.json", (json.dumps(goldens, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    print(f"mother: {ms['size']} bytes, held-out accuracy {ms['heldout_accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
