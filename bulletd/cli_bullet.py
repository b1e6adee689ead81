"""`bullet`: the file tool. keygen, sign, verify, inspect (this module); run, import-llama2c and
bench (bulletd.runtime.cli); export-gguf, import-gguf (bulletd.gguf.cli); eval (bulletd.evaluate);
push (bulletd.ota.push).

    bullet keygen mykey                       # mykey.key (0600) + mykey.pub.pem
    bullet sign model.bullet --key mykey.key  # writes model.bullet.sig
    bullet verify model.bullet --trust mykey.pub.pem
    bullet inspect model.bullet [--json]
    bullet bench-format                       # open / verify / RSS / BQ4 error figures
    bullet eval SET.jsonl --models DIR        # accuracy / routing / bits per byte of children
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import BulletError, plain, stdout_gone


def _cmd_keygen(args) -> int:
    from .signing import generate_keypair, key_id, load_public_key
    priv, pub = generate_keypair(args.name, args.dir)
    print(f"private key: {priv} (mode 0600, keep it secret)")
    print(f"public key:  {pub} (key id {key_id(load_public_key(pub))})")
    return 0


def _cmd_sign(args) -> int:
    from .signing import sign_file
    sig = sign_file(args.file, args.key, name=args.name, version=args.version)
    print(f"signed: {sig}")
    return 0


def _cmd_verify(args) -> int:
    from .format import BulletFile
    from .signing import verify_file
    if not os.path.isfile(args.file):   # before its .sig: the file is what the user named
        raise FileNotFoundError(2, "no such file" if not os.path.exists(args.file) else "not a file", args.file)
    m = verify_file(args.file, args.trust, args.sig)
    with BulletFile.open(args.file) as bf:   # structure checked only after the signature
        bf.verify_body()
    print(f"OK: {m['name']} {m['version']}, {m['size']} bytes, sha256 {m['sha256']}, key {m['key_id']}")
    return 0


def inspect_dict(path: str, trust: str | None = None) -> dict:
    from .format import BulletFile
    from .signing import TrustStore, read_signature, verify_file
    with BulletFile.open(path) as bf:
        h = bf.header
        try:
            bf.verify_body()
            checksum = "ok"
        except BulletError as exc:
            checksum = f"BAD: {exc}"
        info = {
            "path": path, "size": bf.size, "kind": bf.kind, "name": bf.name, "version": bf.version,
            "format_version": h["version"], "arch": h.get("arch"), "tokenizer": h["tokenizer"],
            "provenance": h["provenance"], "body_sha256": h["body_sha256"], "checksum": checksum,
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "offset": t.offset,
                         "nbytes": t.nbytes} for t in bf.tensors.values()],
            "extra_keys": sorted(k for k in h if k not in {"format", "version", "kind", "arch", "tokenizer",
                                                           "provenance", "tensors", "body_sha256"}),
        }
    try:
        sig = read_signature(path + ".sig")
        m = sig.get("manifest", {}) if isinstance(sig, dict) else {}
        state = f"signed by key {m.get('key_id')}"
        if trust:
            try:
                verify_file(path, TrustStore(trust))
                state += " (valid)"
            except BulletError as exc:
                state += f" (INVALID: {exc})"
        else:
            state += " (not checked: no --trust)"
    except BulletError as exc:
        state = f"unsigned ({exc})" if getattr(exc, "code", "") == "unsigned" else f"bad signature file ({exc})"
    info["signature"] = state
    return info


def _cmd_inspect(args) -> int:
    info = inspect_dict(args.file, args.trust)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    print(f"{info['path']}: {info['kind']} '{info['name']}' version {info['version']}, {info['size']:,} bytes")
    if info["arch"]:
        print("arch:      " + ", ".join(f"{k}={v}" for k, v in info["arch"].items()))
    tk = info["tokenizer"]
    print(f"tokenizer: {tk.get('kind', '?')}, {tk.get('n_tokens')} tokens, bos={tk.get('bos_id')} eos={tk.get('eos_id')}")
    print(f"checksum:  {info['checksum']} (body sha256 {info['body_sha256'][:16]}...)")
    print(f"signature: {info['signature']}")
    if info["extra_keys"]:
        print(f"extra:     {', '.join(info['extra_keys'])}")
    print(f"{'tensor':<24} {'dtype':<5} {'shape':<14} {'offset':>10} {'bytes':>10}")
    for t in info["tensors"]:
        print(f"{t['name']:<24} {t['dtype']:<5} {'x'.join(map(str, t['shape'])):<14} {t['offset']:>10} {t['nbytes']:>10}")
    return 0


def _cmd_bench_format(args) -> int:
    from .bench.format import main as bench_main
    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bullet", description="Bullet OS model file tool")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair (PEM)")
    p.add_argument("name")
    p.add_argument("--dir", default=".", help="where to write NAME.key and NAME.pub.pem")
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("sign", help="sign a file (writes FILE.sig)")
    p.add_argument("file")
    p.add_argument("--key", required=True, help="private key (PEM)")
    p.add_argument("--name", help="name for the manifest (default: from the .bullet header)")
    p.add_argument("--version", help="version for the manifest (default: from the .bullet header)")
    p.set_defaults(func=_cmd_sign)

    p = sub.add_parser("verify", help="verify a file's signature against trusted keys")
    p.add_argument("file")
    p.add_argument("--trust", required=True, help="public key PEM, or a directory of them")
    p.add_argument("--sig", help="signature file (default FILE.sig)")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("inspect", help="show header, tensor table, checksum and signature state")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.add_argument("--trust", help="also check the signature against these keys")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("bench-format", help="format figures: open, verify, RSS, BQ4 error")
    p.add_argument("--shared", help="path to the shared/ folder (for stories260K.bin)")
    p.set_defaults(func=_cmd_bench_format)

    try:
        from .runtime import cli as runtime_cli   # run, import-llama2c, bench
    except ImportError:
        runtime_cli = None
    if runtime_cli is not None and hasattr(runtime_cli, "register"):
        runtime_cli.register(sub)
    from .gguf.cli import register as register_gguf   # export-gguf, import-gguf
    register_gguf(sub)
    from .evaluate import register as register_eval   # eval
    register_eval(sub)
    from .ota.push import register as register_push   # push
    register_push(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()        # a pipe closed early shows here, not at interpreter exit
        return rc
    except BrokenPipeError:       # `bullet inspect ... | head`: the reader left, nothing to say
        return stdout_gone()
    except BulletError as exc:
        from .daemon.protocol import request_code
        code = request_code(exc) or getattr(exc, "code", None)     # as bulletd would answer
        print(f"bullet {args.cmd}: error: {exc}" + (f" [{code}]" if code else ""), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"bullet {args.cmd}: error: {plain(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
