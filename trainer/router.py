"""The mother (router) trainer: labelled prompts -> a small classifier -> a `router`-kind .bullet.

Model (docs/ARCHITECTURE.md, "Router file"): x = router_features(text, D, kind) (bulletd.format,
the same function the daemon uses; the kind goes into the header as router.features),
p = softmax(relu(x @ w1 + b1) @ w2 + b2). Trained with the
trainer's autograd and AdamW on class-balanced minibatches; a seeded held-out tenth of each
label measures accuracy, which goes into the file's provenance.

Labelled prompts come from any mix of:
  * `NAME=FILE.jsonl`   a corpus of the child NAME ({"text": ...} per line): up to `per_label`
                        lines drawn with the seed, cut to prompt length;
  * `NAME=FILE.bullet`  a child file: the prompts in its header["examples"];
  * a labelled JSONL    {"text": ..., "label": ...} per line (a hand-written set).

    bullet-train router -o mother.bullet --child marathi=marathi.jsonl --child fortunes=fortunes_en.jsonl \\
        --labelled extra.jsonl --key release.key
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bulletd.format import BulletFile, router_features, write_bullet
from bulletd.format.features import DEFAULT_KIND, FEATURE_KINDS, router_features_sparse
from bulletd.errors import BulletError
from trainer import autograd as ag
from trainer.data import load_jsonl
from trainer.errors import ConfigError, DataError, ExportError
from trainer.optim import AdamW


def _prompt(text: str, max_chars: int, rng) -> str:
    """A prompt-sized piece of a corpus record: whitespace collapsed, a random start on a word
    boundary for long records."""
    words = text.split()
    if len(" ".join(words)) <= max_chars:
        return " ".join(words)
    start = int(rng.integers(0, max(1, len(words) // 2)))
    out = []
    for w in words[start:]:
        if out and len(" ".join(out + [w])) > max_chars:
            break
        out.append(w)
    return " ".join(out)


def examples_from_source(label: str, path, per_label: int, seed: int, max_chars: int = 80) -> list[tuple[str, str]]:
    p = Path(path)
    if p.suffix == ".bullet":
        try:
            with BulletFile.open(p) as bf:
                ex = bf.header.get("examples") or []
        except BulletError as exc:
            raise DataError(f"{p}: cannot read the child's examples: {exc}") from exc
        ex = [e for e in ex if isinstance(e, str) and e.strip()]
        if not ex:
            raise DataError(f"{p}: the child's header carries no 'examples'")
        return [(e, label) for e in ex]
    corpus = load_jsonl(p)
    rng = np.random.default_rng([seed, len(label)])
    idx = rng.permutation(len(corpus.texts))[:per_label]
    return [(_prompt(corpus.texts[i], max_chars, rng), label) for i in sorted(idx)]


def examples_from_labelled(path) -> list[tuple[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"labelled prompts file {p} does not exist")
    out = []
    for n, line in enumerate(p.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{p}: line {n}: not a UTF-8 JSON object ({exc})") from exc
        if not (isinstance(obj, dict) and isinstance(obj.get("text"), str) and isinstance(obj.get("label"), str)
                and obj["text"].strip() and obj["label"]):
            raise DataError(f"{p}: line {n}: expected {{\"text\": str, \"label\": str}}, found {line[:80]!r}")
        out.append((obj["text"], obj["label"]))
    if not out:
        raise DataError(f"labelled prompts file {p} is empty")
    return out


class _Sparse:
    """Feature rows kept as (buckets, values): a dense matrix of every prompt would not fit."""

    def __init__(self, rows: list, dim: int):
        self.rows, self.dim = rows, dim

    def dense(self, idx, dropout: float = 0.0, rng=None) -> np.ndarray:
        out = np.zeros((len(idx), self.dim), np.float32)
        for i, r in enumerate(idx):
            b, v = self.rows[r]
            if dropout > 0:
                keep = rng.random(len(b)) >= dropout
                b, v = b[keep], v[keep]
                n = float(np.linalg.norm(v))
                v = v / n if n > 0 else v
            out[i, b] = v
        return out

    def coo(self, idx, dropout: float = 0.0, rng=None):
        """The rows `idx` as (row, bucket, value) triples, row-major: the rows dense() would give
        (with dropout, the same draws; a row that would lose every bucket keeps them all)."""
        rows, cols, vals = [], [], []
        for i, r in enumerate(idx):
            b, v = self.rows[r]
            if dropout > 0:
                keep = rng.random(len(b)) >= dropout
                if keep.any():
                    b, v = b[keep], v[keep]
                    n = float(np.linalg.norm(v))
                    v = v / n if n > 0 else v
            rows.append(np.full(len(b), i, np.int64))
            cols.append(b)
            vals.append(v)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals).astype(np.float32)


def _sparse_matmul(n: int, coo, w: "ag.Tensor") -> "ag.Tensor":
    """(n, H) = X @ w for X given as row-major COO triples: the first layer touches only the
    buckets a batch holds (a few hundred per prompt of 16384), forward and backward."""
    rows, cols, vals = coo
    contrib = vals[:, None] * w.data[cols]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    out = np.zeros((n, w.data.shape[1]), np.float32)
    out[rows[starts]] = np.add.reduceat(contrib, starts, axis=0)

    def backward(g):
        if w.grad is None:
            w.grad = np.zeros_like(w.data)
        order = np.argsort(cols, kind="stable")
        c = cols[order]
        first = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        w.grad[c[first]] += np.add.reduceat(vals[order, None] * g[rows[order]], first, axis=0)

    return ag.Tensor(out, parents=(w,), backward_fn=backward)


@dataclass
class RouterModel:
    labels: list[str]
    w1: np.ndarray   # (D, H)
    b1: np.ndarray   # (H,)
    w2: np.ndarray   # (H, L)
    b2: np.ndarray   # (L,)
    metrics: dict = field(default_factory=dict)
    features: str = DEFAULT_KIND

    def probs(self, texts) -> np.ndarray:
        x = np.stack([router_features(t, self.w1.shape[0], self.features) for t in texts])
        return self._probs(x)

    def probs_x(self, X: "_Sparse", rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = [self._probs(X.dense(rows[i:i + 2048])) for i in range(0, len(rows), 2048)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def _probs(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ self.w1 + self.b1, 0)
        z = h @ self.w2 + self.b2
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, texts) -> list[str]:
        return [self.labels[i] for i in self.probs(texts).argmax(axis=1)]


def train_router(examples: list[tuple[str, str]], *, feature_dim: int = 1024, hidden: int = 64, steps: int = 300,
                 lr: float = 3e-3, batch: int = 128, seed: int = 0, holdout: float = 0.1,
                 features: str = DEFAULT_KIND, weight_decay: float = 1e-4, dropout: float = 0.0,
                 label_weights: dict | None = None, log=print) -> RouterModel:
    """dropout: the share of a training prompt's n-gram buckets dropped at each step (the rest
    renormalised), so that the mother does not lean on a single word or n-gram of a phrasing.
    label_weights: a label's share of each minibatch relative to the others (default 1 each), e.g.
    {"_none": 2} so that a prompt like none of the children's leans towards the reject label."""
    labels = sorted({lab for _, lab in examples})
    if len(labels) < 2:
        raise DataError(f"a router needs prompts of at least 2 children, found labels {labels}")
    if feature_dim < 8 or hidden < 1 or steps < 1:
        raise ConfigError("feature_dim must be >= 8, hidden >= 1 and steps >= 1")
    if features not in FEATURE_KINDS:
        raise ConfigError(f"unknown router feature kind {features!r} (known: {', '.join(FEATURE_KINDS)})")
    rng = np.random.default_rng(seed)
    X = _Sparse([router_features_sparse(t, feature_dim, features) for t, _ in examples], feature_dim)
    y = np.array([labels.index(lab) for _, lab in examples])
    # per-label held-out split (at least one training example per label)
    tr_idx, te_idx = [], []
    for k in range(len(labels)):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_te = int(len(idx) * holdout) if len(idx) >= 5 else 0
        te_idx.extend(idx[:n_te])
        tr_idx.extend(idx[n_te:])
    tr_idx, te_idx = np.array(tr_idx), np.array(te_idx, dtype=np.int64)
    by_label = [tr_idx[y[tr_idx] == k] for k in range(len(labels))]

    L = len(labels)
    w1 = ag.Tensor((rng.standard_normal((feature_dim, hidden)) * 0.5).astype(np.float32), requires_grad=True)
    b1 = ag.Tensor(np.zeros(hidden, np.float32), requires_grad=True)
    w2 = ag.Tensor((rng.standard_normal((hidden, L)) / np.sqrt(hidden)).astype(np.float32), requires_grad=True)
    b2 = ag.Tensor(np.zeros(L, np.float32), requires_grad=True)
    params = [w1, b1, w2, b2]
    flat = np.concatenate([p.data.ravel() for p in params])
    flat_g = np.zeros_like(flat)
    off = 0
    for p in params:  # make the parameters views into one vector for AdamW
        n = p.data.size
        p.data = flat[off:off + n].reshape(p.data.shape)
        p.grad = flat_g[off:off + n].reshape(p.data.shape)
        off += n
    decay = np.zeros(flat.size, bool)
    decay[:w1.data.size] = True
    decay[w1.data.size + b1.data.size:w1.data.size + b1.data.size + w2.data.size] = True
    opt = AdamW(flat, flat_g, decay, betas=(0.9, 0.99), weight_decay=weight_decay)
    weights = np.array([float((label_weights or {}).get(lab, 1.0)) for lab in labels])
    if (weights <= 0).any() or set(label_weights or {}) - set(labels):
        raise ConfigError(f"label_weights must be positive and name known labels {labels}, got {label_weights}")
    per = [max(1, int(round(batch * w / weights.sum()))) for w in weights]
    for step in range(steps):
        # class-balanced minibatch: a corpus with many more lines does not drown the others
        bi = np.concatenate([rng.choice(ix, size=k, replace=len(ix) < k) for ix, k in zip(by_label, per)])
        flat_g[...] = 0
        h = ag.relu(ag.add(_sparse_matmul(len(bi), X.coo(bi, dropout, rng), w1), b1))
        loss = ag.cross_entropy(ag.add(ag.matmul(h, w2), b2), y[bi])
        loss.backward()
        opt.step(lr * min(1.0, (step + 1) / 20))
    model = RouterModel(labels, w1.data.copy(), b1.data.copy(), w2.data.copy(), b2.data.copy(), features=features)
    acc_tr = float(np.mean(model.probs_x(X, tr_idx).argmax(1) == y[tr_idx]))
    acc_te = float(np.mean(model.probs_x(X, te_idx).argmax(1) == y[te_idx])) if len(te_idx) else None
    model.metrics = {"train_accuracy": acc_tr, "heldout_accuracy": acc_te, "n_train": int(len(tr_idx)),
                     "n_heldout": int(len(te_idx)), "final_loss": float(loss.data), "steps": steps,
                     "per_label": {lab: int((y == k).sum()) for k, lab in enumerate(labels)}}
    log(f"router: {len(labels)} labels {labels}, {len(tr_idx)} training prompts, accuracy train {acc_tr:.3f}"
        + (f", held-out {acc_te:.3f} on {len(te_idx)}" if acc_te is not None else ""))
    return model


def export_router(model: RouterModel, out, *, threshold: float = 0.5, key=None, name: str = "mother",
                  version: str = "0.1.0", examples=None, w1_dtype: str = "f32") -> dict:
    """w1_dtype "f16" stores the (feature_dim, hidden) first layer in half the bytes (the daemon
    computes in float32 either way; the other tensors stay f32)."""
    out = Path(out)
    if not (0.0 <= threshold <= 1.0):
        raise ConfigError(f"router threshold must lie in [0, 1], got {threshold}")
    if w1_dtype not in ("f32", "f16"):
        raise ConfigError(f"router w1 dtype must be f32 or f16, got {w1_dtype!r}")
    D, H = model.w1.shape
    prov = {"name": name, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "training": {"trainer": "bullet-train router", **model.metrics}}
    extra = {"router": {"labels": model.labels, "feature_dim": int(D), "hidden": int(H), "threshold": threshold,
                        "features": model.features}}
    if examples:
        extra["examples"] = examples
    from bulletd.signing import ModelOutput

    try:   # reads the key first: a wrong key writes nothing and leaves an existing OUT as it was
        output = ModelOutput(out, key, name=name, version=version)
    except BulletError as exc:
        raise ExportError(str(exc)) from None
    with output:
        write_bullet(output.tmp, kind="router", arch={"feature_dim": int(D), "hidden": int(H)},
                     tensors={"router.w1": (w1_dtype, model.w1.astype(np.float16 if w1_dtype == "f16" else np.float32)),
                              "router.b1": ("f32", model.b1),
                              "router.w2": ("f32", model.w2), "router.b2": ("f32", model.b2)},
                     vocab=[], tokenizer={"kind": "none"}, provenance=prov, extra=extra)
    summary = {"path": str(out), "size": out.stat().st_size, **model.metrics}
    if key is not None:
        summary["signature"] = str(output.sig_path)
    if output.removed_sig:
        summary["removed_sig"] = str(output.sig_path)
    return summary
