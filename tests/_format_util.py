"""Tiny valid .bullet files for format tests."""
from bulletd.format import TOKEN_CONTROL, TOKEN_NORMAL, VocabEntry, write_bullet
from bulletd.format.synth import random_lm_tensors, write_random_lm

TINY = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=48, vocab_size=264, max_seq_len=16)
MICRO = dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=40, vocab_size=8, max_seq_len=8,
             tied_embeddings=True)


def tiny_file(path, **kw):
    """A 1-layer lm with a byte-level vocabulary (~23 KB)."""
    return write_random_lm(path, TINY, seed=kw.pop("seed", 0), name=kw.pop("name", "tiny"), **kw)


def micro_file(path, name="micro"):
    """The smallest useful lm (~6 KB): 8 tokens, tied embeddings, one layer."""
    vocab = [VocabEntry(b"<s>", 0.0, TOKEN_CONTROL), VocabEntry(b"</s>", 0.0, TOKEN_CONTROL)]
    vocab += [VocabEntry(p, -float(i), TOKEN_NORMAL) for i, p in enumerate([b"a", b"b", b" ", b"ab", b" a", b"ba"])]
    return write_bullet(path, kind="lm", arch=MICRO, tensors=random_lm_tensors(MICRO, seed=0), vocab=vocab,
                        tokenizer={"kind": "bpe", "bos_id": 0, "eos_id": 1},
                        provenance={"name": name, "version": "1.0.0", "created": "2026-01-01T00:00:00+00:00"})
