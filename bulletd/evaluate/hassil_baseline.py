"""Home Assistant's own local intent matcher as a baseline for home sets (`--baseline hassil`).

`hassil` matches an utterance against the English sentence templates of the
`home-assistant-intents` package, with the home's entity names and area names as the `name` and
`area` slot lists (each name carries its entity's domain as context, as Home Assistant's default
agent gives it), and picks the best match the way Home Assistant does (`recognize_best`,
preferring the longest `name`). The match becomes a call of the home tool:

- HassTurnOn / HassTurnOff on a cover or a lock become HassOpenCover / HassCloseCover and
  HassLockLock / HassLockUnlock (what Home Assistant's handlers call for those domains);
- the slots name, area, domain, brightness, temperature and position are copied; others
  (state, floor, device_class, ...) are not part of the home tool's calls and are dropped;

and is resolved into service calls by `bulletd.agents.home.resolve`, the child's own resolver.
Both packages are an optional extra: `pip install 'bullet-os[eval]'`. English only: Home
Assistant has no Marathi templates.
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

import yaml

from bulletd.errors import BulletError, RequestError
from bulletd.evaluate.sets import EvalError

DOMAIN_INTENTS = {("HassTurnOn", "cover"): "HassOpenCover", ("HassTurnOff", "cover"): "HassCloseCover",
                  ("HassTurnOn", "lock"): "HassLockLock", ("HassTurnOff", "lock"): "HassLockUnlock"}


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _names(home_path) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, domain) of every entity name and every area name of a home file."""
    doc = yaml.safe_load(Path(home_path).read_text(encoding="utf-8")) or {}
    names, areas = [], []
    for e in doc.get("entities") or []:
        dom = str(e.get("id", "")).split(".")[0]
        for n in e.get("names") or []:
            names.append((str(n), dom))
    for a in doc.get("areas") or []:
        areas += [str(n) for n in a.get("names") or []]
    return names, areas


def to_call(result) -> dict:
    """A hassil RecognizeResult -> a home tool call (the contract's keys)."""
    ent = {k: v.value for k, v in result.entities.items()}
    intent = result.intent.name
    domain = ent.get("domain") or result.context.get("domain")
    intent = DOMAIN_INTENTS.get((intent, domain), intent)
    call: dict = {"intent": intent}
    for k in ("name", "area"):
        if isinstance(ent.get(k), str):
            call[k] = ent[k]
    if isinstance(ent.get("domain"), str):
        call["domain"] = ent["domain"]
    for k in ("brightness", "position"):
        if isinstance(ent.get(k), (int, float)):
            call[k] = int(round(ent[k]))
    if isinstance(ent.get("temperature"), (int, float)):
        t = float(ent["temperature"])
        call["temperature"] = int(t) if t.is_integer() else t
    return call


class HassilBaseline:
    def __init__(self, home, home_path):
        try:
            from hassil import Intents, TextSlotList, TextSlotValue
            from home_assistant_intents import get_intents
        except ImportError as exc:
            raise EvalError(f"--baseline hassil needs the hassil and home-assistant-intents packages "
                            f"(pip install 'bullet-os[eval]'): {exc}") from None
        self.home = home
        self.version = f"hassil {_version('hassil')}, home-assistant-intents {_version('home-assistant-intents')}"
        self.intents = Intents.from_dict(get_intents("en"))
        names, areas = _names(home_path)
        self.lists = {
            "name": TextSlotList(name="name", values=[
                TextSlotValue.from_tuple((n, n, {"domain": d}), allow_template=False) for n, d in names]),
            "area": TextSlotList(name="area", values=[
                TextSlotValue.from_tuple((a, a), allow_template=False) for a in areas]),
            "floor": TextSlotList(name="floor", values=[]),
        }

    def recognize(self, text: str):
        from hassil import recognize_best
        return recognize_best(text, self.intents, slot_lists=self.lists, skip_words=self.intents.skip_words,
                              language="en", best_metadata_key="hass_custom_sentence", best_slot_name="name")

    def run(self, text: str) -> dict:
        """The `got` record of one line: {"call", "actions"} or {"error"[, "message"]}."""
        r = self.recognize(text)
        if r is None:
            return {"child": "hassil", "error": "no_intent"}
        call = to_call(r)
        from bulletd.agents.home import resolve
        try:
            actions = resolve(call, self.home)
        except (RequestError, BulletError) as exc:
            return {"child": "hassil", "call": call, "error": getattr(exc, "code", "error"), "message": str(exc)}
        return {"child": "hassil", "call": call, "actions": list(actions)}
