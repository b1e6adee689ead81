"""Training data: JSONL loading with bad-line reports, the reproducible train/validation split,
tokenization into one token stream per split, batch sampling and bits-per-byte bookkeeping.

A corpus is JSONL with one object per line holding a string field (default "text"). A line that
is not UTF-8, not JSON, not an object, lacks the field, or has an empty text is a bad line: it is
skipped and reported with its line number (on_bad_line="skip"), or stops the run at once
(on_bad_line="error"). Blank lines are ignored. The split shuffles the documents with the run's
seed and puts `validation_fraction` of them (at least one) in validation.

Each split is one stream [<s> doc1 <s> doc2 ...]. The batch for optimiser step s is drawn by
`np.random.default_rng([seed, s, attempt])`: a pure function of the step, so a resumed run sees
the same batches as an uninterrupted one, and a rolled-back step (attempt + 1) gets a new batch.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.errors import DataError


@dataclass
class Corpus:
    path: str
    texts: list[str]
    bad_lines: list[tuple[int, str]]      # (1-based line number, reason)
    sha256: str                           # of the file's bytes (export provenance)
    n_lines: int

    def bad_line_report(self, limit: int = 10) -> str:
        if not self.bad_lines:
            return "no bad lines"
        shown = "; ".join(f"line {n}: {why}" for n, why in self.bad_lines[:limit])
        more = f"; ... and {len(self.bad_lines) - limit} more" if len(self.bad_lines) > limit else ""
        return f"{len(self.bad_lines)} bad line(s) skipped: {shown}{more}"


def load_jsonl(path, *, field_name: str = "text", on_bad_line: str = "skip") -> Corpus:
    """Read a JSONL corpus. Raises DataError for a missing/empty file, a file with no usable
    record, or (on_bad_line="error") the first bad line."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {p} does not exist")
    if not p.is_file():
        raise DataError(f"dataset {p} is not a regular file")
    raw = p.read_bytes()
    if not raw.strip():
        raise DataError(f"dataset {p} is empty (expected JSONL lines like {{\"{field_name}\": \"...\"}})")
    texts, bad = [], []
    lines = raw.split(b"\n")
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        why = None
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            why = f"invalid UTF-8 at byte offset {exc.start} of the line ({line[exc.start:exc.start + 4]!r})"
        else:
            try:
                obj = json.loads(s)
            except json.JSONDecodeError as exc:
                why = f"not JSON ({exc.msg} at column {exc.colno})"
            else:
                if not isinstance(obj, dict):
                    why = f"expected a JSON object, found {type(obj).__name__}"
                elif not isinstance(obj.get(field_name), str):
                    why = f"no string field {field_name!r}"
                elif not obj[field_name]:
                    why = f"empty {field_name!r}"
                else:
                    t = obj[field_name]
                    try:
                        t.encode("utf-8")
                    except UnicodeEncodeError:
                        why = "text holds a lone surrogate (\\ud8xx escape), not valid Unicode"
                    else:
                        texts.append(t)
        if why is not None:
            if on_bad_line == "error":
                raise DataError(f"{p}: line {n}: {why}")
            bad.append((n, why))
    if not texts:
        detail = f"; {len(bad)} bad line(s), first: line {bad[0][0]}: {bad[0][1]}" if bad else ""
        raise DataError(f"dataset {p} holds no usable {{\"{field_name}\": ...}} record{detail}")
    return Corpus(str(p), texts, bad, hashlib.sha256(raw).hexdigest(), len(lines))


def split(texts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle document order with `seed`; the first max(1, round(fraction * n)) go to validation.
    Needs at least two documents."""
    n = len(texts)
    if n < 2:
        raise DataError(f"need at least 2 documents to split into training and validation, found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(fraction * n))))
    return [texts[i] for i in order[n_val:]], [texts[i] for i in order[:n_val]]


def tokenize_stream(texts: list[str], encode, bos_id: int) -> np.ndarray:
    """One int32 stream: <s> doc <s> doc ..."""
    parts = []
    for t in texts:
        parts.append(bos_id)
        parts.extend(encode(t))
    return np.asarray(parts, dtype=np.int32)


@dataclass
class TokenData:
    train: np.ndarray                   # int32 token stream
    val: np.ndarray
    seq_len: int
    token_bytes: np.ndarray = field(repr=False)  # bytes each token id stands for

    def check(self, batch_size: int) -> None:
        need = self.seq_len + 1
        for name, s in (("training", self.train), ("validation", self.val)):
            if len(s) < need:
                raise DataError(f"the {name} split has {len(s)} tokens; a window of max_seq_len + 1 = {need} "
                                f"is needed (use more data, a larger validation_fraction or a shorter max_seq_len)")

    def batch(self, seed: int, step: int, batch_size: int, attempt: int = 0):
        """(inputs, targets) each (batch_size, seq_len) int64, a pure function of (seed, step, attempt)."""
        rng = np.random.default_rng([seed, step, attempt])
        starts = rng.integers(0, len(self.train) - self.seq_len, size=batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        w = self.train[idx].astype(np.int64)
        return w[:, :-1], w[:, 1:]

    def val_windows(self, n_batches: int, batch_size: int):
        """Fixed validation batches: up to n_batches x batch_size windows spread evenly over the
        validation stream (non-overlapping when the stream is long enough)."""
        n_win = n_batches * batch_size
        last = len(self.val) - self.seq_len - 1
        starts = np.unique(np.linspace(0, last, num=n_win).astype(np.int64))
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        w = self.val[idx].astype(np.int64)
        return [(w[i:i + batch_size, :-1], w[i:i + batch_size, 1:]) for i in range(0, len(w), batch_size)]


def evaluate(model, data: TokenData, n_batches: int, batch_size: int) -> dict:
    """Validation loss (nats/token) and bits per byte over the fixed validation windows.

    bits/byte = sum(nll) / ln 2 / sum(bytes of the target tokens), so runs with different
    tokenizers compare; a <s> target counts as one byte (the document separator)."""
    total_nll, total_tokens, total_bytes = 0.0, 0, 0
    for x, y in data.val_windows(n_batches, batch_size):
        nll = model.nll(x, y)
        keep = y.reshape(-1) >= 0          # agent rows: no loss on the prompt and the padding
        total_nll += float(nll[keep].astype(np.float64).sum())
        total_tokens += int(keep.sum())
        total_bytes += int(data.token_bytes[y.reshape(-1)[keep]].sum())
    loss = total_nll / max(1, total_tokens)
    return {"val_loss": loss, "val_bpb": total_nll / math.log(2) / max(1, total_bytes),
            "val_tokens": total_tokens, "val_bytes": total_bytes}


def split_prompt(text: str, marker: str) -> tuple[str, str] | None:
    """(prompt, completion) of an agent record: the prompt ends with the first `marker`."""
    i = text.find(marker)
    if i < 0:
        return None
    return text[:i + len(marker)], text[i + len(marker):]


def tokenize_rows(texts: list[str], encode, bos_id: int, eos_id: int, marker: str, max_len: int):
    """One row per record: [<s>] + prompt + completion + [</s>], and the index of the first
    target that carries loss (the completion's first token). Records without the marker, without
    a completion, or longer than max_len + 1 tokens are left out and counted."""
    rows, starts, dropped = [], [], {"no_marker": 0, "too_long": 0}
    for t in texts:
        pc = split_prompt(t, marker)
        if pc is None or not pc[1]:
            dropped["no_marker"] += 1
            continue
        p, c = encode(pc[0]), encode(pc[1])
        ids = [bos_id] + p + c + [eos_id]
        if len(ids) > max_len + 1:
            dropped["too_long"] += 1
            continue
        rows.append(np.asarray(ids, dtype=np.int32))
        starts.append(len(p))       # targets are ids[1:]: target j predicts ids[j + 1]; loss from j = len(p)
    return rows, np.asarray(starts, dtype=np.int64), dropped


@dataclass
class RowData:
    """Agent records, one per row, right-padded; targets before the completion and on padding are
    -1 (no loss). A batch is as long as its longest row. Same interface as TokenData."""
    train_rows: list
    train_starts: np.ndarray
    val_rows: list
    val_starts: np.ndarray
    seq_len: int
    token_bytes: np.ndarray = field(repr=False)
    pad_id: int = 0
    dropped: dict = field(default_factory=dict)

    @property
    def train(self) -> np.ndarray:
        return np.concatenate(self.train_rows) if self.train_rows else np.zeros(0, np.int32)

    @property
    def val(self) -> np.ndarray:
        return np.concatenate(self.val_rows) if self.val_rows else np.zeros(0, np.int32)

    def check(self, batch_size: int) -> None:
        for name, rows in (("training", self.train_rows), ("validation", self.val_rows)):
            if not rows:
                raise DataError(f"the {name} split has no usable agent record (each needs the loss_after marker, "
                                f"a completion, and at most max_seq_len + 1 = {self.seq_len + 1} tokens)")

    def _pack(self, rows, starts):
        T = max(len(r) for r in rows) - 1
        x = np.full((len(rows), T), self.pad_id, dtype=np.int64)
        y = np.full((len(rows), T), -1, dtype=np.int64)
        for i, (r, s) in enumerate(zip(rows, starts)):
            n = len(r) - 1
            x[i, :n] = r[:-1]
            y[i, s:n] = r[s + 1:]
        return x, y

    def batch(self, seed: int, step: int, batch_size: int, attempt: int = 0):
        rng = np.random.default_rng([seed, step, attempt])
        idx = rng.integers(0, len(self.train_rows), size=batch_size)
        return self._pack([self.train_rows[i] for i in idx], self.train_starts[idx])

    def val_windows(self, n_batches: int, batch_size: int):
        n = min(len(self.val_rows), n_batches * batch_size)
        return [self._pack(self.val_rows[i:min(n, i + batch_size)], self.val_starts[i:min(n, i + batch_size)])
                for i in range(0, n, batch_size)]


def row_data(train_texts: list[str], val_texts: list[str], vocab, cfg) -> RowData:
    """RowData of a config with `loss_after` set."""
    tr, trs, d1 = tokenize_rows(train_texts, vocab.encode, vocab.bos_id, vocab.eos_id, cfg.loss_after, cfg.max_seq_len)
    va, vas, d2 = tokenize_rows(val_texts, vocab.encode, vocab.bos_id, vocab.eos_id, cfg.loss_after, cfg.max_seq_len)
    return RowData(tr, trs, va, vas, cfg.max_seq_len, np.asarray(vocab.token_bytes(), dtype=np.int64),
                   dropped={k: d1[k] + d2[k] for k in d1})
