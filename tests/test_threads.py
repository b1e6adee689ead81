"""One request on several threads: a session's matrix products and attention heads split among
its pinned workers give the same logits, bit for bit, as one thread, on every kernel path this
CPU runs (the scalar reference included), in decode steps and prefill, for head sizes that split
by heads (whole row groups) and ones that do not. tests/test_sanitize.py runs this file under
ASan + UBSan too.

    pytest tests/test_threads.py -q
"""
import os

import numpy as np
import pytest

from bulletd import kernels as K
from bulletd.errors import ModelError

pytestmark = pytest.mark.skipif(not K.native_available(), reason=f"native module not built: {K.native_error()}")

CONFIGS = {
    "small": dict(K.SMALL, max_seq_len=40, tied_embeddings=True),                    # head size 32
    "gqa": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=172,          # head size 16,
                vocab_size=300, max_seq_len=40, tied_embeddings=False),                # odd hidden size
    "narrow_heads": dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, hidden_dim=96,  # head size 8: not
                         vocab_size=260, max_seq_len=40, tied_embeddings=True),        # whole row groups
}


def _model(name: str, path: str):
    cfg = CONFIGS[name]
    return K.NativeModel(cfg, K.random_bq4_tensors(cfg, seed=3, tied=cfg["tied_embeddings"]), path)


def _run(m, threads: int, switch_at: int | None = None):
    """Prefill 13 tokens (two chunks of 8), then forward steps to the end of the context; with
    switch_at, the session starts on one thread and changes to `threads` at that position."""
    s = m.new_session(prefill_chunk=8)
    s.set_threads(1 if switch_at is not None else threads)
    out = [s.prefill(list(range(1, 14)), 0)]
    for pos in range(13, m.max_seq_len if hasattr(m, "max_seq_len") else 40):
        if pos == switch_at:
            s.set_threads(threads)
        out.append(s.forward((pos * 7) % 250 + 3, pos))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("path", K.available_kernels())
def test_logits_are_the_same_bits_on_any_number_of_threads(name, path):
    m = _model(name, path)
    one = _run(m, 1)
    for threads in (2, 3):
        got = _run(m, threads)
        for i, (a, b) in enumerate(zip(one, got)):
            assert np.array_equal(a, b), f"{path} {name}: {threads} threads, step {i}: max diff {np.abs(a - b).max()}"


def test_threads_can_change_between_steps_of_one_sequence():
    m = _model("small", "auto")
    one = _run(m, 1)
    got = _run(m, 2, switch_at=20)
    assert all(np.array_equal(a, b) for a, b in zip(one, got))


def test_the_decode_loop_draws_the_same_tokens_on_two_threads():
    m = _model("gqa", "auto")
    runs = []
    for threads in (1, 2):
        s = m.new_session()
        s.set_threads(threads)
        logits = np.array(s.prefill([1, 5, 9], 0), dtype=np.float32)
        coins = np.random.default_rng(0).random(30)
        runs.append(s.decode(logits, -1, 3, 30, coins, np.array([1, 5, 9], np.int64), 0.8, 40, 0.95, 1.1,
                             np.zeros(0, np.int64)))
        assert s.threads == threads
    assert runs[0] == runs[1] and len(runs[0][0]) == 30


@pytest.mark.parametrize("bad", [0, -1, 65])
def test_a_bad_thread_count_is_refused_and_the_session_keeps_working(bad):
    m = _model("small", "auto")
    s = m.new_session()
    s.set_threads(2)
    with pytest.raises(ModelError, match="threads: expected 1..64"):
        s.set_threads(bad)
    assert s.threads == 2
    assert np.array_equal(s.prefill([1, 2, 3], 0), _model("small", "auto").new_session().prefill([1, 2, 3], 0))


def test_generation_settings_choose_the_threads_and_the_tokens_stay_the_same(tmp_path):
    from bulletd.format.synth import write_random_lm
    from bulletd.runtime import GenerationSettings, load_model
    p = tmp_path / "m.bullet"
    write_random_lm(p, dict(K.SMALL, max_seq_len=64), seed=1, dtype="bq4", name="m")
    with load_model(p, backend="native") as m:
        outs = {}
        for threads in (0, 1, 2, 3):      # 0: the model's default (m.threads)
            m.threads = 2 if threads == 0 else 1
            g = m.generate("hello there", GenerationSettings(max_tokens=40, seed=7, threads=threads))
            text = "".join(g)
            outs[threads] = (g.tokens, text)
            sess = m._idle   # at most one thread per CPU this process may use
            assert sess is not None and sess._impl.threads == min(threads or 2, len(os.sched_getaffinity(0)))
        assert outs[0] == outs[1] == outs[2] == outs[3] and len(outs[1][0]) > 0


@pytest.mark.parametrize("bad", [65, -1, 2.5, True])
def test_a_bad_threads_setting_is_refused_by_name(bad):
    from bulletd.errors import BadSettings
    from bulletd.runtime import GenerationSettings
    with pytest.raises(BadSettings) as e:
        GenerationSettings(threads=bad).validate()
    assert e.value.field == "threads"
