"""The runtime's `bullet` subcommands: run, import-llama2c, bench. bulletd/cli_bullet.py calls
`register(subparsers)`.

    bullet run model.bullet -p "Once upon a time" -n 128 -t 0.8 --seed 42
    bullet run model.bullet -n 200 -t 0 --ids --repeat-penalty 1   # greedy ids from BOS, as llama2.c's run
    bullet run agent.bullet -p "turn on the kitchen light\n=>" --schema call.json -t 0
    bullet run model.bullet -p "A JSON object:" --format json
    bullet import-llama2c stories260K.bin --dtype bq4 -o stories260K.bullet
    bullet bench                                       # SMALL and REFERENCE, native vs NumPy
"""
from __future__ import annotations

import sys
import time


def _cmd_run(args) -> int:
    from ..errors import BadPrompt, ContextOverflow
    from .model import load_model
    from .sampling import GenerationSettings

    model = load_model(args.file, backend=args.backend)
    ctx = model.context
    prompt = args.prompt or ""
    if prompt:
        ids = model.tokenizer.encode(prompt, bos=True)
    elif model.tokenizer.bos_id is not None:
        ids = [model.tokenizer.bos_id]      # like llama2.c: an empty prompt starts from BOS
    else:
        raise BadPrompt(f"{args.file}: the model has no BOS token, so it cannot start from nothing; "
                        f"give a prompt with -p")
    if args.steps is None:
        # the daemon's default length: GenerationSettings.max_tokens new tokens, within the context
        max_tokens = min(GenerationSettings().max_tokens, ctx - len(ids) + 1)
        if max_tokens < 1:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens, the model's whole context of {ctx}")
    else:
        # llama2.c's -n counts positions (prompt + generated); 0 or more than the context = context
        steps = args.steps if 0 < args.steps <= ctx else ctx
        max_tokens = steps - len(ids) + 1
        if max_tokens < 1:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens, more than -n {steps} steps allow")
    # sampling: what the command line gives, else GenerationSettings' defaults (the daemon's too)
    chosen = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
              "repetition_penalty": args.repeat_penalty}
    settings = GenerationSettings(max_tokens=max_tokens, seed=args.seed, stop=tuple(args.stop or ()), threads=args.threads,
                                  **{k: v for k, v in chosen.items() if v is not None})
    grammar = None
    if args.schema or args.format:
        import json
        from .grammar import grammar_for_request
        schema = None
        if args.schema:
            try:
                with open(args.schema, encoding="utf-8") as f:
                    schema = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{args.schema}: not JSON: {exc}") from None
        src = args.copy_source if args.copy_source is not None else prompt
        grammar = grammar_for_request(args.format, schema, copy_source=src)
    # the session (its KV cache, and the threads' workers) is set up with the model, before the
    # clock starts, as llama.cpp sets up its context before it times the evaluation
    session = model.new_session()
    session.set_threads(settings.threads or 1)
    gen = model.generate_ids(ids, settings, session=session, grammar=grammar)
    t0 = time.perf_counter()
    out = sys.stdout
    if args.ids:
        for _ in gen:
            pass
        out.write(" ".join(str(t) for t in gen.tokens) + "\n")
    else:
        if prompt and not args.quiet_prompt:
            out.write(prompt)
        for piece in gen:
            out.write(piece)
            out.flush()
        out.write("\n")
    out.flush()
    dt = time.perf_counter() - t0
    n = len(gen.tokens)
    if not args.quiet:
        print(f"[{model.name} {model.version}: {n} tokens, finish {gen.finish_reason}, "
              f"{n / dt if dt > 0 else 0:.1f} tok/s, prefill {len(ids)} tokens in "
              f"{gen.prefill_s * 1e3:.2f} ms, backend {model.backend} ({_backend_detail(model)})]",
              file=sys.stderr)
    return 0


def _backend_detail(model) -> str:
    """The kernel path (native), or how the numpy backend holds its weights."""
    if getattr(model, "numpy_weights", None):
        return f"weights {model.numpy_weights}, BULLET_NUMPY_WEIGHTS"
    return model.kernel_path


def _cmd_import(args) -> int:
    from .llama2c import import_llama2c
    info = import_llama2c(args.checkpoint, args.out, tokenizer=args.tokenizer, dtype=args.dtype,
                          name=args.name, version=args.version)
    c = info["config"]
    print(f"wrote {info['out']} ({info['size']:,} bytes, {info['dtype']}): dim {c['dim']}, "
          f"{c['n_layers']} layers, {c['n_heads']} heads / {c['n_kv_heads']} kv heads, hidden "
          f"{c['hidden_dim']}, vocab {c['vocab_size']}, context {c['seq_len']}, "
          f"{'shared' if c['shared_classifier'] else 'separate'} classifier")
    if info.get("removed_sig"):
        print(f"removed {info['removed_sig']}: it signed the file this one replaced")
    if info["placeholder_vocab"]:
        print("note: no --tokenizer given: the vocabulary is a byte-level placeholder; token ids "
              "are exact, text is not (recorded in the header's provenance)")
    if args.agreement and args.dtype == "bq4":
        import os
        import tempfile
        from .llama2c import greedy_agreement
        from .model import load_model
        with tempfile.TemporaryDirectory(prefix="bullet-import-") as d:
            ref = os.path.join(d, "f32.bullet")
            import_llama2c(args.checkpoint, ref, tokenizer=args.tokenizer, dtype="f32")
            with load_model(ref) as a, load_model(args.out) as b:
                r = greedy_agreement(a, b, args.agreement)
                backend = b.backend
        print(f"bq4 vs f32 greedy from BOS over {r['steps']} steps ({backend} backend): "
              f"teacher-forced agreement {100 * r['teacher_forced']:.1f}%, free-running "
              f"position-wise {100 * r['free_run_positionwise']:.1f}%, identical prefix "
              f"{r['free_run_same_prefix']} tokens")
    return 0


def _cmd_bench(args) -> int:
    from bulletd.bench.runtime import main as bench_main
    return bench_main(args)


def _steps(text: str) -> int:
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of positions, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (the whole context) or more, got {n}")
    return n


def register(subparsers) -> None:
    """Add run, import-llama2c and bench to the `bullet` parser's subparsers."""
    from .sampling import GenerationSettings
    p = subparsers.add_parser("run", help="generate text (or ids) from a model file, like llama2.c's run")
    p.add_argument("file", help="an lm .bullet file")
    p.add_argument("-p", "--prompt", default="", help="prompt text (default: start from BOS)")
    d = GenerationSettings()   # the daemon's defaults: one definition for both
    p.add_argument("-n", "--steps", type=_steps, default=None,
                   help="positions to run, prompt included, as llama2.c counts them (0 = the whole context; "
                        f"default: {d.max_tokens} new tokens, as the daemon)")
    p.add_argument("-t", "--temperature", type=float, help=f"0 = greedy (default {d.temperature:g})")
    p.add_argument("--top-p", type=float, help=f"nucleus sampling (default {d.top_p:g}, 1 = off)")
    p.add_argument("--top-k", type=int, help=f"top-k sampling (default {d.top_k}, 0 = off)")
    p.add_argument("--repeat-penalty", type=float,
                   help=f"repetition penalty (default {d.repetition_penalty:g}, 1 = off)")
    p.add_argument("--seed", type=int, default=None, help="RNG seed for a repeatable run")
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--ids", action="store_true", help="print generated token ids (BOS excluded) instead of text")
    p.add_argument("--schema", metavar="FILE",
                   help="a JSON schema file: the output is a compact JSON document valid against it")
    p.add_argument("--format", choices=("json",), help="json: the output is any JSON value")
    p.add_argument("--copy-source", metavar="TEXT",
                   help='what "x-copy" strings of the schema may copy from (default: the prompt)')
    p.add_argument("--threads", type=int, default=1,
                   help="threads one step runs on (1 to 64; the same tokens with any number; default 1)")
    p.add_argument("--backend", choices=("auto", "native", "numpy"), default="auto")
    p.add_argument("--quiet", action="store_true", help="no statistics line on stderr")
    p.add_argument("--quiet-prompt", action="store_true", help="do not echo the prompt")
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser("import-llama2c", help="convert a llama2.c checkpoint (+ tokenizer.bin) to .bullet")
    p.add_argument("checkpoint", help="llama2.c version-0 .bin checkpoint")
    p.add_argument("--tokenizer", help="llama2.c tokenizer.bin (default: a byte-level placeholder vocabulary)")
    p.add_argument("--dtype", choices=("f32", "bq4"), default="f32", help="matrix dtype (default f32: exact)")
    p.add_argument("-o", "--out", required=True, help="output .bullet file")
    p.add_argument("--name", help="model name for the header (default: the checkpoint's file name)")
    p.add_argument("--version", default="1", help="model version for the header (default 1)")
    p.add_argument("--agreement", type=int, default=0, metavar="STEPS",
                   help="with --dtype bq4: report how often greedy tokens agree with f32 over STEPS")
    p.set_defaults(func=_cmd_import)

    from bulletd.bench.runtime import add_arguments
    p = subparsers.add_parser("bench", help="runtime benchmark: SMALL and REFERENCE, native vs NumPy")
    add_arguments(p)
    p.set_defaults(func=_cmd_bench)
