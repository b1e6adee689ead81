"""The shipped children and mother in child_models/: signed by the release key, loadable, their
verification vectors replay, their temperature-0 golden outputs replay through the runtime, the
model cards state what they claim, and the mother routes held-out-style prompts to the right child."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CM = ROOT / "child_models"
GOLDEN = json.loads((CM / "golden.json").read_text(encoding="utf-8")) if (CM / "golden.json").exists() else {}
CHILDREN = sorted(GOLDEN)


def test_children_are_shipped():
    assert len(CHILDREN) >= 2, "child_models/golden.json lists fewer than two children"
    for name in CHILDREN + ["mother"]:
        assert (CM / f"{name}.bullet").is_file() and (CM / f"{name}.bullet.sig").is_file(), name
        assert (CM / f"{name}.md").is_file(), name
        assert (CM / f"{name}.bullet").stat().st_size <= 8_000_000, f"{name} is larger than 8 MB"
    total = sum(p.stat().st_size for p in CM.iterdir() if p.is_file())
    assert total <= 25_000_000, f"child_models/ holds {total} bytes, more than 25 MB"
    assert not list(CM.glob("*.key")), "a private key is in child_models/"


@pytest.mark.parametrize("name", CHILDREN + ["mother"])
def test_signed_by_the_release_key(name):
    from bulletd.signing import verify_file

    manifest = verify_file(CM / f"{name}.bullet", CM / "release.pub.pem")
    assert manifest["name"] == name


@pytest.mark.parametrize("name", CHILDREN)
def test_golden_output_replays(name):
    from bulletd.runtime import GenerationSettings, load_model

    g = GOLDEN[name]
    with load_model(str(CM / f"{name}.bullet")) as m:
        s = GenerationSettings(max_tokens=g["max_tokens"], temperature=0.0, repetition_penalty=g["repetition_penalty"],
                               top_k=0, top_p=1.0)
        gen = m.generate(g["prompt"], s)
        text = "".join(gen)
    assert list(gen.tokens) == g["ids"]
    assert text == g["text"]
    card = (CM / f"{name}.md").read_text(encoding="utf-8")
    assert g["prompt"] + g["text"] in card  # the card shows the same golden output


@pytest.mark.parametrize("name", CHILDREN)
def test_header_examples_vectors_and_provenance(name):
    from bulletd.format import BulletFile
    from bulletd.ota.smoke import smoke_test

    with BulletFile.open(CM / f"{name}.bullet") as bf:
        bf.verify_body()
        assert bf.kind == "lm" and len(bf.header["examples"]) >= 3
        tr = bf.provenance["training"]
        assert tr["steps"] + (tr.get("init_from") or {}).get("steps", 0) >= 1000 and tr["val_bpb"] > 0
        assert tr["check"]["relative_increase"] < 0.05  # exported BQ4 within 5% of float32
        assert "/" not in tr["config"]["dataset_path"]  # no local folders in a shipped file
        card = (CM / f"{name}.md").read_text(encoding="utf-8")
        assert f"{tr['val_bpb']:.4f} bits per byte" in card
    r = smoke_test(CM / f"{name}.bullet", require_vectors=True)
    assert r["vectors"] >= 2


def test_mother_routes_to_the_right_child():
    from bulletd.router import load_mother

    mother = load_mother(str(CM / "mother.bullet"))
    assert set(CHILDREN) <= set(mother.labels)   # plus the agent children and the reject label
    # ("नवीन खिडकी उघडा", open a new window, is also a home command: खिडकी is a window cover)
    prompts = {"marathi": ["फाइल जतन करा", "नवीन टॅब उघडा"],
               "fortunes": ["A man who knows everything", "The only thing worse than being talked about"]}
    for label, texts in prompts.items():
        if label not in CHILDREN:
            continue
        for t in texts:
            p = mother.probs(mother.hidden(mother.features(t)))
            assert mother.labels[int(p.argmax())] == label, (t, p)
