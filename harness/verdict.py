"""Results of checks and the verdict built from them (the shapes reports and report.json use)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
GO, NO_GO, UNDECIDED = "GO", "NO_GO", "INCONCLUSIVE"


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome, with everything a reader needs to trust or dispute it.

    Like a scipy.stats result: the statistic of the test, the effect it measured with its
    confidence interval, the p-value, the sample size, and the threshold it was held to.
    """

    name: str
    status: str  # PASS, FAIL or INCONCLUSIVE
    message: str  # one line, plain words: what was measured against what
    critical: bool = True  # a critical failure makes the verdict NO-GO
    statistic: float | None = None
    effect: float | None = None  # the quantity judged, e.g. flip rate, p99 ratio
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int = 0
    threshold: float | None = None
    required_n: int | None = None  # when inconclusive: about how many in all would decide
    test: str = ""  # the statistical procedure, e.g. "Clopper-Pearson exact interval"
    details: dict = field(default_factory=dict)  # extra evidence for reports (tables, quantiles)

    def to_json(self) -> dict:
        """The report.json form: non-finite numbers become null (JSON has no NaN)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


@dataclass(frozen=True)
class Verdict:
    decision: str  # GO, NO_GO or INCONCLUSIVE
    reasons: list[str]  # plain-words reasons, most important first
    checks: list[CheckResult]
    required_n: int | None = None  # for INCONCLUSIVE: the sample size that would decide
