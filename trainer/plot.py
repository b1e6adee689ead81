"""A loss-curve PNG without a plotting library: a tiny RGB rasteriser and a PNG writer (zlib).

    write_loss_png("loss.png", [(step, loss), ...], val=[(step, val_loss), ...])

Training loss is drawn in blue, validation points in red, on a light grid with a frame; the axis
ranges are written into the PNG's tEXt chunk ("Comment") since there is no font rendering.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, rgb: np.ndarray, comment: str = "") -> None:
    """rgb: uint8 (height, width, 3)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    if comment:
        data += _png_chunk(b"tEXt", b"Comment\x00" + comment.encode("latin-1", "replace"))
    data += _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(data)


def _line(img, x0, y0, x1, y1, color):
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    ok = (xs >= 0) & (xs < img.shape[1]) & (ys >= 0) & (ys < img.shape[0])
    img[ys[ok], xs[ok]] = color


def write_loss_png(path, train, val=(), width=640, height=360) -> None:
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    pad = 30
    pts = [(s, l) for s, l in train if np.isfinite(l)] + [(s, l) for s, l in val if np.isfinite(l)]
    if not pts:
        write_png(path, img, "no data")
        return
    s_max = max(1, max(s for s, _ in pts))
    lo, hi = min(l for _, l in pts), max(l for _, l in pts)
    if hi - lo < 1e-9:
        hi = lo + 1.0

    def xy(s, l):
        return pad + (width - 2 * pad) * s / s_max, height - pad - (height - 2 * pad) * (l - lo) / (hi - lo)

    for k in range(1, 5):  # grid
        gy = pad + (height - 2 * pad) * k / 5
        gx = pad + (width - 2 * pad) * k / 5
        _line(img, pad, gy, width - pad, gy, (225, 225, 225))
        _line(img, gx, pad, gx, height - pad, (225, 225, 225))
    for a, b in (((pad, pad), (pad, height - pad)), ((pad, height - pad), (width - pad, height - pad)),
                 ((width - pad, pad), (width - pad, height - pad)), ((pad, pad), (width - pad, pad))):
        _line(img, *a, *b, (0, 0, 0))
    tr = [(s, l) for s, l in train if np.isfinite(l)]
    for (s0, l0), (s1, l1) in zip(tr, tr[1:]):
        _line(img, *xy(s0, l0), *xy(s1, l1), (30, 90, 200))
    for s, l in val:
        if np.isfinite(l):
            x, y = xy(s, l)
            img[max(0, int(y) - 2):int(y) + 3, max(0, int(x) - 2):int(x) + 3] = (210, 40, 40)
    write_png(path, img, f"loss curve: steps 0..{s_max}, loss {lo:.4f}..{hi:.4f}; blue train, red validation")
