"""Helpers for the trainer tests: a tiny config written into a temporary folder, and the
command line with slow steps."""
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY_CORPUS = ROOT / "trainer" / "configs" / "tiny_corpus.jsonl"

TINY = {
    "name": "tiny", "version": "0.0.1",
    "vocab_size": 300, "dim": 32, "n_heads": 2, "n_layers": 2, "hidden_dim": 64,
    "max_seq_len": 32, "batch_size": 8, "learning_rate": 0.01, "warmup_steps": 10, "max_steps": 60,
    "validation_fraction": 0.1, "eval_interval": 30, "eval_batches": 4, "checkpoint_interval": 10,
    "keep_checkpoints": 3, "log_interval": 10, "seed": 7,
}


def write_config(tmp: Path, name="cfg.yaml", **changes) -> Path:
    cfg = dict(TINY, dataset_path=str(TINY_CORPUS), output_dir=str(tmp / "run"))
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    p = tmp / name
    p.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return p


# `bullet-train` whose training steps each take DELAY seconds more (a sleep in the Trainer's fault
# hook), so that a test can kill or interrupt a run in the middle
_SLOW_CLI = """
import sys, time
from trainer import cli, train

class SlowTrainer(train.Trainer):
    def __init__(self, *args, **kw):
        super().__init__(*args, fault=lambda step, loss: time.sleep(DELAY) or loss, **kw)

train.Trainer = SlowTrainer
sys.exit(cli.main(sys.argv[1:]))
"""


def slow_cli(delay: float, *args) -> list:
    """The argv of `bullet-train ARGS...` with each step slowed by `delay` seconds."""
    return [sys.executable, "-c", _SLOW_CLI.replace("DELAY", repr(float(delay))), *args]
