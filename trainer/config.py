"""YAML training configs, validated into a frozen dataclass.

A config is a flat YAML mapping. The model keys are the `.bullet` arch names (`dim`, `n_heads`,
`n_layers`, `vocab_size`, `max_seq_len`, and `n_kv_heads`, `hidden_dim`, `tied_embeddings`,
`norm_eps`, `rope_theta`), checked by the rule every reader of the exported file applies
(bulletd.format.arch). `dim`, `n_heads`, `n_layers`, `vocab_size`, `max_seq_len`,
`learning_rate`, `batch_size` and `dataset_path` are required; the rest have defaults (see
TrainConfig). Unknown keys, missing keys, wrong types and values that do not fit together raise
ConfigError naming the file and the key. Relative paths (`dataset_path`, `tokenizer_path`,
`init_from`, `output_dir`) are resolved against the config file's folder.

The former model key names (FORMER_NAMES: `hidden_size`, `num_heads`, ...) are still read, with
a FutureWarning naming their replacements.

    from trainer.config import load_config
    cfg = load_config("trainer/configs/tiny.yaml")
"""
from __future__ import annotations

import difflib
import math
import os
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from bulletd.errors import FormatError
from bulletd.format import arch as arch_rules
from trainer.errors import ConfigError
from trainer.model import ModelArch

# 3 control tokens (<unk>, <s>, </s>) + 256 byte-fallback tokens come before any text piece
N_CONTROL = 3
N_BASE_TOKENS = N_CONTROL + 256


@dataclass(frozen=True)
class TrainConfig:
    # -- model: the .bullet arch keys (bulletd.format.arch) --
    dim: int
    n_heads: int
    n_layers: int
    vocab_size: int
    max_seq_len: int                      # training window and the exported model's context
    # -- training --
    learning_rate: float                  # peak learning rate after warmup
    batch_size: int
    dataset_path: str                     # JSONL, one {"text": ...} per line
    # -- model, optional --
    n_kv_heads: int | None = None         # grouped-query heads; null: n_heads
    hidden_dim: int | None = None         # SwiGLU hidden width; null: 3 * dim
    tied_embeddings: bool = False
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    # -- optimisation --
    max_steps: int = 1000                 # total optimiser steps (also the cosine schedule length)
    warmup_steps: int = 100
    min_learning_rate: float | None = None  # end of the cosine; default learning_rate / 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0                # global L2 norm; 0 disables
    dropout: float = 0.0                  # training steps: share of the embeddings and of each block's
                                          # attention and MLP outputs dropped (Model.dropout_mask); 0: none
    seed: int = 1337
    # -- attention kernel --
    attention: str = "flash"              # "flash" (tiled, O(T) memory, past attention.STORE_P_BYTES) or "plain"
    attention_block: int = 64          # tile rows/cols (64: a float32 tile of B*H*64*64 stays in cache)
    # -- data --
    text_field: str = "text"
    validation_fraction: float = 0.05
    on_bad_line: str = "skip"             # "skip" (reported with line numbers) or "error"
    tokenizer_path: str | None = None     # an existing tokenizer JSON; default: train BPE on the data
    init_from: str | None = None          # a .bullet child to start from: its weights (BQ4 dequantised)
                                          # and tokenizer; the optimiser and the schedule start fresh
    split_digits: bool = False            # BPE: digits never merge (one token per digit)
    word_pieces: bool = False             # BPE: pieces never mix letters, spaces and punctuation
    # -- agent children (docs: trainer/README.md, "Agent children") --
    loss_after: str | None = None         # set: one record per row, loss only after this marker (the call)
    agent_tool: str | None = None         # export: header["agent"] = {"tool", "schema", "template"}
    agent_template: str = "{text}\n=>"    # the model input for an utterance
    # -- evaluation, checkpoints, logging --
    eval_interval: int = 200              # steps between validation passes
    eval_batches: int = 8                 # batches of the validation set per pass
    checkpoint_interval: int = 200
    keep_checkpoints: int = 3
    keep_best: bool = False               # also keep the checkpoint of the lowest validation loss in best/
    log_interval: int = 10
    output_dir: str = "runs/default"
    # -- loss-spike recovery --
    spike_factor: float = 3.0             # a loss above spike_factor x recent mean is a spike
    spike_window: int = 20                # recent losses averaged for the spike test
    max_rollbacks: int = 5                # give up after this many rollbacks in one run
    rollback_lr_factor: float = 0.5       # learning-rate multiplier applied at each rollback
    # -- export metadata --
    name: str = "child"
    version: str = "0.1.0"

    def __post_init__(self):
        # the two defaults that depend on other keys: from here on both are integers
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.hidden_dim is None:
            object.__setattr__(self, "hidden_dim", 3 * self.dim)

    @property
    def min_lr(self) -> float:
        return self.learning_rate / 10 if self.min_learning_rate is None else self.min_learning_rate

    def arch(self) -> ModelArch:
        return ModelArch(**{f.name: getattr(self, f.name) for f in fields(ModelArch)})

    def to_dict(self) -> dict:
        return asdict(self)

    def model_dict(self) -> dict:
        """The keys that fix the parameter shapes (a checkpoint must match them to be resumed)."""
        return {k: getattr(self, k) for k in SHAPE_KEYS}


REQUIRED = ("dim", "n_heads", "n_layers", "vocab_size", "max_seq_len", "learning_rate", "batch_size",
            "dataset_path")
SHAPE_KEYS = ("dim", "n_heads", "n_layers", "vocab_size", "max_seq_len", "n_kv_heads", "hidden_dim",
              "tied_embeddings")
# the model keys' former names -> the arch names that replace them
FORMER_NAMES = {"hidden_size": "dim", "num_heads": "n_heads", "num_layers": "n_layers",
                "num_kv_heads": "n_kv_heads", "intermediate_size": "hidden_dim",
                "tie_embeddings": "tied_embeddings"}

# key -> accepted Python types (bool is excluded from int on purpose: `batch_size: yes` is an error)
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _type_ok(value, typ: str) -> bool:
    base = typ.replace(" | None", "")
    if value is None:
        return "None" in typ
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "bool":
        return isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    raise TypeError(typ)


def _type_name(typ: str) -> str:
    base = typ.replace(" | None", "")
    names = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
    return names[base] + (" or null" if "None" in typ else "")


def rename_former_keys(raw: dict, source: str = "<config>") -> tuple[dict, list[str]]:
    """raw with the FORMER_NAMES keys under their arch names, and the former names it held.
    ConfigError when one key is given under both names."""
    out, former = {}, []
    for key, value in raw.items():
        new = FORMER_NAMES.get(key) if isinstance(key, str) else None
        if new is None:
            continue
        if new in raw:
            raise ConfigError(f"{source}: {key!r} and {new!r} name the same key; keep {new!r}")
        out[new] = value
        former.append(key)
    out.update({k: v for k, v in raw.items() if k not in FORMER_NAMES})
    return out, former


def config_from_dict(raw, source: str = "<config>", base_dir: Path | None = None) -> TrainConfig:
    """Validate a mapping (as loaded from YAML) and build a TrainConfig. Raises ConfigError;
    warns (FutureWarning) when the mapping uses FORMER_NAMES."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of keys to values, found {type(raw).__name__}")
    raw, former = rename_former_keys(raw, source)
    if former:
        warnings.warn(f"{source}: deprecated config key(s) "
                      + ", ".join(f"{k} (now {FORMER_NAMES[k]})" for k in former)
                      + "; the model keys take the .bullet arch names", FutureWarning, stacklevel=2)
    known = set(_TYPES)
    for key in raw:
        if not isinstance(key, str) or key not in known:
            hint = difflib.get_close_matches(str(key), sorted(known | set(FORMER_NAMES)), n=1)
            hint = [FORMER_NAMES.get(h, h) for h in hint]
            raise ConfigError(f"{source}: unknown key {key!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; known keys: {', '.join(sorted(known))}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ConfigError(f"{source}: missing required key(s): {', '.join(missing)}")
    for key, value in raw.items():
        if not _type_ok(value, _TYPES[key]):
            raise ConfigError(f"{source}: key {key!r} must be {_type_name(_TYPES[key])}, "
                              f"found {value!r} ({type(value).__name__})")
    values = dict(raw)
    for key in ("learning_rate", "min_learning_rate", "norm_eps", "rope_theta", "weight_decay", "beta1",
                "beta2", "grad_clip", "dropout", "validation_fraction", "spike_factor", "rollback_lr_factor"):
        if values.get(key) is not None:
            values[key] = float(values[key])
    if base_dir is not None:
        for key in ("dataset_path", "tokenizer_path", "init_from", "output_dir"):
            p = values.get(key)
            if p is not None and not os.path.isabs(p):
                values[key] = str((base_dir / p).resolve())
    cfg = TrainConfig(**values)
    validate(cfg, source)
    return cfg


def validate(cfg: TrainConfig, source: str = "<config>") -> None:
    """Value checks that do not need the data. The model keys are checked by the arch rule of
    bulletd.format.arch, the one every reader of the exported file applies."""
    def bad(key, why):
        raise ConfigError(f"{source}: {key} = {getattr(cfg, key)!r}: {why}")

    try:
        arch_rules.check_arch(cfg.arch().to_dict())
    except FormatError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for key in ("batch_size", "max_steps", "eval_interval", "eval_batches", "checkpoint_interval",
                "keep_checkpoints", "log_interval", "spike_window", "attention_block"):
        if getattr(cfg, key) < 1:
            bad(key, "must be >= 1")
    for key in ("warmup_steps", "max_rollbacks"):
        if getattr(cfg, key) < 0:
            bad(key, "must be >= 0")
    if cfg.vocab_size <= N_BASE_TOKENS:
        bad("vocab_size", f"the tokenizer needs {N_BASE_TOKENS} base tokens ({N_CONTROL} control + 256 "
                          f"byte fallback) plus room for text pieces, so vocab_size must be > {N_BASE_TOKENS}")
    if not (math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0):
        bad("learning_rate", "must be a finite number > 0")
    if not (0 <= cfg.min_lr <= cfg.learning_rate):
        bad("min_learning_rate", f"must lie in [0, learning_rate={cfg.learning_rate}]")
    if not (0.0 <= cfg.beta1 < 1.0 and 0.0 <= cfg.beta2 < 1.0):
        bad("beta1", "beta1 and beta2 must lie in [0, 1)")
    if cfg.weight_decay < 0 or cfg.grad_clip < 0:
        bad("weight_decay", "weight_decay and grad_clip must be >= 0")
    if not (0.0 <= cfg.dropout < 1.0):
        bad("dropout", "must lie in [0, 1)")
    if not (0.0 < cfg.validation_fraction < 1.0):
        bad("validation_fraction", "must lie strictly between 0 and 1")
    if cfg.on_bad_line not in ("skip", "error"):
        bad("on_bad_line", "must be 'skip' or 'error'")
    if cfg.attention not in ("flash", "plain"):
        bad("attention", "must be 'flash' or 'plain'")
    if cfg.spike_factor <= 1.0:
        bad("spike_factor", "must be > 1")
    if not (0.0 < cfg.rollback_lr_factor <= 1.0):
        bad("rollback_lr_factor", "must lie in (0, 1]")
    if cfg.loss_after is not None and not cfg.loss_after:
        bad("loss_after", "must be a non-empty marker string (or absent)")
    if cfg.agent_tool is not None and "{text}" not in cfg.agent_template:
        bad("agent_template", "must contain {text}")
    if not cfg.name or "/" in cfg.name:
        bad("name", "must be a non-empty name without '/'")


def load_config(path, **overrides) -> TrainConfig:
    """Read and validate a YAML config file; `overrides` replace keys (e.g. max_steps from --steps)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict):
        raw.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(raw, str(path), path.resolve().parent)
