"""Tiny valid .bullet files for format tests."""
from bulletd.format.synth import write_random_lm

TINY = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=48, vocab_size=264, max_seq_len=16)


def tiny_file(path, **kw):
    return write_random_lm(path, TINY, seed=kw.pop("seed", 0), name=kw.pop("name", "tiny"), **kw)
