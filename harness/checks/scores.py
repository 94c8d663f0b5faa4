"""Score checks: paired per-prediction differences, and the two score distributions (KS, PSI)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.evidence import Evidence
from harness.verdict import CheckResult

from . import stats
from .base import Check, get_pairs, register, why_no_pairs

PSI_EPSILON = 1e-4  # share given to an empty bin so PSI stays finite
KS_EXACT_MAX_N = 10_000  # up to this many per sample the KS p-value is exact (as scipy's "auto")


@register
@dataclass(frozen=True, kw_only=True)
class ScoreDifference(Check):
    """Share of paired predictions whose score moved by more than the tolerance, against a margin."""

    name: ClassVar[str] = "score_difference"
    test: ClassVar[str] = (
        "share of |candidate - incumbent score| > atol + rtol*|incumbent score| with a "
        "Clopper-Pearson exact interval vs the margin; Wilcoxon signed-rank test on the differences"
    )

    atol: float = 0.01  # absolute tolerance on a score difference
    rtol: float = 0.01  # relative tolerance, times |incumbent score|
    margin: float = 0.01  # largest acceptable share of predictions outside the tolerance

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.atol >= 0, "atol", "must be >= 0")
        self._require(self.rtol >= 0, "rtol", "must be >= 0")
        self._require(0 <= self.margin < 1, "margin", "must be in [0, 1)")

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        pairs = get_pairs(evidence, arm)
        if pairs is None:
            return self._no_data(why_no_pairs(evidence, arm), threshold=self.margin)
        s_inc = np.asarray(pairs.score_incumbent, dtype=np.float64)
        s_oth = np.asarray(pairs.score_other, dtype=np.float64)
        n = len(s_inc)
        diff = s_oth - s_inc
        nan_inc, nan_oth = np.isnan(s_inc), np.isnan(s_oth)
        both_nan = nan_inc & nan_oth
        tol = self.atol + self.rtol * np.abs(s_inc)
        # NaN differences are outside the tolerance unless both arms said NaN.
        outside = ~(np.abs(diff) <= tol) & ~both_nan
        out = int(np.count_nonzero(outside))
        share = out / n
        lo, hi = stats.clopper_pearson(out, n, self.confidence)
        status = stats.decide(lo, hi, self.margin)
        estimate = stats.solve_required_n(
            lambda m: stats.clopper_pearson(share * m, m, self.confidence), share, self.margin, n
        )
        status, required_n, suffix = self._settle(status, n, estimate)

        fin = diff[np.isfinite(diff)]
        absd = np.abs(fin)
        nonzero = fin[fin != 0]
        if nonzero.size == 0:
            w_stat, w_p = 0.0, 1.0
        else:
            w = stats.scipy_stats().wilcoxon(nonzero)
            w_stat, w_p = float(w.statistic), float(w.pvalue)
        if absd.size:
            q50, q90, q99 = (float(v) for v in np.quantile(absd, [0.5, 0.9, 0.99]))
            mean_abs, max_abs, mean_diff = float(absd.mean()), float(absd.max()), float(fin.mean())
        else:
            q50 = q90 = q99 = mean_abs = max_abs = mean_diff = math.nan
        details = {
            "outside_tolerance": out,
            "mean_abs_diff": mean_abs,
            "median_abs_diff": q50,
            "p90_abs_diff": q90,
            "p99_abs_diff": q99,
            "max_abs_diff": max_abs,
            "mean_diff": mean_diff,
            "nan_incumbent": int(nan_inc.sum()),
            "nan_other": int(nan_oth.sum()),
            "wilcoxon_nonzero_n": int(nonzero.size),
        }
        message = (
            f"{stats.fmt_pct(share)} of {arm} scores differ by more than "
            f"{stats.fmt_num(self.atol)} + {stats.fmt_pct(self.rtol)} of the incumbent's "
            f"({stats.fmt_count(out)} of {stats.fmt_count(n)}; mean |diff| {stats.fmt_num(mean_abs)}, "
            f"p99 {stats.fmt_num(q99)}, max {stats.fmt_num(max_abs)}), "
            f"{stats.fmt_ci(lo, hi, stats.fmt_pct, self.confidence)}, "
            f"margin {stats.fmt_pct(self.margin)}: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=w_stat,
            effect=share,
            ci_low=lo,
            ci_high=hi,
            p_value=w_p,
            n=n,
            threshold=self.margin,
            required_n=required_n,
            details=details,
        )


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D = sup |F_a - F_b| (same as scipy.stats.ks_2samp)."""
    sa, sb = np.sort(a), np.sort(b)
    everything = np.concatenate([sa, sb])
    cdf_a = np.searchsorted(sa, everything, side="right") / len(sa)
    cdf_b = np.searchsorted(sb, everything, side="right") / len(sb)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def ks_pvalue(d: float, n1: int, n2: int, a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value as scipy.stats.ks_2samp(method="auto"): exact for small samples,
    Smirnov's asymptotic distribution (kstwo at the effective n) for large ones."""
    if max(n1, n2) <= KS_EXACT_MAX_N:
        with warnings.catch_warnings():  # scipy falls back to "asymp" itself, with a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(stats.scipy_stats().ks_2samp(a, b).pvalue)
    big, small = max(n1, n2), min(n1, n2)
    en = big * small / (big + small)
    return float(np.clip(stats.scipy_stats().kstwo.sf(d, np.round(en)), 0, 1))


@register
@dataclass(frozen=True, kw_only=True)
class ScoreKS(Check):
    """Largest gap between the candidate's and the incumbent's score distributions (KS D)."""

    name: ClassVar[str] = "score_ks"
    test: ClassVar[str] = (
        "two-sample Kolmogorov-Smirnov statistic D with a Dvoretzky-Kiefer-Wolfowitz "
        "(Massart) interval vs the threshold; KS p-value as scipy.stats.ks_2samp"
    )

    threshold: float = 0.05  # largest acceptable KS statistic D (max gap between the two CDFs)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(0 <= self.threshold < 1, "threshold", "must be in [0, 1)")

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        pairs = get_pairs(evidence, arm)
        if pairs is None:
            return self._no_data(why_no_pairs(evidence, arm), threshold=self.threshold)
        a = np.asarray(pairs.score_incumbent, dtype=np.float64)
        b = np.asarray(pairs.score_other, dtype=np.float64)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        n1, n2 = len(a), len(b)
        if n1 == 0 or n2 == 0:
            return self._no_data("no finite scores to compare", threshold=self.threshold)
        d = ks_statistic(a, b)
        p = ks_pvalue(d, n1, n2, a, b)
        alpha = 1 - self.confidence
        eps = stats.dkw_epsilon(n1, alpha / 2) + stats.dkw_epsilon(n2, alpha / 2)
        lo, hi = max(0.0, d - eps), min(1.0, d + eps)
        status = stats.decide(lo, hi, self.threshold)
        n = min(n1, n2)
        gap = abs(d - self.threshold)
        # eps shrinks like sqrt(log(4/alpha) / 2n) per sample: solve 2 * eps(n) < gap for n.
        estimate = (
            int(math.ceil(2 * math.log(4 / alpha) / gap**2)) if gap > 0 else None
        )
        if estimate is not None and estimate > stats.MAX_REQUIRED_N:
            estimate = None
        status, required_n, suffix = self._settle(status, n, estimate)
        message = (
            f"KS distance between {arm} and incumbent scores D={d:.3f}, "
            f"{stats.fmt_ci(lo, hi, lambda v: f'{v:.3f}', self.confidence)} (n={stats.fmt_count(n)}), "
            f"threshold {self.threshold:.3f}: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=d,
            effect=d,
            ci_low=lo,
            ci_high=hi,
            p_value=p,
            n=n,
            threshold=self.threshold,
            required_n=required_n,
            details={"n_incumbent": n1, "n_other": n2, "dkw_half_width": eps},
        )


@register
@dataclass(frozen=True, kw_only=True)
class ScorePSI(Check):
    """Population stability index of the candidate's scores on the incumbent's quantile bins."""

    name: ClassVar[str] = "score_psi"
    test: ClassVar[str] = (
        "population stability index on bins at the incumbent's score quantiles, with a paired "
        "bootstrap percentile interval vs the threshold"
    )

    critical: bool = False  # PSI is a drift index with conventional thresholds: a warning by default
    threshold: float = 0.1  # largest acceptable PSI (0.1 "moderate", 0.25 "major" by convention)
    bins: int = 10  # bins at the incumbent's quantiles (fewer when scores repeat)
    n_resamples: int = 1000  # bootstrap resamples
    seed: int = 0  # bootstrap seed

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(self.threshold >= 0, "threshold", "must be >= 0")
        self._require(isinstance(self.bins, int) and self.bins >= 2, "bins", "must be an integer >= 2")
        self._require(
            isinstance(self.n_resamples, int) and self.n_resamples >= 100, "n_resamples", "must be an integer >= 100"
        )

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        pairs = get_pairs(evidence, arm)
        if pairs is None:
            return self._no_data(why_no_pairs(evidence, arm), threshold=self.threshold)
        a = np.asarray(pairs.score_incumbent, dtype=np.float64)
        b = np.asarray(pairs.score_other, dtype=np.float64)
        keep = np.isfinite(a) & np.isfinite(b)
        a, b = a[keep], b[keep]
        n = len(a)
        if n == 0:
            return self._no_data("no finite score pairs to compare", threshold=self.threshold)
        edges = np.unique(np.quantile(a, np.linspace(0, 1, self.bins + 1)[1:-1]))
        k = len(edges) + 1
        ba = np.searchsorted(edges, a, side="right")
        bb = np.searchsorted(edges, b, side="right")
        # Paired resampling of rows is a multinomial draw over the k x k joint cells.
        joint = np.bincount(ba * k + bb, minlength=k * k).astype(np.float64)
        psi = float(_psi(joint[None, :], k)[0])
        rng = np.random.default_rng(self.seed)
        draws = rng.multinomial(n, joint / n, size=self.n_resamples).astype(np.float64)
        boot = _psi(draws, k)
        alpha = 1 - self.confidence
        lo, hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
        lo, hi = min(lo, psi), max(hi, psi)
        status = stats.decide(lo, hi, self.threshold)
        estimate = stats.required_n_normal(n, psi, lo, hi, self.threshold)
        status, required_n, suffix = self._settle(status, n, estimate)
        share_a = joint.reshape(k, k).sum(axis=1) / n
        share_b = joint.reshape(k, k).sum(axis=0) / n
        message = (
            f"PSI of {arm} scores on {k} incumbent-quantile bins {psi:.3f}, "
            f"{stats.fmt_ci(lo, hi, lambda v: f'{v:.3f}', self.confidence)} (n={stats.fmt_count(n)}), "
            f"threshold {self.threshold:.3f}: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=psi,
            effect=psi,
            ci_low=lo,
            ci_high=hi,
            n=n,
            threshold=self.threshold,
            required_n=required_n,
            details={
                "bin_edges": [float(e) for e in edges],
                "share_incumbent": share_a.tolist(),
                "share_other": share_b.tolist(),
                "dropped_non_finite": int((~keep).sum()),
            },
        )


def _psi(joint_counts: np.ndarray, k: int) -> np.ndarray:
    """PSI for each row of flattened k x k joint counts (rows: incumbent bin, columns: other bin)."""
    cells = joint_counts.reshape(-1, k, k)
    total = cells.sum(axis=(1, 2))[:, None]
    e = np.maximum(cells.sum(axis=2) / total, PSI_EPSILON)
    o = np.maximum(cells.sum(axis=1) / total, PSI_EPSILON)
    return ((o - e) * np.log(o / e)).sum(axis=1)
