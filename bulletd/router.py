"""The mother: router-kind .bullet inference and the daemon's routing order.

Owns `Mother` (p = softmax(relu(x @ w1 + b1) @ w2 + b2) over the children it was trained on,
x = router_features(text, D, kind), kind the header's router.features) and `Router`, which
applies the routing order of docs/ARCHITECTURE.md:

  1. an explicit `child` in the request;
  2. the mother's top label, when its probability (renormalised over the installed children
     and the reject label `_none`, if the mother has one) reaches the threshold; `_none` is the
     mother's "no child serves this" class: it takes probability but is never a route;
  3. a child the mother does not know, whose header carries `examples`: cosine similarity of the
     prompt's hidden vector relu(x @ w1 + b1) to the centroid of its examples' hidden vectors
     (raw features when there is no mother), when it beats the centroid threshold and the mother
     is unsure or the mother's own choice is farther from its centroid;
  4. a child that recognises the prompt itself (`hints`: child name -> predicate), when the
     mother is not sure: bulletd's home child when the prompt names an entity or area of the
     configured home (tools.home.route_names, HomeConfig.names_something), then its calc child when
     the prompt reads as arithmetic (tools.calc.route_sums, calcinput.is_arithmetic). A child that
     claims the prompt (`claims`: bulletd's home child when the prompt names something of the home
     AND says a home command word: on, off, open, चालू, बंद, a %...; tools.home.route_commands,
     HomeConfig.commands_something) takes it even when the mother is sure of another child, unless
     that child's own hint holds as well;
  5. the configured fallback child;
  6. otherwise no child (a decision with child None, reason "none"); the daemon answers it with
     no_route_error(), RequestError("no_route").

    from bulletd.router import Router, load_mother
    r = Router(load_mother("child_models/mother.bullet"))
    r.set_examples("recipes", ["how long to boil an egg", ...])
    d = r.decide("boil pasta", available={"recipes", "marathi"}, fallback="recipes")
    d.child, d.reason, d.confidence, d.scores
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from bulletd.errors import FormatError, RequestError

REJECT_LABEL = "_none"   # a mother label for utterances no child serves (never a child's name)


class Mother:
    """A loaded router-kind model. Arrays are copied out of the mapping (they are tiny)."""

    def __init__(self, bf: Any):
        if bf.kind != "router":
            raise FormatError(f"{bf.path}: expected a router-kind file for the mother, found kind {bf.kind!r}")
        meta = bf.header.get("router")
        if not isinstance(meta, dict):
            raise FormatError(f"{bf.path}: router file has no 'router' header map")
        labels = meta.get("labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise FormatError(f"{bf.path}: router.labels: expected a non-empty list of names, found {labels!r}")
        self.labels: list[str] = list(labels)
        self.feature_dim = int(meta.get("feature_dim", 0))
        self.threshold = float(meta.get("threshold", 0.5))
        from bulletd.format.features import DEFAULT_KIND, FEATURE_KINDS
        self.feature_kind = meta.get("features", DEFAULT_KIND)
        if self.feature_kind not in FEATURE_KINDS:
            raise FormatError(f"{bf.path}: router.features: unknown feature kind {self.feature_kind!r} "
                              f"(this bulletd knows {', '.join(FEATURE_KINDS)})")
        try:
            self.w1 = np.array(bf.tensor("router.w1"), dtype=np.float32)   # (D, H)
            self.b1 = np.array(bf.tensor("router.b1"), dtype=np.float32)   # (H,)
            self.w2 = np.array(bf.tensor("router.w2"), dtype=np.float32)   # (H, n_labels)
            self.b2 = np.array(bf.tensor("router.b2"), dtype=np.float32)   # (n_labels,)
        except KeyError as exc:
            raise FormatError(f"{bf.path}: router tensor missing: {exc}") from None
        d, h = self.w1.shape if self.w1.ndim == 2 else (0, 0)
        if (d != self.feature_dim or self.b1.shape != (h,) or self.w2.shape != (h, len(self.labels))
                or self.b2.shape != (len(self.labels),)):
            raise FormatError(
                f"{bf.path}: router shapes do not agree: feature_dim {self.feature_dim}, w1 {self.w1.shape}, "
                f"b1 {self.b1.shape}, w2 {self.w2.shape}, b2 {self.b2.shape}, {len(self.labels)} labels")
        self.path = str(bf.path)
        self.name = bf.name
        self.version = bf.version
        self.size = bf.size

    def features(self, text: str) -> np.ndarray:
        from bulletd.format import router_features
        return router_features(text, self.feature_dim, self.feature_kind)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        nz = np.flatnonzero(x)                                            # a text has few n-grams
        return np.maximum(x[nz] @ self.w1[nz] + self.b1, 0.0)             # (H,)

    def probs(self, h: np.ndarray) -> np.ndarray:
        z = h @ self.w2 + self.b2
        z = z - z.max()
        e = np.exp(z)
        return e / e.sum()                                                # (n_labels,)


def load_mother(path: str) -> Mother:
    from bulletd.format import BulletFile
    bf = BulletFile.open(path)
    try:
        return Mother(bf)
    finally:
        bf.close()


RAW_FEATURE_DIM = 1024   # feature size for example-only routing when there is no mother


@dataclass
class RouteDecision:
    child: str | None
    reason: str                       # explicit | mother | examples | names | fallback | none
    confidence: float = 0.0
    scores: dict = field(default_factory=dict)          # mother label -> probability
    example_scores: dict = field(default_factory=dict)  # child -> cosine to its example centroid
    elapsed_ms: float = 0.0

    def as_dict(self) -> dict:
        return {"child": self.child, "reason": self.reason, "confidence": round(float(self.confidence), 6),
                "scores": {k: round(float(v), 6) for k, v in self.scores.items()},
                "example_scores": {k: round(float(v), 6) for k, v in self.example_scores.items()},
                "elapsed_ms": round(self.elapsed_ms, 4)}


class Router:
    """Routing state of the daemon: the optional mother and the example centroids of children."""

    def __init__(self, mother: Mother | None = None):
        self.mother = mother
        self._examples: dict[str, list[str]] = {}
        self._centroids: dict[str, np.ndarray] = {}

    def set_mother(self, mother: Mother | None) -> None:
        self.mother = mother
        self._centroids = {n: self._centroid(ex) for n, ex in self._examples.items()}

    def embed(self, text: str) -> np.ndarray:
        if self.mother is not None:
            return self.mother.hidden(self.mother.features(text))
        from bulletd.format import router_features
        return router_features(text, RAW_FEATURE_DIM)

    def _centroid(self, examples: list[str]) -> np.ndarray:
        m = np.mean([self.embed(e) for e in examples], axis=0)
        n = float(np.linalg.norm(m))
        return m / n if n > 0 else m

    def set_examples(self, name: str, examples: Iterable[Any] | None) -> bool:
        """Remember a child's header `examples`; True when it became routable by them."""
        ex = [e for e in (examples or []) if isinstance(e, str) and e.strip()]
        if not ex:
            self._examples.pop(name, None)
            self._centroids.pop(name, None)
            return False
        self._examples[name] = ex
        self._centroids[name] = self._centroid(ex)
        return True

    def routable_by(self, name: str) -> str | None:
        if self.mother is not None and name in self.mother.labels and name != REJECT_LABEL:
            return "mother"
        if name in self._centroids:
            return "examples"
        return None

    def decide(self, text: str, available: set[str], *, child: str | None = None, threshold: float = -1.0,
               fallback: str = "", centroid_threshold: float = 0.35,
               hints: dict[str, Callable[[str], bool]] | None = None,
               claims: dict[str, Callable[[str], bool]] | None = None) -> RouteDecision:
        """Choose a child for `text` among `available`. Never raises: when none fits, the decision's
        child is None and its reason "none" (no_route_error() words the daemon's answer).
        hints: {child: predicate(text)}; an installed child whose predicate holds takes a prompt the
        mother is not sure of (reason "names"). claims: {child: predicate(text)}; an installed child
        whose predicate holds takes the prompt even from the mother's sure choice, unless the hint of
        the mother's child holds too (reason "names")."""
        t0 = time.perf_counter()
        if child:
            return RouteDecision(child, "explicit", 1.0, elapsed_ms=(time.perf_counter() - t0) * 1e3)
        h = self.embed(text)
        hn = float(np.linalg.norm(h))
        scores: dict[str, float] = {}
        top, p_top = None, 0.0
        m = self.mother
        if m is not None:
            p = m.probs(h)
            mask = np.array([lab in available and lab != REJECT_LABEL for lab in m.labels])
            reject = float(p[m.labels.index(REJECT_LABEL)]) if REJECT_LABEL in m.labels else 0.0
            tot = float(p[mask].sum()) + reject if mask.any() else 0.0
            for lab, pi, ok in zip(m.labels, p, mask):
                if ok:
                    scores[lab] = float(pi) / tot if tot > 0 else 0.0
            if scores:
                top = max(scores, key=scores.__getitem__)
                p_top = scores[top]
        ex_scores: dict[str, float] = {}
        for name, c in self._centroids.items():
            if name in available:
                ex_scores[name] = float(h @ c) / hn if hn > 0 else 0.0
        thr = m.threshold if (m is not None and threshold < 0) else threshold
        mother_sure = top is not None and p_top >= thr
        # children the mother was not trained on compete through their example centroids
        newcomers = {n: s for n, s in ex_scores.items() if m is None or n not in m.labels}
        if newcomers:
            best = max(newcomers, key=newcomers.__getitem__)
            cos_best = newcomers[best]
            mother_cos = ex_scores.get(top) if top is not None else None
            if mother_cos is None and top is not None and hn > 0:
                # the mother's child has no examples: its output weight column is the direction
                # in hidden space the mother associates with it
                col = m.w2[:, m.labels.index(top)]
                cn = float(np.linalg.norm(col))
                mother_cos = float(h @ col) / (hn * cn) if cn > 0 else None
            beats_mother = (not mother_sure) or (mother_cos is not None and cos_best > mother_cos)
            if cos_best >= centroid_threshold and beats_mother:
                return RouteDecision(best, "examples", cos_best, scores, ex_scores,
                                     (time.perf_counter() - t0) * 1e3)
        hints = {n: f for n, f in (hints or {}).items() if n in available}
        if mother_sure:
            # a child that claims the prompt (bulletd: a command of the configured home) takes it
            # from the mother, unless the mother's own child is hinted too
            for name, claim in (claims or {}).items():
                if name in available and name != top and claim(text) and not (top in hints and hints[top](text)):
                    return RouteDecision(name, "names", p_top, scores, ex_scores, (time.perf_counter() - t0) * 1e3)
            return RouteDecision(top, "mother", p_top, scores, ex_scores, (time.perf_counter() - t0) * 1e3)
        for name, hint in hints.items():
            if hint(text):
                return RouteDecision(name, "names", p_top, scores, ex_scores, (time.perf_counter() - t0) * 1e3)
        if fallback and fallback in available:
            return RouteDecision(fallback, "fallback", p_top, scores, ex_scores, (time.perf_counter() - t0) * 1e3)
        d = RouteDecision(None, "none", p_top, scores, ex_scores, (time.perf_counter() - t0) * 1e3)
        return d


def no_route_error(d: RouteDecision, fallback: str) -> RequestError:
    """The daemon's answer to a decision without a child: RequestError("no_route") saying why."""
    if not d.scores and not d.example_scores:
        why = "there is no mother and no installed child carries routing examples"
    else:
        why = f"the best score {d.confidence:.3f} is below the threshold"
    fb = f"; the fallback {fallback!r} is not installed" if fallback else "; no fallback child is configured"
    return RequestError("no_route", f"cannot choose a child: {why}{fb}. Name a child with 'child'.")
