"""`shadowline scenario validate FILE` and `shadowline scenario schema`, as plain functions.

The CLI wires them to Typer commands and exits with their return code (DESIGN.md: 0 ok,
2 bad input). Output: the result on stdout, problems on stderr, one line each.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from .load import ScenarioError, load_scenario, scenario_json_schema

EXIT_OK, EXIT_USAGE = 0, 2


def validate_command(path: str | os.PathLike, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check a scenario file: `ok: FILE: N phases, M faults, T s` (0), or its problems (2).

    Phases and faults are counted as the run will have them (a sweep expanded); faults include
    the toxics.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    phases = scenario.expanded_phases()
    faults = sum(len(p.faults) + len(p.toxics) for p in phases)
    total = sum(p.duration_s for p in phases)
    print(
        f"ok: {os.fspath(path)}: {len(phases)} phase{'s' * (len(phases) != 1)}, "
        f"{faults} fault{'s' * (faults != 1)}, {total} s",
        file=out,
    )
    return EXIT_OK


def schema_command(*, out: TextIO | None = None) -> int:
    """Print the scenario JSON Schema (draft 2020-12)."""
    print(json.dumps(scenario_json_schema(), indent=2), file=out or sys.stdout)
    return EXIT_OK
