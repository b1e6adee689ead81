"""Trainer support for agent children: one record per row with loss on the call only, digits
that never merge in BPE, the `agent` header at export, and the mother's reject label."""
import json

import numpy as np
import pytest

from _trainer_util import write_config
from trainer import autograd as ag
from trainer.agentdata import home, training_text


def test_masked_cross_entropy_is_the_mean_over_kept_rows():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 5)).astype(np.float32)
    targets = np.array([-1, 2, -1, 4, 0, -1])
    keep = targets >= 0
    a = ag.Tensor(logits.copy(), requires_grad=True)
    la = ag.cross_entropy(a, targets)
    la.backward()
    b = ag.Tensor(logits[keep].copy(), requires_grad=True)
    lb = ag.cross_entropy(b, targets[keep])
    lb.backward()
    assert float(la.data) == pytest.approx(float(lb.data), rel=1e-6)
    assert np.allclose(a.grad[keep], b.grad, atol=1e-7)
    assert not a.grad[~keep].any()
    with pytest.raises(ValueError, match="targets must lie"):
        ag.cross_entropy(ag.Tensor(logits), np.array([-2, 0, 0, 0, 0, 0]))


def test_rows_put_the_loss_on_the_completion_only():
    from trainer.bpe import train_bpe
    from trainer.data import tokenize_rows, RowData

    texts = [training_text(x["text"], x["call"]) for x in home.generate("train", 60, seed=1)]
    v = train_bpe(texts, 400)
    rows, starts, dropped = tokenize_rows(texts + ["no marker here"], v.encode, v.bos_id, v.eos_id, "\n=>", 160)
    assert dropped == {"no_marker": 1, "too_long": 0} and len(rows) == 60
    d = RowData(rows, starts, rows[:4], starts[:4], 160, np.asarray(v.token_bytes()))
    x, y = d.batch(seed=1, step=0, batch_size=8)
    assert x.shape == y.shape and x.shape[0] == 8 and x.shape[1] <= 159   # as long as the batch's longest row
    for i in range(8):
        t = y[i][y[i] >= 0].tolist()
        assert t[-1] == v.eos_id                                  # the record ends with </s>
        call = v.decode(t[:-1])
        assert call.startswith("{\"intent\":") and json.loads(call)["intent"] in home.INTENTS
        first = int(np.flatnonzero(y[i] >= 0)[0])
        assert v.decode(x[i, 1:first + 1].tolist()).endswith("\n=>")   # the prompt carries no loss
    _, short_starts, d2 = tokenize_rows(texts, v.encode, v.bos_id, v.eos_id, "\n=>", 8)
    assert d2["too_long"] == 60 and len(short_starts) == 0


def test_split_digits_keeps_every_digit_its_own_token():
    from trainer.bpe import train_bpe

    texts = ["12+34=46 and २४ गुणिले ३ = ७२ " * 3, "100 200 300 1000 2024 ११२ १००"] * 20
    plain = train_bpe(texts, 320)
    split = train_bpe(texts, 320, split_digits=True)
    digits = set("0123456789०१२३४५६७८९")

    def multi_digit(v):
        return [p for p in v.pieces if len(p.decode("utf-8", "replace")) > 1 and set(p.decode("utf-8", "replace")) & digits]
    assert multi_digit(plain)                       # without the option numbers merge ...
    assert not multi_digit(split)                   # ... with it they never do
    assert [split.decode([t]) for t in split.encode("2024")] == ["2", "0", "2", "4"]


@pytest.mark.slow
def test_word_pieces_give_a_name_the_same_tokens_in_the_prompt_and_in_the_call():
    from trainer.bpe import train_bpe

    lines = list(home.generate("train", 600, seed=3))
    texts = [training_text(x["text"], x["call"]) for x in lines]
    plain = train_bpe(texts, 500)
    wp = train_bpe(texts, 500, word_pieces=True, split_digits=True)

    def same_tokens(v, line):
        name = line["call"].get("name") or line["call"]["area"]
        ids = v.encode(training_text(line["text"], line["call"]))
        want = v.encode(name)
        hay = [ids[i:i + len(want)] for i in range(len(ids) - len(want) + 1)]
        return hay.count(want) >= 2          # once in the utterance, once in the call

    named = [x for x in lines[:300] if "name" in x["call"]]
    assert sum(same_tokens(wp, x) for x in named) == len(named)
    assert sum(same_tokens(plain, x) for x in named) < 0.9 * len(named)   # plain pieces often differ
    assert all(not (set(p) & {32}) or p.strip() == b"" for p in wp.pieces[259:] if len(p) > 1)  # no " word"


@pytest.mark.slow
def test_agent_run_exports_the_agent_header(tmp_path):
    from bulletd.format import BulletFile
    from trainer.export import export
    from trainer.train import Trainer
    from trainer.config import load_config

    data = tmp_path / "h.jsonl"
    data.write_text("".join(json.dumps({"text": training_text(x["text"], x["call"])}, ensure_ascii=False) + "\n"
                            for x in home.generate("train", 150, seed=2)), encoding="utf-8")
    cfg = load_config(write_config(tmp_path, dataset_path=str(data), loss_after="\n=>", agent_tool="home",
                                   vocab_size=320, max_seq_len=96, max_steps=10, eval_interval=10,
                                   checkpoint_interval=10))
    res = Trainer(cfg, progress=False, verbose=False).run()
    assert res["val_loss"] > 0
    out = tmp_path / "home.bullet"
    export(tmp_path / "run", out, check_windows=2, log=lambda *a: None)
    with BulletFile.open(out) as bf:
        h = bf.header
    assert h["agent"]["tool"] == "home" and h["agent"]["template"] == "{text}\n=>"
    assert h["agent"]["schema"]["properties"]["name"]["x-copy"] == "words"
    assert h["examples"] and all("=>" not in e and "{" not in e for e in h["examples"])
    assert all(v["prompt"].endswith("\n=>") for v in h["verification"])
    check = h["provenance"]["training"]["check"]
    assert check["exported_val_loss"] == pytest.approx(check["f32_val_loss"], rel=0.2)


def test_mother_reject_label_takes_probability_but_never_routes():
    from bulletd.format import router_features
    from bulletd.router import REJECT_LABEL, Router
    from trainer.router import train_router

    ex = [(f"bake a cake number {i}", "cooking") for i in range(40)] + \
         [(f"six times seven plus {i}", "math") for i in range(40)] + \
         [(f"what is the weather on day {i}", REJECT_LABEL) for i in range(40)]
    m = train_router(ex, feature_dim=256, hidden=16, steps=200, seed=0, log=lambda *a: None)

    class M:  # the daemon's Mother interface over the trained weights
        labels, threshold = m.labels, 0.5
        w2 = m.w2

        def probs(self, h):
            z = h @ m.w2 + m.b2
            e = np.exp(z - z.max())
            return e / e.sum()

    r = Router()
    r.mother = M()
    r.embed = lambda text: np.maximum(router_features(text, 256) @ m.w1 + m.b1, 0)
    avail = {"cooking", "math"}
    assert r.decide("bake a cake number 3", avail).child == "cooking"
    d = r.decide("what is the weather on day 7", avail)
    assert d.child is None and d.reason == "none" and REJECT_LABEL not in d.scores
    assert r.decide("what is the weather on day 7", avail, fallback="math").reason == "fallback"
    assert r.routable_by(REJECT_LABEL) is None


def test_copy_greedy_keeps_names_inside_the_utterance():
    from trainer.agentdata.measure import copy_greedy, first_object

    pieces = [b"", b'{"intent":"HassTurnOn","name":"', b"space", b"ship", b"kitchen", b" lamp", b'"}']

    class Session:   # the model would rather say "spaceship": a fixed preference order per step
        def prefill(self, ids, pos):
            return np.array([0, 9, 1, 1, 1, 1, 1], float)

        def forward(self, tok, pos):
            return np.array([0, 1, 8, 7, 5, 4, 6], float)

    class Model:
        stop_ids, context = frozenset({0}), 64

        def encode_prompt(self, prompt):
            return [1, 2]

        def new_session(self):
            return Session()

    # unconstrained, the favourites would spell "spacespace..."; under the rule the best pieces that
    # keep the name a substring of the utterance win, and an empty name cannot close
    out = copy_greedy(Model(), "p", "turn on the kitchen lamp", pieces)
    assert first_object(out) == {"intent": "HassTurnOn", "name": "kitchen"}
    itch = pieces[:2] + [b"space", b"ship", b"itch", b" lamp", b'"}']
    out = copy_greedy(Model(), "p", "switch on the kitchen lamp", itch, words=False)
    assert first_object(out) == {"intent": "HassTurnOn", "name": "itch"}
    # whole words (the home schema's rule): "itch" starts inside "switch" and "kitchen", " lamp" at a space
    assert first_object(copy_greedy(Model(), "p", "switch on the kitchen lamp", itch)) is None
    assert first_object(copy_greedy(Model(), "p", "switch on the itch lamp", itch)) == {"intent": "HassTurnOn",
                                                                                       "name": "itch"}


def test_mother_threshold_is_chosen_on_the_dev_set(tmp_path):
    import json

    from bulletd.format import BulletFile
    from trainer.agentdata.ship import choose_threshold, confusion, ship_mother, threshold_sweep

    # (wanted, chosen at threshold 0, confidence): a right child at 0.9, a wrong one at 0.6, a
    # rejected null line, a null line sent to a child at 0.4
    dec = [("home", "home", 0.9), ("calc", "home", 0.6), (None, None, 0.2), (None, "calc", 0.4)]
    sw = {x["threshold"]: x for x in threshold_sweep(dec, (0.3, 0.5, 0.7, 0.95))}
    assert sw[0.3] == {"threshold": 0.3, "children": 0.5, "rejected": 0.5, "wrong_child": 0.5, "accuracy": 0.5}
    assert sw[0.7]["accuracy"] == 0.75 and sw[0.7]["wrong_child"] == 0 and sw[0.95]["children"] == 0
    assert choose_threshold(list(sw.values())) == 0.7       # the best; of equals, the highest
    assert choose_threshold([{"threshold": 0.5, "accuracy": 0.9, "wrong_child": 0.05},
                             {"threshold": 0.6, "accuracy": 0.9, "wrong_child": 0.05}]) == 0.6
    # a wrong child counts as two misses: 0.88 right with 2 % wrong beats 0.9 right with 5 % wrong
    assert choose_threshold([{"threshold": 0.5, "accuracy": 0.9, "wrong_child": 0.05},
                             {"threshold": 0.9, "accuracy": 0.88, "wrong_child": 0.02}]) == 0.9
    lines4 = [{"category": c} for c in ("home", "calc", "none", "none")]
    assert confusion(lines4, dec, 0.5) == {"calc": {"home": 1}, "home": {"home": 1}, "none": {"none": 2}}
    assert confusion(lines4, dec, 0.3) == {"calc": {"home": 1}, "home": {"home": 1}, "none": {"none": 1, "calc": 1}}

    words = {"home": "lamp fan light plug switch", "calc": "plus minus times 3 7 12", "marathi": "फाइल जतन उघडा",
             "fortunes": "wise fool love luck fate", None: "weather alarm call news rain"}
    def lines(k, seed):
        import random
        rng = random.Random(seed)
        return [{"text": " ".join(rng.choices(words[lab].split(), k=3)), "child": lab}
                for lab in words for _ in range(k)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"text": x["text"], "label": x["child"] or "_none"},
                                                         ensure_ascii=False) + "\n" for x in lines(40, 1)))
    with pytest.raises(SystemExit, match="routing_dev.jsonl is missing"):
        ship_mother(data / "train.jsonl", data, tmp_path, feature_dim=256, hidden=16, steps=300, batch=40)
    for name, seed in (("routing_dev.jsonl", 2), ("routing_test.jsonl", 3)):
        (data / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines(10, seed)))
    # an agent child's held-out set: the card counts the share of its lines routed to that child
    (data / "routing_home.jsonl").write_text("".join(json.dumps({"text": x["text"], "category": "en"}) + "\n"
                                                     for x in lines(10, 4) if x["child"] == "home"))
    r = ship_mother(data / "train.jsonl", data, tmp_path, feature_dim=256, hidden=16, steps=300, batch=40)
    assert r["threshold"] == choose_threshold(r["dev_sweep"])
    with BulletFile.open(tmp_path / "mother.bullet") as bf:
        assert bf.header["router"]["threshold"] == r["threshold"]
        assert bf.header["router"]["features"] == "char1-4+word1-2"
    card = (tmp_path / "mother.md").read_text(encoding="utf-8")
    assert f"Threshold {r['threshold']}, chosen on the dev set" in card and f"| {r['threshold']:.2f} (chosen) |" in card
    assert card.count("| source | → home | → calc |") == 2 and f"At the chosen threshold {r['threshold']}:" in card
    assert r["results"][0][3]["accuracy"] > 0.8
    assert "(`routing_home.jsonl`, SHA-256" in card and "share routed to home" in card and "| en | 10/10 |" in card
