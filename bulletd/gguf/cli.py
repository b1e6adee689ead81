"""`bullet export-gguf` and `bullet import-gguf`. bulletd/cli_bullet.py calls `register(subparsers)`.

    bullet export-gguf child_models/fortunes.bullet -o fortunes.gguf
    bullet import-gguf model.gguf -o model.bullet [--dtype auto|bq4|f16|f32]
"""
from __future__ import annotations


def _cmd_export(args) -> int:
    from .export import export_gguf
    info = export_gguf(args.file, args.out)
    kinds = ", ".join(f"{n} {k}" for k, n in info["tensors"].items())
    print(f"wrote {info['out']} ({info['size']:,} bytes, architecture llama): {kinds}")
    return 0


def _cmd_import(args) -> int:
    from .importer import import_gguf
    info = import_gguf(args.file, args.out, dtype=args.dtype, name=args.name, version=args.version)
    a = info["arch"]
    kinds = ", ".join(f"{n} {k}" for k, n in info["kinds"].items())
    print(f"wrote {info['out']} ({info['size']:,} bytes): dim {a['dim']}, {a['n_layers']} layers, "
          f"{a['n_heads']} heads / {a['n_kv_heads']} kv heads, hidden {a['hidden_dim']}, vocab "
          f"{a['vocab_size']}, context {a['max_seq_len']}, tokenizer {info['tokenizer']}")
    print(f"tensors: {kinds}")
    if info["restored_header"]:
        print("a Bullet export: its .bullet header (provenance, tokenizer settings, examples) is restored")
    elif info.get("header_ignored"):
        print(f"note: the file carries a Bullet header, but {info['header_ignored']}")
    errs = info["errors"]
    if errs:
        worst = max(errs, key=errs.get)
        mean = sum(errs.values()) / len(errs)
        print(f"quantisation error (RMS of the error / RMS of the weights) over {len(errs)} tensors: "
              f"mean {100 * mean:.2f}%, worst {100 * errs[worst]:.2f}% ({worst})")
    else:
        print("every weight copied exactly")
    if info.get("removed_sig"):
        print(f"removed {info['removed_sig']}: it signed the file this one replaced")
    return 0


def register(subparsers) -> None:
    """Add export-gguf and import-gguf to the `bullet` parser's subparsers."""
    p = subparsers.add_parser("export-gguf", help="write an lm .bullet file as GGUF (llama.cpp, Ollama)")
    p.add_argument("file", help="an lm .bullet file")
    p.add_argument("-o", "--out", required=True, help="output .gguf file")
    p.set_defaults(func=_cmd_export)

    p = subparsers.add_parser("import-gguf", help="convert a llama-architecture GGUF model to .bullet")
    p.add_argument("file", help="a GGUF file (architecture llama; F32, F16, Q4_0, Q8_0 tensors)")
    p.add_argument("-o", "--out", required=True, help="output .bullet file")
    p.add_argument("--dtype", choices=("auto", "bq4", "f16", "f32"), default="auto",
                   help="matrices: auto (default: a Bullet export comes back as it was, anything else "
                        "as bq4), bq4 (Q4_0 exact, others quantised), f16, f32 (exact)")
    p.add_argument("--name", help="model name for the header (default: general.name or the file name)")
    p.add_argument("--version", help="model version for the header (default: general.version or 1)")
    p.set_defaults(func=_cmd_import)
