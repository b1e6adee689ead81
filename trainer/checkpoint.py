"""Checkpoints: atomic, pickle-free, last N kept.

A checkpoint is a folder `ckpt-<step:07d>/` inside the run's output_dir:

    weights.npz      parameters by training-side name (float32) + "adam.m", "adam.v" (flat),
                     written with np.savez and read with allow_pickle=False
    tokenizer.json   the BPE vocabulary (trainer.bpe.Vocab.to_json)
    state.json       format tag, step, the full config, the model shape keys, optimiser step
                     count, learning-rate scale, rollback/attempt counters, recent losses, the
                     last evaluation and the dataset's SHA-256

It is written into a hidden temporary folder, fsync'ed, then renamed into place, so a crash
leaves either the old set of checkpoints or the new one, never half a checkpoint. After a save
only the newest `keep` checkpoints remain. A state.json that names the model keys by their former
names (trainer.config.FORMER_NAMES) is read with the arch names.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.config import FORMER_NAMES
from trainer.errors import CheckpointError

FORMAT = "bullet-ckpt-1"
_NAME = re.compile(r"^ckpt-(\d{7})$")


@dataclass
class Checkpoint:
    path: Path
    state: dict
    params: dict          # name -> float32 array
    adam_m: np.ndarray
    adam_v: np.ndarray
    tokenizer: dict


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints in run_dir, oldest first."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def save(run_dir, step: int, state: dict, params: dict, adam_m, adam_v, tokenizer: dict, keep: int) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:07d}"
    tmp = run_dir / f".tmp-ckpt-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    arrays = {f"param/{k}": np.ascontiguousarray(v) for k, v in params.items()}
    arrays["adam.m"] = adam_m
    arrays["adam.v"] = adam_v
    with open(tmp / "weights.npz", "wb") as fh:
        np.savez(fh, **arrays)
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    full_state = dict(state, format=FORMAT, step=step, saved=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (tmp / "state.json").write_text(json.dumps(full_state, indent=1), encoding="utf-8")
    for f in ("weights.npz", "tokenizer.json", "state.json"):
        _fsync_file(tmp / f)
    _fsync_dir(tmp)
    if final.exists():
        # same step saved before (a resumed run): move the old one aside, then swap in the new one
        trash = run_dir / f".old-{final.name}-{os.getpid()}"
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(run_dir)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def resolve(path) -> Path:
    """A checkpoint folder, or a run folder (-> its newest checkpoint)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if (p / "state.json").is_file():
        return p
    ckpts = list_checkpoints(p)
    if not ckpts:
        raise CheckpointError(f"{p} is neither a checkpoint (no state.json) nor a run folder holding ckpt-* folders")
    return ckpts[-1]


def load(path) -> Checkpoint:
    p = resolve(path)
    for f in ("weights.npz", "tokenizer.json", "state.json"):
        if not (p / f).is_file():
            raise CheckpointError(f"checkpoint {p} is incomplete: {f} is missing")
    try:
        state = json.loads((p / "state.json").read_text(encoding="utf-8"))
        tok = json.loads((p / "tokenizer.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {p}: damaged JSON ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p}: state.json format is {state.get('format') if isinstance(state, dict) else None!r}, "
                              f"expected {FORMAT!r}")
    try:
        with np.load(p / "weights.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"checkpoint {p}: weights.npz is damaged ({exc})") from exc
    if "adam.m" not in arrays or "adam.v" not in arrays:
        raise CheckpointError(f"checkpoint {p}: weights.npz lacks the optimiser state")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    return Checkpoint(p, _arch_names(state), params, arrays["adam.m"], arrays["adam.v"], tok)


def _arch_names(state: dict) -> dict:
    """state with its config and shape keys under the arch names. A config with former names
    may also hold the derived kv_heads and hidden_dim, which its own keys determine."""
    out = dict(state)
    cfg = state.get("config")
    if isinstance(cfg, dict) and any(k in cfg for k in FORMER_NAMES):
        cfg = {k: v for k, v in cfg.items() if k not in ("kv_heads", "hidden_dim")}
        out["config"] = {FORMER_NAMES.get(k, k): v for k, v in cfg.items()}
    model = state.get("model")
    if isinstance(model, dict):
        names = dict(FORMER_NAMES, kv_heads="n_kv_heads")
        out["model"] = {names.get(k, k): v for k, v in model.items()}
    return out


def check_matches(ckpt: Checkpoint, model_keys: dict) -> None:
    """Raise CheckpointError when the checkpoint's model shape keys differ from the config's."""
    have = ckpt.state.get("model", {})
    diffs = [f"{k}: checkpoint {have.get(k)!r}, config {v!r}" for k, v in model_keys.items() if have.get(k) != v]
    if diffs:
        raise CheckpointError(f"checkpoint {ckpt.path} was made with a different model config ("
                              + "; ".join(diffs) + ")")
