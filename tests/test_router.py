"""The mother and the routing order: explicit child, mother above threshold, children routed
by their header examples, fallback, no_route. Held-out accuracy and decision time are printed
by the benchmark; here they are checked on a deterministic toy mother."""
import numpy as np
import pytest

from _daemon_util import TOPICS, make_mother
from bulletd.errors import FormatError
from bulletd.router import Router, load_mother, no_route_error

HELD_OUT = {
    "cooking": ["boil the eggs for ten minutes", "tomato and basil sauce recipe", "bake a loaf of bread"],
    "weather": ["is it going to rain on sunday", "how cold will it be tonight", "storm and wind forecast tonight"],
    "math": ["multiply six by seven", "square root of sixty four", "solve for x in the equation"],
}


@pytest.fixture(scope="module")
def mother(tmp_path_factory):
    d = tmp_path_factory.mktemp("mother")
    return load_mother(str(make_mother(d, TOPICS, key=None)))


def test_mother_loads_labels_and_threshold(mother):
    assert mother.labels == ["cooking", "weather", "math"]
    assert mother.threshold == 0.5
    p = mother.probs(mother.hidden(mother.features("bake bread")))
    assert p.shape == (3,) and abs(float(p.sum()) - 1) < 1e-5


def test_mother_routes_held_out_prompts(mother):
    r = Router(mother)
    avail = set(TOPICS)
    right = sum(r.decide(t, avail).child == lab for lab, ts in HELD_OUT.items() for t in ts)
    assert right == 9, f"only {right}/9 held-out prompts routed right"


def test_explicit_child_wins(mother):
    d = Router(mother).decide("bake bread", set(TOPICS), child="math")
    assert (d.child, d.reason, d.confidence) == ("math", "explicit", 1.0)


def test_low_confidence_goes_to_fallback_then_no_route(mother):
    r = Router(mother)
    d = r.decide("bake bread", set(TOPICS), threshold=0.999, fallback="weather")
    assert (d.child, d.reason) == ("weather", "fallback")
    d = r.decide("bake bread", set(TOPICS), threshold=0.999)
    assert d.child is None and d.reason == "none"
    err = no_route_error(d, "")
    assert err.code == "no_route" and "no fallback child is configured" in err.message


def test_uninstalled_labels_are_not_chosen(mother):
    d = Router(mother).decide("bake bread with yeast", {"weather", "math"}, threshold=0.0)
    assert d.child in {"weather", "math"}
    assert set(d.scores) == {"weather", "math"}
    assert abs(sum(d.scores.values()) - 1) < 1e-6


def test_new_child_with_examples_is_routable_without_retraining(mother):
    r = Router(mother)
    garden = ["plant tomatoes in spring", "water the garden roses", "prune the apple tree branches",
              "compost for the vegetable beds", "mow the lawn and rake leaves"]
    assert r.set_examples("garden", garden)
    assert r.routable_by("garden") == "examples" and r.routable_by("math") == "mother"
    avail = set(TOPICS) | {"garden"}
    d = r.decide("prune the roses and water the garden", avail)
    assert d.child == "garden" and d.reason == "examples", d.as_dict()
    # the mother's own domains still go to the mother's children
    d = r.decide("bake bread with yeast", avail)
    assert (d.child, d.reason) == ("cooking", "mother"), d.as_dict()


def test_examples_only_routing_without_a_mother():
    r = Router(None)
    for lab, ex in TOPICS.items():
        r.set_examples(lab, ex)
    right = sum(r.decide(t, set(TOPICS)).child == lab for lab, ts in HELD_OUT.items() for t in ts)
    assert right >= 7


def test_decision_takes_under_a_millisecond_on_average(mother):
    import time
    r = Router(mother)
    r.set_examples("cooking", TOPICS["cooking"])
    r.decide("warm up", set(TOPICS))
    t0 = time.perf_counter()
    n = 200
    for i in range(n):
        r.decide(f"will it rain on day {i}", set(TOPICS))
    per = (time.perf_counter() - t0) / n * 1e3
    # a generous bound for a loaded CI machine; the benchmark prints the real figure
    assert per < 5.0, f"{per:.3f} ms per decision"


def test_router_file_with_bad_shapes_is_a_format_error(tmp_path):
    from bulletd.format import write_bullet
    from bulletd.format.synth import byte_vocab
    p = tmp_path / "bad.bullet"
    write_bullet(p, kind="router", arch={"feature_dim": 8, "hidden": 4},
                 tensors={"router.w1": ("f32", np.zeros((8, 4), np.float32)), "router.b1": ("f32", np.zeros(4, np.float32)),
                          "router.w2": ("f32", np.zeros((4, 3), np.float32)), "router.b2": ("f32", np.zeros(2, np.float32))},
                 vocab=byte_vocab(259), tokenizer={"kind": "none"},
                 provenance={"name": "m", "version": "1"},
                 extra={"router": {"labels": ["a", "b"], "feature_dim": 8, "hidden": 4, "threshold": 0.5}})
    with pytest.raises(FormatError, match="router shapes do not agree"):
        load_mother(str(p))


def test_a_hint_takes_only_what_the_mother_is_not_sure_of():
    """Routing order step 4: a child's own hint (bulletd: the home child when the prompt names
    something of the home) routes a prompt nothing else claims, never over the mother or an
    explicit child, and only when that child is installed."""
    from bulletd.router import Router
    r = Router(None)
    hints = {"home": lambda t: "porch" in t}
    d = r.decide("zap the porch", {"home", "calc"}, hints=hints)
    assert (d.child, d.reason) == ("home", "names")
    assert r.decide("zap the attic", {"home", "calc"}, hints=hints).child is None
    assert r.decide("zap the porch", {"calc"}, hints=hints).child is None            # not installed
    assert r.decide("zap the porch", {"home", "calc"}, child="calc", hints=hints).child == "calc"
    # before the fallback
    d = r.decide("zap the porch", {"home", "calc"}, hints=hints, fallback="calc")
    assert (d.child, d.reason) == ("home", "names")
    r.set_examples("calc", ["zap the porch light twice"])
    d = r.decide("zap the porch", {"home", "calc"}, hints=hints)
    assert (d.child, d.reason) == ("calc", "examples")                               # claimed first


def test_a_claim_takes_a_prompt_from_the_mothers_sure_choice(mother):
    """A child's claim (bulletd: the prompt commands something of the configured home) wins over
    the mother's sure choice of another child, unless that child's own hint holds too; a hint
    never does."""
    r = Router(mother)
    avail = set(TOPICS)
    assert r.decide("bake bread with yeast", avail).child == "cooking"
    claims = {"math": lambda t: "yeast" in t}
    d = r.decide("bake bread with yeast", avail, claims=claims)
    assert (d.child, d.reason) == ("math", "names"), d.as_dict()
    assert r.decide("bake bread with flour", avail, claims=claims).child == "cooking"
    assert r.decide("bake bread with yeast", avail, hints=claims).child == "cooking"
    assert r.decide("bake bread with yeast", avail, claims=claims, hints={"cooking": lambda t: True}).child == "cooking"
    assert r.decide("bake bread with yeast", avail - {"math"}, claims=claims).child == "cooking"
