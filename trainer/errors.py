"""Trainer errors, children of the project's BulletError (bulletd.errors).

Each says what was expected, what was found and where (file, line, key), and is raised before any
long work starts whenever the problem can be seen up front.
"""
from bulletd.errors import BulletError


class TrainerError(BulletError):
    """Root of the trainer's own errors."""


class ConfigError(TrainerError):
    """A YAML training config is unreadable, has unknown/missing keys, wrong types or values that
    do not fit together (e.g. a vocabulary too small for the tokenizer)."""


class DataError(TrainerError):
    """A dataset is missing, empty, not UTF-8 or not JSONL of {"text": ...} records."""


class CheckpointError(TrainerError):
    """A checkpoint is missing, damaged, or belongs to a different config."""


class ExportError(TrainerError):
    """Export to .bullet failed (bad checkpoint, key, or a check of the exported file failed)."""
