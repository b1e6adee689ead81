"""`bullet-train agentdata KIND`: write a generated set as JSONL.

    bullet-train agentdata home --split train --n 150000 --seed 1 --for-training -o home_train.jsonl
    bullet-train agentdata home --split test --home examples/home.yaml --n 2000 -o home_test.jsonl
    bullet-train agentdata home --random-home 9 -o random_home.yaml     # a home no child has seen
    bullet-train agentdata calc --split test --n 2000 -o calc_test.jsonl
    bullet-train agentdata routing --split test --n 2000 -o routing_test.jsonl
    bullet-train agentdata routing --split dev --n 2000 -o routing_dev.jsonl

--for-training writes the trainer's lines: {"text": template + call} for home and calc,
{"text", "label"} for routing (`bullet-train router --labelled`; no child = label "_none").
Otherwise each line is the full record (text = the utterance, call, category, and expect/answer/child).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from trainer.agentdata import TEMPLATE, training_text
from trainer.agentdata.routing import REJECT
from trainer.errors import ConfigError


def lines(kind: str, split: str, n: int, seed: int, home_path=None, sources=None):
    if kind == "home":
        from trainer.agentdata import home

        h = home.Home.load(home_path) if home_path else None
        return home.generate(split, n, seed, h)
    if kind == "calc":
        from trainer.agentdata import calc

        return calc.generate(split, n, seed)
    if kind == "routing":
        from trainer.agentdata import routing

        return routing.generate(split, n, seed, sources=sources or {})
    raise ConfigError(f"unknown data kind {kind!r} (home, calc, routing)")


def run(args) -> int:
    if args.n < 1:
        raise ConfigError("--n must be >= 1")
    if args.home and args.kind != "home":
        raise ConfigError("--home applies to the home data only")
    if args.split == "dev" and args.kind != "routing":
        raise ConfigError("--split dev applies to the routing data only")
    sources = {}
    for spec in args.source or []:
        if "=" not in spec:
            raise ConfigError(f"--source expects NAME=FILE.jsonl, got {spec!r}")
        name, path = spec.split("=", 1)
        sources[name] = path
    out = Path(args.output)
    if getattr(args, "random_home", None) is not None:
        if args.kind != "home":
            raise ConfigError("--random-home applies to the home data only")
        import yaml

        from trainer.agentdata import home
        out.write_text(yaml.safe_dump(home.random_home(args.random_home), allow_unicode=True, sort_keys=False),
                       encoding="utf-8")
        print(f"wrote {out}: a random home (seed {args.random_home})")
        return 0
    h = hashlib.sha256()
    with open(out, "w", encoding="utf-8") as fh:
        for line in lines(args.kind, args.split, args.n, args.seed, args.home, sources):
            if not args.for_training:
                rec = line
            elif args.kind == "routing":   # the mother trainer's labelled prompts
                rec = {"text": line["text"], "label": line["child"] or REJECT}
            else:
                rec = {"text": training_text(line["text"], line["call"], TEMPLATE)}
            s = json.dumps(rec, ensure_ascii=False) + "\n"
            h.update(s.encode("utf-8"))
            fh.write(s)
    print(f"wrote {out}: {args.n} {args.kind} lines ({args.split} split, seed {args.seed}), sha256 {h.hexdigest()[:16]}")
    return 0


def add_parser(sub) -> None:
    g = sub.add_parser("agentdata", help="generate agent / routing data (home, calc, routing)")
    g.add_argument("kind", choices=["home", "calc", "routing"])
    g.add_argument("--split", choices=["train", "dev", "test"], default="train",
                   help="dev: routing only (the mother's threshold is chosen on it)")
    g.add_argument("--n", type=int, default=1000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--home", help="home YAML: lines about this home, with `expect` (home only)")
    g.add_argument("--source", action="append",
                   help="routing: NAME=FILE.jsonl corpus of a text child (marathi, fortunes)")
    g.add_argument("--random-home", type=int, metavar="SEED",
                   help="write a random home YAML (areas, devices, names) instead of lines (home only)")
    g.add_argument("--for-training", action="store_true", help="write {\"text\": template + call} lines")
    g.add_argument("-o", "--output", required=True)
    g.set_defaults(fn=run)
