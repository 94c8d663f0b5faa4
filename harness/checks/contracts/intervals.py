"""The statistics the rate contracts need beyond harness.checks.stats: Newcombe's interval for
two independent proportions, an order-statistic interval of a quantile, an unpaired bootstrap
of a quantile ratio, and the rules that turn one part's interval into a status and a need."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from harness.verdict import FAIL, INCONCLUSIVE, PASS

from .. import stats


def newcombe_independent(x1: float, n1: float, x2: float, n2: float, confidence: float) -> tuple[float, float, float]:
    """p1 - p2 of two independent proportions with Newcombe's hybrid score interval (method 10)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, -1.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = stats.wilson(x1, n1, confidence)
    l2, u2 = stats.wilson(x2, n2, confidence)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def quantile_ci(sorted_x: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """Distribution-free interval of the q-quantile from order statistics (binomial);
    -inf / inf where the sample is too small to bound that side."""
    n = len(sorted_x)
    if n == 0:
        return -math.inf, math.inf
    if q >= 1:
        return float(sorted_x[-1]), math.inf
    alpha = 1 - confidence
    lo_idx = int(sps.binom.ppf(alpha / 2, n, q))  # 1-based order statistic
    hi_idx = int(sps.binom.ppf(1 - alpha / 2, n, q)) + 1
    lo = float(sorted_x[lo_idx - 1]) if lo_idx >= 1 else -math.inf
    hi = float(sorted_x[hi_idx - 1]) if hi_idx <= n else math.inf
    return lo, hi


def bootstrap_unpaired_log_ratio(a: np.ndarray, b: np.ndarray, q: float, n_resamples: int, seed: int,
                                 resample_size: int = 10_000) -> np.ndarray:
    """Bootstrap of log(quantile(b) / quantile(a)) with each sample resampled on its own
    (m-out-of-n above `resample_size`, each side's spread rescaled by sqrt(m / n))."""
    rng = np.random.default_rng(seed)
    logs = []
    for x in (a, b):
        n = len(x)
        m = min(n, resample_size)
        est = math.log(max(float(np.quantile(x, q)), 1e-12))
        out = np.empty(n_resamples)
        chunk = max(1, 1_000_000 // m)  # bounds the index matrix at about a million entries
        for start in range(0, n_resamples, chunk):
            c = min(chunk, n_resamples - start)
            idx = rng.integers(0, n, size=(c, m))
            out[start : start + c] = np.quantile(x[idx], q, axis=1)
        with np.errstate(divide="ignore"):
            lg = np.log(np.maximum(out, 1e-12))
        logs.append(est + math.sqrt(m / n) * (lg - est))
    return logs[1] - logs[0]


def percentile_interval(est: float, boot_log: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of a ratio from its bootstrapped logs, widened to contain `est`;
    NaN when the ratio is not positive or most resamples gave no finite log."""
    alpha = 1 - confidence
    fin = boot_log[np.isfinite(boot_log)]
    if not (math.isfinite(est) and est > 0) or fin.size < 0.5 * boot_log.size:
        return math.nan, math.nan
    lo, hi = np.quantile(fin, [alpha / 2, 1 - alpha / 2])
    return float(min(math.exp(lo), est)), float(max(math.exp(hi), est))


def part_status(n: int, min_n: int, est: float, lo: float, hi: float, bound: float, neutral: float) -> str:
    """A rate part: FAIL when the interval lies wholly beyond the bound, PASS when wholly within
    it (or, for a bound at the neutral value, when no degradation was observed), with min_n."""
    if n < min_n or not all(math.isfinite(v) for v in (est, lo, hi)):
        return INCONCLUSIVE
    if lo > bound:
        return FAIL
    if hi <= bound or (bound == neutral and est <= neutral):
        return PASS
    return INCONCLUSIVE


def at_least_min_n(estimate: int | None, n: int, min_n: int) -> int | None:
    """The sample size an inconclusive part asks for: the estimate, never below min_n; when
    there is no estimate, min_n while n is below it, else None (no size would decide)."""
    return max(min_n, estimate or 0) if (estimate is not None or n < min_n) else None
