"""`bullet eval`: measure the children of a model directory on a JSONL set, in-process, through
the code bulletd runs (its loading with signature checks, its routing, the agents' run_agent).

    bullet eval SET.jsonl --models DIR [--child NAME] [--home FILE] [--trust KEY] [--json]
                [--baseline hassil] [--train FILE] [--distinct] [--tokens N]

Modules: `sets` (set files and their kinds), `core` (loading, routing, scoring), `baselines`
(character Kneser-Ney, xz and PPMd costs for text sets), `hassil_baseline` (Home Assistant's
own matcher on home sets), `report` (the text output).
"""
from bulletd.evaluate.sets import EvalError, Item, load_set

__all__ = ["EvalError", "Item", "load_set", "register"]


def register(sub) -> None:
    """Add the `eval` subcommand to the `bullet` parser."""
    from bulletd.evaluate.cli import add_parser
    add_parser(sub)
