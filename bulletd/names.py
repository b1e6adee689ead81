"""The one rule for child names, used by the daemon's requests and registry, the OTA receiver,
the client and `bullet eval`.

A child name is 1-64 of letters, digits and `.` `_` `+` `-`, starting with a letter or digit,
never containing `..`: it is a file name in the model directory (NAME.bullet) and in the OTA
state directory, so it can never be a path.
"""
from __future__ import annotations

import re
from typing import Any

from bulletd.errors import RequestError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
NAME_RULE = "1-64 of letters, digits, '.', '_', '+', '-', starting with a letter or digit"


def name_problem(name: Any) -> str | None:
    """Why NAME is not a valid child name, or None when it is."""
    if not isinstance(name, str):
        return f"expected a string name, found {type(name).__name__}"
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        return f"{name!r} is not a valid name (path separators and '..' are not allowed in names)"
    if not NAME_RE.match(name):
        return f"{name!r} is not a valid name (expected {NAME_RULE})"
    return None


def check_name(name: Any, what: str = "child") -> str:
    """NAME when it is a valid child name; else RequestError bad_request naming `what`."""
    why = name_problem(name)
    if why is not None:
        raise RequestError("bad_request", f"{what}: {why}")
    return name
