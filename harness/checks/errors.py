"""Errors: the candidate's error rate against the incumbent's on the same exchanges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.evidence import ArmColumns, Evidence
from harness.verdict import CheckResult

from . import stats
from .base import (
    INCUMBENT,
    Check,
    client_error,
    count_kinds,
    errors_of,
    kind_mask,
    none_mask,
    register,
    server_error,
)

# Not errors of the arm: a shed copy was never sent (the proxy's in-flight budget was full) and
# an internal error is the proxy's own failure. Exchanges with either are excluded and counted.
EXCLUDED_KINDS = ("shed", "internal")


@register
@dataclass(frozen=True, kw_only=True)
class Errors(Check):
    """Difference of error rates (candidate - incumbent) over exchanges the candidate was sent."""

    name: ClassVar[str] = "errors"
    unit: ClassVar[str] = "exchanges"
    test: ClassVar[str] = (
        "paired difference of error rates (candidate - incumbent) with Newcombe's hybrid score "
        "interval vs the margin; exact McNemar test on the exchanges where only one arm failed"
    )

    margin: float = 0.005  # largest acceptable excess error rate (0.005 = +0.5 percentage points)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(0 <= self.margin < 1, "margin", "must be in [0, 1)")

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        cols = evidence.arms.get(arm)
        if cols is None or not np.any(cols.present):
            return self._no_data(f"no {arm} copies in this run", threshold=self.margin)
        inc = evidence.arms[INCUMBENT]
        err_o, err_i = errors_of(cols), errors_of(inc)
        present = np.asarray(cols.present, dtype=bool)
        shed = present & kind_mask(err_o, "shed")
        internal = present & ~shed & (kind_mask(err_o, "internal") | kind_mask(err_i, "internal"))
        judged = present & ~shed & ~internal & np.asarray(inc.present, dtype=bool)
        n = int(judged.sum())
        n_present, n_shed, n_internal = int(present.sum()), int(shed.sum()), int(internal.sum())
        excluded = {"shed": n_shed, "internal": n_internal}
        if n == 0:
            if n_shed == n_present:
                why = (
                    f"no {arm} copy was sent: all {stats.fmt_count(n_shed)} were shed "
                    f"(in-flight budget full)"
                )
            else:
                why = (
                    f"no {arm} exchange to judge: of {stats.fmt_count(n_present)} copies "
                    f"{stats.fmt_count(n_shed)} shed, {stats.fmt_count(n_internal)} hit a proxy-internal error"
                )
            return self._no_data(why, threshold=self.margin, details={"excluded": excluded})

        fail_o = _failed(cols, err_o) & judged
        fail_i = _failed(inc, err_i) & judged
        both = int((fail_o & fail_i).sum())
        only_o = int((fail_o & ~fail_i).sum())
        only_i = int((fail_i & ~fail_o).sum())
        neither = n - both - only_o - only_i
        cells = (both, only_o, only_i, neither)
        diff, lo, hi = stats.newcombe_paired(*cells, self.confidence)
        status = stats.decide(lo, hi, self.margin)
        estimate = stats.solve_required_n(
            lambda m: stats.newcombe_paired(*(c * m / n for c in cells), self.confidence)[1:],
            diff,
            self.margin,
            n,
        )
        status, required_n, suffix = self._settle(status, n, estimate)
        p_value = stats.mcnemar_exact(only_o, only_i)

        rate_o, rate_i = (both + only_o) / n, (both + only_i) / n
        kinds_o, kinds_i = _kinds(cols, err_o, judged), _kinds(inc, err_i, judged)
        clients = {
            "other": int((judged & none_mask(err_o) & client_error(cols.status)).sum()),
            "incumbent": int((judged & none_mask(err_i) & client_error(inc.status)).sum()),
        }
        details = {
            "error_rate_other": rate_o,
            "error_rate_incumbent": rate_i,
            "errors_by_kind": {"other": kinds_o, "incumbent": kinds_i},
            "paired": {"both_failed": both, "only_other_failed": only_o, "only_incumbent_failed": only_i},
            "client_errors_4xx": clients,
            "client_error_rate_4xx": {k: v / n for k, v in clients.items()},
            "excluded": excluded,
        }
        kinds_text = ", ".join(f"{k} {v:,}" for k, v in sorted(kinds_o.items(), key=lambda kv: -kv[1])[:3])
        excluded_text = "".join(
            f", {stats.fmt_count(v)} {k} excluded" for k, v in excluded.items() if v
        )
        message = (
            f"{arm} error rate {stats.fmt_pct(rate_o)}"
            + (f" ({kinds_text})" if kinds_text else "")
            + f" vs incumbent {stats.fmt_pct(rate_i)}: difference {stats.fmt_pp(diff)}, "
            f"{stats.fmt_ci(lo, hi, stats.fmt_pp, self.confidence)} "
            f"(n={stats.fmt_count(n)} {self.unit}{excluded_text}), margin {stats.fmt_pp(self.margin)}: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=float(min(only_o, only_i)),
            effect=diff,
            ci_low=lo,
            ci_high=hi,
            p_value=p_value,
            n=n,
            threshold=self.margin,
            required_n=required_n,
            details=details,
        )


def _failed(cols: ArmColumns, err: np.ndarray) -> np.ndarray:
    """An arm failed: a transport error (timeout, reset, connect, protocol, ...), a 5xx (or a gRPC
    code that maps to one), or no status at all. Shed and internal are not failures of the arm."""
    status = np.asarray(cols.status)
    has_err = ~none_mask(err)
    for kind in EXCLUDED_KINDS:
        has_err &= ~kind_mask(err, kind)
    clean = none_mask(err)
    return np.asarray(cols.present, dtype=bool) & (has_err | (clean & (server_error(status) | (status < 0))))


def _kinds(cols: ArmColumns, err: np.ndarray, judged: np.ndarray) -> dict[str, int]:
    """Failures by kind among judged exchanges: transport kinds, '5xx', 'no_status'."""
    kinds = count_kinds(err, judged)
    status = np.asarray(cols.status)
    clean = judged & none_mask(err)
    n5 = int((clean & server_error(status)).sum())
    if n5:
        kinds["5xx"] = n5
    n_none = int((clean & (status < 0)).sum())
    if n_none:
        kinds["no_status"] = n_none
    return kinds
