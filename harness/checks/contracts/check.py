"""ContractCheck: one contract on one key for one arm, its parameters validated, its name, and
the pieces every contract's result shares (the fault in words, the CheckResult, not applicable).
How each contract is judged lives in exchange.py and rate.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.evidence import Evidence
from harness.verdict import INCONCLUSIVE, CheckResult

from .. import stats
from ..base import BASELINE, CANDIDATE, INCUMBENT, plain_numbers
from .exchange import judge_exchange
from .rate import judge_no_worse, judge_production
from .registry import TEST, params_dict
from .timeline import Timeline
from .words import describe_fault


@dataclass(frozen=True)
class ContractCheck:
    """One contract on one key for one arm, judged side by side with `reference`.

    `key`: a fault or toxic label (a sweep level `nan@0.05`, or a base label covering every
    level), `phase:<name>` or a label seen through `*`. `params`: the contract's parameters
    (a dict or the scenario's model; defaults filled in). `tolerance`: the violation rate an
    exchange contract accepts (default 0: none). `description`: the fault in words for messages
    ('NaN in `age`'); derived from the label or the timeline's spec when empty.
    """

    key: str
    contract: str
    params: Mapping[str, Any] = field(default_factory=dict)
    arm: str = CANDIDATE
    reference: str | None = BASELINE
    critical: bool = True
    tolerance: float = 0.0
    min_n: int = 20
    confidence: float = 0.95
    description: str = ""
    n_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        params = params_dict(self.contract, self.params)
        tolerance = float(params.pop("tolerance", self.tolerance))
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "tolerance", tolerance)
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"contract {self.contract!r}: tolerance must be in [0, 1), got {self.tolerance!r}")
        if not (isinstance(self.min_n, int) and self.min_n >= 1):
            raise ValueError(f"contract {self.contract!r}: min_n must be an integer >= 1, got {self.min_n!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"contract {self.contract!r}: confidence must be in (0, 1), got {self.confidence!r}")
        if self.contract == "production_unaffected":
            object.__setattr__(self, "arm", INCUMBENT)
            object.__setattr__(self, "reference", None)
        if self.reference == self.arm:
            object.__setattr__(self, "reference", None)

    @property
    def name(self) -> str:
        suffix = "" if self.arm in (CANDIDATE, INCUMBENT) else f"[{self.arm}]"
        return f"contract:{self.key}:{self.contract}{suffix}"

    # -- public -------------------------------------------------------------------------------

    def evaluate(self, evidence: Evidence, arm: str | None = None, *, timeline: Timeline | None = None,
                 steady_mask: np.ndarray | None = None) -> CheckResult:
        """Judge `arm` (default: the check's) on the exchanges the key covers."""
        check = self if arm is None or arm == self.arm else replace(self, arm=arm)
        timeline = timeline or Timeline()
        if check.contract == "production_unaffected":
            return judge_production(check, evidence, timeline, steady_mask)
        if check.contract == "no_worse_than_incumbent":
            return judge_no_worse(check, evidence, timeline)
        return judge_exchange(check, evidence, timeline)

    # -- shared by the judging modules ----------------------------------------------------------

    def _what(self, timeline: Timeline) -> str:
        desc = self.description or describe_fault(self.key, timeline.spec_for(self.key))
        return f"{desc} ({self.key})" if desc else self.key

    def _result(self, status: str, message: str, *, critical: bool | None = None, **kw) -> CheckResult:
        kw = plain_numbers(kw)
        kw.setdefault("test", TEST.get(self.contract, TEST["exchange"]))
        details = {"key": self.key, "contract": self.contract, "arm": self.arm, "reference": self.reference,
                   "params": dict(self.params), **kw.pop("details", {})}
        return CheckResult(name=self.name, status=status, message=message,
                           critical=self.critical if critical is None else critical, details=details, **kw)

    def _inconclusive(self, what: str, why: str, **kw) -> CheckResult:
        """'<what>: <why> — contract <name>: inconclusive' (kw: the result's other fields)."""
        return self._result(INCONCLUSIVE, f"{what}: {why} — contract {self.contract}: inconclusive", **kw)

    def _not_applicable(self, why: str, timeline: Timeline, details: dict | None = None) -> CheckResult:
        return self._result(
            INCONCLUSIVE,
            f"{self._what(timeline)}: {why} — contract {self.contract}: not applicable",
            critical=False,
            details={"applicable": False, **(details or {})},
        )

    def _cp_required(self, rate: float, bound: float, n: int) -> int | None:
        """n at which the Clopper-Pearson interval of `rate` would clear `bound`."""
        return stats.solve_required_n(lambda m: stats.clopper_pearson(rate * m, m, self.confidence), rate, bound, n)
