"""The home tool: a home config (areas and entities, Home Assistant conventions), name matching,
resolution of an intent call to Home Assistant service calls, device payloads, and known states.

    home = HomeConfig.load("examples/home.yaml")        # HomeConfigError names the key and line
    resolve({"intent": "HassLightSet", "area": "kitchen", "brightness": 40}, home)
    # [{"service": "light.turn_on", "entity_id": "light.kitchen_ceiling", "data": {"brightness_pct": 40}},
    #  {"service": "light.turn_on", "entity_id": "light.kitchen_counter", "data": {"brightness_pct": 40}}]
    command(home.entities["light.kitchen_ceiling"], action)   # (topic, payload bytes) for the device

Names: an exact match of the normalised name (NFC, casefold, punctuation and spaces removed, any
script) against entity names, ids and aliases first; then the same without a Marathi case ending
(case_stems: "स्वयंपाकघरातील" -> "स्वयंपाकघर"); then rapidfuzz's ratio above FUZZY_THRESHOLD. Generic words ("lights", "fan", "दिवे") with an area mean that domain in the area.
An unknown name is `no_such_entity`, a tie `ambiguous`, a value outside 0..100 or the entity's
min_temp..max_temp `out_of_range`: a call that is not clear never becomes an action.
"""
from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bulletd.errors import BulletError, RequestError

DOMAINS = ("light", "switch", "fan", "climate", "cover", "lock", "media_player", "sensor")
SWITCHABLE = ("light", "switch", "fan", "media_player")   # what an area alone means
INTENTS = ("HassTurnOn", "HassTurnOff", "HassToggle", "HassLightSet", "HassClimateSetTemperature",
           "HassSetPosition", "HassGetState", "HassOpenCover", "HassCloseCover", "HassLockLock",
           "HassLockUnlock")
# intent -> {domain: service}; the domains an intent applies to
SERVICES: dict[str, dict[str, str]] = {
    "HassTurnOn": {**{d: f"{d}.turn_on" for d in SWITCHABLE}, "cover": "cover.open_cover",
                   "climate": "climate.turn_on"},
    "HassTurnOff": {**{d: f"{d}.turn_off" for d in SWITCHABLE}, "cover": "cover.close_cover",
                    "climate": "climate.turn_off"},
    "HassToggle": {d: f"{d}.toggle" for d in SWITCHABLE},
    "HassLightSet": {"light": "light.turn_on"},
    "HassClimateSetTemperature": {"climate": "climate.set_temperature"},
    "HassSetPosition": {"cover": "cover.set_cover_position"},
    "HassOpenCover": {"cover": "cover.open_cover"},
    "HassCloseCover": {"cover": "cover.close_cover"},
    "HassLockLock": {"lock": "lock.lock"},
    "HassLockUnlock": {"lock": "lock.unlock"},
    "HassGetState": {d: "get_state" for d in DOMAINS},
}
VALUE_INTENTS = ("HassLightSet", "HassClimateSetTemperature", "HassSetPosition")   # need a number
PLAIN_SERVICES = {"turn_on": "ON", "turn_off": "OFF", "toggle": "TOGGLE"}
FUZZY_THRESHOLD = 85.0     # rapidfuzz ratio (0..100) a name needs without an exact match
FUZZY_TIE = 4.0            # two entities within this many points of the best are a tie
# the router's hint takes a fuzzy name only this close: no typo when the name or the span is up to
# 4 characters, one edit (Levenshtein) up to 9, two beyond ("दवाखाना" is not "दिवाणखाना", "all"
# and "shall" are not "hall")
HINT_EDITS = ((4, 0), (9, 1))
HINT_EDITS_LONG = 2
# words of what a home command does or asks (Home Assistant's services and states: on, off, open,
# close, lock, unlock, toggle, brightness, temperature, position, state; in English, in Marathi and
# the English words as typed in Devanagari): a prompt that names something of the home and says
# one of these is a home command (HomeConfig.commands_something)
COMMAND_WORDS = frozenset("""on off open opened close closed shut lock locked unlock unlocked toggle turn switch set
    dim brighten brightness bright temperature degrees degree percent position status state
    चालू बंद उघड उघडा उघडे उघडी लाव लावा कुलूप टक्के अंश तापमान प्रकाश स्थिती
    ऑन ऑफ ओपन क्लोज लॉक अनलॉक टॉगल सेट डिम स्टेटस""".split())
# words that name a kind of device, not one device: with an area they mean that domain there
DOMAIN_WORDS = {
    "light": "light", "lights": "light", "lamp": "light", "lamps": "light", "दिवा": "light", "दिवे": "light",
    "fan": "fan", "fans": "fan", "पंखा": "fan", "पंखे": "fan",
    "ac": "climate", "acs": "climate", "एसी": "climate", "heater": "climate", "thermostat": "climate",
    "blinds": "cover", "curtains": "cover", "shades": "cover", "पडदे": "cover",
    "lock": "lock", "locks": "lock", "switch": "switch", "switches": "switch",
    "tv": "media_player", "television": "media_player", "टीव्ही": "media_player",
    "temperature": "sensor", "तापमान": "sensor",
}
# Marathi case endings people attach to a name ("स्वयंपाकघरातील", "हॉलमधले", "दिव्याला"): a name
# that matches nothing exactly is tried without them (case_stems), before any fuzzy match
CASE_SUFFIXES = tuple(sorted({
    "मधल्या", "मधले", "मधला", "मधली", "मधलं", "मधील", "मध्ये", "मधे", "मधून",
    "वरच्या", "वरचे", "वरचा", "वरची", "वरचं", "वरील", "वर",
    "तल्या", "तले", "तला", "तली", "तलं", "तील", "तून", "त",
    "च्या", "चे", "चा", "ची", "चं", "ला", "ना", "ने", "शी", "साठी"}, key=len, reverse=True))
_STRING_SPECIAL = re.compile(r'["\\\x00-\x1f]')   # what a JSON string holds only escaped
TOPIC_RE = re.compile(r"^[^+#\x00$][^+#\x00]{0,511}$")


class HomeConfigError(BulletError):
    """The home file is unreadable or malformed; the message names the key and the line."""


def normalize(text: str) -> str:
    """NFC, casefold, punctuation and symbols dropped (marks of any script kept), spaces removed,
    a leading "the " dropped: the key names are compared by."""
    t = unicodedata.normalize("NFC", text).casefold().strip()
    if t.startswith("the "):
        t = t[4:]
    return "".join(c for c in t if unicodedata.category(c)[0] not in "PSZC")


@lru_cache(maxsize=16384)
def _case_stems(key: str) -> tuple[str, ...]:
    return tuple(case_stems(key))


def case_stems(key: str) -> list[str]:
    """The normalised key without a Marathi case ending, longest ending first; each stem also
    without the oblique vowel before the ending ("स्वयंपाकघरा|तील" -> "स्वयंपाकघर") and with its
    े turned back to ा ("अभ्यासिके|तील" -> "अभ्यासिका")."""
    out: list[str] = []
    for suf in CASE_SUFFIXES:
        if key.endswith(suf) and len(key) > len(suf) + 1:
            stem = key[:-len(suf)]
            for s in (stem, stem[:-1] if stem[-1] in "ाे" else "", stem[:-1] + "ा" if stem[-1] == "े" else ""):
                if s and s not in out:
                    out.append(s)
    return out


@dataclass(frozen=True)
class Area:
    id: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Entity:
    id: str
    area: str
    names: tuple[str, ...]
    command_topic: str = ""
    state_topic: str = ""
    payload: str = "json"            # json (zigbee2mqtt) | plain (Tasmota ON/OFF)
    dimmable: bool = True            # lights only
    min_temp: float = 7.0            # climate only
    max_temp: float = 35.0
    system_mode: str = "cool"        # climate: the mode set with a setpoint (cool | heat | ...)
    value_key: str = ""              # state JSON key holding the value (sensors)
    unit: str = ""

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]


_ENTITY_KEYS = {"id": str, "area": str, "names": list, "command_topic": str, "state_topic": str, "payload": str,
                "dimmable": bool, "min_temp": (int, float), "max_temp": (int, float), "system_mode": str,
                "value_key": str, "unit": str}


class HomeConfig:
    """Areas and entities of one home. Load with HomeConfig.load(path) or HomeConfig.parse(text)."""

    def __init__(self, areas: list[Area], entities: list[Entity], source: str = ""):
        self.source = source
        self.areas = {a.id: a for a in areas}
        self.entities = {e.id: e for e in entities}
        self.command_topics = frozenset(e.command_topic for e in entities if e.command_topic)
        self.state_topics: dict[str, list[str]] = {}
        for e in entities:
            if e.state_topic:
                self.state_topics.setdefault(e.state_topic, []).append(e.id)
        # names people use (and the entity id) first; object ids ("kitchen_ceiling") only after
        # area names, so that "bedroom" is the area, not light.bedroom and fan.bedroom
        self._entity_keys: dict[str, set[str]] = {}
        self._object_keys: dict[str, set[str]] = {}
        for e in entities:
            for n in (*e.names, e.id):
                self._entity_keys.setdefault(normalize(n), set()).add(e.id)
            self._object_keys.setdefault(normalize(e.id.split(".", 1)[1]), set()).add(e.id)
        self._all_keys = {k: set(v) for k, v in self._object_keys.items()}
        for k, v in self._entity_keys.items():
            self._all_keys.setdefault(k, set()).update(v)
        self._area_keys: dict[str, set[str]] = {}
        for a in areas:
            for n in (*a.names, a.id, a.id.replace("_", " ")):
                k = normalize(n)
                if k:
                    self._area_keys.setdefault(k, set()).add(a.id)

    @classmethod
    def load(cls, path: str | Path) -> "HomeConfig":
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HomeConfigError(f"cannot read the home file {p}: {getattr(exc, 'strerror', None) or exc}") from None
        return cls.parse(text, str(p))

    @classmethod
    def parse(cls, text: str, source: str = "<home>") -> "HomeConfig":
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise HomeConfigError(f"{source}: not valid YAML: {exc}") from None

        def fail(node: Any, key: str, msg: str) -> HomeConfigError:
            line = f" (line {node.start_mark.line + 1})" if node is not None else ""
            return HomeConfigError(f"{source}: {key}{line}: {msg}")

        def child(node: Any, key: Any) -> Any:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        return v
            if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                return node.value[key]
            return node

        if not isinstance(data, dict):
            raise fail(root, "home", f"expected a mapping with areas and entities, found {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - {"areas", "entities"})
        if unknown:
            raise fail(child(root, unknown[0]), unknown[0], "unknown key; expected areas and entities")
        areas: list[Area] = []
        a_node = child(root, "areas")
        if not isinstance(data.get("areas"), list):
            raise fail(a_node if "areas" in data else root, "areas", "expected a list of {id, names}")
        for i, a in enumerate(data["areas"]):
            n = child(a_node, i)
            where = f"areas[{i}]"
            if not isinstance(a, dict):
                raise fail(n, where, "expected a mapping {id, names}")
            for k in a:
                if k not in ("id", "names"):
                    raise fail(child(n, k), f"{where}.{k}", "unknown key; expected id and names")
            aid = a.get("id")
            if not isinstance(aid, str) or not re.fullmatch(r"[a-z0-9_]+", aid):
                raise fail(child(n, "id"), f"{where}.id", f"expected an id of a-z, 0-9 and _, found {aid!r}")
            if aid in {x.id for x in areas}:
                raise fail(child(n, "id"), f"{where}.id", f"area {aid!r} is defined twice")
            names = a.get("names", [])
            if not isinstance(names, list) or not all(isinstance(x, str) and normalize(x) for x in names):
                raise fail(child(n, "names"), f"{where}.names", f"expected a list of names, found {names!r}")
            areas.append(Area(aid, tuple(names)))
        area_ids = {a.id for a in areas}
        ents: list[Entity] = []
        e_node = child(root, "entities")
        if not isinstance(data.get("entities"), list):
            raise fail(e_node if "entities" in data else root, "entities", "expected a list of entities")
        for i, e in enumerate(data["entities"]):
            n = child(e_node, i)
            where = f"entities[{i}]"
            if not isinstance(e, dict):
                raise fail(n, where, "expected a mapping {id, area, names, command_topic, ...}")
            for k, v in e.items():
                typ = _ENTITY_KEYS.get(k)
                if typ is None:
                    raise fail(child(n, k), f"{where}.{k}", f"unknown key; expected {', '.join(_ENTITY_KEYS)}")
                if not isinstance(v, typ) or (typ != bool and isinstance(v, bool)):
                    raise fail(child(n, k), f"{where}.{k}", f"expected {_type_name(typ)}, found {v!r}")
            eid = e.get("id")
            if not isinstance(eid, str) or not re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", eid) \
                    or eid.split(".")[0] not in DOMAINS:
                raise fail(child(n, "id"), f"{where}.id", f"expected <domain>.<object_id> with a domain of "
                           f"{', '.join(DOMAINS)}, found {eid!r}")
            where = f"{where} ({eid})"
            if eid in {x.id for x in ents}:
                raise fail(child(n, "id"), f"{where}.id", f"entity {eid!r} is defined twice")
            if e.get("area") not in area_ids:
                raise fail(child(n, "area"), f"{where}.area", f"expected one of the areas' ids, found {e.get('area')!r}")
            names = e.get("names", [])
            if not all(isinstance(x, str) and normalize(x) for x in names):
                raise fail(child(n, "names"), f"{where}.names", f"expected a list of names, found {names!r}")
            domain = eid.split(".")[0]
            for k in ("command_topic", "state_topic"):
                if k in e and not TOPIC_RE.match(e[k]):
                    raise fail(child(n, k), f"{where}.{k}", f"expected an MQTT topic without wildcards or a "
                               f"leading $, found {e[k]!r}")
            if domain != "sensor" and not e.get("command_topic"):
                raise fail(n, f"{where}.command_topic", f"missing: a {domain} needs the topic its commands go to")
            if e.get("payload", "json") not in ("json", "plain"):
                raise fail(child(n, "payload"), f"{where}.payload", f"expected json or plain, found {e['payload']!r}")
            lo, hi = e.get("min_temp", 7.0), e.get("max_temp", 35.0)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise fail(child(n, "min_temp"), f"{where}.min_temp", f"expected min_temp < max_temp, found {lo}, {hi}")
            ents.append(Entity(id=eid, area=e["area"], names=tuple(names), command_topic=e.get("command_topic", ""),
                               state_topic=e.get("state_topic", ""), payload=e.get("payload", "json"),
                               dimmable=e.get("dimmable", True), min_temp=float(lo), max_temp=float(hi),
                               system_mode=e.get("system_mode", "cool"), value_key=e.get("value_key", ""),
                               unit=e.get("unit", "")))
        return cls(areas, ents, source)

    # ------------------------------------------------------------------ matching
    def match_area(self, text: str) -> str:
        k = normalize(text)
        ids = self._area_keys.get(k) or self._stemmed(k, self._area_keys)
        if not ids:
            ids = _fuzzy(k, self._area_keys, set(self.areas))
        if not ids:
            raise RequestError("no_such_entity", f"no area is called {text!r} (areas: "
                               f"{', '.join(a.names[0] if a.names else a.id for a in self.areas.values())})")
        if len(ids) > 1:
            raise RequestError("ambiguous", f"{text!r} could be the areas {', '.join(sorted(ids))}")
        return next(iter(ids))

    def match_name(self, text: str, allowed: set[str], fuzzy: bool = True) -> set[str]:
        """Entity ids whose name is `text`: exact (normalised) among all entities, else (with
        `fuzzy`) the closest among `allowed`. Empty when nothing is close enough."""
        k = normalize(text)
        ids = self._entity_keys.get(k) or self._stemmed(k, self._entity_keys)
        if ids:
            return set(ids)
        return _fuzzy(k, self._all_keys, allowed) if fuzzy else set()

    def copy_spans(self, text: str, max_len: int = 48) -> dict[str, list[str]]:
        """The spans of an utterance that name something of this home, for the grammar's
        copy_spans: {"name": [...], "area": [...]}. A span runs from the start of a word to the end
        of one (the "x-copy": "words" rule) and is at most max_len characters. A name span is an
        entity's name, alias, id or object id, exactly or without a Marathi case ending; an area
        span the same for an area. A span inside a longer one that names something else is
        dropped ("lamp" inside "floor lamp"; "floor lamp" inside "the floor lamp" stays). Where no
        exact span lies, a span the fuzzy match accepts (a typo) counts, the best-scoring of
        overlapping ones. A kind with no span is left out (the caller then copies freely, and the
        resolver names the missing device)."""
        return {k: list(dict.fromkeys(t for t, _ in v)) for k, v in self.named_spans(text, max_len).items()}

    def names_something(self, text: str, max_len: int = 48) -> bool:
        """The utterance names an entity or area of this home: a span as copy_spans reads them (from
        the start of a word to the end of one, at most max_len characters) whose key is a name
        exactly, with a Marathi case ending, or within HINT_EDITS of one. The router's hint for the
        home child when the mother is unsure."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein
        from bulletd.runtime.grammar import word_bounds
        kinds = (((self._entity_keys, self._object_keys), list(self._all_keys)),
                 ((self._area_keys,), list(self._area_keys)))
        starts, ends = word_bounds(text)
        for i, a in enumerate(starts):
            for b in ends[i:]:
                if b - a > max_len:
                    break
                if _STRING_SPECIAL.search(text[a:b]):
                    continue
                key = normalize(text[a:b])
                if not key:
                    continue
                for exact, names in kinds:
                    if any(key in d or self._stemmed(key, d) for d in exact):
                        return True
                    for name, dist, _ in process.extract(key, names, scorer=Levenshtein.distance, limit=None,
                                                         score_cutoff=HINT_EDITS_LONG):
                        shorter = min(len(key), len(name))
                        if dist <= next((e for n, e in HINT_EDITS if shorter <= n), HINT_EDITS_LONG):
                            return True
        return False

    def commands_something(self, text: str) -> bool:
        """The utterance names something of this home (names_something) and says a COMMAND_WORDS
        word or a "%": a home command, whichever child the mother leans to."""
        words = set(normalize(w) for w in text.split())
        return ("%" in text or bool(words & COMMAND_WORDS)) and self.names_something(text)

    def named_spans(self, text: str, max_len: int = 48) -> dict[str, list[tuple[str, frozenset]]]:
        """copy_spans with what each span names: {"name": [(span, entity ids)], "area": [(span, area ids)]}."""
        from bulletd.runtime.grammar import word_bounds
        starts, ends = word_bounds(text)
        cands = [(a, b) for i, a in enumerate(starts) for b in ends[i:] if b - a <= max_len]
        keys = {(a, b): normalize(text[a:b]) for a, b in cands if not _STRING_SPECIAL.search(text[a:b])}
        cands = list(keys)
        out = {}
        for kind, index, index_of in (("name", self._all_keys, (self._entity_keys, self._object_keys)),
                                  ("area", self._area_keys, (self._area_keys,))):
            exact = {}
            for a, b in cands:
                k = keys[(a, b)]
                ids = next((frozenset(d.get(k) or self._stemmed(k, d)) for d in index_of
                            if d.get(k) or self._stemmed(k, d)), None) if k else None
                if ids:
                    exact[(a, b)] = ids
            spans = [(a, b) for (a, b), ids in exact.items()
                     if not any(x <= a and b <= y and (x, y) != (a, b) and other != ids
                                for (x, y), other in exact.items())]
            fuzzy = []
            for a, b in cands:
                if any(a < y and x < b for x, y in exact):
                    continue
                score = _fuzzy_score(keys[(a, b)], index)
                if score is not None:
                    fuzzy.append((-score, a - b, a, b))
            picked = set()
            every = set(self.entities if kind == "name" else self.areas)
            for _, _, a, b in sorted(fuzzy):      # best score first; the same key typed twice both stay
                k = keys[(a, b)]
                if k in picked or not any(a < y and x < b for x, y in spans):
                    spans.append((a, b))
                    exact[(a, b)] = frozenset(_fuzzy(k, index, every))
                    picked.add(k)
            if spans:
                out[kind] = [(text[a:b], exact[(a, b)]) for a, b in sorted(spans)]
        return out

    def narrow(self, schema: dict, text: str, max_len: int = 48) -> tuple[dict, dict]:
        """What one utterance pins of a home call, for the grammar: (copy_spans, values). copy_spans
        as copy_spans(); values keeps the intents to those that apply to something the utterance
        names (an entity's domain, or a domain present in a named area that is not part of a named
        entity) and, when it says no number, to those that need none, and a brightness, temperature or position to the numbers the utterance says
        (numbers_said). Only properties of `schema` (an enum intent, integer or number slots) are
        limited, and only where the utterance pins something: no named thing, every intent; no
        number in a slot's range, any number."""
        spans = self.named_spans(text, max_len)
        props = schema.get("properties") or {}
        values: dict[str, list] = {}
        domains = {self.entities[i].domain for _, ids in spans.get("name", []) for i in ids}
        inside = lambda t: any(t != n and t in n for n, _ in spans.get("name", []))
        areas = {a for t, ids in spans.get("area", []) if not inside(t) for a in ids}   # not "bedroom" of "bedroom shades"
        domains |= {e.domain for e in self.entities.values() if e.area in areas}
        intent = props.get("intent")
        said = numbers_said(text)
        if isinstance(intent, dict) and isinstance(intent.get("enum"), list):
            keep = [i for i in intent["enum"] if i in SERVICES and (not domains or set(SERVICES[i]) & domains)]
            if not said:               # no number said: no intent that needs one
                keep = [i for i in keep if i not in VALUE_INTENTS]
            if keep and keep != intent["enum"]:
                values["intent"] = keep
        for k in ("brightness", "temperature", "position"):
            p = props.get(k)
            if not isinstance(p, dict) or p.get("type") not in ("integer", "number") or set(p) & {"enum", "const"}:
                continue
            lo, hi = p.get("minimum", -math.inf), p.get("maximum", math.inf)
            vals = sorted(v for v in said if lo <= v <= hi and (p["type"] == "number" or float(v).is_integer())
                          and round(v, 6) == v)
            if vals:
                values[k] = [int(v) if float(v).is_integer() else v for v in vals]
        return {k: list(dict.fromkeys(t for t, _ in v)) for k, v in spans.items()}, values

    @staticmethod
    def _stemmed(key: str, index: dict[str, set[str]]) -> set[str]:
        """The ids of the first case stem of key (case_stems) that index holds exactly."""
        for s in _case_stems(key):
            if s in index:
                return index[s]
        return set()


def _type_name(typ: Any) -> str:
    return {str: "a string", list: "a list", bool: "true or false"}.get(typ, "a number")


@lru_cache(maxsize=8192)
def _number_word(t: str) -> bool:
    """t is a number word: exactly, or (six letters or more; "light" is no "eight") with a typo."""
    from bulletd.agents import numerals
    return t.casefold() in numerals.WORDS or (len(t) >= 6 and numerals.lookup(t) is not None)


def numbers_said(text: str) -> set:
    """The numbers an utterance says: digits (ASCII or Devanagari, a decimal point allowed) and
    every run of number words (English or Marathi; a word of six letters or more may have a typo
    within bulletd.agents.numerals' allowance; digits before a scale word), each word alone as
    well: "twenty two" gives 22, 20 and 2."""
    from bulletd.agents import numerals
    from bulletd.runtime.grammar import is_word_char
    toks, cur = [], ""
    for i, ch in enumerate(text + " "):
        if is_word_char(ch) or (ch == "." and cur and cur[-1].isdigit() and text[i + 1:i + 2].isdigit()):
            cur += ch
            continue
        if cur:
            toks.append(cur)
        cur = ""
    out: set = set()
    runs, run = [], []
    for t in toks:
        num = numerals._NUMBER.fullmatch(t)
        if num or _number_word(t) or (run and t.casefold() in numerals.FILLER):
            run.append(t)
            if num:
                v = float(t.translate(numerals._TO_ASCII))
                out.add(int(v) if v.is_integer() else v)
        else:
            runs.append(run)
            run = []
    runs.append(run)
    for run in runs:
        for i in range(len(run)):
            for j in range(i + 1, min(len(run), i + 6) + 1):
                try:
                    out.add(numerals.words_value(" ".join(run[i:j])))
                except RequestError:
                    pass
    return out


def _fuzzy_score(key: str, index: dict[str, set[str]]) -> float | None:
    """The best fuzzy ratio of key against the keys of index, None below FUZZY_THRESHOLD."""
    from rapidfuzz import fuzz, process
    if not key:
        return None
    best = process.extractOne(key, index.keys(), scorer=fuzz.ratio, score_cutoff=FUZZY_THRESHOLD)
    return None if best is None else best[1]


def _fuzzy(key: str, index: dict[str, set[str]], allowed: set[str]) -> set[str]:
    """The ids whose best alias scores FUZZY_THRESHOLD or more, within FUZZY_TIE of the best."""
    from rapidfuzz import fuzz
    if not key:
        return set()
    best: dict[str, float] = {}
    for alias, ids in index.items():
        score = fuzz.ratio(key, alias)
        if score < FUZZY_THRESHOLD:
            continue
        for i in ids & allowed:
            best[i] = max(best.get(i, 0.0), score)
    if not best:
        return set()
    top = max(best.values())
    return {i for i, s in best.items() if s >= top - FUZZY_TIE}


# ---------------------------------------------------------------------- resolution


def _int_slot(call: dict, key: str, lo: int = 0, hi: int = 100) -> int:
    v = call.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
        raise RequestError("bad_call", f"{key}: expected an integer {lo}..{hi}, found {v!r}")
    if not lo <= v <= hi:
        raise RequestError("out_of_range", f"{key} {v} is outside {lo}..{hi}")
    return int(v)


def _targets(call: dict, home: HomeConfig, domains: set[str]) -> list[Entity]:
    name, area = call.get("name"), call.get("area")
    domain = call.get("domain")
    intent = call["intent"]
    if domain is not None:
        if domain not in DOMAINS:
            raise RequestError("bad_call", f"domain: expected one of {', '.join(DOMAINS)}, found {domain!r}")
        if domain not in domains:
            raise RequestError("bad_call", f"{intent} does not apply to the {domain} domain")
        domains = {domain}
    for k, v in (("name", name), ("area", area)):
        if v is not None and (not isinstance(v, str) or not normalize(v)):
            raise RequestError("bad_call", f"{k}: expected a name, found {v!r}")
    if not name and not area:
        raise RequestError("bad_call", f"{intent} needs a name or an area")
    area_id = home.match_area(area) if area else None
    if name:
        in_scope = {e.id for e in home.entities.values()
                    if e.domain in domains and (area_id is None or e.area == area_id)}
        key = normalize(name)
        ids = home.match_name(name, in_scope, fuzzy=False)
        akey = key if key in home._area_keys else next((s for s in case_stems(key) if s in home._area_keys), None)
        if not ids and akey and area_id in (None, *home._area_keys[akey]):
            area_id = home.match_area(name)     # "turn on the kitchen": the name is an area's
            name = None
        elif not ids and key in home._object_keys:
            ids = set(home._object_keys[key])
        elif not ids and key in DOMAIN_WORDS:
            d = DOMAIN_WORDS[key]                 # "the lights" in an area: that domain there
            if d not in domains:
                raise RequestError("bad_call", f"{intent} does not apply to {name!r} ({d})")
            domains = {d}
            if area_id is None:
                cands = [e for e in home.entities.values() if e.domain == d]
                if len(cands) == 1:
                    return cands
                raise RequestError("ambiguous", f"{name!r} could be any of {len(cands)} {d} entities; name "
                                   "one or give the area")
            name = None
        elif not ids:
            ids = home.match_name(name, in_scope)
        if name:
            if not ids:
                raise RequestError("no_such_entity", f"no entity is called {name!r}"
                                   + (f" in the area {area_id}" if area_id else ""))
            named = sorted(ids)
            ents = [home.entities[i] for i in named
                    if home.entities[i].domain in domains and (area_id is None or home.entities[i].area == area_id)]
            if not ents:
                what = ", ".join(named)
                if area_id is not None and all(home.entities[i].area != area_id for i in named):
                    raise RequestError("no_such_entity", f"{name!r} ({what}) is not in the area {area_id}")
                raise RequestError("bad_call", f"{intent} does not apply to {name!r} ({what})")
            if len(ents) > 1:
                raise RequestError("ambiguous", f"{name!r} could be {', '.join(e.id for e in ents)}; "
                                   "say which one")
            return ents
    if domain is None:
        domains = (domains & set(SWITCHABLE)) or domains
    ents = [e for e in home.entities.values() if e.area == area_id and e.domain in domains]
    if not ents:
        raise RequestError("no_such_entity", f"no {' or '.join(sorted(domains))} entity in the area {area_id}")
    return ents


def resolve(call: dict, home: HomeConfig) -> list[dict]:
    """A home call -> Home Assistant service calls [{"service", "entity_id", "data"?}], or
    RequestError(no_such_entity | ambiguous | out_of_range | bad_call)."""
    intent = call.get("intent")
    if intent not in SERVICES:
        raise RequestError("bad_call", f"intent: expected one of {', '.join(INTENTS)}, found {intent!r}")
    services = SERVICES[intent]
    brightness = temperature = position = None
    if intent == "HassLightSet" or (call.get("brightness") is not None and intent == "HassTurnOn"):
        if call.get("brightness") is None:
            raise RequestError("bad_call", "HassLightSet needs brightness (0..100)")
        brightness = _int_slot(call, "brightness")
    if intent == "HassClimateSetTemperature":
        temperature = call.get("temperature")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
            raise RequestError("bad_call", f"temperature: expected a number, found {temperature!r}")
    if intent == "HassSetPosition":
        if call.get("position") is None:
            raise RequestError("bad_call", "HassSetPosition needs position (0..100)")
        position = _int_slot(call, "position")
    domains = set(services)
    if brightness is not None:
        domains = {"light"}
    ents = _targets(call, home, domains)
    out = []
    for e in ents:
        service = services[e.domain]
        data: dict = {}
        if brightness is not None:
            if not e.dimmable:
                if len(ents) == 1:
                    raise RequestError("out_of_range", f"{e.id} is not dimmable (no brightness)")
                continue          # an area's dimmable lights take the brightness; the others stay as they are
            data["brightness_pct"] = brightness
        if temperature is not None:
            if not e.min_temp <= temperature <= e.max_temp:
                raise RequestError("out_of_range", f"{e.id} takes {e.min_temp:g}..{e.max_temp:g} °C, "
                                   f"not {temperature:g}")
            data["temperature"] = int(temperature) if float(temperature).is_integer() else temperature
        if position is not None:
            data["position"] = position
        verb = service.split(".")[-1]
        if e.payload == "plain" and service != "get_state" and verb not in PLAIN_SERVICES:
            raise RequestError("bad_call", f"{e.id} takes only ON/OFF/TOGGLE commands, not {service}")
        a = {"service": service, "entity_id": e.id}
        if data:
            a["data"] = data
        out.append(a)
    if not out:
        raise RequestError("out_of_range", "none of the lights there is dimmable")
    return out


def command(e: Entity, action: dict) -> tuple[str, bytes]:
    """The MQTT message that carries out one resolved action on entity `e`: (topic, payload)."""
    service, data = action["service"], action.get("data") or {}
    verb = service.split(".", 1)[1]
    if e.payload == "plain":
        return e.command_topic, PLAIN_SERVICES[verb].encode()
    if verb in ("turn_on", "turn_off", "toggle") and e.domain != "climate":
        msg: dict = {"state": PLAIN_SERVICES[verb]}
        if "brightness_pct" in data:
            msg["brightness"] = round(data["brightness_pct"] * 254 / 100)
    elif verb in ("open_cover", "close_cover"):
        msg = {"state": "OPEN" if verb == "open_cover" else "CLOSE"}
    elif verb == "set_cover_position":
        msg = {"position": data["position"]}
    elif verb in ("lock", "unlock"):
        msg = {"state": verb.upper()}
    elif verb == "set_temperature":
        key = "occupied_heating_setpoint" if e.system_mode == "heat" else "occupied_cooling_setpoint"
        msg = {"system_mode": e.system_mode, key: data["temperature"]}
    elif verb in ("turn_on", "turn_off"):          # climate
        msg = {"system_mode": e.system_mode if verb == "turn_on" else "off"}
    else:
        raise RequestError("bad_call", f"{service} has no device command")
    return e.command_topic, json.dumps(msg, separators=(",", ":")).encode()


# ---------------------------------------------------------------------- states


class StateStore:
    """The last state seen on each entity's state topic (retained messages arrive at subscribe)."""

    MAX_PAYLOAD = 4096

    def __init__(self, home: HomeConfig):
        self.home = home
        self.states: dict[str, dict] = {}

    def update(self, topic: str, payload: bytes) -> list[str]:
        ids = self.home.state_topics.get(topic, [])
        if not ids or len(payload) > self.MAX_PAYLOAD:
            return []
        text = payload.decode("utf-8", "replace").strip()
        obj: Any = None
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
        for eid in ids:
            e = self.home.entities[eid]
            attrs: dict = {}
            if isinstance(obj, dict):
                attrs = {k: v for k, v in list(obj.items())[:32]
                         if isinstance(v, (str, int, float, bool)) or v is None}
                state = attrs.get(e.value_key) if e.value_key else attrs.get("state")
            else:
                state = text[:256]
            self.states[eid] = {"state": state, "attributes": attrs, "ts": time.time()}
        return ids

    def answer(self, actions: list[dict]) -> dict:
        """The result of a get_state call: every asked entity's known state (or that none is known)."""
        out, missing = [], []
        now = time.time()
        for a in actions:
            e = self.home.entities[a["entity_id"]]
            s = self.states.get(e.id)
            row: dict = {"entity_id": e.id, "name": e.names[0] if e.names else e.id, "known": s is not None,
                         "state": s["state"] if s else None}
            if e.unit:
                row["unit"] = e.unit
            if s:
                row["attributes"] = s["attributes"]
                row["age_s"] = round(now - s["ts"], 1)
            else:
                missing.append(e.id)
            out.append(row)
        if missing:
            msg = ("no state is known yet for " + ", ".join(missing)
                   + " (nothing has arrived on its state topic since bulletd started)")
        else:
            msg = "; ".join(f"{r['name']}: {r['state']}{(' ' + r['unit']) if r.get('unit') else ''}" for r in out)
        return {"states": out, "message": msg}
