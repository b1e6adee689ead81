"""Data generators of the agent children (home, calc) and of the mother (routing).

Every generator is deterministic for a (split, seed, n) and can produce as many lines as training
needs. The `train` and `test` splits draw from disjoint pools of templates, verbs, fillers and
(for home) names, kept apart in code and checked by tests/test_agentdata.py, so the test split
measures phrasings the training data never holds.

    bullet-train agentdata home --split train --n 100000 --seed 1 -o home_train.jsonl
    bullet-train agentdata home --split test --home examples/home.yaml --n 2000 -o home_test.jsonl

A training line for an agent child is `TEMPLATE.format(text=utterance) + compact_json(call)`
(`training_text`); the trainer's `loss_after` setting puts the loss on the call alone.
"""
from __future__ import annotations

import json

TEMPLATE = "{text}\n=>"
SPLITS = ("train", "test")


def compact_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def training_text(utterance: str, call: dict, template: str = TEMPLATE) -> str:
    return template.format(text=utterance) + compact_json(call)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
