"""The trainer: config validation, data loading, schedule and optimiser, training, bit-identical
resume after a real kill, spike rollback, progress/log/plot, export to a signed .bullet checked by
the runtime, the router trainer and the command line."""
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from _trainer_util import ROOT, TINY_CORPUS, slow_cli, write_config
from trainer import checkpoint as ckpt_mod
from trainer.config import load_config
from trainer.data import load_jsonl, split
from trainer.errors import CheckpointError, ConfigError, DataError, TrainerError
from trainer.optim import AdamW, clip_grad_norm, lr_at
from trainer.train import Progress, Trainer

ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")


# ---------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------

def test_example_configs_load():
    for name in ("tiny", "marathi", "small_marathi", "small_fortunes", "marathi_reference", "fortunes"):
        cfg = load_config(ROOT / "trainer" / "configs" / f"{name}.yaml")
        assert cfg.dataset_path.endswith(".jsonl")
    m = load_config(ROOT / "trainer" / "configs" / "marathi.yaml")
    assert (m.vocab_size, m.dim, m.n_heads, m.n_layers, m.batch_size, m.max_seq_len) == \
        (1511, 256, 4, 8, 4, 128)
    r = load_config(ROOT / "trainer" / "configs" / "marathi_reference.yaml")  # the REFERENCE shape
    assert (r.dim, r.n_layers, r.n_heads, r.n_kv_heads, r.hidden_dim) == (256, 8, 4, 4, 768)


def test_example_configs_write_their_runs_inside_the_checkout(tmp_path, monkeypatch):
    """Relative paths resolve against the config's folder, not the current directory: from any
    directory the shipped configs write to runs/NAME at the checkout root (git-ignored)."""
    monkeypatch.chdir(tmp_path)
    configs = sorted((ROOT / "trainer" / "configs").glob("*.yaml"))
    assert len(configs) >= 4
    for p in configs:
        cfg = load_config(p)
        assert Path(cfg.output_dir) == ROOT / "runs" / p.stem, (p.name, cfg.output_dir)
    assert "/runs/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.parametrize("typo,hint", [("n_head", "n_heads"), ("hiden_dim", "hidden_dim"),
                                       ("hiden_size", "dim")])   # a former name's typo: its new name
def test_config_unknown_key_suggests_the_right_one(tmp_path, typo, hint):
    p = write_config(tmp_path, **{typo: 32})
    with pytest.raises(ConfigError, match=rf"unknown key '{typo}' \(did you mean '{hint}'\?\)"):
        load_config(p)


def test_former_model_key_names_are_read_with_a_deprecation_warning(tmp_path):
    from trainer.config import FORMER_NAMES

    new = load_config(write_config(tmp_path, n_kv_heads=1, tied_embeddings=True))
    old = {"dim": None, "n_heads": None, "n_layers": None, "hidden_dim": None, "hidden_size": 32, "num_heads": 2,
           "num_layers": 2, "intermediate_size": 64, "num_kv_heads": 1, "tie_embeddings": True}
    assert set(FORMER_NAMES) <= set(old)
    with pytest.warns(FutureWarning, match=r"old.yaml: deprecated config key\(s\) ") as w:
        got = load_config(write_config(tmp_path, name="old.yaml", **old))
    assert got == new
    msg = str(w[0].message)
    assert all(f"{k} (now {v})" in msg for k, v in FORMER_NAMES.items()), msg
    with pytest.raises(ConfigError, match="'hidden_size' and 'dim' name the same key"):
        load_config(write_config(tmp_path, name="both.yaml", hidden_size=32))


def test_a_checkpoint_with_former_key_names_resumes(tiny_run, tmp_path):
    """state.json written with the config's former names: read under the arch names, it resumes."""
    import shutil

    _, res, _ = tiny_run
    ck = tmp_path / "ckpt"
    shutil.copytree(ckpt_mod.list_checkpoints(res["run_dir"])[-1], ck)
    state = json.loads((ck / "state.json").read_text())
    c, m = state["config"], state["model"]
    state["config"] = dict({k: v for k, v in c.items() if k not in ("dim", "n_heads", "n_layers", "n_kv_heads",
                                                                   "hidden_dim", "tied_embeddings")},
                           hidden_size=c["dim"], num_heads=c["n_heads"], num_layers=c["n_layers"],
                           num_kv_heads=None, intermediate_size=c["hidden_dim"], tie_embeddings=False)
    state["model"] = {"hidden_size": m["dim"], "num_heads": m["n_heads"], "num_layers": m["n_layers"],
                      "vocab_size": m["vocab_size"], "max_seq_len": m["max_seq_len"], "kv_heads": m["n_kv_heads"],
                      "hidden_dim": m["hidden_dim"], "tie_embeddings": m["tied_embeddings"]}
    (ck / "state.json").write_text(json.dumps(state))
    loaded = ckpt_mod.load(ck)
    assert loaded.state["model"] == m and loaded.state["config"]["dim"] == 32
    cfg = load_config(write_config(tmp_path, max_steps=62, output_dir=str(tmp_path / "run2")))
    assert Trainer(cfg, resume_from=ck, progress=False, verbose=False).run()["step"] == 62


def test_config_missing_key(tmp_path):
    p = write_config(tmp_path, batch_size=None)
    with pytest.raises(ConfigError, match="missing required key\\(s\\): batch_size"):
        load_config(p)


@pytest.mark.parametrize("key,value,expect", [
    ("batch_size", "4", "key 'batch_size' must be an integer, found '4' \\(str\\)"),
    ("batch_size", True, "key 'batch_size' must be an integer, found True \\(bool\\)"),
    ("learning_rate", "fast", "key 'learning_rate' must be a number"),
    ("tied_embeddings", 1, "key 'tied_embeddings' must be true or false"),
])
def test_config_wrong_types(tmp_path, key, value, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(write_config(tmp_path, **{key: value}))


@pytest.mark.parametrize("changes,expect", [
    ({"dim": 33}, "arch.dim 33 is not a multiple of n_heads 2"),
    ({"dim": 30}, "head size 15 must be even for RoPE"),
    ({"vocab_size": 200}, "vocab_size = 200: the tokenizer needs 259 base tokens"),
    ({"n_kv_heads": 3, "n_heads": 4}, "arch.n_heads 4 is not a multiple of n_kv_heads 3"),
    ({"n_kv_heads": 0}, "arch.n_kv_heads must be an integer in 1..65536, got 0"),
    ({"validation_fraction": 1.5}, "validation_fraction = 1.5: must lie strictly between 0 and 1"),
    ({"dropout": 1.0}, "dropout = 1.0: must lie in \\[0, 1\\)"),
    ({"dropout": -0.1}, "dropout = -0.1: must lie in \\[0, 1\\)"),
])
def test_config_values_that_do_not_fit(tmp_path, changes, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(write_config(tmp_path, **changes))


def test_config_not_yaml_or_missing(tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_vocab_larger_than_the_corpus_supports_is_a_config_error(tmp_path):
    t = Trainer(load_config(write_config(tmp_path, vocab_size=5000)), progress=False, verbose=False)
    with pytest.raises(ConfigError, match="vocab_size is 5000 but the tokenizer has .* entries"):
        t.prepare()


def test_tokenizer_file_of_another_size_is_a_config_error(tmp_path):
    from trainer.bpe import train_bpe

    train_bpe(load_jsonl(TINY_CORPUS).texts, 300).save(tmp_path / "tok.json")
    cfg = load_config(write_config(tmp_path, vocab_size=320, tokenizer_path=str(tmp_path / "tok.json")))
    with pytest.raises(ConfigError, match="vocab_size is 320 but the tokenizer has 300 entries"):
        Trainer(cfg, progress=False, verbose=False).prepare()


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def _bad_corpus(tmp_path) -> Path:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "good one"}\n'
                  b'{"text": "bad \xff\xfe utf8"}\n'
                  b'not json at all\n'
                  b'{"title": "no text"}\n'
                  b'\n'
                  b'{"text": ""}\n'
                  b'{"text": "good two"}\n')
    return p


def test_bad_lines_are_skipped_and_reported_with_line_numbers(tmp_path):
    c = load_jsonl(_bad_corpus(tmp_path))
    assert c.texts == ["good one", "good two"]
    assert [n for n, _ in c.bad_lines] == [2, 3, 4, 6]
    report = c.bad_line_report()
    assert "4 bad line(s) skipped" in report
    assert "line 2: invalid UTF-8 at byte offset 14" in report
    assert "line 3: not JSON" in report and "line 4: no string field 'text'" in report


def test_bad_line_is_fatal_with_the_flag(tmp_path):
    with pytest.raises(DataError, match=r"bad.jsonl: line 2: invalid UTF-8"):
        load_jsonl(_bad_corpus(tmp_path), on_bad_line="error")


def test_empty_and_missing_datasets(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="is empty"):
        load_jsonl(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "allbad.jsonl").write_bytes(b"\xff\xff\n[1]\n")
    with pytest.raises(DataError, match="holds no usable .* first: line 1: invalid UTF-8"):
        load_jsonl(tmp_path / "allbad.jsonl")


def test_trainer_reports_missing_dataset_before_work(tmp_path):
    t = Trainer(load_config(write_config(tmp_path, dataset_path=str(tmp_path / "nope.jsonl"))), progress=False,
                verbose=False)
    with pytest.raises(DataError, match="nope.jsonl does not exist"):
        t.prepare()


def test_dataset_too_small_for_a_window(tmp_path):
    p = tmp_path / "small.jsonl"
    p.write_text('{"text": "one"}\n{"text": "two"}\n')
    from trainer.bpe import train_bpe

    train_bpe(load_jsonl(TINY_CORPUS).texts, 300).save(tmp_path / "tok.json")
    t = Trainer(load_config(write_config(tmp_path, dataset_path=str(p), tokenizer_path=str(tmp_path / "tok.json"))),
                progress=False, verbose=False)
    with pytest.raises(DataError, match="window of max_seq_len \\+ 1 = 33 is needed"):
        t.prepare()


def test_split_is_reproducible_and_disjoint():
    texts = [f"doc {i}" for i in range(100)]
    a = split(texts, 0.1, seed=3)
    b = split(texts, 0.1, seed=3)
    c = split(texts, 0.1, seed=4)
    assert a == b and a != c
    assert len(a[1]) == 10 and not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == 100


# ---------------------------------------------------------------------------------------------
# schedule, clipping, AdamW
# ---------------------------------------------------------------------------------------------

def test_warmup_then_cosine():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup=10, total=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)       # half way through the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_global_norm_clipping():
    g = np.array([3.0, 4.0], dtype=np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
    g2 = np.array([0.3, 0.4], dtype=np.float32)
    clip_grad_norm(g2, 1.0)
    np.testing.assert_array_equal(g2, np.array([0.3, 0.4], dtype=np.float32))
    assert math.isnan(clip_grad_norm(np.array([np.nan, 1.0]), 1.0))


@pytest.mark.parametrize("prefix", [True, False])
def test_adamw_matches_the_textbook_update(prefix):
    rng = np.random.default_rng(0)
    n = 200_000  # several chunks, so the threaded path runs
    p0 = rng.standard_normal(n)
    decay = np.zeros(n, bool)
    decay[: n // 2] = True  # the model's layout: decayed matrices first
    if not prefix:
        decay = rng.permutation(decay)
    p = p0.copy()
    g = np.zeros(n)
    opt = AdamW(p, g, decay, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    m = np.zeros(n)
    v = np.zeros(n)
    ref = p0.copy()
    for t, scale in zip(range(1, 4), (1.0, 0.25, 1.0)):
        g[...] = rng.standard_normal(n)
        opt.step(0.01, grad_scale=scale)  # the clipping scale, applied inside the update
        g *= scale
        m = 0.9 * m + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        ref = ref - 0.01 * 0.1 * decay * ref
        ref = ref - 0.01 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.95 ** t)) + 1e-8)
    np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-12)


def test_adamw_threads_give_bit_identical_results():
    rng = np.random.default_rng(1)
    n = 300_001
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    outs = []
    for threads in (1, 2):
        p = np.ones(n, np.float32)
        g = np.zeros(n, np.float32)
        opt = AdamW(p, g, np.ones(n, bool), threads=threads)
        for gg in grads:
            g[...] = gg
            opt.step(1e-3)
        outs.append(p.copy())
    np.testing.assert_array_equal(outs[0], outs[1])


# ---------------------------------------------------------------------------------------------
# training, checkpoints, resume
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = load_config(write_config(tmp, max_steps=60))
    res = Trainer(cfg, progress=False, verbose=False).run()
    return cfg, res, tmp


def test_tiny_run_learns(tiny_run):
    cfg, res, _ = tiny_run
    assert res["step"] == 60
    assert res["val_loss"] < 0.5 * math.log(cfg.vocab_size), res  # far below the uniform-guess loss
    assert 0 < res["val_bpb"] < 3


def test_run_folder_has_log_metrics_plot_and_last_n_checkpoints(tiny_run):
    cfg, res, _ = tiny_run
    run = Path(res["run_dir"])
    ckpts = [p.name for p in ckpt_mod.list_checkpoints(run)]
    assert ckpts == ["ckpt-0000040", "ckpt-0000050", "ckpt-0000060"]  # keep_checkpoints = 3
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp")]
    log = (run / "train.log").read_text()
    assert "val loss" in log and "trained BPE tokenizer" in log and "step 60 loss" in log
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30, 40, 50, 60]
    png = (run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", png[16:24])
    assert (w, h) == (640, 360)
    # the image data decompresses to h rows of 1 + 3w bytes, and it is not blank
    idat = png.index(b"IDAT")
    n = struct.unpack(">I", png[idat - 4:idat])[0]
    raw = zlib.decompress(png[idat + 4: idat + 4 + n])
    assert len(raw) == h * (1 + 3 * w) and raw.count(b"\xff") < len(raw) * 0.99


def test_checkpoint_has_no_pickle_and_loads(tiny_run):
    _, res, _ = tiny_run
    ck = ckpt_mod.load(res["run_dir"])
    assert ck.state["step"] == 60 and ck.state["format"] == "bullet-ckpt-1"
    with np.load(ck.path / "weights.npz", allow_pickle=False) as z:
        assert all(z[k].dtype == np.float32 for k in z.files)
    assert "blk.0.wqkv" in ck.params and ck.adam_m.shape == ck.adam_v.shape


def test_progress_line_shows_loss_tokens_per_second_and_eta():
    p = Progress(total=100, start=0, enabled=False)
    p.t0 -= 10.0  # 10 s for 25 steps -> 30 s left
    line = p.line(25, 3.14159, 1e-3, 12345.0)
    assert "25/100" in line and "loss 3.1416" in line and "12.3k tok/s" in line and "ETA 30s" in line


def test_resume_from_a_different_config_is_rejected_before_work(tiny_run, tmp_path):
    _, res, _ = tiny_run
    cfg = load_config(write_config(tmp_path, dim=48))
    t = Trainer(cfg, resume_from=res["run_dir"], progress=False, verbose=False)
    with pytest.raises(CheckpointError, match="different model config \\(dim: checkpoint 32, config 48"):
        t.prepare()


def test_resume_beyond_the_requested_steps_is_rejected(tiny_run, tmp_path):
    _, res, _ = tiny_run
    cfg = load_config(write_config(tmp_path, max_steps=20))
    with pytest.raises(CheckpointError, match="checkpoint is at step 60, beyond the requested 20 steps"):
        Trainer(cfg, resume_from=res["run_dir"], progress=False, verbose=False).prepare()


def test_damaged_checkpoint_is_a_clear_error(tiny_run, tmp_path):
    import shutil

    _, res, _ = tiny_run
    src = ckpt_mod.list_checkpoints(res["run_dir"])[-1]
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    (dst / "weights.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="weights.npz is damaged"):
        ckpt_mod.load(dst)
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt_mod.load(tmp_path / "nothing")


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "trainer.cli", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=300, **kw)


def _weights(run_dir) -> dict:
    ck = ckpt_mod.load(run_dir)
    return dict(ck.params, **{"adam.m": ck.adam_m, "adam.v": ck.adam_v}), ck.state["step"]


def test_killed_then_resumed_run_is_bit_identical(tmp_path):
    steps = 40
    a = tmp_path / "a"
    a.mkdir()
    cfg_a = write_config(a, max_steps=steps, checkpoint_interval=5)
    r = _cli("train", "--config", str(cfg_a), "--no-progress")
    assert r.returncode == 0, r.stderr
    full, step = _weights(a / "run")
    assert step == steps

    b = tmp_path / "b"
    b.mkdir()
    cfg_b = write_config(b, max_steps=steps, checkpoint_interval=5)
    proc = subprocess.Popen(slow_cli(0.05, "train", "--config", str(cfg_b), "--no-progress"),
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (b / "run" / "ckpt-0000015").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = ckpt_mod.list_checkpoints(b / "run")
    assert done and int(done[-1].name[5:]) < steps, "the run finished before it could be killed"
    r = _cli("train", "--config", str(cfg_b), "--resume-from", str(b / "run"), "--steps", str(steps), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stderr
    resumed, step = _weights(b / "run")
    assert step == steps
    assert resumed.keys() == full.keys()
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)


def test_resume_in_process_continues_exactly(tmp_path):
    cfg30 = load_config(write_config(tmp_path, max_steps=30, checkpoint_interval=10))
    Trainer(cfg30, progress=False, verbose=False).run()
    uninterrupted = _weights(tmp_path / "run")[0]
    # resume the same config from its step-10 checkpoint: the last 20 steps replay exactly
    first = ckpt_mod.list_checkpoints(tmp_path / "run")[0]
    assert first.name == "ckpt-0000010"
    t = Trainer(cfg30, resume_from=first, progress=False, verbose=False)
    t.run()
    again = _weights(tmp_path / "run")[0]
    for k in uninterrupted:
        np.testing.assert_array_equal(again[k], uninterrupted[k], err_msg=k)


def test_dropout_run_resumes_exactly_and_keeps_its_best_checkpoint(tmp_path):
    """Dropout masks are a function of (seed, step, attempt, row group): a run resumed from its
    step-10 checkpoint ends on the uninterrupted run's bits. keep_best keeps the checkpoint of the
    lowest validation loss in best/; evaluation does not drop."""
    cfg = load_config(write_config(tmp_path, max_steps=30, checkpoint_interval=10, eval_interval=5,
                                   dropout=0.2, keep_best=True))
    t = Trainer(cfg, progress=False, verbose=False)
    t.run()
    full = _weights(tmp_path / "run")[0]
    hist = t.state.val_history
    assert [s for s, _ in hist] == [5, 10, 15, 20, 25, 30]
    best_step = min(hist, key=lambda sv: sv[1])[0]
    best = ckpt_mod.list_checkpoints(tmp_path / "run" / "best")
    assert [p.name for p in best] == [f"ckpt-{best_step:07d}"]
    assert ckpt_mod.load(best[0]).state["eval"]["val_loss"] == min(v for _, v in hist)
    ev = t.evaluate()                                  # no dropout in evaluation: the same figure twice
    assert t.evaluate()["val_loss"] == ev["val_loss"] == hist[-1][1]

    plain = load_config(write_config(tmp_path, name="plain.yaml", max_steps=30, checkpoint_interval=10,
                                     output_dir=str(tmp_path / "plain")))
    Trainer(plain, progress=False, verbose=False).run()
    assert not (tmp_path / "plain" / "best").exists()
    assert not np.array_equal(_weights(tmp_path / "plain")[0]["tok_embd"], full["tok_embd"])  # dropout acted

    first = ckpt_mod.list_checkpoints(tmp_path / "run")[0]
    assert first.name == "ckpt-0000010"
    Trainer(cfg, resume_from=first, progress=False, verbose=False).run()
    again = _weights(tmp_path / "run")[0]
    for k in full:
        np.testing.assert_array_equal(again[k], full[k], err_msg=k)


# ---------------------------------------------------------------------------------------------
# loss spikes
# ---------------------------------------------------------------------------------------------

def test_injected_nan_rolls_back_lowers_lr_and_finishes(tmp_path):
    cfg = load_config(write_config(tmp_path, max_steps=30, checkpoint_interval=10))
    hits = []

    def fault(step, loss):
        if step == 15 and not hits:
            hits.append(step)
            return float("nan")
        return loss

    t = Trainer(cfg, progress=False, verbose=False, fault=fault)
    res = t.run()
    assert hits == [15] and res["step"] == 30
    assert t.state.rollbacks == 1 and t.state.lr_scale == 0.5 and t.state.attempt == 1
    log = (tmp_path / "run" / "train.log").read_text()
    assert "loss spike at step 15: non-finite loss nan" in log
    assert "rolled back to step 10, learning-rate scale now 0.5" in log
    assert np.isfinite(t.model.flat).all()


def test_injected_loss_jump_is_detected_as_a_spike(tmp_path):
    cfg = load_config(write_config(tmp_path, max_steps=30, checkpoint_interval=10))
    hits = []

    def fault(step, loss):
        if step == 25 and not hits:
            hits.append(step)
            return loss * 50
        return loss

    t = Trainer(cfg, progress=False, verbose=False, fault=fault)
    t.run()
    log = (tmp_path / "run" / "train.log").read_text()
    assert "loss spike at step 25: loss" in log and "x recent mean" in log
    assert "rolled back to step 20" in log


def test_endless_spikes_give_up_with_a_clear_error(tmp_path):
    cfg = load_config(write_config(tmp_path, max_steps=30, max_rollbacks=2))
    t = Trainer(cfg, progress=False, verbose=False, fault=lambda s, l: float("inf") if s == 3 else l)
    with pytest.raises(TrainerError, match="after 2 rollbacks already; giving up"):
        t.run()


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    from bulletd.signing import generate_keypair

    return generate_keypair("trainer-test", tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def exported(tiny_run, keypair, tmp_path_factory):
    from trainer.export import export

    _, res, _ = tiny_run
    out = tmp_path_factory.mktemp("export") / "tiny.bullet"
    summary = export(res["run_dir"], out, key=keypair[0], log=lambda *a: None)
    return out, summary


def test_export_writes_bq4_tensors_tokenizer_and_provenance(exported, tiny_run):
    from bulletd.format import BulletFile

    cfg, res, _ = tiny_run
    out, summary = exported
    with BulletFile.open(out) as bf:
        bf.verify_body()
        assert bf.kind == "lm" and bf.name == "tiny" and bf.version == "0.0.1"
        assert bf.arch["dim"] == 32 and bf.arch["vocab_size"] == 300 and bf.arch["max_seq_len"] == 32
        assert bf.tensors["blk.1.wq"].dtype == "bq4" and bf.tensors["tok_embd"].dtype == "bq4"
        assert bf.tensors["blk.0.attn_norm"].dtype == "f32"
        assert bf.tensors["blk.0.w3"].shape == (64, 32)
        tr = bf.provenance["training"]
        assert tr["steps"] == 60 and tr["val_loss"] == pytest.approx(res["val_loss"])
        assert tr["data_sha256"] == load_jsonl(TINY_CORPUS).sha256
        assert tr["config"]["dim"] == 32
        assert len(bf.vocab) == 300 and bf.header["examples"]
        assert len(bf.header["verification"]) >= 1


def test_exported_model_loss_within_5_percent_of_float32(exported):
    _, summary = exported
    assert summary["relative_increase"] < 0.05, summary
    assert summary["exported_val_loss"] > 0


def test_exported_verification_vectors_replay_and_signature_verifies(exported, keypair):
    from bulletd.ota.smoke import smoke_test
    from bulletd.signing import verify_file

    out, summary = exported
    r = smoke_test(out, require_vectors=True)
    assert r["vectors"] == summary["vectors"] and r["tokens"] > 0
    manifest = verify_file(out, keypair[1].parent)
    assert manifest["name"] == "tiny"


def test_export_tokenizer_matches_training_tokenization(exported, tiny_run):
    from bulletd.runtime import load_model
    from trainer.bpe import Vocab

    _, res, _ = tiny_run
    out, _ = exported
    vocab = Vocab.from_json(ckpt_mod.load(res["run_dir"]).tokenizer)
    with load_model(str(out)) as m:
        for t in load_jsonl(TINY_CORPUS).texts[:50]:
            assert m.tokenizer.encode(t, bos=True) == [vocab.bos_id] + vocab.encode(t)


def test_export_greedy_runtime_output_matches_trainer_model(exported, tiny_run):
    """The runtime's float32 reference on the dequantised export and the trainer's own forward
    pass on the same dequantised weights agree on the next token (contract check of tensor names,
    the RoPE convention and the wqkv/w13 split)."""
    from bulletd.format import BulletFile, dequantize_bq4
    from bulletd.runtime.reference import ReferenceModel
    from trainer.model import Model

    cfg, _, _ = tiny_run
    out, _ = exported
    with BulletFile.open(out) as bf:
        tensors = {n: (dequantize_bq4(bf.tensor(n), i.shape[1]) if i.dtype == "bq4" else np.array(bf.tensor(n)))
                   for n, i in bf.tensors.items()}
        ref = ReferenceModel.from_bullet(bf)
        ids = bf.tokenizer.encode("The cat sees the river", bos=True)
        logits_rt = ref.new_session().prefill_all(ids, 0)
    m = Model(cfg.arch(), dtype=np.float32)
    m.load_bullet_tensors(tensors)
    logits_tr = m.logits(np.array([ids])).data
    np.testing.assert_allclose(logits_tr, logits_rt, atol=2e-3, rtol=1e-3)


def test_export_bad_inputs(tiny_run, tmp_path):
    from trainer.errors import ExportError
    from trainer.export import export

    _, res, _ = tiny_run
    with pytest.raises(CheckpointError, match="does not exist"):
        export(tmp_path / "nothing", tmp_path / "x.bullet")
    with pytest.raises(ExportError, match="private key .* does not exist"):
        export(res["run_dir"], tmp_path / "x.bullet", key=tmp_path / "nokey.pem")
    with pytest.raises(ExportError, match="output folder .* does not exist"):
        export(res["run_dir"], tmp_path / "no" / "x.bullet")


def test_a_failed_export_leaves_the_signed_file_and_its_sig_alone(exported, tiny_run, keypair, tmp_path):
    """`bullet-train export CKPT -o kid.bullet --key PUBLIC.pem` (the public key by mistake), or a
    failure half way, must not touch an existing signed kid.bullet or its .sig."""
    import shutil

    from bulletd.signing import verify_file
    from trainer.errors import ExportError
    from trainer.export import export

    _, res, _ = tiny_run
    kid = tmp_path / "kid.bullet"
    shutil.copy(exported[0], kid)
    shutil.copy(str(exported[0]) + ".sig", str(kid) + ".sig")
    before = kid.read_bytes(), (tmp_path / "kid.bullet.sig").read_bytes()
    r = _cli("export", str(res["run_dir"]), "-o", str(kid), "--key", str(keypair[1]), "--check-windows", "0")
    assert (kid.read_bytes(), (tmp_path / "kid.bullet.sig").read_bytes()) == before
    assert r.returncode == 2 and "is a public key; signing needs the private key" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr

    def broken_log(msg):   # fails after the new file is written at its temporary name
        raise ExportError("the disk filled up")
    with pytest.raises(ExportError, match="the disk filled up"):
        export(res["run_dir"], kid, key=keypair[0], check_windows=2, log=broken_log)
    assert (kid.read_bytes(), (tmp_path / "kid.bullet.sig").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kid.bullet", "kid.bullet.sig"]
    verify_file(kid, keypair[1])
    # exported again without a key: the old .sig, which cannot sign the new file, goes with it
    lines = []
    export(res["run_dir"], kid, check_windows=0, version="9", log=lines.append)
    assert not (tmp_path / "kid.bullet.sig").exists() and any("removed" in x for x in lines)


# ---------------------------------------------------------------------------------------------
# router
# ---------------------------------------------------------------------------------------------

def test_router_trains_and_the_daemon_mother_reads_it(tmp_path, keypair):
    from bulletd.format import BulletFile
    from bulletd.router import Mother
    from trainer.router import export_router, train_router

    food = ["how long to boil an egg", "recipe for pancakes", "bake bread at home", "roast a chicken",
            "make tomato soup", "cook rice in a pot", "fry an egg", "grill some fish", "pasta with garlic",
            "chop onions fast", "slow cooker stew", "whisk cream by hand"]
    marathi = ["नमस्कार कसे आहात", "फाइल उघडा", "जतन करा", "मदत पाहिजे", "नवीन खिडकी", "पुढे जा",
               "दस्तऐवज छापा", "सेटिंग्ज बदला", "भाषा निवडा", "बंद करा", "पासवर्ड टाका", "पुन्हा प्रयत्न करा"]
    ex = [(t, "cooking") for t in food] + [(t, "marathi") for t in marathi]
    model = train_router(ex, feature_dim=256, hidden=16, steps=150, seed=0, log=lambda *a: None)
    assert model.metrics["train_accuracy"] == 1.0
    assert model.predict(["boil potatoes", "फाइल जतन करा"]) == ["cooking", "marathi"]
    s = export_router(model, tmp_path / "mother.bullet", key=keypair[0], threshold=0.6)
    assert Path(s["signature"]).exists()
    with BulletFile.open(tmp_path / "mother.bullet") as bf:
        assert bf.kind == "router" and bf.header["router"]["labels"] == ["cooking", "marathi"]
        mother = Mother(bf)
    # the daemon's Mother computes the same probabilities as the trainer's model
    for text in ("बंद करा", "roast potatoes"):
        p = mother.probs(mother.hidden(mother.features(text)))
        np.testing.assert_allclose(p, model.probs([text])[0], rtol=1e-5, atol=1e-6)
    assert int(np.argmax(mother.probs(mother.hidden(mother.features("बंद करा"))))) == 1


def test_ship_with_a_wrong_key_writes_nothing(tmp_path, keypair):
    out = tmp_path / "child_models"
    out.mkdir()
    (out / "release.pub.pem").write_text("the shipped key\n")
    r = subprocess.run([sys.executable, "-m", "trainer.ship", "--key", str(keypair[1]), "--out", str(out),
                        "--child", f"kid={tmp_path / 'run'}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "is a public key; signing needs the private key" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == ["release.pub.pem"]
    assert (out / "release.pub.pem").read_text() == "the shipped key\n"


def test_router_with_a_bad_key_writes_nothing(tmp_path, keypair):
    from trainer.errors import ExportError
    from trainer.router import export_router, train_router

    ex = [(t, "a") for t in ("one two", "three four", "five six")] + [(t, "b") for t in ("x y", "z w", "v u")]
    model = train_router(ex, feature_dim=64, hidden=8, steps=20, seed=0, log=lambda *a: None)
    out = tmp_path / "mother.bullet"
    export_router(model, out, key=keypair[0])
    before = out.read_bytes(), (tmp_path / "mother.bullet.sig").read_bytes()
    with pytest.raises(ExportError) as e:
        export_router(model, out, key=keypair[1], version="0.2.0")
    assert (out.read_bytes(), (tmp_path / "mother.bullet.sig").read_bytes()) == before
    assert "is a public key" in str(e.value)
    # the command checks the key before it trains
    r = _cli("router", "-o", str(out), "--child", f"a={tmp_path / 'none.jsonl'}", "--key", str(keypair[1]))
    assert r.returncode == 2 and "is a public key" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mother.bullet", "mother.bullet.sig"]


def test_router_feature_kinds_go_into_the_header_and_old_mothers_keep_theirs(tmp_path):
    from bulletd.errors import FormatError
    from bulletd.format import BulletFile, router_features, write_bullet
    from bulletd.router import Mother
    from trainer.router import export_router, train_router

    ex = [(f"switch on the {t} light", "home") for t in ("red", "big", "desk", "hall", "study", "porch")] + \
         [(f"{a} plus {b}", "calc") for a, b in ((1, 2), (3, 4), (15, 9), (7, 70), (8, 1), (41, 5))]
    model = train_router(ex, feature_dim=512, hidden=16, steps=150, seed=0, features="char1-4+word1-2",
                         weight_decay=0.01, dropout=0.3, log=lambda *a: None)
    assert model.predict(["switch on the green light", "12 plus 30"]) == ["home", "calc"]
    export_router(model, tmp_path / "m.bullet")
    with BulletFile.open(tmp_path / "m.bullet") as bf:
        assert bf.header["router"]["features"] == "char1-4+word1-2"
        mother = Mother(bf)
    assert mother.feature_kind == "char1-4+word1-2"
    np.testing.assert_allclose(mother.probs(mother.hidden(mother.features("switch on the green light"))),
                               model.probs(["switch on the green light"])[0], rtol=1e-5, atol=1e-6)
    # word pairs: the same characters in another word order give another vector
    a, b = (router_features(t, 512, "char1-4+word1-2") for t in ("light on", "on light"))
    assert not np.array_equal(a, b) and abs(float(a @ a) - 1) < 1e-5

    def write(path, router):
        w = {"router.w1": ("f32", np.ones((64, 4), np.float32)), "router.b1": ("f32", np.zeros(4, np.float32)),
             "router.w2": ("f32", np.ones((4, 2), np.float32)), "router.b2": ("f32", np.zeros(2, np.float32))}
        write_bullet(path, kind="router", arch={"feature_dim": 64, "hidden": 4}, tensors=w, vocab=[],
                     tokenizer={"kind": "none"}, provenance={"name": "mother", "version": "1", "created": "x"},
                     extra={"router": {"labels": ["a", "b"], "feature_dim": 64, "hidden": 4, **router}})
        with BulletFile.open(path) as bf:
            return Mother(bf)

    old = write(tmp_path / "old.bullet", {})     # a mother from before the key: character 1-3-grams
    assert old.feature_kind == "char1-3"
    np.testing.assert_array_equal(old.features("turn on"), router_features("turn on", 64))
    with pytest.raises(FormatError, match="unknown feature kind 'char9'"):
        write(tmp_path / "new.bullet", {"features": "char9"})
    with pytest.raises(ValueError, match="unknown router feature kind"):
        router_features("x", 64, "char9")


def test_router_first_layer_touches_only_the_buckets_a_batch_holds():
    """The sparse first layer gives the dense product X @ w1 and its gradient, dropout included."""
    from trainer import autograd as ag
    from bulletd.format.features import router_features_sparse
    from trainer.router import _Sparse, _sparse_matmul

    texts = ["turn on the fan", "what is 6 times 7", "मराठीत गोष्ट सांग", "a", "turn on the fan please"]
    X = _Sparse([router_features_sparse(t, 512, "char1-4+word1-2") for t in texts], 512)
    rng = np.random.default_rng(0)
    w = ag.Tensor(rng.standard_normal((512, 8)).astype(np.float32), requires_grad=True)
    idx = [0, 2, 1, 3, 4, 0]
    for dropout in (0.0, 0.5):
        dense = X.dense(idx, dropout, np.random.default_rng(5))
        w.grad = None
        out = _sparse_matmul(len(idx), X.coo(idx, dropout, np.random.default_rng(5)), w)
        np.testing.assert_allclose(out.data, dense @ w.data, rtol=1e-5, atol=1e-5)
        g = rng.standard_normal(out.data.shape).astype(np.float32)
        out.backward(g)
        np.testing.assert_allclose(w.grad, dense.T @ g, rtol=1e-5, atol=1e-5)


def test_router_label_weights_set_the_share_of_a_label():
    from trainer.router import train_router

    # the same prompts under two labels: the model can only learn each label's share of the batches
    ex = [(t, lab) for t in ("one two", "three four", "five six", "seven") for lab in ("x", "y")]
    m = train_router(ex, feature_dim=64, hidden=8, steps=300, batch=40, seed=0, holdout=0, log=lambda *a: None)
    assert abs(float(m.probs(["one two"])[0][0]) - 0.5) < 0.1
    m = train_router(ex, feature_dim=64, hidden=8, steps=300, batch=40, seed=0, holdout=0,
                     label_weights={"x": 3}, log=lambda *a: None)
    assert abs(float(m.probs(["one two"])[0][0]) - 0.75) < 0.1
    with pytest.raises(ConfigError, match="label_weights"):
        train_router(ex, steps=1, label_weights={"z": 2}, log=lambda *a: None)


def test_router_first_layer_in_f16_reads_back_as_the_same_mother(tmp_path):
    from bulletd.format import BulletFile
    from bulletd.router import Mother
    from trainer.router import export_router, train_router

    ex = [(f"switch on the {t} light", "home") for t in ("red", "big", "desk", "hall")] + \
         [(f"{a} plus {b}", "calc") for a, b in ((1, 2), (3, 4), (15, 9), (7, 70))]
    model = train_router(ex, feature_dim=4096, hidden=16, steps=50, seed=0, log=lambda *a: None)
    sizes = {}
    for dt in ("f32", "f16"):
        export_router(model, tmp_path / f"{dt}.bullet", w1_dtype=dt)
        sizes[dt] = (tmp_path / f"{dt}.bullet").stat().st_size
        with BulletFile.open(tmp_path / f"{dt}.bullet") as bf:
            assert bf.tensor("router.w1").dtype == {"f32": np.float32, "f16": np.float16}[dt]
            mother = Mother(bf)
        p = mother.probs(mother.hidden(mother.features("switch on the hall light")))
        np.testing.assert_allclose(p, model.probs(["switch on the hall light"])[0], atol=2e-3)
    assert sizes["f16"] < 0.6 * sizes["f32"]
    with pytest.raises(ConfigError, match="f32 or f16"):
        export_router(model, tmp_path / "bad.bullet", w1_dtype="bq4")
    # the command line: --w1-dtype and --label-weight
    lab = tmp_path / "l.jsonl"
    lab.write_text("".join(json.dumps({"text": t, "label": lab_}) + "\n" for t, lab_ in ex), encoding="utf-8")
    r = _cli("router", "-o", str(tmp_path / "cli.bullet"), "--labelled", str(lab), "--feature-dim", "256",
             "--steps", "20", "--w1-dtype", "f16", "--label-weight", "home=2")
    assert r.returncode == 0, r.stderr
    with BulletFile.open(tmp_path / "cli.bullet") as bf:
        assert bf.tensor("router.w1").dtype == np.float16
    r = _cli("router", "-o", str(tmp_path / "bad.bullet"), "--labelled", str(lab), "--label-weight", "home=two")
    assert r.returncode == 2 and "NAME=WEIGHT" in r.stderr and "Traceback" not in r.stderr


def test_router_needs_two_labels():
    from trainer.router import train_router

    with pytest.raises(DataError, match="at least 2 children"):
        train_router([("a", "x"), ("b", "x")], log=lambda *a: None)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------

def test_cli_bad_config_is_one_clear_line(tmp_path):
    p = write_config(tmp_path, n_layers="two")
    r = _cli("train", "--config", str(p))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("bullet-train: error: ")
    assert "key 'n_layers' must be an integer, found 'two' (str)" in r.stderr
    assert "Traceback" not in r.stderr


def test_cli_warns_in_one_line_about_a_former_key_name(tmp_path):
    p = write_config(tmp_path, dim=None, hidden_size=32)
    r = _cli("split", "--config", str(p), "-o", str(tmp_path / "split"))
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"bullet-train: warning: {p}: deprecated config key(s) hidden_size (now dim); "
                                     "the model keys take the .bullet arch names"]


def test_cli_invalid_utf8_corpus_fails_fast_with_the_flag(tmp_path):
    p = _bad_corpus(tmp_path)
    cfg = write_config(tmp_path, dataset_path=str(p), on_bad_line="error")
    r = _cli("train", "--config", str(cfg))
    assert r.returncode == 2 and "line 2: invalid UTF-8" in r.stderr and "Traceback" not in r.stderr


def test_cli_output_closed_early_ends_quietly(tmp_path):
    """`bullet-train ... | head`: the reader leaves; no traceback, status 141."""
    p = subprocess.Popen([sys.executable, "-m", "trainer.cli", "tokenizer", "--data", str(TINY_CORPUS),
                          "--vocab-size", "300", "-o", str(tmp_path / "tok.json")], cwd=ROOT, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(120) == 141 and err == ""
    assert (tmp_path / "tok.json").is_file()


def test_cli_export_of_missing_checkpoint(tmp_path):
    r = _cli("export", str(tmp_path / "none"), "-o", str(tmp_path / "x.bullet"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_export_with_grouped_kv_heads_and_tied_embeddings_matches_runtime(tmp_path):
    """Contract check for the other architecture switches: n_kv_heads < n_heads and tied output."""
    from bulletd.format import BulletFile, dequantize_bq4
    from bulletd.runtime.reference import ReferenceModel
    from trainer.export import export
    from trainer.model import Model

    cfg = load_config(write_config(tmp_path, max_steps=5, n_heads=4, n_kv_heads=2, tied_embeddings=True,
                                   eval_batches=1))
    Trainer(cfg, progress=False, verbose=False).run()
    out = tmp_path / "gqa.bullet"
    export(tmp_path / "run", out, check_windows=2, log=lambda *a: None)
    with BulletFile.open(out) as bf:
        assert bf.arch["n_kv_heads"] == 2 and bf.arch["tied_embeddings"] is True
        assert "output" not in bf.tensors and bf.tensors["blk.0.wk"].shape == (16, 32)
        tensors = {n: (dequantize_bq4(bf.tensor(n), i.shape[1]) if i.dtype == "bq4" else np.array(bf.tensor(n)))
                   for n, i in bf.tensors.items()}
        ids = bf.tokenizer.encode("A dog sees the ball", bos=True)
        logits_rt = ReferenceModel.from_bullet(bf).new_session().prefill_all(ids, 0)
    m = Model(cfg.arch())
    m.load_bullet_tensors(tensors)
    np.testing.assert_allclose(m.logits(np.array([ids])).data, logits_rt, atol=2e-3, rtol=1e-3)


def test_bench_prints_the_step_split_and_baselines():
    from trainer.bench import run

    lines = []
    res = run(steps=1, warmup=0, memory_seq=256, baselines=False, out=lines.append)
    text = "\n".join(lines)
    assert "REFERENCE model (7.87M parameters" in text
    assert "steps/min" in text and "forward" in text and "backward" in text and "optimiser" in text
    assert "GEMM floor" in text and "plain" in text and "flash" in text
    assert "BLAS threads" in text and "row groups" in text and "x its bare GEMMs" in text and "CPU time" in text
    r = res["step"]
    assert r["step_ms"] == pytest.approx(r["fwd_ms"] + r["bwd_ms"] + r["opt_ms"])
    assert r["cpu_ms"] > 0 and res["gemm"]["cpu_ms"] > 0
    assert res["memory"]["plain"] > res["memory"]["flash"]
    lines = []
    res = run(steps=1, warmup=0, memory_seq=0, out=lines.append)
    text = "\n".join(lines)
    assert "flash tiles" in text and "one pass" in text and "memory" not in res
    assert res["tiles"]["steps"] == res["one_pass"]["steps"] == 1


_FAULTS = """
import resource, sys
import numpy as np
from trainer import cpu
from bulletd.format import arch
from trainer.model import Model, ModelArch
if sys.argv[1] == "keep":
    assert cpu.keep_freed_memory()
m = Model(ModelArch(**arch.SMALL))
w = np.random.default_rng(0).integers(0, arch.SMALL["vocab_size"], size=(4, 129))
for _ in range(2):
    m.loss_and_grad(w[:, :-1], w[:, 1:])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    m.loss_and_grad(w[:, :-1], w[:, 1:])
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


def test_a_training_step_reuses_its_memory():
    """With keep_freed_memory (the trainer and the bench call it) a SMALL-model step after warm-up
    takes next to no page faults; malloc's defaults hand the activations back to the kernel and
    fault them in again, thousands of pages a step."""
    faults = {}
    for mode in ("keep", "default"):
        r = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        faults[mode] = float(r.stdout)
    assert faults["keep"] < 500 and faults["default"] > 10 * max(faults["keep"], 100), faults


def test_sigint_stops_at_a_step_boundary_saves_and_resumes_exactly(tmp_path):
    steps = 30
    a = tmp_path / "a"
    a.mkdir()
    r = _cli("train", "--config", str(write_config(a, max_steps=steps, checkpoint_interval=100)), "--no-progress")
    assert r.returncode == 0, r.stderr
    full, _ = _weights(a / "run")
    b = tmp_path / "b"
    b.mkdir()
    cfg_b = write_config(b, max_steps=steps, checkpoint_interval=100, log_interval=1)
    proc = subprocess.Popen(slow_cli(0.05, "train", "--config", str(cfg_b), "--no-progress"),
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = b / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in out and "--resume-from" in out
    saved = ckpt_mod.list_checkpoints(b / "run")
    assert len(saved) == 1 and 5 <= int(saved[0].name[5:]) < steps  # saved where it stopped, not at an interval
    r = _cli("train", "--config", str(cfg_b), "--resume-from", str(b / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr
    resumed, step = _weights(b / "run")
    assert step == steps
    for k in full:
        np.testing.assert_array_equal(resumed[k], full[k], err_msg=k)
