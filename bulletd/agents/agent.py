"""The one code path from an utterance to a tool result, shared by bulletd and `bullet eval`.

    from bulletd.agents.agent import run_agent, AgentContext
    ctx = AgentContext(home=HomeConfig.load("examples/home.yaml"))
    out = run_agent(model, "turn on the kitchen light", {}, ctx)
    out["call"], out["actions"], out["result"], out["text"]

An agent child's header carries {"agent": {"tool", "schema", "template"}}. run_agent builds the
model input from the template, constrains generation with the schema's grammar (the utterance is
the x-copy source; for the home tool a "name" or "area" may only be a span of the utterance that
names an entity or area of ctx.home where the utterance has one, the intent one that applies to
what it names, a number one it says: HomeConfig.narrow),
generates greedily unless the settings say otherwise, parses and validates the call
(jsonschema), and runs the tool. A calc call may hold its numbers as typed (Devanagari digits,
number words: what the calc child writes); bulletd.agents.numerals.plain turns them into ASCII
digits, and the reply's call is that plain expression. The home tool only resolves: acting
(publishing on the devices' topics) belongs to the caller, which knows the broker; `ctx.publish`, when given with
`ctx.act`, is called with the resolved actions and its return value (a dict) is merged into the
result. run_agent is synchronous: bulletd calls it on a worker thread.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from bulletd.agents import calc, calcinput, numerals
from bulletd.agents.home import HomeConfig, StateStore, resolve
from bulletd.agents.tools import NAME_MAX, TOOLS, check_schema, validate_call
from bulletd.errors import RequestError

DEFAULT_TEMPLATE = "{text}\n=>"
AGENT_MAX_TOKENS = 128           # unless the request says otherwise (the context may cap it)


@dataclass
class AgentContext:
    home: HomeConfig | None = None
    act: bool = False
    publish: Callable[[list[dict]], dict] | None = None
    states: StateStore | None = None
    cancel: threading.Event | None = None
    session: Any = None
    home_narrow: bool = True     # home: HomeConfig.narrow (names and areas copy spans that name something
    home_spans: bool = True      # of the home, intents and numbers keep to the utterance); else with
                                 # home_spans only the copy spans; with neither, whole words
    extra: dict = field(default_factory=dict)


def agent_spec(header: dict | None) -> dict | None:
    """The header's agent block with defaults filled in, None for a plain child;
    RequestError(bad_model) when the block is malformed."""
    a = (header or {}).get("agent")
    if a is None:
        return None
    if not isinstance(a, dict) or a.get("tool") not in TOOLS:
        raise RequestError("bad_model", f"the child's header key 'agent' needs a tool of "
                           f"{', '.join(TOOLS)}, found {a!r:.200}")
    schema = a.get("schema", TOOLS[a["tool"]].schema)
    template = a.get("template", DEFAULT_TEMPLATE)
    if not isinstance(schema, dict) or not isinstance(template, str) or "{text}" not in template:
        raise RequestError("bad_model", "the child's header key 'agent' needs a schema (object) and a "
                           "template (string containing {text})")
    return {"tool": a["tool"], "schema": schema, "template": template}


def make_grammar(schema: dict | None, fmt: Any, copy_source: str, copy_spans: dict | None = None,
                 values: dict | None = None, spans=()):
    """The grammar for a request: `fmt`/`schema` when given, else `schema` (with the per-request
    copy_spans, values and spans of bulletd.runtime.grammar.Grammar). RequestError(bad_request)."""
    from bulletd.runtime.grammar import GrammarError, compile_schema, grammar_for_request
    try:
        if fmt is not None:
            return grammar_for_request(fmt, None, copy_source=copy_source, spans=spans)
        return compile_schema(schema, copy_source=copy_source, copy_spans=copy_spans, values=values, spans=spans)
    except GrammarError as exc:
        raise RequestError("bad_request", f"schema: {exc}") from None


def settings_for(model: Any, settings: Any):
    """GenerationSettings for an agent: greedy and AGENT_MAX_TOKENS unless the request chose."""
    from bulletd.runtime import GenerationSettings
    if isinstance(settings, GenerationSettings):
        return settings
    s = dict(settings or {})
    s.setdefault("temperature", 0.0)
    s.setdefault("max_tokens", min(AGENT_MAX_TOKENS, model.arch["max_seq_len"]))
    s["stream"] = False
    return GenerationSettings(**s)


def run_tool(tool: str, call: dict, ctx: AgentContext) -> tuple[Any, list[dict]]:
    """Run a validated call: (result, actions). Home calls are resolved, never published here."""
    if tool == "calc":
        return calc.run(call), []
    if ctx.home is None:
        raise RequestError("bad_request", "the home tool has no home: set tools.home.file in the daemon's config")
    actions = resolve(call, ctx.home)
    if actions[0]["service"] == "get_state":
        states = ctx.states or StateStore(ctx.home)
        return states.answer(actions), actions
    return {"acted": False, "message": f"dry run: {len(actions)} action(s) resolved, nothing published"}, actions


def run_agent(model: Any, utterance: str, settings: Any, ctx: AgentContext, child_header: dict | None = None,
              fmt: Any = None, schema: dict | None = None) -> dict:
    """Utterance -> {"call", "result", "actions", "text", "finish_reason", "tokens", "prompt_tokens"}.
    RequestError with the stable codes (bad_call, no_such_entity, ambiguous, out_of_range,
    calc_error, bad_request, bad_model, cancelled)."""
    header = child_header if child_header is not None else model.header
    spec = agent_spec(header)
    if spec is None:
        raise RequestError("bad_request", f"child {getattr(model, 'name', '?')!r} is not an agent "
                           "(its header has no 'agent' key)")
    if not isinstance(utterance, str) or not utterance.strip():
        raise RequestError("bad_request", "prompt: expected the utterance (a non-empty string)")
    spans = ()
    if spec["tool"] == "calc":      # operator typos spelled right; the call copies whole numbers
        utterance = calcinput.fix_operators(utterance)
        spans = calcinput.request_spans(utterance)
    try:
        prompt = spec["template"].format(text=utterance)
    except (KeyError, IndexError, ValueError) as exc:
        raise RequestError("bad_model", f"the agent template {spec['template']!r} is malformed: {exc}") from None
    if schema is not None:
        check_schema(schema, "the request's")
    gschema, copy_spans, values = schema if schema is not None else spec["schema"], None, None
    if spec["tool"] == "home" and ctx.home is not None and fmt is None:
        if ctx.home_narrow:
            copy_spans, values = ctx.home.narrow(gschema, utterance, NAME_MAX)
        elif ctx.home_spans:
            copy_spans = ctx.home.copy_spans(utterance, NAME_MAX)
    grammar = make_grammar(gschema, fmt, utterance, copy_spans or None, values or None, spans)
    gs = settings_for(model, settings)
    gen = model.generate(prompt, gs, session=ctx.session, cancel=ctx.cancel, grammar=grammar)
    for _ in gen:
        if ctx.cancel is not None and ctx.cancel.is_set():
            break
    if gen.finish_reason == "cancelled" or (ctx.cancel is not None and ctx.cancel.is_set()):
        raise RequestError("cancelled", "the agent request was cancelled during generation")
    text = gen.text
    base = {"text": text, "finish_reason": gen.finish_reason, "tokens": len(gen.tokens),
            "prompt_tokens": len(gen.prompt_tokens) if not isinstance(gen.prompt_tokens, int) else gen.prompt_tokens}
    if gen.finish_reason == "length":
        raise RequestError("bad_call", f"generation stopped at max_tokens ({gs.max_tokens}) or the end of the "
                           f"context before the call was complete: {text[:200]!r}")
    if schema is not None:
        validate_call(spec["tool"], text, schema)           # what the request asked for ...
    call = validate_call(spec["tool"], text)                # ... and what the tool accepts
    if spec["tool"] == "calc":
        call = {**call, "expression": numerals.plain(call["expression"])}
    result, actions = run_tool(spec["tool"], call, ctx)
    if ctx.act and ctx.publish is not None and actions and actions[0]["service"] != "get_state":
        result = {**result, **(ctx.publish(actions) or {})}
    return {"tool": spec["tool"], "call": call, "result": result, "actions": actions, **base}
