"""The `Check` base class, the registry of checks by name, and evidence helpers they share."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields, replace
from typing import ClassVar

import numpy as np

from harness.evidence import ArmColumns, Evidence, Pairs
from harness.records import BASELINE, CANDIDATE, INCUMBENT
from harness.registry import registrar
from harness.verdict import INCONCLUSIVE, CheckResult

from . import stats

# Registry: check name -> check class. Filled by @register when the modules are imported.
CHECKS: dict[str, type[Check]] = {}
register = registrar(CHECKS, "check")  # class decorator: add a check class under its `name`


def plain_numbers(kw: dict) -> dict:
    """CheckResult fields as plain Python numbers (numpy scalars do not go into report.json)."""
    for key in ("statistic", "effect", "ci_low", "ci_high", "p_value", "threshold"):
        if kw.get(key) is not None:
            kw[key] = float(kw[key])
    if kw.get("required_n") is not None:
        kw["required_n"] = int(kw["required_n"])
    kw["n"] = int(kw.get("n", 0))
    return kw


@dataclass(frozen=True, kw_only=True)
class Check:
    """A check: a frozen dataclass of parameters with `evaluate(evidence, arm) -> CheckResult`.

    Subclasses set `name` (the registry key) and `test` (the statistical procedure, in words),
    add their parameters as fields with defaults (documented in docs/checks.md), and implement
    `_evaluate`. Evaluation is pure and deterministic: no I/O, bootstraps seeded by `seed`.
    """

    name: ClassVar[str] = ""
    test: ClassVar[str] = ""
    unit: ClassVar[str] = "paired predictions"  # what `n` counts, in messages

    critical: bool = True  # a failure makes the verdict NO-GO; only critical checks are required for GO
    confidence: float = 0.95  # two-sided confidence level of the interval the status is read from
    min_n: int = 200  # below this many, the check is inconclusive whatever the interval says

    def __post_init__(self) -> None:
        self._require(0 < self.confidence < 1, "confidence", "must be between 0 and 1 (exclusive)")
        self._require(isinstance(self.min_n, int) and self.min_n >= 1, "min_n", "must be an integer >= 1")

    # -- public API -------------------------------------------------------------------------

    def evaluate(self, evidence: Evidence, arm: str = CANDIDATE) -> CheckResult:
        """Judge `arm` against the incumbent. With a baseline arm in the evidence, the same
        measure of baseline vs incumbent is added to `details["noise_floor"]`."""
        result = self._evaluate(evidence, arm)
        if result.required_n is not None and result.n > 0 and evidence.n_exchanges > 0:
            # The same need in requests through the proxy, at this run's rate of usable
            # observations per exchange (rows per request, copies shed or failed, sampling).
            exchanges = int(math.ceil(result.required_n * evidence.n_exchanges / result.n))
            message = result.message
            if exchanges != result.required_n:
                message += f" (about {stats.fmt_count(exchanges)} requests in all)"
            result = replace(result, message=message, details={**result.details, "required_exchanges": exchanges})
        if arm != BASELINE and _arm_has_data(evidence, BASELINE):
            floor = self._evaluate(evidence, BASELINE)
            if floor.n > 0:
                details = dict(result.details)
                details["noise_floor"] = {
                    "arm": BASELINE,
                    "effect": floor.effect,
                    "ci_low": floor.ci_low,
                    "ci_high": floor.ci_high,
                    "n": floor.n,
                    "message": floor.message,
                }
                result = replace(result, details=details)
        return result

    @classmethod
    def parameters(cls) -> dict[str, object]:
        """Parameter names and their defaults, in declaration order."""
        out = {}
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:  # pragma: no cover - no such fields today
                out[f.name] = f.default_factory()
        return out

    # -- for subclasses ---------------------------------------------------------------------

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:  # pragma: no cover
        raise NotImplementedError

    def _require(self, ok: bool, param: str, what: str) -> None:
        if not ok:
            raise ValueError(f"check {self.name!r}: parameter {param!r} {what}, got {getattr(self, param)!r}")

    def _result(self, status: str, message: str, **kw) -> CheckResult:
        kw.setdefault("test", self.test)
        return CheckResult(name=self.name, status=status, message=message, critical=self.critical, **plain_numbers(kw))

    def _no_data(self, why: str, threshold: float | None = None, details: dict | None = None) -> CheckResult:
        return self._result(
            INCONCLUSIVE, f"{why}: inconclusive", threshold=threshold, n=0, details=details or {}
        )

    def _not_applicable(self, why: str) -> CheckResult:
        """A check that does not apply to this evidence: inconclusive and not required."""
        return CheckResult(
            name=self.name,
            status=INCONCLUSIVE,
            message=f"not applicable: {why}",
            critical=False,
            test=self.test,
            details={"applicable": False},
        )

    def _settle(
        self, status: str, n: int, estimate: int | None
    ) -> tuple[str, int | None, str]:
        """Apply min_n to a status read from the interval.

        Returns (status, required_n, suffix for the message), where `estimate` is the sample size
        that would decide when the interval alone is inconclusive.
        """
        have = f"have {stats.fmt_count(n)}"
        if n < self.min_n:
            need = self.min_n if status != INCONCLUSIVE else max(self.min_n, estimate or 0)
            if status == INCONCLUSIVE and estimate is None:
                return INCONCLUSIVE, None, (
                    f"inconclusive, fewer than the minimum {stats.fmt_count(self.min_n)} {self.unit} "
                    f"({have}) and the effect sits at the threshold"
                )
            return INCONCLUSIVE, need, (
                f"inconclusive, below the minimum of {stats.fmt_count(self.min_n)}: "
                f"need about {stats.fmt_count(need)} {self.unit}; {have}"
            )
        if status == INCONCLUSIVE:
            if estimate is None:
                return INCONCLUSIVE, None, (
                    f"inconclusive, the effect sits at the threshold: no practical sample size "
                    f"decides it ({have})"
                )
            need = max(self.min_n, estimate)
            return INCONCLUSIVE, need, (
                f"inconclusive, need about {stats.fmt_count(need)} {self.unit}; {have}"
            )
        return status, None, status


# ---------------------------------------------------------------------------------------------
# Evidence helpers


def _arm_has_data(evidence: Evidence, arm: str) -> bool:
    cols = evidence.arms.get(arm)
    return cols is not None and bool(np.any(cols.present))


def errors_of(cols: ArmColumns) -> np.ndarray:
    """The error column as an object array (None where there is no error)."""
    return np.asarray(cols.error, dtype=object)


def kind_mask(err: np.ndarray, kind: str) -> np.ndarray:
    if isinstance(kind, str) and isinstance(err, np.ndarray) and err.dtype == object and err.ndim == 1:
        # None == kind is False: compare only the errors (few, usually), not a million Nones.
        some = ~none_mask(err)
        mask = np.zeros(err.shape, dtype=bool)
        mask[some] = np.asarray(err[some] == kind, dtype=bool)
        return mask
    return np.asarray(err == kind, dtype=bool)


def none_mask(err: np.ndarray) -> np.ndarray:
    return np.asarray(err == None, dtype=bool)  # noqa: E711 - elementwise on an object array


def count_kinds(err: np.ndarray, mask: np.ndarray) -> dict[str, int]:
    """Counts of each error kind among `mask` (None excluded)."""
    sel = err[mask & ~none_mask(err)]
    if sel.size == 0:
        return {}
    kinds, counts = np.unique(sel.astype(str), return_counts=True)
    return {str(k): int(c) for k, c in zip(kinds, counts)}


# gRPC codes (status values 0..16), grouped like their HTTP mapping (google.rpc / AIP-193):
# server-side failures map to 5xx, caller-side ones to 4xx.
GRPC_SERVER_ERRORS = (2, 4, 12, 13, 14, 15)  # UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
GRPC_CLIENT_ERRORS = (1, 3, 5, 6, 7, 8, 9, 10, 11, 16)


def server_error(status: np.ndarray) -> np.ndarray:
    """HTTP 5xx, or a gRPC code that maps to one."""
    s = np.asarray(status)
    return ((s >= 500) & (s <= 599)) | np.isin(s, GRPC_SERVER_ERRORS)


def client_error(status: np.ndarray) -> np.ndarray:
    """HTTP 4xx, or a gRPC code that maps to one."""
    s = np.asarray(status)
    return ((s >= 400) & (s <= 499)) | np.isin(s, GRPC_CLIENT_ERRORS)


def get_pairs(evidence: Evidence, arm: str) -> Pairs | None:
    pairs = evidence.pairs.get(arm)
    if pairs is None or pairs.n == 0:
        return None
    return pairs


def why_no_pairs(evidence: Evidence, arm: str) -> str:
    """Plain words for why there are no paired predictions of `arm` and the incumbent."""
    return f"no paired predictions: {arm_summary(evidence, arm)}"


def arm_summary(evidence: Evidence, arm: str) -> str:
    """What happened to `arm`'s copies, in words: 'of 5,000 candidate copies, 5,000 shed (...)'."""
    cols = evidence.arms.get(arm)
    if cols is None or not np.any(cols.present):
        return f"no {arm} copies in this run"
    present = np.asarray(cols.present, dtype=bool)
    err = errors_of(cols)
    total = int(present.sum())
    shed = int((present & kind_mask(err, "shed")).sum())
    failed = int((present & ~none_mask(err)).sum()) - shed
    complete = present & none_mask(err)
    undecoded = int((complete & ~np.asarray(cols.decoded, dtype=bool)).sum())
    parts = [f"{stats.fmt_count(shed)} shed (in-flight budget full)"] if shed else []
    if failed:
        kinds = count_kinds(err, present & ~kind_mask(err, "shed"))
        parts.append(f"{stats.fmt_count(failed)} failed (" + ", ".join(f"{k} {v:,}" for k, v in kinds.items()) + ")")
    if undecoded:
        parts.append(f"{stats.fmt_count(undecoded)} answered but not decodable")
    inc = evidence.arms.get(INCUMBENT)
    if inc is not None:
        inc_err = errors_of(inc)
        inc_ok = np.asarray(inc.present, dtype=bool) & none_mask(inc_err) & np.asarray(inc.decoded, dtype=bool)
        both = int((complete & np.asarray(cols.decoded, dtype=bool) & inc_ok).sum())
        if both and not parts:
            parts.append(f"{stats.fmt_count(both)} decoded by both arms but with different row counts")
    detail = ", ".join(parts) if parts else "none usable"
    return f"of {stats.fmt_count(total)} {arm} copies, {detail}"


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
