"""Shipping text children with `python -m trainer.ship`: children only (the mother and the other
children's golden outputs are left alone), the model card carries the `bullet eval` figures of
the exported file (bits per byte on the run's validation split beside the baselines, distinct
4-grams of greedy output), and `bullet-train train --output-dir` puts a run where it is told."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from _trainer_util import ROOT, write_config
from trainer.config import load_config
from trainer.train import Trainer

ENV = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")


def test_train_output_dir_overrides_the_config(tmp_path):
    cfg = write_config(tmp_path, max_steps=4, eval_interval=4, checkpoint_interval=4, log_interval=2)
    out = tmp_path / "elsewhere" / "run"
    r = subprocess.run([sys.executable, "-m", "trainer.cli", "train", "--config", str(cfg), "--output-dir", str(out),
                        "--no-progress"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (out / "ckpt-0000004" / "weights.npz").is_file()
    assert not (tmp_path / "run").exists()
    assert str(out) in r.stdout


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    from bulletd.signing import generate_keypair
    from trainer.ship import main

    tmp = tmp_path_factory.mktemp("ship")
    cfg_path = write_config(tmp, max_steps=40)
    cfg = load_config(cfg_path)
    res = Trainer(cfg, progress=False, verbose=False).run()
    key, _ = generate_keypair("release", tmp / "keys")
    out = tmp / "child_models"
    out.mkdir()
    other = {"prompt": "x", "ids": [1, 2], "text": "y"}
    (out / "golden.json").write_text(json.dumps({"other": other}), encoding="utf-8")
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": p}) + "\n" for p in ("the", "a cat", "one")), encoding="utf-8")
    rc = main(["--key", str(key), "--out", str(out), "--no-mother", "--child", f"tiny={res['run_dir']}/ckpt-0000040",
               "--config", "tiny=trainer/configs/tiny.yaml", "--eval", f"tiny={prompts}", "--golden-prompt", "tiny=the"])
    assert rc == 0
    return out, res, prompts, cfg_path, other, key


@pytest.mark.slow
def test_children_only_keeps_the_mother_and_other_goldens(shipped):
    out, _, _, _, other, _ = shipped
    gold = json.loads((out / "golden.json").read_text(encoding="utf-8"))
    assert gold["other"] == other
    assert gold["tiny"]["prompt"] == "the" and gold["tiny"]["ids"]
    assert (out / "tiny.bullet").is_file() and (out / "tiny.bullet.sig").is_file()
    assert not (out / "mother.bullet").exists()
    assert (out / "tiny-loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _figure(card: str, label: str) -> float:
    m = re.search(re.escape(label) + r"[^|]*\|\s*\**([0-9.]+)", card)
    assert m, f"{label!r} not in the card"
    return float(m.group(1))


@pytest.mark.slow
def test_card_figures_are_what_bullet_eval_measures(shipped, tmp_path):
    out, res, prompts, cfg_path, _, key = shipped
    card = (out / "tiny.md").read_text(encoding="utf-8")
    assert "config `trainer/configs/tiny.yaml`" in card
    assert "../shared" not in card and "shared/data" not in card
    split = tmp_path / "split"
    r = subprocess.run([sys.executable, "-m", "trainer.cli", "split", "--config", str(cfg_path), "-o", str(split)], cwd=ROOT, env=ENV, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr

    def bullet_eval(*args):
        p = subprocess.run([sys.executable, "-m", "bulletd.cli_bullet", "eval", *args, "--models", str(out),
                            "--child", "tiny", "--trust", str(out / "release.pub.pem"), "--json"],
                           cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    text = bullet_eval(str(split / "val.jsonl"), "--train", str(split / "train.jsonl"))
    assert _figure(card, "bits per byte, this child (BQ4)") == pytest.approx(text["bpb"], abs=6e-5)
    assert f"xz -9e {text['baselines']['xz']:.4f}" in card
    assert f"character 5-gram (Kneser-Ney) {text['baselines']['kn5']:.4f}" in card
    dist = bullet_eval(str(prompts), "--distinct")
    assert f"share of distinct token 4-grams {dist['distinct4']:.4f}" in card
    assert f"{dist['distinct4_mean']:.4f} (mean per output)" in card

    # the baselines of a saved report of the same split are taken as they are, another split's refused
    from trainer.ship import main

    report = tmp_path / "report.json"
    text["baselines"]["kn5"] = 9.8765
    report.write_text(json.dumps(text), encoding="utf-8")
    again = tmp_path / "again"
    args = ["--key", str(key), "--out", str(again), "--no-mother", "--child", f"tiny={res['run_dir']}",
            "--eval", f"tiny={prompts}", "--baselines", f"tiny={report}"]
    assert main(args) == 0
    assert "character 5-gram (Kneser-Ney) 9.8765" in (again / "tiny.md").read_text(encoding="utf-8")
    text["baselines"]["bytes"] += 1
    report.write_text(json.dumps(text), encoding="utf-8")
    with pytest.raises(SystemExit, match="another split"):
        main(args)


def test_init_from_a_shipped_child_starts_from_its_weights_and_tokenizer(shipped, tmp_path):
    from bulletd.format import BulletFile, dequantize_bq4

    out = shipped[0]
    cfg = load_config(write_config(tmp_path, max_steps=2, init_from=str(out / "tiny.bullet")))
    tr = Trainer(cfg, progress=False, verbose=False)
    tr.prepare()
    with BulletFile.open(out / "tiny.bullet") as bf:
        assert tr.vocab.pieces == [e.piece for e in bf.vocab]
        got = tr.model.bullet_tensors()
        for name, info in bf.tensors.items():
            t = bf.tensor(name)
            want = dequantize_bq4(t, info.shape[1]) if info.dtype == "bq4" else t
            np.testing.assert_array_equal(got[name], want, err_msg=name)
    assert "initialised from" in (tmp_path / "run" / "train.log").read_text(encoding="utf-8")
    res = tr.run()
    assert res["step"] == 2
    from trainer.export import export

    export(res["run_dir"], tmp_path / "again.bullet", check_windows=0, log=lambda *a: None)
    with BulletFile.open(tmp_path / "again.bullet") as bf, BulletFile.open(out / "tiny.bullet") as first:
        assert bf.provenance["training"]["init_from"] == {"file": "tiny.bullet", "sha256": first.body_sha256(),
                                                          "name": "tiny", "version": "0.0.1", "steps": 40}


def test_init_from_a_child_of_another_shape_is_a_config_error(shipped, tmp_path):
    from trainer.errors import ConfigError

    cfg = load_config(write_config(tmp_path, dim=64, init_from=str(shipped[0] / "tiny.bullet")))
    with pytest.raises(ConfigError, match=r"dim 32 \(config 64\)"):
        Trainer(cfg, progress=False, verbose=False).prepare()
    cfg = load_config(write_config(tmp_path, name="c2.yaml", init_from=str(tmp_path / "missing.bullet")))
    with pytest.raises(ConfigError, match="init_from"):
        Trainer(cfg, progress=False, verbose=False).prepare()


def test_the_card_counts_training_time_not_the_pauses_of_a_stopped_run():
    from trainer.ship import GAP_MIN, log_minutes
    lines = ["2026-12-03 08:00:00 run x: dataset", "2026-12-03 08:10:00 step 20 loss 1",
             "2026-12-03 08:20:00 interrupted by SIGTERM at step 40",
             # resumed the next day: the night is not training time
             "2026-12-04 09:00:00 resumed at step 40", "2026-12-04 09:05:30 step 60 loss 1"]
    assert log_minutes(lines) == (25.5, True)
    assert log_minutes(lines[:3]) == (20.0, False)
    gap = f"2026-12-03 08:{20 + GAP_MIN}:00 step 60 loss 1"      # exactly GAP_MIN: still training
    assert log_minutes(lines[:3] + [gap]) == (20.0 + GAP_MIN, False)


def test_the_card_of_a_best_checkpoint_reads_its_run(tmp_path):
    """A child shipped from best/ (keep_best): the card takes the wall clock and the training speed
    from the run folder above it, says which checkpoint it is, and lists the dropout."""
    from bulletd.signing import generate_keypair
    from trainer import checkpoint as ckpt_mod
    from trainer.ship import card, run_folder

    cfg = load_config(write_config(tmp_path, max_steps=20, eval_interval=5, checkpoint_interval=10,
                                   dropout=0.1, keep_best=True))
    Trainer(cfg, progress=False, verbose=False).run()
    ck = ckpt_mod.load(tmp_path / "run" / "best")
    assert run_folder(ck) == tmp_path / "run"
    key, _ = generate_keypair("release", tmp_path / "keys")
    summary = {"size": 1000, "vectors": 1, "examples": ["a b"], "f32_val_loss": 1.0, "exported_val_loss": 1.0,
               "exported_val_bpb": 1.0, "relative_increase": 0.0}
    gold = {"prompt": "a", "max_tokens": 4, "text": " b", "backend": "native"}
    text = card("tiny", summary, ck, gold, "k", "split", "trainer/configs/tiny.yaml")
    assert " min wall clock on the shared 2-core machine" in text
    assert "the checkpoint of the lowest validation loss (`keep_best`) of a 20-step run" in text
    assert "| `dropout` | 0.1 |" in text
    assert "--child tiny=runs/tiny/best" in text
    assert "scripts/train_child.sh fortunes" in card("fortunes", summary, ck, gold, "k", "split")
