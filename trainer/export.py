"""Export a training checkpoint to a `.bullet` file (kind "lm"), using bulletd.format's writer.

What goes in:
  * every matrix as BQ4 (tok_embd and output included), norm vectors as f32, under the tensor names
    of docs/ARCHITECTURE.md (the fused wqkv / w13 are split back into wq, wk, wv / w1, w3);
  * the BPE vocabulary (BULK block) and header["tokenizer"];
  * provenance: name, version, created, and `training` = config, steps, dataset SHA-256, the
    checkpoint's float32 validation loss (nats/token and bits/byte), and the exported file's own
    validation loss measured with the runtime's reference forward pass on the same windows;
  * `examples`: a few prompts (for routing by examples);
  * `verification`: prompt -> prompt ids -> greedy continuation ids, computed by the runtime
    (bulletd.runtime.load_model, the backend a device uses) on the exported file itself;
  * a detached signature FILE.sig (bulletd.signing.sign_file) when a private key is given.

    bullet-train export runs/tiny -o tiny.bullet --key release.key
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bulletd.errors import BulletError
from bulletd.format import BulletFile, quantize_bq4, write_bullet
from trainer import checkpoint as ckpt_mod
from trainer.bpe import Vocab
from trainer.config import config_from_dict
from trainer.data import TokenData, load_jsonl, row_data, split, split_prompt, tokenize_stream
from trainer.errors import ConfigError, ExportError, TrainerError
from trainer.model import Model

TRAINER_VERSION = "bullet-train 0.1.0"


def model_from_checkpoint(ck) -> tuple[Model, object, Vocab]:
    try:
        cfg = config_from_dict(ck.state["config"], f"{ck.path}/state.json")
    except (KeyError, BulletError) as exc:
        raise ExportError(f"checkpoint {ck.path}: its config cannot be read back ({exc})") from exc
    model = Model(cfg.arch(), seed=cfg.seed, attn_impl=cfg.attention, attn_block=cfg.attention_block)
    try:
        model.load_arrays(ck.params)
    except ValueError as exc:
        raise ExportError(f"checkpoint {ck.path}: {exc}") from exc
    return model, cfg, Vocab.from_json(ck.tokenizer, f"{ck.path}/tokenizer.json")


@dataclass
class Child:
    """A shipped child read back for training: float32 tensors by `.bullet` name, its vocabulary."""
    name: str
    version: str
    sha256: str
    tensors: dict
    vocab: Vocab


def load_child(path, cfg) -> Child:
    """Read a `.bullet` child to continue training it under `cfg` (the `init_from` key): BQ4
    matrices are dequantised, vectors taken as they are, the vocabulary and merges kept. The model
    shape must be the config's (the context may differ: positions are rotary). Its signature is
    not checked here; train only from files you trust. Raises ConfigError."""
    from bulletd.format import dequantize_bq4

    try:
        bf = BulletFile.open(path)
    except (OSError, BulletError) as exc:
        raise ConfigError(f"init_from {path}: {exc}") from exc
    with bf:
        if bf.kind != "lm":
            raise ConfigError(f"init_from {path}: a {bf.kind!r} file, not a language model child")
        want = bullet_arch(cfg)
        diff = [f"{k} {bf.arch.get(k)} (config {v})" for k, v in want.items()
                if k != "max_seq_len" and bf.arch.get(k) != v]
        if diff:
            raise ConfigError(f"init_from {path}: the child's shape differs from the config: " + ", ".join(diff))
        tensors = {}
        for name, info in bf.tensors.items():
            t = bf.tensor(name)
            tensors[name] = (dequantize_bq4(t, info.shape[1]) if info.dtype == "bq4" else t).astype(np.float32)
        entries = bf.vocab
        vocab = Vocab([e.piece for e in entries], [float(e.score) for e in entries], [int(e.type) for e in entries],
                      int(bf.header["tokenizer"].get("n_merges", 0)))
        return Child(bf.name, bf.version, bf.body_sha256(), tensors, vocab)


def init_provenance(path) -> dict:
    """What a run that started from a child (`init_from`) records about it: file name, body
    SHA-256 and the steps behind it (its own and those of the children it started from)."""
    out = {"file": Path(path).name}
    try:
        with BulletFile.open(path) as bf:
            tr = bf.provenance.get("training") or {}
            out.update(sha256=bf.body_sha256(), name=bf.name, version=bf.version,
                       steps=int(tr.get("steps", 0)) + int((tr.get("init_from") or {}).get("steps", 0)))
    except (OSError, BulletError):
        pass                                        # the file is gone: its name is all there is
    return out


def bullet_arch(cfg) -> dict:
    """The header `arch` of the config's model (the config's model keys are its names)."""
    return cfg.arch().to_dict()


def quantized_tensors(model: Model) -> dict:
    """name -> write_bullet spec: ("bq4", blocks, shape) for matrices, ("f32", v) for vectors."""
    out = {}
    for name, w in model.bullet_tensors().items():
        out[name] = ("bq4", quantize_bq4(w), w.shape) if w.ndim == 2 else ("f32", w)
    return out


def val_data_for(cfg, vocab: Vocab) -> TokenData | None:
    """The run's validation stream (same split as training), or None when the dataset is gone."""
    try:
        corpus = load_jsonl(cfg.dataset_path, field_name=cfg.text_field, on_bad_line="skip")
    except TrainerError:
        return None
    _, val_texts = split(corpus.texts, cfg.validation_fraction, cfg.seed)
    if cfg.loss_after:
        data = row_data([], val_texts, vocab, cfg)
        return data if data.val_rows else None
    tr = np.zeros(cfg.max_seq_len + 1, dtype=np.int32)
    return TokenData(tr, tokenize_stream(val_texts, vocab.encode, vocab.bos_id), cfg.max_seq_len,
                     np.asarray(vocab.token_bytes(), dtype=np.int64))


def runtime_val_loss(path, data: TokenData, n_windows: int, activations: str = "q8") -> dict:
    """Validation loss of an exported file with the runtime's reference forward pass
    (activations "q8" = the native kernels' arithmetic), over the fixed validation windows."""
    from bulletd.runtime.reference import ReferenceModel

    total, n, nbytes = 0.0, 0, 0
    with BulletFile.open(path) as bf:
        ref = ReferenceModel.from_bullet(bf, activations=activations)
        for x, y in data.val_windows(n_windows, 1):
            logits = ref.new_session().prefill_all([int(t) for t in x[0]], 0).astype(np.float64)
            m = logits.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(logits - m).sum(axis=-1)) + m[:, 0]
            keep = y[0] >= 0            # agent rows: the call only
            total += float((lse - logits[np.arange(len(y[0])), y[0]])[keep].sum())
            n += int(keep.sum())
            nbytes += int(data.token_bytes[y[0][keep]].sum())
    return {"val_loss": total / n, "val_bpb": total / math.log(2) / max(1, nbytes), "val_tokens": n}


def f32_val_loss(model: Model, data: TokenData, n_windows: int) -> dict:
    total, n, nbytes = 0.0, 0, 0
    for x, y in data.val_windows(n_windows, 1):
        keep = y.reshape(-1) >= 0
        total += float(model.nll(x, y)[keep].astype(np.float64).sum())
        n += int(keep.sum())
        nbytes += int(data.token_bytes[y.reshape(-1)[keep]].sum())
    return {"val_loss": total / n, "val_bpb": total / math.log(2) / max(1, nbytes), "val_tokens": n}


def greedy_ids(model, ids: list[int], n: int) -> list[int]:
    """Greedy continuation with the runtime (argmax, no penalty): what a device replays."""
    session = model.new_session()
    logits = session.prefill(list(ids), 0)
    out, pos = [], len(ids)
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        if len(out) == n or pos >= model.context:
            break
        logits = session.forward(tok, pos)
        pos += 1
    return out


def agent_header(cfg) -> dict | None:
    """header["agent"] of an agent child: its tool, the tool's schema and the input template.
    The schema is the tool's own (bulletd.agents.tools) when that module is present, else the
    data generator's copy of it."""
    if not cfg.agent_tool:
        return None
    try:
        from bulletd.agents.tools import TOOLS

        schema = TOOLS[cfg.agent_tool].schema
    except (ImportError, KeyError, AttributeError):
        import importlib

        try:
            schema = importlib.import_module(f"trainer.agentdata.{cfg.agent_tool}").SCHEMA
        except (ImportError, AttributeError) as exc:
            raise ExportError(f"agent_tool {cfg.agent_tool!r}: no schema known for this tool ({exc})") from exc
    return {"tool": cfg.agent_tool, "schema": schema, "template": cfg.agent_template}


def _utterance(cfg, text: str) -> str:
    """The user's part of an agent record (the text the template was filled with)."""
    prompt = split_prompt(text, cfg.loss_after)
    prompt = prompt[0] if prompt else text
    head, _, tail = cfg.agent_template.partition("{text}")
    if prompt.startswith(head) and prompt.endswith(tail):
        prompt = prompt[len(head):len(prompt) - len(tail)]
    return prompt


def default_examples(cfg, n: int = 5, max_chars: int = 60) -> list[str]:
    """A few short prompts from the run's validation split (deterministic); for an agent child,
    the utterances without their calls."""
    try:
        corpus = load_jsonl(cfg.dataset_path, field_name=cfg.text_field, on_bad_line="skip")
    except TrainerError:
        return []
    _, val = split(corpus.texts, cfg.validation_fraction, cfg.seed)
    if cfg.loss_after:
        val = [_utterance(cfg, t) for t in val]
    out = []
    for t in val:
        t = " ".join(t.split())
        if len(t) >= 8:
            out.append(t[:max_chars].rsplit(" ", 1)[0] if len(t) > max_chars else t)
        if len(out) == n:
            break
    return out


def export(checkpoint, out, *, key=None, examples=None, prompts=None, vector_tokens: int = 12,
           check_windows: int = 16, name=None, version=None, log=print) -> dict:
    """Write OUT (.bullet) from CHECKPOINT (a ckpt folder or run folder). Returns a summary dict.

    examples: prompts stored as header["examples"] (default: from the validation split).
    prompts: prompts for the verification vectors (default: the first examples' first words).
    """
    from bulletd.signing import ModelOutput

    ck = ckpt_mod.load(checkpoint)
    model, cfg, vocab = model_from_checkpoint(ck)
    name = name or cfg.name
    version = version or cfg.version
    try:   # reads the key first: a wrong key writes nothing and leaves an existing OUT as it was
        output = ModelOutput(out, key, name=name, version=version)
    except BulletError as exc:
        raise ExportError(str(exc)) from None
    with output:
        summary = _export_to(output.tmp, Path(out), model, cfg, vocab, ck, examples=examples, prompts=prompts,
                             vector_tokens=vector_tokens, check_windows=check_windows, name=name,
                             version=version, log=log)
    if key is not None:
        summary["signature"] = str(output.sig_path)
    log(f"wrote {out} ({summary['size'] / 1e6:.2f} MB, {summary['vectors']} verification vectors"
        + (", signed" if key else "") + ")")
    if output.removed_sig:
        log(f"removed {output.sig_path}: it signed the file this one replaced (sign the new one with "
            f"`bullet sign {out} --key KEY`)")
    return summary


def _export_to(out: Path, final: Path, model, cfg, vocab, ck, *, examples, prompts, vector_tokens, check_windows,
               name, version, log) -> dict:
    """Write the exported file at OUT (a temporary name); FINAL is the name it will have."""
    examples = list(examples) if examples else default_examples(cfg)
    if prompts is None and cfg.agent_tool:   # an agent child is asked with its template
        prompts = [cfg.agent_template.format(text=e) for e in examples[:4]] or ["a"]
    if prompts is None:
        prompts = [" ".join(e.split()[:2]) for e in examples[:4]] or ["a"]
    tensors = quantized_tensors(model)
    arch = bullet_arch(cfg)
    step = int(ck.state["step"])
    ev = ck.state.get("eval") or {}
    # the config without this machine's folders: a shipped file should not carry local paths
    public_cfg = dict(ck.state["config"])
    for k in ("dataset_path", "tokenizer_path", "init_from"):
        if public_cfg.get(k):
            public_cfg[k] = Path(public_cfg[k]).name
    public_cfg.pop("output_dir", None)
    training = {"trainer": TRAINER_VERSION, "config": public_cfg, "steps": step,
                "data_sha256": ck.state.get("data_sha256"), "data_file": Path(str(ck.state.get("data_path", ""))).name,
                "val_loss": ev.get("val_loss"), "val_bpb": ev.get("val_bpb"),
                "n_params": ck.state.get("n_params")}
    if cfg.init_from:
        training["init_from"] = init_provenance(cfg.init_from)
    common = dict(kind="lm", arch=arch, tensors=tensors, vocab=vocab.entries(),
                  tokenizer=vocab.tokenizer_header())

    def provenance():
        return {"name": name, "version": version, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "training": training}

    # pass 1: the file without vectors, so the runtime can compute them on the real weights
    agent = agent_header(cfg)
    extra = {"examples": examples, **({"agent": agent} if agent else {})}
    write_bullet(out, provenance=provenance(), extra=extra, **common)
    summary = {"path": str(final), "steps": step, "f32_val_loss_ckpt": ev.get("val_loss")}
    data = val_data_for(cfg, vocab) if check_windows else None
    if data is not None and (cfg.loss_after or len(data.val) > cfg.max_seq_len + 1):
        f32 = f32_val_loss(model, data, check_windows)
        q = runtime_val_loss(out, data, check_windows)
        training["check"] = {"windows": check_windows, "f32_val_loss": f32["val_loss"],
                             "exported_val_loss": q["val_loss"], "exported_val_bpb": q["val_bpb"],
                             "relative_increase": q["val_loss"] / f32["val_loss"] - 1.0}
        summary.update(training["check"])
        log(f"validation loss over {check_windows} windows: float32 {f32['val_loss']:.4f}, exported (BQ4, runtime) "
            f"{q['val_loss']:.4f} ({100 * (q['val_loss'] / f32['val_loss'] - 1):+.2f}%), {q['val_bpb']:.4f} bits/byte")
    from bulletd.runtime import load_model

    vectors = []
    with load_model(str(out)) as rt:
        for p in prompts:
            ids = rt.tokenizer.encode(p, bos=True)
            if len(ids) + vector_tokens >= arch["max_seq_len"]:
                continue
            vectors.append({"prompt": p, "ids": ids, "expected": greedy_ids(rt, ids, vector_tokens)})
    # pass 2: the same weights (quantisation is deterministic) plus the vectors
    write_bullet(out, provenance=provenance(), extra={**extra, "verification": vectors}, **common)
    with load_model(str(out)) as rt:  # the vectors must replay on the final file
        for v in vectors:
            got = greedy_ids(rt, v["ids"], len(v["expected"]))
            if got != v["expected"]:
                raise ExportError(f"{final}: verification vector for {v['prompt']!r} does not replay "
                                  f"({got} != {v['expected']})")
    summary.update(size=out.stat().st_size, vectors=len(vectors), examples=examples)
    return summary
