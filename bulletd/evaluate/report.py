"""`bullet eval`'s text output: the figures first, then every miss."""
from __future__ import annotations

import json


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _short(v, width: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return s if len(s) <= width else s[:width - 3] + "..."


def _got(kind: str, g: dict) -> str:
    if not isinstance(g, dict):
        return _short(g)
    who = g.get("child") or "no child"
    if kind == "routing":
        return f"{who} ({g.get('reason')}, {g.get('confidence')})"
    if "error" in g:
        return f"{who}: {g['error']}" + (f": {g['message']}" if g.get("message") else "")
    if kind == "calc":
        call = g.get("call") or {}
        res = g.get("result") or {}
        return f"{who}: {_short(call.get('expression', call))} = {res.get('exact', res.get('value'))}"
    if kind == "home":
        return f"{who}: {_short(g.get('call'))} -> {_short(g.get('actions'))}"
    return _short(g)


def _misses(kind: str, misses: list, title: str) -> list[str]:
    if not misses:
        return [f"{title}: none"]
    out = [f"{title} ({len(misses)}):"]
    for m in misses:
        cat = f" [{m['category']}]" if m.get("category") else ""
        out.append(f"  line {m['line']}{cat}: {_short(m['text'])}")
        out.append(f"    expected: {_short(m['expected'])}")
        out.append(f"    got:      {_got(kind, m['got'])}")
    return out


def format_report(r: dict) -> str:
    how = f"child {r['child']}" if r.get("child") else "each line routed as bulletd routes it"
    lines = [f"{r['set']}: {r['kind']} set, {r['n']} lines; models {r['models']} (signatures {r['signatures']}); {how}"]
    kind = r["kind"]
    if kind in ("calc", "home", "routing"):
        b = r.get("baseline")
        if b:
            lines.append(f"accuracy: child {r['correct']}/{r['n']} = {_pct(r['accuracy'])}; "
                         f"{b['name']} {b.get('version') or ''} {b['correct']}/{r['n']} = {_pct(b['accuracy'])}")
            lines.append(f"{'category':<24} {'n':>5} {'child':>8} {'':>8} {b['name']:>8} {'':>8}")
            for cat, c in r["by_category"].items():
                bc = b["by_category"].get(cat, {})
                lines.append(f"{cat:<24} {c['n']:>5} {c['correct']:>8} {_pct(c['accuracy']):>8} "
                             f"{bc.get('correct', 0):>8} {_pct(bc.get('accuracy')):>8}")
        else:
            lines.append(f"accuracy: {r['correct']}/{r['n']} = {_pct(r['accuracy'])}")
            lines.append(f"{'category':<24} {'n':>5} {'correct':>8} {'accuracy':>9}")
            for cat, c in r["by_category"].items():
                lines.append(f"{cat:<24} {c['n']:>5} {c['correct']:>8} {_pct(c['accuracy']):>9}")
        lines += _misses(kind, r["misses"], "misses")
        if b:
            lines += _misses(kind, b["misses"], f"{b['name']} misses")
    elif kind == "text":
        who = ", ".join(f"{k} {v}" for k, v in r["children"].items()) or "none"
        bpb = "-" if r["bpb"] is None else f"{r['bpb']:.4f}"
        lines.append(f"bits per byte: {bpb} over {r['bytes']:,} bytes, {r['tokens']:,} tokens (lines per child: {who})")
        bl = r.get("baselines")
        if bl:
            names = [k for k in bl if k.startswith("kn")] + ["xz", "ppmd8"]
            shown = [f"{k} {bl[k]:.4f}" if bl.get(k) is not None else f"{k} -" for k in names]
            lines.append(f"baselines on the training split ({bl['train_bytes']:,} bytes): " + ", ".join(shown))
            if bl.get("ppmd_note"):
                lines.append(f"  ppmd8: {bl['ppmd_note']}")
            if r.get("vs_best_baseline") is not None:
                lines.append(f"child vs the best baseline ({r['best_baseline_bpb']:.4f}): {100 * r['vs_best_baseline']:+.1f}%")
        else:
            lines.append("baselines: give --train FILE (the child's training split, JSONL) to compare")
        if len(r["by_category"]) > 1:
            for cat, c in r["by_category"].items():
                lines.append(f"  {cat:<22} {c['n']:>5} lines {c['bytes']:>9,} bytes {c['bpb']:.4f} bits/byte")
        if r["misses"]:
            lines += _misses(kind, r["misses"], "lines no child was routed to")
    elif kind == "distinct":
        d4 = "-" if r["distinct4"] is None else f"{r['distinct4']:.4f}"
        dm = "-" if r["distinct4_mean"] is None else f"{r['distinct4_mean']:.4f}"
        dw = "-" if r["distinct4_words"] is None else f"{r['distinct4_words']:.4f}"
        lines.append(f"greedy, {r['max_tokens']} tokens a prompt, {r['tokens']} tokens in all")
        lines.append(f"distinct 4-grams of tokens: {d4} (all outputs), {dm} (mean per output); of words: {dw}")
        for o in r["outputs"]:
            if "error" in o:
                lines.append(f"  line {o['line']}: {o['error']}")
            else:
                lines.append(f"  line {o['line']} {o['child']}, {o['tokens']} tokens, "
                             f"distinct {'-' if o['distinct4'] is None else format(o['distinct4'], '.3f')}: "
                             f"{_short(o['text'], 40)} -> {_short(o['output'], 100)}")
    return "\n".join(lines)
