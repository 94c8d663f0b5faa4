"""Label agreement: how often the candidate's label differs from the incumbent's on the same input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from harness.evidence import Evidence
from harness.verdict import CheckResult

from . import stats
from .base import Check, get_pairs, register, why_no_pairs

MAX_CONFUSION_CLASSES = 20  # above this, details list the most frequent flips instead of the matrix
_DENSE_LABELS = 1024  # labels below this are counted with one bincount over the k x k cells


@register
@dataclass(frozen=True, kw_only=True)
class LabelAgreement(Check):
    """Flip rate (share of paired predictions whose labels differ) against a margin."""

    name: ClassVar[str] = "label_agreement"
    test: ClassVar[str] = (
        "flip rate with a Clopper-Pearson exact interval vs the margin; "
        "McNemar exact test (Bowker's symmetry test for more than 2 classes) on the discordant pairs"
    )

    margin: float = 0.01  # largest acceptable flip rate (share of paired predictions)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require(0 <= self.margin < 1, "margin", "must be in [0, 1)")

    def _evaluate(self, evidence: Evidence, arm: str) -> CheckResult:
        if evidence.task == "regression":
            return self._not_applicable("regression outputs have no labels")
        pairs = get_pairs(evidence, arm)
        if pairs is None:
            return self._no_data(why_no_pairs(evidence, arm), threshold=self.margin)
        inc = np.asarray(pairs.label_incumbent, dtype=np.int64)
        oth = np.asarray(pairs.label_other, dtype=np.int64)
        if np.all(inc < 0) and np.all(oth < 0):
            return self._not_applicable("the outputs decoded as values, not labels")

        n = len(inc)
        flips = int(np.count_nonzero(inc != oth))
        rate = flips / n
        lo, hi = stats.clopper_pearson(flips, n, self.confidence)
        status = stats.decide(lo, hi, self.margin)
        estimate = stats.solve_required_n(
            lambda m: stats.clopper_pearson(rate * m, m, self.confidence), rate, self.margin, n
        )
        status, required_n, suffix = self._settle(status, n, estimate)

        details, statistic, p_value, symmetry = _confusion(inc, oth)
        details["flips"] = flips
        details["symmetry_test"] = symmetry
        message = (
            f"{arm} flips {stats.fmt_pct(rate)} of labels "
            f"({stats.fmt_count(flips)} of {stats.fmt_count(n)} {self.unit}), "
            f"{stats.fmt_ci(lo, hi, stats.fmt_pct, self.confidence)}, "
            f"margin {stats.fmt_pct(self.margin)}: {suffix}"
        )
        return self._result(
            status,
            message,
            statistic=statistic,
            effect=rate,
            ci_low=lo,
            ci_high=hi,
            p_value=p_value,
            n=n,
            threshold=self.margin,
            required_n=required_n,
            details=details,
        )


def _confusion(inc: np.ndarray, oth: np.ndarray) -> tuple[dict, float | None, float | None, str]:
    """Confusion matrix incumbent x other, and the McNemar / Bowker test of its symmetry.

    Returns (details, statistic, p-value, name of the symmetry test).
    """
    lo_label = int(min(inc.min(), oth.min()))
    hi_label = int(max(inc.max(), oth.max()))
    if lo_label >= 0 and hi_label < _DENSE_LABELS:
        k = hi_label + 1
        cells = np.bincount(inc * k + oth, minlength=k * k).reshape(k, k)
        used = np.flatnonzero(cells.sum(axis=0) + cells.sum(axis=1))
        labels = used
        table = cells[np.ix_(used, used)]
    else:
        labels, inverse = np.unique(np.concatenate([inc, oth]), return_inverse=True)
        k = len(labels)
        if k > 4096:  # too many classes for a table: no symmetry test, list the top flips
            codes, counts = np.unique(np.stack([inc, oth])[:, inc != oth], axis=1, return_counts=True)
            top = np.argsort(counts)[::-1][:MAX_CONFUSION_CLASSES]
            flips = [
                {"incumbent": int(codes[0, i]), "other": int(codes[1, i]), "count": int(counts[i])} for i in top
            ]
            return {"classes": k, "top_flips": flips}, None, None, "none (too many classes)"
        a, b = inverse[: len(inc)], inverse[len(inc) :]
        table = np.bincount(a * k + b, minlength=k * k).reshape(k, k)

    k = len(labels)
    details: dict = {"classes": int(k)}
    if k <= MAX_CONFUSION_CLASSES:
        details["confusion"] = {
            "labels": [int(v) for v in labels],
            "rows": "incumbent",
            "columns": "other arm",
            "matrix": table.astype(int).tolist(),
        }
    else:
        off = table.copy()
        np.fill_diagonal(off, 0)
        flat = np.argsort(off, axis=None)[::-1][:MAX_CONFUSION_CLASSES]
        details["top_flips"] = [
            {"incumbent": int(labels[i // k]), "other": int(labels[i % k]), "count": int(off.flat[i])}
            for i in flat
            if off.flat[i] > 0
        ]

    if k <= 2:
        b = int(table[0, 1]) if k == 2 else 0  # incumbent says labels[0], other says labels[1]
        c = int(table[1, 0]) if k == 2 else 0
        details["discordant"] = {"incumbent_first_other_second": b, "incumbent_second_other_first": c}
        return details, float(min(b, c)), stats.mcnemar_exact(b, c), "McNemar exact (binomial on discordant pairs)"
    chi2, p, df = stats.bowker(table)
    details["bowker_df"] = df
    return details, chi2, p, "Bowker test of symmetry (chi-square)"
