"""Errors that carry the part of a value they are about, so every problem prints as `file: path: expected`.

A validator raises `At` (one problem at a sub-path of its field) or `Problems` (several at once);
`harness.scenario.load` joins those sub-paths onto pydantic's location with `join_path`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


class At(ValueError):
    """A validator's error about a part of its value: `path` is appended to the field's path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class Problems(ValueError):
    """Several problems found at once, each `(path, message)` relative to the model validated."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))
        self.problems = problems


def join_path(*parts: str) -> str:
    """Join dotted paths; an index part (`[2]`) attaches without a dot."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = part if not out else out + (part if part.startswith("[") else "." + part)
    return out


def named_parameter(message: str, params: Any, patterns: Iterable[str], prefix: str) -> tuple[str, str]:
    """Which of `params` an error message from harness.faults or harness.checks is about.

    Those errors name a parameter in their text only, so the schema finds it there to point the
    field path at it: `(parameter, message without prefix)`, or `("", message)` when the first
    group of no pattern is one of the parameters given (the message stays whole, prefix included).
    """
    if isinstance(params, Mapping):
        for pattern in patterns:
            match = re.search(pattern, message)
            if match and match.group(1) in params:
                return match.group(1), message.removeprefix(prefix)
    return "", message
