"""What the judge looks at: a capture decoded into paired numpy columns.

Two granularities:
- per exchange (one request): status, latency, error kind, arrival time, for each arm;
- per prediction (one output row): label and score of the incumbent and of another arm for
  the same input row, only where both arms answered and both answers decoded to the same
  number of rows. A request carrying a batch of N rows gives N paired predictions.

Checks take an `Evidence` and read only what they need; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np


@dataclass(frozen=True)
class ArmColumns:
    """One arm, one entry per exchange (length = Evidence.n_exchanges)."""

    present: np.ndarray  # bool: the arm took part in this exchange (was sent or shed)
    status: np.ndarray  # int64: HTTP status or gRPC code, -1 when there was no response
    latency_s: np.ndarray  # float64: NaN when not sent
    error: np.ndarray  # object: None, or an error kind (timeout, reset, connect, shed, protocol, internal)
    decoded: np.ndarray  # bool: a response that the codec turned into predictions
    # object: a tuple of the fault labels applied to this arm's copy (empty when none); None
    # when the capture has no fault ledger at all
    faults: np.ndarray | None = None
    # bool: every output value of a decoded response is finite (False for NaN/Inf outputs and
    # for responses that did not decode); None when not computed
    finite: np.ndarray | None = None


@dataclass(frozen=True)
class Pairs:
    """Predictions of the incumbent and one other arm on the same input rows."""

    exchange: np.ndarray  # int64 index into the per-exchange arrays, one per prediction row
    label_incumbent: np.ndarray  # int64; -1 for a regression output
    label_other: np.ndarray
    score_incumbent: np.ndarray  # float64: probability of the positive class (binary),
    score_other: np.ndarray  # of the incumbent's label (multiclass), or the regression value

    @property
    def n(self) -> int:
        return len(self.exchange)


@dataclass(frozen=True)
class Evidence:
    started_at: np.ndarray  # float64 unix seconds, per exchange
    arms: dict[str, ArmColumns]  # by arm name; the incumbent is always there
    pairs: dict[str, Pairs]  # by the other arm's name ("candidate", "baseline")
    task: str = "classification"  # or "regression": what the outputs were decoded as
    codec: str = ""  # name of the codec that decoded the bodies
    notes: list[str] = field(default_factory=list)  # e.g. "212 candidate bodies not decodable"

    @property
    def n_exchanges(self) -> int:
        return len(self.started_at)


def _take(columns, keep: np.ndarray):
    """A copy of a dataclass of equal-length arrays with only the `keep` entries (None stays None)."""
    return replace(columns, **{f.name: getattr(columns, f.name)[keep] for f in fields(columns) if getattr(columns, f.name) is not None})


def subset(evidence: Evidence, exchanges: np.ndarray) -> Evidence:
    """The evidence of the selected exchanges only (a bool mask over exchanges), e.g. one phase.

    Pairs follow their exchanges, re-indexed into the subset.
    """
    keep = np.asarray(exchanges, dtype=bool)
    new_index = np.cumsum(keep) - 1  # old exchange index -> index in the subset
    pairs = {}
    for arm, p in evidence.pairs.items():
        rows = keep[p.exchange]
        taken = _take(p, rows)
        pairs[arm] = Pairs(new_index[taken.exchange], taken.label_incumbent, taken.label_other, taken.score_incumbent, taken.score_other)
    return Evidence(
        started_at=evidence.started_at[keep],
        arms={arm: _take(cols, keep) for arm, cols in evidence.arms.items()},
        pairs=pairs,
        task=evidence.task,
        codec=evidence.codec,
        notes=list(evidence.notes),
    )
