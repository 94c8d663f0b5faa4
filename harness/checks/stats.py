"""Statistical helpers shared by the checks: intervals, decisions, sample-size solvers, formatting.

Pure functions of numbers; nothing here knows about captures or arms.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from harness.verdict import FAIL, INCONCLUSIVE, PASS

# Sample sizes beyond this are reported as "cannot be decided" rather than as a number.
MAX_REQUIRED_N = 10**12


def scipy_special():
    """`scipy.special`, imported on first use: importing scipy takes longer than most checks
    (`shadowline analyze` imports it while the capture is being read, see harness.judge)."""
    from scipy import special

    return special


def scipy_stats():
    """`scipy.stats`, imported on first use (as `scipy_special`)."""
    from scipy import stats

    return stats


# ---------------------------------------------------------------------------------------------
# Intervals


def clopper_pearson(x: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion x / n.

    Matches `scipy.stats.binomtest(x, n).proportion_ci(confidence, method="exact")`; `x` may be
    fractional (used when extrapolating to other sample sizes).
    """
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = 0.0 if x <= 0 else float(scipy_special().betaincinv(x, n - x + 1, alpha / 2))
    hi = 1.0 if x >= n else float(scipy_special().betaincinv(x + 1, n - x, 1 - alpha / 2))
    return lo, hi


def wilson(x: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n <= 0:
        return 0.0, 1.0
    z = scipy_stats().norm.ppf(0.5 + confidence / 2)
    p = x / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_paired(
    both: float, only_1: float, only_2: float, neither: float, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Difference of two paired proportions p1 - p2 with Newcombe's hybrid score interval.

    Cells of the paired 2x2 table: `both` (event in arm 1 and arm 2), `only_1`, `only_2`,
    `neither`. p1 = (both + only_1) / n, p2 = (both + only_2) / n. Newcombe (1998), method 10:
    Wilson intervals of each proportion combined with a continuity-corrected phi correlation.
    Returns (difference, low, high).
    """
    n = both + only_1 + only_2 + neither
    if n <= 0:
        return 0.0, -1.0, 1.0
    p1 = (both + only_1) / n
    p2 = (both + only_2) / n
    l1, u1 = wilson(both + only_1, n, confidence)
    l2, u2 = wilson(both + only_2, n, confidence)
    a = (both + only_1) * (only_2 + neither) * (both + only_2) * (only_1 + neither)
    if a == 0:
        phi = 0.0
    else:
        b = both * neither - only_1 * only_2
        c = b - n / 2 if b > n / 2 else (b if b < 0 else 0.0)
        phi = c / math.sqrt(a)
    d1, d2 = p1 - l1, u2 - p2
    e1, e2 = u1 - p1, p2 - l2
    delta = math.sqrt(max(d1 * d1 - 2 * phi * d1 * d2 + d2 * d2, 0.0))
    eps = math.sqrt(max(e1 * e1 - 2 * phi * e1 * e2 + e2 * e2, 0.0))
    diff = p1 - p2
    return diff, max(-1.0, diff - delta), min(1.0, diff + eps)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact (binomial) McNemar p-value on the discordant counts b and c; 1.0 when b + c == 0."""
    if b + c == 0:
        return 1.0
    return float(scipy_stats().binomtest(int(b), int(b + c), 0.5).pvalue)


def bowker(table: np.ndarray) -> tuple[float, float, int]:
    """Bowker's test of symmetry of a square table (McNemar for k > 2 classes).

    Returns (chi-square statistic, p-value, degrees of freedom); (0, 1, 0) with no discordant pairs.
    """
    t = np.asarray(table, dtype=float)
    upper = np.triu(t, 1)
    lower = np.triu(t.T, 1)
    total = upper + lower
    used = total > 0
    df = int(used.sum())
    if df == 0:
        return 0.0, 1.0, 0
    stat = float((((upper - lower) ** 2)[used] / total[used]).sum())
    return stat, float(scipy_stats().chi2.sf(stat, df)), df


def dkw_epsilon(n: float, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz (Massart) band: P(sup|F_n - F| > eps) <= alpha."""
    if n <= 0:
        return 1.0
    return math.sqrt(math.log(2 / alpha) / (2 * n))


# ---------------------------------------------------------------------------------------------
# Decisions and sample sizes


def decide(ci_low: float, ci_high: float, threshold: float) -> str:
    """Honest status of "effect <= threshold" from a confidence interval of the effect.

    FAIL when the whole interval is above the threshold (ci_low > threshold), PASS when the whole
    interval is at or below it (ci_high <= threshold), INCONCLUSIVE otherwise.
    """
    if ci_low > threshold:
        return FAIL
    if ci_high <= threshold:
        return PASS
    return INCONCLUSIVE


def solve_required_n(
    bounds_at: Callable[[float], tuple[float, float]],
    effect: float,
    threshold: float,
    n_obs: float,
) -> int | None:
    """Smallest total n at which the interval would decide, if the observed effect held.

    `bounds_at(n)` returns the (low, high) interval the check would compute at sample size n with
    the same observed proportions. When the effect is above the threshold the low bound must rise
    above it (a fail); when below, the high bound must drop to it (a pass). Geometric bisection.
    None when the effect sits on the threshold or no n up to MAX_REQUIRED_N decides.
    """
    if not math.isfinite(effect) or effect == threshold:
        return None
    above = effect > threshold

    def decided(n: float) -> bool:
        lo, hi = bounds_at(n)
        return lo > threshold if above else hi <= threshold

    lo_n = max(1.0, float(n_obs))
    if decided(lo_n):
        return int(math.ceil(lo_n))
    hi_n = lo_n * 2
    while not decided(hi_n):
        hi_n *= 2
        if hi_n > MAX_REQUIRED_N:
            return None
    while hi_n - lo_n > max(1.0, lo_n * 1e-4):
        mid = math.sqrt(lo_n * hi_n) if hi_n > 4 * lo_n else (lo_n + hi_n) / 2
        if decided(mid):
            hi_n = mid
        else:
            lo_n = mid
    return int(math.ceil(hi_n))


def required_n_normal(
    n_obs: float, effect: float, ci_low: float, ci_high: float, threshold: float, log: bool = False
) -> int | None:
    """Total n that would decide, assuming the interval's half-width shrinks like 1 / sqrt(n).

    Uses the half-width on the side facing the threshold. With `log=True` the effect, interval
    and threshold are ratios and the computation is done on their logarithms.
    """
    vals = (effect, ci_low, ci_high, threshold)
    if not all(math.isfinite(v) for v in vals):
        return None
    if log:
        if min(vals) <= 0:
            return None
        effect, ci_low, ci_high, threshold = (math.log(v) for v in vals)
    gap = threshold - effect
    if gap == 0:
        return None
    half = (ci_high - effect) if gap > 0 else (effect - ci_low)
    if half <= 0:
        return int(math.ceil(n_obs))
    n = n_obs * (half / abs(gap)) ** 2
    if n > MAX_REQUIRED_N:
        return None
    return int(math.ceil(max(n, n_obs)))


# ---------------------------------------------------------------------------------------------
# Formatting for humans


def fmt_count(n: float) -> str:
    """20000 -> '20,000'."""
    return f"{int(round(n)):,}"


def _pct_digits(pct: float) -> int:
    """Two decimals, more for small values so two significant digits show: 0.074, 0.0012."""
    if pct == 0 or abs(pct) >= 0.1:
        return 2
    return min(6, 1 - math.floor(math.log10(abs(pct))))


def fmt_pct(x: float | None) -> str:
    """A proportion as a percentage with enough digits: 0.031 -> '3.10%', 0.00074 -> '0.074%'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    pct = x * 100
    return f"{pct:.{_pct_digits(pct)}f}%"


def fmt_pp(x: float | None) -> str:
    """A difference of proportions in percentage points, signed: 0.0052 -> '+0.52 pp'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    pp = x * 100
    return f"{pp:+.{_pct_digits(pp)}f} pp"


def fmt_ms(seconds: float | None) -> str:
    """A duration in seconds for humans: 0.0612 -> '61.2 ms', 1.5 -> '1.50 s'."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    ms = seconds * 1000
    if abs(ms) >= 1000:
        return f"{seconds:.2f} s"
    if abs(ms) >= 100:
        return f"{ms:.0f} ms"
    if abs(ms) >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_ratio(r: float | None, digits: int = 2) -> str:
    """A ratio: 1.034 -> '1.03x'."""
    if r is None or not math.isfinite(r):
        return "n/a"
    return f"{r:.{digits}f}x"


def digits_to_separate(lo: float, hi: float, mid: float, fmt: Callable[[float, int], str], start: int = 2) -> int:
    """Fewest decimals (from `start`, at most 5) that print lo and hi as different numbers, so a
    narrow interval does not read as [1.03x, 1.03x]."""
    if lo == hi:
        return start
    for digits in range(start, 6):
        if fmt(lo, digits) != fmt(hi, digits):
            return digits
    return 5


def fmt_num(x: float | None) -> str:
    """A plain number with 3 significant digits (scores, statistics)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}"
    return f"{x:.2e}"


def fmt_ci(lo: float, hi: float, fmt: Callable[[float], str], confidence: float) -> str:
    """'95% CI [2.85%, 3.37%]'."""
    return f"{confidence * 100:g}% CI [{fmt(lo)}, {fmt(hi)}]"
