"""`checks` and `steady_state_checks`: mappings `{check: {parameter: value}}` that `harness.checks` reads.

The checks registry owns each check's parameters, so the schema keeps these fields free-form and
asks the registry one check at a time: every wrong check is reported, each at its own path.
"""

from __future__ import annotations

from typing import Any

from .errors import Problems, join_path, named_parameter

# Where harness.checks' messages name the parameter at fault ("check 'latency': parameter 'q' ...").
_CHECK_PARAMETER = (r"parameter '([^']+)'",)


def check_checks(config: dict[str, Any]) -> dict[str, Any]:
    """`config` unchanged when harness.checks accepts every check in it; Problems otherwise."""
    from harness.checks import checks_from_config

    problems = []
    for name, params in config.items():
        try:
            checks_from_config({name: params}, defaults=False)
        except ValueError as exc:
            parameter, message = named_parameter(str(exc), params, _CHECK_PARAMETER, f"check {name!r}: ")
            problems.append((join_path(name, parameter), message))
    if problems:
        raise Problems(problems)
    return config
