"""The `bullet eval` subcommand."""
from __future__ import annotations

import json
import sys


def _run(args) -> int:
    from bulletd.evaluate.core import Models, evaluate
    from bulletd.evaluate.report import format_report

    models = Models(args.models, trust=args.trust, mother=args.mother, fallback=args.fallback or "",
                    threshold=args.threshold, centroid_threshold=args.centroid_threshold)
    try:
        rep = evaluate(models, args.set, child=args.child, home_path=args.home, baseline=args.baseline,
                       train=args.train, distinct=args.distinct, tokens=args.tokens, order=args.order)
    finally:
        models.close()
    if args.json:
        print(json.dumps(rep, ensure_ascii=False))
    else:
        print(format_report(rep))
    sys.stdout.flush()
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="measure children on a JSONL set (accuracy, routing, bits per byte)",
                       description="Measure the children of a model directory on a JSONL set, in-process, "
                                   "the way bulletd would serve each line. The keys of the lines choose the "
                                   "kind: calc {text, answer}, home {text, expect} (needs --home), routing "
                                   "{text, child}, text {text} (bits per byte; --train adds baselines). "
                                   "An optional 'category' key groups the counts.")
    p.add_argument("set", help="JSONL set file")
    p.add_argument("--models", default="child_models", help="model directory (NAME.bullet children, mother.bullet)")
    p.add_argument("--child", help="send every line straight to this child instead of routing it")
    p.add_argument("--home", help="home config (YAML) for home sets")
    p.add_argument("--trust", help="public key PEM or a directory of them: every file must be signed by one "
                                   "(without it signatures are not checked)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--baseline", choices=["hassil"], help="home sets: also run Home Assistant's matcher (English)")
    p.add_argument("--train", help="text sets: the child's training split (JSONL of {\"text\"}, as "
                                   "`bullet-train split` writes it) for the n-gram and compressor baselines")
    p.add_argument("--order", type=int, default=5, help="order of the character Kneser-Ney baseline (default 5)")
    p.add_argument("--distinct", action="store_true", help="the set's lines are prompts: share of distinct "
                                                           "4-grams in greedy output")
    p.add_argument("--tokens", type=int, default=200, help="--distinct: tokens to generate per prompt (default 200)")
    p.add_argument("--mother", help="router file (default DIR/mother.bullet when it exists)")
    p.add_argument("--fallback", help="fallback child, as bulletd's router.fallback")
    p.add_argument("--threshold", type=float, default=-1.0,
                   help="routing threshold, as router.threshold (default: the mother's own)")
    p.add_argument("--centroid-threshold", type=float, default=0.35, help="as router.centroid_threshold")
    p.set_defaults(func=_run)
