"""Format figures: `bullet bench-format` (or `python -m bulletd.bench.format`).

Prints, for a 5 MB REFERENCE-size file: open time without verification, SHA-256 + signature
check time, the RSS added by opening ten such files before any weight is touched, and the BQ4
RMS error of the MSE scale rule beside the plain absmax/7 rule on Gaussian weights and on the
real weights of stories260K.bin (when shared/ is present).
"""
from __future__ import annotations

import argparse
import gc
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from bulletd.format import BulletFile, bq4_rms_error
from bulletd.format.synth import REFERENCE, write_random_lm
from bulletd.signing import TrustStore, generate_keypair, sign_file, verify_file


def _best(fn, n: int) -> float:
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def stories_matrices(path: Path) -> list[tuple[str, np.ndarray]]:
    """The 2-D weight matrices of a llama2.c version-0 checkpoint, in file order."""
    raw = path.read_bytes()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = struct.unpack_from("<7i", raw, 0)
    w = np.frombuffer(raw, np.float32, offset=28)
    vocab = abs(vocab)
    kv_dim = dim * n_kv // n_heads
    out, pos = [], 0

    def take(name, *shape):
        nonlocal pos
        n = int(np.prod(shape))
        arr = w[pos:pos + n].reshape(shape)
        pos += n
        if len(shape) == 3:
            out.extend((f"{name}.{i}", arr[i]) for i in range(shape[0]))
    take("tok_embd", 1, vocab, dim)
    take("attn_norm", n_layers, dim)
    take("wq", n_layers, dim, dim)
    take("wk", n_layers, kv_dim, dim)
    take("wv", n_layers, kv_dim, dim)
    take("wo", n_layers, dim, dim)
    take("ffn_norm", n_layers, dim)
    take("w1", n_layers, hidden, dim)
    take("w2", n_layers, dim, hidden)
    take("w3", n_layers, hidden, dim)
    return out


def _mapped_rss(folder: Path) -> int:
    """Resident bytes of this process's mappings of files under `folder` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                inside = len(head) >= 6 and head[-1].startswith(str(folder))
            elif inside and line.startswith("Rss:"):
                total += int(head[1]) * 1024
    return total


def _combined_error(mats, rule: str) -> float:
    num = den = 0.0
    for _, m in mats:
        e = bq4_rms_error(m, rule)
        ms = float(np.mean(m.astype(np.float64) ** 2))
        num += e * e * ms * m.size
        den += ms * m.size
    return float(np.sqrt(num / den))


def main(args=None) -> int:
    shared = Path(getattr(args, "shared", None) or os.environ.get("BULLET_SHARED") or
                  Path(__file__).resolve().parents[3] / "shared")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        f = write_random_lm(d / "ref.bullet", REFERENCE, name="bench")
        priv, pub = generate_keypair("bench", d)
        sign_file(f, priv)
        trust = TrustStore(pub)
        size = f.stat().st_size

        def open_close():
            BulletFile.open(f).close()
        t_open = _best(open_close, 50)
        t_verify = _best(lambda: verify_file(f, trust), 10)
        print(f"file: REFERENCE random model, {size / 1e6:.2f} MB")
        print(f"{'open without verification':<44} {t_open * 1e3:8.3f} ms   (target <= 1 ms)")
        print(f"{'SHA-256 + Ed25519 signature check':<44} {t_verify * 1e3:8.3f} ms   (target <= 30 ms)")
        print(f"{'baseline: read whole file into memory':<44} {_best(lambda: f.read_bytes(), 10) * 1e3:8.3f} ms")

        copies = []
        for i in range(10):
            c = d / f"copy{i}.bullet"
            c.write_bytes(f.read_bytes())
            copies.append(c)
        BulletFile.open(copies[0]).close()   # warm-up: imports and allocator pools are not the files' cost
        gc.collect()
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        opened = [BulletFile.open(c) for c in copies]
        rss1 = proc.memory_info().rss
        print(f"{'RSS added by opening ten 5 MB files':<44} {(rss1 - rss0) / 1e6:8.3f} MB   (target < 2 MB)")
        print(f"{'  of which mapped file pages (smaps)':<44} {_mapped_rss(d) / 1e6:8.3f} MB")
        touched = sum(float(np.asarray(b.tensor("blk.0.w1"), dtype=np.float32).sum()) for b in opened)
        print(f"{'  mapped pages after reading one tensor each':<44} {_mapped_rss(d) / 1e6:8.3f} MB   ({touched:.0f})")
        for b in opened:
            b.close()

    rng = np.random.default_rng(0)
    gauss = [("gauss", rng.standard_normal((256, 4096)).astype(np.float32))]
    print("\nBQ4 RMS error relative to f32 (lower is better)")
    print(f"{'weights':<28} {'mse rule':>10} {'absmax/7':>10} {'gain':>8}")
    sets = [("Gaussian 256x4096", gauss)]
    stories = shared / "models" / "stories260K.bin"
    if stories.exists():
        sets.append(("stories260K.bin (all mats)", stories_matrices(stories)))
    else:
        print(f"(stories260K.bin not found at {stories}; pass --shared)")
    for label, mats in sets:
        a, b = _combined_error(mats, "mse"), _combined_error(mats, "absmax")
        print(f"{label:<28} {a:10.5f} {b:10.5f} {100 * (1 - a / b):7.1f}%")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared")
    raise SystemExit(main(ap.parse_args()))
