"""Checks: each a frozen dataclass of parameters, registered by name, judging one arm against the
incumbent from an `Evidence` and returning a `CheckResult`. Defaults: docs/checks.md.

    from harness.checks import default_checks, checks_from_config, run_checks
    results = run_checks(evidence)                       # every default check on the candidate
    checks = checks_from_config({"label_agreement": {"margin": 0.02}, "score_psi": False})
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from harness.evidence import Evidence
from harness.verdict import CheckResult

from .base import CHECKS, Check, register
from .errors import Errors
from .labels import LabelAgreement
from .latency import Latency
from .scores import ScoreDifference, ScoreKS, ScorePSI

__all__ = [
    "CHECKS",
    "DEFAULT_CHECKS",
    "Check",
    "Errors",
    "LabelAgreement",
    "Latency",
    "ScoreDifference",
    "ScoreKS",
    "ScorePSI",
    "checks_from_config",
    "default_checks",
    "register",
    "run_checks",
]

# The checks run when a scenario names none, in report order.
DEFAULT_CHECKS = ("label_agreement", "score_difference", "score_ks", "score_psi", "latency", "errors")


def default_checks() -> list[Check]:
    """One instance of each default check, with its default parameters."""
    return [CHECKS[name]() for name in DEFAULT_CHECKS]


def checks_from_config(
    config: Mapping[str, Mapping[str, object] | bool | None], *, defaults: bool = True
) -> list[Check]:
    """Build checks from `{name: {parameter: value}}`.

    With `defaults=True` (the default) the mapping adjusts the default set: every default check
    runs, those named get the given parameters, `{name: False}` leaves a check out, and a
    registered check that is not a default is added. With `defaults=False` exactly the named
    checks run. A `None`, `True` or `{}` value means the check's default parameters.

    Raises ValueError naming the unknown check, the unknown parameter, or the bad value.
    Integers are accepted for float parameters and lists for tuple parameters.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"checks must be a mapping of check name to parameters, got {type(config).__name__}")
    built: dict[str, Check | None] = {name: CHECKS[name]() for name in DEFAULT_CHECKS} if defaults else {}
    for name, params in config.items():
        cls = CHECKS.get(name)
        if cls is None:
            raise ValueError(f"unknown check {name!r}; known checks: {', '.join(sorted(CHECKS))}")
        if params is False:
            built[name] = None
            continue
        params = {} if params is None or params is True else params
        if not isinstance(params, Mapping):
            raise ValueError(
                f"check {name!r}: parameters must be a mapping of name to value (or false to leave "
                f"the check out), got {type(params).__name__}"
            )
        known = cls.parameters()
        kwargs = {}
        for key, value in params.items():
            if key not in known:
                raise ValueError(
                    f"check {name!r}: unknown parameter {key!r}; parameters: {', '.join(known)}"
                )
            kwargs[key] = _coerce(name, key, value, known[key])
        built[name] = cls(**kwargs)
    return [check for check in built.values() if check is not None]


def run_checks(
    evidence: Evidence, checks: Iterable[Check] | None = None, arm: str = "candidate"
) -> list[CheckResult]:
    """Evaluate `checks` (default: `default_checks()`) on `arm` against the incumbent."""
    return [check.evaluate(evidence, arm) for check in (default_checks() if checks is None else checks)]


def _coerce(check: str, key: str, value: object, default: object) -> object:
    def bad(expected: str) -> ValueError:
        return ValueError(f"check {check!r}: parameter {key!r} must be {expected}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad("a list")
        return tuple(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise bad("a string")
    return value
