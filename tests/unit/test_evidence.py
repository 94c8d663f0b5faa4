"""Evidence subsets (a phase of a run) keep exchanges and their pairs aligned."""

from __future__ import annotations

import numpy as np

from harness.evidence import ArmColumns, Evidence, Pairs, subset


def _arm(n: int) -> ArmColumns:
    return ArmColumns(
        present=np.ones(n, bool),
        status=np.full(n, 200),
        latency_s=np.arange(n, dtype=float),
        error=np.array([None] * n, dtype=object),
        decoded=np.ones(n, bool),
        faults=np.array([()] * n + [("x",)], dtype=object)[:n],
    )


def test_subset_keeps_the_selected_exchanges_and_reindexes_their_pairs():
    pairs = Pairs(
        exchange=np.array([0, 1, 1, 3]),
        label_incumbent=np.array([0, 1, 1, 0]),
        label_other=np.array([0, 1, 0, 0]),
        score_incumbent=np.array([0.1, 0.9, 0.8, 0.2]),
        score_other=np.array([0.1, 0.9, 0.3, 0.25]),
    )
    evidence = Evidence(np.arange(4.0), {"incumbent": _arm(4), "candidate": _arm(4)}, {"candidate": pairs}, codec="v2")
    part = subset(evidence, np.array([False, True, False, True]))
    assert part.n_exchanges == 2
    assert part.started_at.tolist() == [1.0, 3.0]
    assert part.arms["candidate"].latency_s.tolist() == [1.0, 3.0]
    assert part.arms["candidate"].finite is None  # absent columns stay absent
    assert part.pairs["candidate"].exchange.tolist() == [0, 0, 1]
    assert part.pairs["candidate"].score_other.tolist() == [0.9, 0.3, 0.25]
    assert part.codec == "v2"
