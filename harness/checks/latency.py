"""Latency: candidate vs incumbent quantiles on the same exchanges, with a non-inferiority margin."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.evidence import Evidence
from harness.verdict import INCONCLUSIVE, CheckResult

from . import stats
from .base import INCUMBENT, Check, arm_summary, errors_of, kind_mask, none_mask, register, server_error

REPORTED_QUANTILES = (0.5, 0.95, 0.99)
_CHUNK_ELEMENTS = 1_000_000  # resampled values held in memory at once, per arm


@register
@dataclass(frozen=True, kw_only=True)
class Latency(Check):
    """Ratio of the candidate's latency quantile to the incumbent's, paired per exchange."""

    name: ClassVar[str] = "latency"
    unit: ClassVar[str] = "paired exchanges"
    test: ClassVar[str] = (
        "ratio of candidate to incumbent latency quantiles with a paired bootstrap percentile "
        "interval (m-out-of-n, rescaled, for large samples) vs the non-inferiority margin"
    )

    min_n: int = 1000  # a p99 needs at least ~10 exchanges above it
    quantile: float = 0.99  # the latency quantile held to the margin
    margin: float = 0.10  # candidate quantile may be at most this much slower (0.10 = +10%)
    n_resamples: int = 1000  # bootstrap resamples
    resample_size: int = 10_000  # above this many exchanges, resample this many and rescale
    seed: int = 0  # bootstrap seed

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(0 < self.quantile < 1, "quantile", "must be between 0 and 1 (exclusive)")
        self._require(self.margin >= 0, "margin", "must be >= 0")
        self._require(
            isinstance(self.n_resamples, int) and self.n_resamples >= 100, "n_resamples", "must be an integer >= 100"
        )
        self._require(
            isinstance(self.resample_size, int) and self.resample_size >= 100,
            "resample_size",
            "must be an integer >= 100",
        )

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        threshold = 1 + self.margin
        if arm not in evidence.arms or not np.any(evidence.arms[arm].present):
            return self._no_data(f"no {arm} copies in this run", threshold=threshold)
        inc_ok, inc_to = _usable(evidence.arms[INCUMBENT])
        oth_ok, oth_to = _usable(evidence.arms[arm])
        both = (inc_ok | inc_to) & (oth_ok | oth_to)
        n = int(both.sum())
        if n == 0:
            return self._no_data(
                f"no exchange where both {arm} and incumbent answered: {arm_summary(evidence, arm)}",
                threshold=threshold,
            )
        li = np.asarray(evidence.arms[INCUMBENT].latency_s, dtype=np.float64)[both]
        lo_ = np.asarray(evidence.arms[arm].latency_s, dtype=np.float64)[both]
        qs = tuple(sorted(set(REPORTED_QUANTILES) | {self.quantile}))
        est_i = np.quantile(li, qs)
        est_o = np.quantile(lo_, qs)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = est_o / est_i
        boot = _bootstrap_log_ratio(li, lo_, qs, self.n_resamples, self.resample_size, self.seed)
        alpha = 1 - self.confidence
        scale = _scale(n, self.resample_size)
        j = qs.index(self.quantile)

        table = {}
        for i, q in enumerate(qs):
            lo_i, hi_i = _interval(float(ratio[i]), boot[i], alpha, scale)
            table[f"p{q * 100:g}"] = {
                "incumbent_s": float(est_i[i]),
                "other_s": float(est_o[i]),
                "ratio": float(ratio[i]),
                "ci_low": lo_i,
                "ci_high": hi_i,
            }
        r = float(ratio[j])
        lo, hi = _interval(r, boot[j], alpha, scale)
        if not (math.isfinite(r) and math.isfinite(lo) and math.isfinite(hi)):
            return self._result(
                INCONCLUSIVE,
                f"incumbent p{self.quantile * 100:g} latency is {stats.fmt_ms(float(est_i[j]))}: "
                f"no ratio can be formed (n={stats.fmt_count(n)}): inconclusive",
                n=n,
                threshold=threshold,
                details={"quantiles": table},
            )
        status = stats.decide(lo, hi, threshold)
        estimate = stats.required_n_normal(n, r, lo, hi, threshold, log=True)
        status, required_n, suffix = self._settle(status, n, estimate)

        # One-sided bootstrap p-value of the non-inferiority null "ratio >= 1 + margin": the share
        # of (rescaled) resampled ratios at or above the margin line, (k + 1) / (B + 1).
        log_r = math.log(r)
        shifted = log_r + scale * (boot[j] - log_r)
        p_value = float((np.count_nonzero(shifted >= math.log(threshold)) + 1) / (shifted.size + 1))

        qname = f"p{self.quantile * 100:g}"
        digits = stats.digits_to_separate(lo, hi, r, lambda v, d: f"{v:.{d}f}")

        def fmt_r(v: float) -> str:
            return stats.fmt_ratio(v, digits)

        message = (
            f"{arm} {qname} latency {stats.fmt_ms(float(est_o[j]))} vs incumbent "
            f"{stats.fmt_ms(float(est_i[j]))}: ratio {fmt_r(r)}, "
            f"{stats.fmt_ci(lo, hi, fmt_r, self.confidence)} "
            f"(n={stats.fmt_count(n)} {self.unit}), margin +{self.margin * 100:g}%: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=r,
            effect=r,
            ci_low=lo,
            ci_high=hi,
            p_value=p_value,
            n=n,
            threshold=threshold,
            required_n=required_n,
            details={
                "quantiles": table,
                "timeouts_counted_at_timeout": {"incumbent": int((both & inc_to).sum()), "other": int((both & oth_to).sum())},
                "resample_size": min(n, self.resample_size),
                "n_resamples": self.n_resamples,
            },
        )


def _usable(cols) -> tuple[np.ndarray, np.ndarray]:
    """(complete non-5xx responses, timeouts) with a finite latency.

    Timeouts are kept at the time the proxy gave up: a lower bound of the true latency, so a
    candidate that hangs cannot look fast by dropping its slowest requests.
    """
    err = errors_of(cols)
    present = np.asarray(cols.present, dtype=bool)
    lat_ok = np.isfinite(np.asarray(cols.latency_s, dtype=np.float64))
    status = np.asarray(cols.status)
    ok = present & none_mask(err) & (status >= 0) & ~server_error(status) & lat_ok
    to = present & kind_mask(err, "timeout") & lat_ok
    return ok, to


def _scale(n: int, resample_size: int) -> float:
    m = min(n, resample_size)
    return math.sqrt(m / n)


def _bootstrap_log_ratio(
    a: np.ndarray, b: np.ndarray, qs: tuple[float, ...], n_resamples: int, resample_size: int, seed: int
) -> np.ndarray:
    """Paired bootstrap of log(quantile(b) / quantile(a)) for each q: shape (len(qs), n_resamples).

    Resamples m = min(n, resample_size) exchanges with replacement (the same indices for both
    arms). Linear-interpolated quantiles, like numpy's default, via partial sorts.
    """
    n = len(a)
    m = min(n, resample_size)
    pos = np.asarray(qs) * (m - 1)
    lo_idx = np.floor(pos).astype(np.int64)
    hi_idx = np.minimum(lo_idx + 1, m - 1)
    frac = pos - lo_idx
    kth = np.unique(np.concatenate([lo_idx, hi_idx]))
    rng = np.random.default_rng(seed)
    idx_dtype = np.int32 if n < 2**31 else np.int64
    out = np.empty((len(qs), n_resamples))
    chunk = max(1, _CHUNK_ELEMENTS // m)
    for start in range(0, n_resamples, chunk):
        c = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(c, m), dtype=idx_dtype)
        res = []
        for arr in (a, b):
            part = np.partition(arr[idx], kth, axis=1)
            res.append(part[:, lo_idx] * (1 - frac) + part[:, hi_idx] * frac)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, start : start + c] = np.log(res[1] / res[0]).T
    return out


def _interval(ratio: float, boot_log: np.ndarray, alpha: float, scale: float) -> tuple[float, float]:
    """Percentile interval of the ratio from bootstrapped log ratios. For m-out-of-n resamples
    the spread around the estimate is rescaled by `scale` = sqrt(m / n)."""
    if not (math.isfinite(ratio) and ratio > 0):
        return math.nan, math.nan
    fin = boot_log[np.isfinite(boot_log)]
    if fin.size < 0.5 * boot_log.size:  # mostly zero incumbent quantiles: no usable ratio
        return math.nan, math.nan
    log_r = math.log(ratio)
    lo, hi = np.quantile(log_r + scale * (fin - log_r), [alpha / 2, 1 - alpha / 2])
    return float(math.exp(min(lo, log_r))), float(math.exp(max(hi, log_r)))
