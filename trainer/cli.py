"""`bullet-train`: the trainer's command line.

    bullet-train train  --config FILE [--resume-from CKPT] [--steps N] [--output-dir DIR]
                        [--init-from CHILD.bullet] [--set KEY=VALUE ...] [--no-progress]
    bullet-train export CKPT -o OUT.bullet [--key PRIVATE_KEY] [--example TEXT ...] [--name N --version V]
    bullet-train router -o MOTHER.bullet --child NAME=FILE.jsonl|FILE.bullet ... [--labelled FILE.jsonl]
                        [--key PRIVATE_KEY] [--feature-dim 1024] [--hidden 64] [--steps 300]
    bullet-train tokenizer --data FILE.jsonl --vocab-size N -o tokenizer.json
    bullet-train split  --config FILE -o DIR [--prompts 20]   # DIR/{train,val,prompts}.jsonl
    bullet-train bench  [--steps 30]
    bullet-train agentdata home|calc|routing --split train|test --n N --seed S [--for-training] -o FILE.jsonl

--steps N sets the run's total step count (and the length of its cosine schedule): an interrupted
run resumed with the same --steps ends with exactly the weights of an uninterrupted one.
Errors are printed as one line `bullet-train: error: ...` with exit status 2 (bad input) or 1 (the
system refused: a file that cannot be written, a full disk); warnings (a deprecated config key) as
one line `bullet-train: warning: ...`. Output piped into a reader that
leaves early (`| head`) ends the command quietly with status 141, as SIGPIPE would.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from bulletd.errors import BulletError, plain, stdout_gone
from bulletd.format.features import FEATURE_KINDS


def _train(args) -> int:
    import yaml

    from trainer.config import load_config
    from trainer.errors import ConfigError
    from trainer.train import Trainer

    sets = {}
    for spec in args.set or []:
        key, eq, value = spec.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {spec!r}")
        sets[key] = yaml.safe_load(value) if value else None
    out = os.path.abspath(args.output_dir) if args.output_dir else None
    init = os.path.abspath(args.init_from) if args.init_from else None
    sets.update({k: v for k, v in (("output_dir", out), ("init_from", init)) if v is not None})
    cfg = load_config(args.config, max_steps=args.steps, **sets)
    res = Trainer(cfg, resume_from=args.resume_from, progress=not args.no_progress).run()
    if res.get("interrupted"):
        print(f"interrupted at step {res['step']}; resume with: bullet-train train --config {args.config} "
              f"--resume-from {res['run_dir']}" + (f" --steps {args.steps}" if args.steps else "")
              + (f" --output-dir {res['run_dir']}" if args.output_dir else ""))
        return 130
    print(f"final: step {res['step']} val loss {res['val_loss']:.4f} nats/token, {res['val_bpb']:.4f} bits/byte; "
          f"run folder {res['run_dir']}")
    return 0


def _export(args) -> int:
    from trainer.export import export

    export(args.checkpoint, args.output, key=args.key, examples=args.example or None, name=args.name,
           version=args.version, check_windows=args.check_windows)
    return 0


def _router(args) -> int:
    from trainer.errors import ConfigError
    from trainer.router import examples_from_labelled, examples_from_source, export_router, train_router

    if args.key:   # a wrong key is found before the training, not after
        from bulletd.signing import load_private_key
        load_private_key(args.key)
    examples = []
    for spec in args.child or []:
        if "=" not in spec:
            raise ConfigError(f"--child expects NAME=FILE, got {spec!r}")
        name, path = spec.split("=", 1)
        examples += examples_from_source(name, path, args.per_child, args.seed)
    for path in args.labelled or []:
        examples += examples_from_labelled(path)
    weights = {}
    for spec in args.label_weight or []:
        name, _, w = spec.partition("=")
        try:
            weights[name] = float(w)
        except ValueError:
            raise ConfigError(f"--label-weight expects NAME=WEIGHT, got {spec!r}") from None
    model = train_router(examples, feature_dim=args.feature_dim, hidden=args.hidden, steps=args.steps, seed=args.seed,
                         features=args.features, label_weights=weights)
    s = export_router(model, args.output, threshold=args.threshold, key=args.key, name=args.name, version=args.version,
                      w1_dtype=args.w1_dtype)
    print(f"wrote {s['path']} ({s['size']} bytes)" + (", signed" if args.key else ""))
    if s.get("removed_sig"):
        print(f"removed {s['removed_sig']}: it signed the file this one replaced")
    return 0


def _tokenizer(args) -> int:
    from trainer.bpe import train_bpe
    from trainer.data import load_jsonl

    corpus = load_jsonl(args.data)
    t0 = time.monotonic()
    v = train_bpe(corpus.texts, args.vocab_size)
    v.save(args.output)
    n_tok = sum(len(v.encode(t)) for t in corpus.texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in corpus.texts)
    print(f"wrote {args.output}: {len(v)} entries ({v.n_merges} merges) in {time.monotonic() - t0:.1f}s; "
          f"{n_bytes / n_tok:.2f} bytes/token on {args.data}")
    return 0


def prompt_of(text: str, max_chars: int = 32) -> str:
    """The opening words of a document, at most max_chars characters (at least one word)."""
    words, out = text.split(), ""
    for w in words:
        if out and len(out) + 1 + len(w) > max_chars:
            break
        out = f"{out} {w}" if out else w
    return out


def _split(args) -> int:
    """Write the run's training and validation documents as JSONL ({"text": ...} per line): the
    split the trainer uses (same seed and fraction), for `bullet eval --train` and its text sets;
    and prompts.jsonl, the opening words of the first --prompts validation documents, for
    `bullet eval --distinct`."""
    import json
    from pathlib import Path

    from trainer.config import load_config
    from trainer.data import load_jsonl, split

    cfg = load_config(args.config)
    corpus = load_jsonl(cfg.dataset_path, field_name=cfg.text_field, on_bad_line="skip")
    train, val = split(corpus.texts, cfg.validation_fraction, cfg.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    prompts = [p for p in (prompt_of(t) for t in val) if p][:args.prompts]
    for name, texts in (("train", train), ("val", val), ("prompts", prompts)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for t in texts:
                fh.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print(f"wrote {out / 'train.jsonl'} ({len(train)} documents), {out / 'val.jsonl'} ({len(val)}) and "
          f"{out / 'prompts.jsonl'} ({len(prompts)}) from {cfg.dataset_path}, seed {cfg.seed}, "
          f"validation fraction {cfg.validation_fraction}")
    return 0


def _bench(args) -> int:
    from trainer.bench import run

    run(steps=args.steps, warmup=args.warmup, batch=args.batch, seq=args.seq, memory_seq=args.memory_seq,
        baselines=not args.no_baselines)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bullet-train", description="Train, export and benchmark Bullet OS children.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train (or resume) a run from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--resume-from", help="checkpoint folder, or run folder (its newest checkpoint)")
    t.add_argument("--steps", type=int, help="total steps for the run (overrides max_steps)")
    t.add_argument("--output-dir", help="run folder (overrides output_dir; relative to the current folder)")
    t.add_argument("--init-from", help="a .bullet child to continue training (overrides init_from)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key (YAML value; relative paths are relative to the config file)")
    t.set_defaults(fn=_train)
    e = sub.add_parser("export", help="export a checkpoint to a .bullet file")
    e.add_argument("checkpoint")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--key", help="Ed25519 private key (PEM) to sign with")
    e.add_argument("--example", action="append", help="a prompt for header['examples'] (repeatable)")
    e.add_argument("--name")
    e.add_argument("--version")
    e.add_argument("--check-windows", type=int, default=16,
                   help="validation windows for the float32-vs-exported loss check (0 skips it)")
    e.set_defaults(fn=_export)
    r = sub.add_parser("router", help="train the mother (router) from labelled prompts")
    r.add_argument("-o", "--output", required=True)
    r.add_argument("--child", action="append", help="NAME=FILE.jsonl or NAME=FILE.bullet (repeatable)")
    r.add_argument("--labelled", action="append", help="JSONL of {\"text\", \"label\"} (repeatable)")
    r.add_argument("--per-child", type=int, default=2000)
    r.add_argument("--feature-dim", type=int, default=1024)
    r.add_argument("--hidden", type=int, default=64)
    r.add_argument("--features", default="char1-3", choices=FEATURE_KINDS,
                   help="feature kind (bulletd.format.features; written to the header)")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--label-weight", action="append", metavar="NAME=WEIGHT",
                   help="a label's share of each batch relative to the others' 1 (repeatable)")
    r.add_argument("--w1-dtype", default="f32", choices=["f32", "f16"], help="storage of the first layer")
    r.add_argument("--threshold", type=float, default=0.5)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--key")
    r.add_argument("--name", default="mother")
    r.add_argument("--version", default="0.1.0")
    r.set_defaults(fn=_router)
    k = sub.add_parser("tokenizer", help="train a BPE tokenizer alone")
    k.add_argument("--data", required=True)
    k.add_argument("--vocab-size", type=int, required=True)
    k.add_argument("-o", "--output", required=True)
    k.set_defaults(fn=_tokenizer)
    s = sub.add_parser("split", help="write a run's training/validation split as JSONL (for bullet eval)")
    s.add_argument("--config", required=True)
    s.add_argument("-o", "--output", required=True, help="folder for train.jsonl, val.jsonl and prompts.jsonl")
    s.add_argument("--prompts", type=int, default=20, help="validation openings for prompts.jsonl (default 20)")
    s.set_defaults(fn=_split)
    from trainer.agentdata.cli import add_parser as add_agentdata

    add_agentdata(sub)
    b = sub.add_parser("bench", help="REFERENCE-model training speed and attention memory")
    b.add_argument("--steps", type=int, default=30)
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--batch", type=int, default=4)
    b.add_argument("--seq", type=int, default=128)
    b.add_argument("--memory-seq", type=int, default=2048)
    b.add_argument("--no-baselines", action="store_true", help="skip the tiled-attention and one-pass baselines")
    b.set_defaults(fn=_bench)
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"bullet-train: warning: {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            rc = args.fn(args)
        sys.stdout.flush()        # a pipe closed early shows here, not at interpreter exit
        return rc
    except BrokenPipeError:       # `bullet-train ... | head`: the reader left, nothing to say
        return stdout_gone()
    except KeyboardInterrupt:
        print("bullet-train: interrupted", file=sys.stderr)
        return 130
    except BulletError as exc:
        print(f"bullet-train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bullet-train: error: {plain(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
