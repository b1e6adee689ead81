"""The training loop: prepare (config, data, tokenizer, model, optimiser, resume) then run.

Each step reads in this order: learning rate (pure function of the step, times the rollback
scale) -> batch (pure function of seed, step, attempt) -> forward/backward (Model.loss_and_grad:
two row groups side by side on the worker threads) -> gradient norm -> spike test -> AdamW step
(the clipping scale inside) -> log/progress -> evaluate -> checkpoint.

Spike handling: a non-finite loss or gradient norm, or a loss above spike_factor x the mean of
the last spike_window losses, rolls the model and optimiser back to the last checkpoint (kept in
memory too), multiplies the learning rate by rollback_lr_factor, and moves to fresh batches (the
attempt counter is part of the batch seed). It is logged; after max_rollbacks the run stops
with a TrainerError.

Everything that influences later steps is in the checkpoint: the weights, the AdamW moments and
step count, and RunState (step, rollback scale and counters, recent losses), so `--resume-from`
continues bit for bit.

    from trainer.train import Trainer
    Trainer(load_config("trainer/configs/tiny.yaml")).run()
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer import checkpoint as ckpt_mod
from trainer import cpu
from trainer.bpe import Vocab, train_bpe
from trainer.config import TrainConfig
from trainer.data import TokenData, evaluate, load_jsonl, row_data, split, tokenize_stream
from trainer.errors import CheckpointError, ConfigError, TrainerError
from trainer.export import load_child
from trainer.model import Model
from trainer.optim import AdamW, clip_scale, grad_norm, lr_at
from trainer.plot import write_loss_png


def _fmt_time(sec: float) -> str:
    if not math.isfinite(sec):
        return "?"
    sec = int(sec)
    h, r = divmod(sec, 3600)
    m, s = divmod(r, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """One-line progress bar on stderr (a plain line every log_interval steps when not a TTY)."""

    def __init__(self, total: int, start: int, enabled: bool, stream=None):
        self.total, self.start = total, start
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()

    def line(self, step, loss, lr, tok_s) -> str:
        done = step - self.start
        elapsed = time.monotonic() - self.t0
        eta = (self.total - step) * elapsed / done if done > 0 else float("inf")
        width = 24
        fill = int(width * step / max(1, self.total))
        bar = "#" * fill + "." * (width - fill)
        return (f"[{bar}] {step}/{self.total} loss {loss:.4f} lr {lr:.2e} "
                f"{tok_s / 1000:.1f}k tok/s ETA {_fmt_time(eta)}")

    def update(self, step, loss, lr, tok_s, force=False):
        if not self.enabled:
            return
        text = self.line(step, loss, lr, tok_s)
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            if step >= self.total:
                self.stream.write("\n")
        elif force:
            self.stream.write(text + "\n")
        self.stream.flush()


@dataclass
class RunState:
    """What a run carries from step to step besides the weights and the optimiser: written to
    every checkpoint's state.json and read back on resume."""
    step: int = 0
    lr_scale: float = 1.0                 # product of the rollback factors so far
    attempt: int = 0                      # part of the batch seed: a rollback moves to fresh batches
    rollbacks: int = 0
    recent: list[float] = field(default_factory=list)                 # the last spike_window losses
    history: list[tuple[int, float]] = field(default_factory=list)    # (step, training loss)
    val_history: list[tuple[int, float]] = field(default_factory=list)
    last_eval: dict | None = None

    @classmethod
    def from_json(cls, state: dict) -> RunState:
        """From a checkpoint's state.json; KeyError, ValueError or TypeError when it lacks a key."""
        return cls(step=int(state["step"]), lr_scale=float(state["lr_scale"]), attempt=int(state["attempt"]),
                   rollbacks=int(state["rollbacks"]), recent=[float(x) for x in state["recent_losses"]],
                   history=[tuple(x) for x in state.get("history", [])],
                   val_history=[tuple(x) for x in state.get("val_history", [])], last_eval=state.get("eval"))

    def to_json(self) -> dict:
        """The state.json keys (checkpoint.save writes the step)."""
        return {"lr_scale": self.lr_scale, "attempt": self.attempt, "rollbacks": self.rollbacks,
                "recent_losses": self.recent, "history": self.history[-5000:], "val_history": self.val_history,
                "eval": self.last_eval}


class Trainer:
    """Owns one run. `fault(step, loss) -> loss` is called with each step's loss before the spike
    test: tests inject a spike with it, or slow the steps down."""

    def __init__(self, cfg: TrainConfig, *, resume_from=None, progress: bool = True, fault=None,
                 verbose: bool = True):
        self.cfg = cfg
        self.resume_from = resume_from
        self.fault = fault
        self.verbose = verbose
        self.show_progress = progress
        self.run_dir = Path(cfg.output_dir)
        self.prepared = False
        self.progress = None

    # -- logging -------------------------------------------------------------------------------------

    def log(self, msg: str, echo: bool = True) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "train.log", "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if echo and self.verbose:
            if self.progress is not None and self.progress.tty:
                sys.stderr.write("\r\x1b[K")
            print(msg, file=sys.stderr, flush=True)

    # -- preparation: every check that can fail happens here, before the first step ------------------

    def prepare(self) -> None:
        cfg = self.cfg
        self.progress = None
        ck = None
        if self.resume_from is not None:
            ck = ckpt_mod.load(self.resume_from)
            ckpt_mod.check_matches(ck, cfg.model_dict())
            if int(ck.state.get("step", 0)) > cfg.max_steps:
                raise CheckpointError(f"checkpoint is at step {ck.state.get('step')}, beyond the requested "
                                      f"{cfg.max_steps} steps")
        corpus = load_jsonl(cfg.dataset_path, field_name=cfg.text_field, on_bad_line=cfg.on_bad_line)
        self.corpus = corpus
        self.log(f"run {cfg.name}: dataset {corpus.path} ({len(corpus.texts)} records, sha256 {corpus.sha256[:16]}); "
                 + corpus.bad_line_report())
        train_texts, val_texts = split(corpus.texts, cfg.validation_fraction, cfg.seed)
        if ck is not None:
            vocab = Vocab.from_json(ck.tokenizer, f"{ck.path}/tokenizer.json")
            if ck.state.get("data_sha256") != corpus.sha256:
                self.log(f"warning: checkpoint was trained on data sha256 {str(ck.state.get('data_sha256'))[:16]}, "
                         f"the dataset now has {corpus.sha256[:16]}")
        elif cfg.init_from:
            init = load_child(cfg.init_from, cfg)
            vocab = init.vocab
            if cfg.tokenizer_path:
                self.log("tokenizer_path is ignored: init_from brings its own tokenizer")
        elif cfg.tokenizer_path:
            vocab = Vocab.load(cfg.tokenizer_path)
        else:
            t0 = time.monotonic()
            vocab = train_bpe(train_texts, cfg.vocab_size, split_digits=cfg.split_digits,
                              word_pieces=cfg.word_pieces)
            self.log(f"trained BPE tokenizer: {len(vocab)} entries, {vocab.n_merges} merges "
                     f"in {time.monotonic() - t0:.1f}s")
        if len(vocab) != cfg.vocab_size:
            raise ConfigError(f"vocab_size is {cfg.vocab_size} but the tokenizer has {len(vocab)} entries"
                              + ("" if cfg.tokenizer_path or cfg.init_from or ck else
                                 " (the corpus has too few distinct character pairs; lower vocab_size)"))
        self.vocab = vocab
        t0 = time.monotonic()
        if cfg.loss_after:
            self.data = row_data(train_texts, val_texts, vocab, cfg)
            self.log(f"agent rows (loss after {cfg.loss_after!r}): {len(self.data.train_rows)} training, "
                     f"{len(self.data.val_rows)} validation records; left out: {self.data.dropped}")
        else:
            self.data = TokenData(tokenize_stream(train_texts, vocab.encode, vocab.bos_id),
                                  tokenize_stream(val_texts, vocab.encode, vocab.bos_id),
                                  cfg.max_seq_len, np.asarray(vocab.token_bytes(), dtype=np.int64))
        self.data.check(cfg.batch_size)
        train_bytes = sum(len(t.encode("utf-8")) for t in train_texts)
        self.log(f"tokenized in {time.monotonic() - t0:.1f}s: train {len(self.data.train)} tokens "
                 f"({train_bytes / max(1, len(self.data.train)):.2f} bytes/token), val {len(self.data.val)} tokens")

        cpu.keep_freed_memory()
        self.model = Model(cfg.arch(), seed=cfg.seed, attn_impl=cfg.attention, attn_block=cfg.attention_block,
                           dropout=cfg.dropout)
        self.opt = AdamW(self.model.flat, self.model.flat_grad, self.model.decay_mask,
                         betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.state = RunState() if ck is None else self._resume(ck)
        if ck is None and cfg.init_from:
            self.model.load_bullet_tensors(init.tensors)
            self.log(f"initialised from {cfg.init_from} ({init.name} {init.version}, body sha256 {init.sha256[:16]})")
        if self.state.step > cfg.max_steps:
            raise CheckpointError(f"checkpoint is at step {self.state.step}, beyond the requested {cfg.max_steps} steps")
        self._snapshot()
        a = cfg.arch()
        self.log(f"model: {a.n_params() / 1e6:.2f}M parameters, dim {a.dim}, {a.n_layers} layers, "
                 f"{a.n_heads} heads ({a.n_kv_heads} kv), hidden {a.hidden_dim}, vocab {a.vocab_size}, "
                 f"context {a.max_seq_len}; batch {cfg.batch_size}; steps {self.state.step}->{cfg.max_steps}")
        self.prepared = True

    # -- state ---------------------------------------------------------------------------------------

    def _resume(self, ck) -> RunState:
        """Load a checkpoint's weights and optimiser; returns its RunState."""
        try:
            state = RunState.from_json(ck.state)
            self.model.load_arrays(ck.params)
            self.opt.load_state(ck.adam_m, ck.adam_v, ck.state["opt_t"])
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {ck.path} does not fit this model: {exc}") from exc
        self.log(f"resumed from {ck.path} at step {state.step}")
        return state

    def _snapshot(self) -> None:
        """In-memory copy of the last good state (what a rollback returns to)."""
        st = self.state
        self.good = (self.model.flat.copy(), self.opt.m.copy(), self.opt.v.copy(), self.opt.t, st.step,
                     list(st.recent), list(st.history))

    def _rollback(self, reason: str) -> None:
        """Back to the snapshot's weights, optimiser, step and losses; the rollback scale and
        counters move on."""
        flat, m, v, t, step, recent, history = self.good
        st = self.state
        st.rollbacks += 1
        if st.rollbacks > self.cfg.max_rollbacks:
            raise TrainerError(f"loss spike at step {st.step + 1} ({reason}) after {self.cfg.max_rollbacks} "
                               f"rollbacks already; giving up (lower learning_rate or check the data)")
        self.model.flat[...] = flat
        self.opt.m[...] = m
        self.opt.v[...] = v
        self.opt.t = t
        bad_step = st.step + 1
        st.step = step
        st.recent, st.history = list(recent), list(history)
        st.lr_scale *= self.cfg.rollback_lr_factor
        st.attempt += 1
        self.log(f"loss spike at step {bad_step}: {reason}; rolled back to step {step}, "
                 f"learning-rate scale now {st.lr_scale:g}, skipping to fresh batches (attempt {st.attempt}), "
                 f"rollback {st.rollbacks}/{self.cfg.max_rollbacks}")

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def state_dict(self) -> dict:
        cfg = self.cfg
        return dict(self.state.to_json(), config=cfg.to_dict(), model=cfg.model_dict(), arch=cfg.arch().to_dict(),
                    opt_t=self.opt.t, data_sha256=self.corpus.sha256, data_path=self.corpus.path,
                    n_params=cfg.arch().n_params())

    def save_checkpoint(self) -> Path:
        p = ckpt_mod.save(self.run_dir, self.state.step, self.state_dict(), self.model.state_arrays(),
                          self.opt.m, self.opt.v, self.vocab.to_json(), self.cfg.keep_checkpoints)
        self._snapshot()
        self.log(f"checkpoint {p}", echo=False)
        return p

    def evaluate(self) -> dict:
        r = evaluate(self.model, self.data, self.cfg.eval_batches, self.cfg.batch_size)
        r["step"] = self.state.step
        st = self.state
        best = min((v for _, v in st.val_history), default=math.inf)
        st.last_eval = r
        st.val_history.append((st.step, r["val_loss"]))
        self.log(f"step {st.step}: val loss {r['val_loss']:.4f} nats/token, {r['val_bpb']:.4f} bits/byte")
        if self.cfg.keep_best and r["val_loss"] < best:
            p = ckpt_mod.save(self.run_dir / "best", st.step, self.state_dict(), self.model.state_arrays(),
                              self.opt.m, self.opt.v, self.vocab.to_json(), 1)
            self.log(f"best validation loss so far: {p}", echo=False)
        return r

    # -- the loop ------------------------------------------------------------------------------------

    def _saved_here(self) -> bool:
        """Whether the newest checkpoint is of the current step."""
        saved = ckpt_mod.list_checkpoints(self.run_dir)
        return bool(saved) and saved[-1].name == f"ckpt-{self.state.step:07d}"

    def run(self) -> dict:
        if not self.prepared:
            self.prepare()
        cfg, st = self.cfg, self.state
        self.progress = Progress(cfg.max_steps, st.step, self.show_progress)
        tokens_since = 0
        t_last = time.monotonic()
        tok_s = 0.0
        metrics = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
        # Ctrl-C / SIGTERM only set a flag; the loop stops at the next step boundary and saves a
        # checkpoint there (an interrupt inside the optimiser step would leave half-updated weights)
        self._stop_signal = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        interrupted = False
        try:
            while st.step < cfg.max_steps:
                if self._stop_signal is not None:
                    interrupted = True
                    break
                s = st.step
                lr = lr_at(s, max_lr=cfg.learning_rate, min_lr=cfg.min_lr, warmup=cfg.warmup_steps,
                           total=cfg.max_steps) * st.lr_scale
                x, y = self.data.batch(cfg.seed, s, cfg.batch_size, st.attempt)
                loss = self.model.loss_and_grad(x, y, drop_key=(cfg.seed, s, st.attempt))
                if self.fault is not None:
                    loss = self.fault(s + 1, loss)
                norm = grad_norm(self.model.flat_grad)
                window = st.recent[-cfg.spike_window:]
                if not math.isfinite(loss) or not math.isfinite(norm):
                    self._rollback(f"non-finite loss {loss} / gradient norm {norm}")
                    continue
                if len(window) >= min(cfg.spike_window, 5) and loss > cfg.spike_factor * (sum(window) / len(window)):
                    self._rollback(f"loss {loss:.4f} > {cfg.spike_factor:g} x recent mean {sum(window) / len(window):.4f}")
                    continue
                self.opt.step(lr, grad_scale=clip_scale(norm, cfg.grad_clip))  # clipping inside the update
                st.step += 1
                tokens_since += x.size
                st.recent = (st.recent + [loss])[-cfg.spike_window:]
                st.history.append((st.step, loss))
                now = time.monotonic()
                if now - t_last > 0.5 or st.step == cfg.max_steps:
                    tok_s = tokens_since / max(1e-9, now - t_last)
                    t_last, tokens_since = now, 0
                log_now = st.step % cfg.log_interval == 0 or st.step == cfg.max_steps
                self.progress.update(st.step, loss, lr, tok_s, force=log_now)
                if log_now:
                    metrics.write(json.dumps({"step": st.step, "loss": loss, "lr": lr, "grad_norm": norm,
                                              "tok_s": round(tok_s)}) + "\n")
                    metrics.flush()
                    self.log(f"step {st.step} loss {loss:.4f} lr {lr:.3e} grad-norm {norm:.3f} "
                             f"{tok_s:.0f} tok/s", echo=False)
                if st.step % cfg.eval_interval == 0 or st.step == cfg.max_steps:
                    self.evaluate()
                if st.step % cfg.checkpoint_interval == 0 or st.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if interrupted:
            if not self._saved_here():
                self.save_checkpoint()
            self.log(f"interrupted by {signal.Signals(self._stop_signal).name} at step {st.step}; checkpoint saved, "
                     f"continue with --resume-from {self.run_dir}")
            return dict(st.last_eval or {}, step=st.step, run_dir=str(self.run_dir), interrupted=True)
        if st.last_eval is None or st.last_eval.get("step") != st.step:
            self.evaluate()
        if not self._saved_here():
            self.save_checkpoint()
        try:
            write_loss_png(self.run_dir / "loss.png", st.history, st.val_history)
        except OSError as exc:  # the plot is a nicety; never fail a finished run over it
            self.log(f"could not write loss.png: {exc}")
        self.log(f"done: step {st.step}, val loss {st.last_eval['val_loss']:.4f}, "
                 f"{st.last_eval['val_bpb']:.4f} bits/byte; checkpoints in {self.run_dir}")
        return dict(st.last_eval, step=st.step, run_dir=str(self.run_dir))
