"""The import rules of docs/ARCHITECTURE.md, read from the source: bulletd never imports trainer;
trainer imports only bulletd.format, bulletd.signing, bulletd.errors, and (to measure what it
ships with the product's own code) bulletd.runtime, bulletd.router, bulletd.agents, bulletd.evaluate; the
benchmarks (bulletd.bench) are imported by no product module but the command lines, and the
reliability runs (bulletd.reliability) by no other part of bulletd."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAINER_MAY_IMPORT = ("bulletd.format", "bulletd.signing", "bulletd.errors", "bulletd.runtime", "bulletd.router",
                      "bulletd.agents", "bulletd.evaluate")
BENCH_IMPORTERS = ("bulletd/cli.py", "bulletd/cli_bullet.py", "bulletd/runtime/cli.py")


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by PATH (relative imports resolved against its package)."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = rel[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out += [base] + [f"{base}.{a.name}" for a in node.names]
    return out


def _files(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def test_bulletd_never_imports_trainer():
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in _files("bulletd") for m in _imports(p)
           if m == "trainer" or m.startswith("trainer.")]
    assert not bad, bad


def test_trainer_imports_only_what_the_architecture_allows():
    bad = []
    for p in _files("trainer"):
        for m in _imports(p):
            if m.startswith("bulletd") and not any(m == a or m.startswith(a + ".") for a in TRAINER_MAY_IMPORT):
                bad.append(f"{p.relative_to(ROOT)}: {m}")
    assert not bad, bad


def test_only_the_command_lines_import_the_benchmarks():
    bad = []
    for p in _files("bulletd"):
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith("bulletd/bench/") or rel in BENCH_IMPORTERS:
            continue
        bad += [f"{rel}: {m}" for m in _imports(p) if m == "bulletd.bench" or m.startswith("bulletd.bench.")]
    assert not bad, bad


def test_nothing_in_bulletd_imports_the_reliability_runs():
    bad = []
    for p in _files("bulletd"):
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith("bulletd/reliability/"):
            continue
        bad += [f"{rel}: {m}" for m in _imports(p) if m == "bulletd.reliability" or m.startswith("bulletd.reliability.")]
    assert not bad, bad


def test_the_scan_sees_relative_imports():
    """The rules above would pass vacuously if relative imports were missed."""
    found = _imports(ROOT / "bulletd" / "kernels.py")
    assert "bulletd.errors.ModelError" in found
