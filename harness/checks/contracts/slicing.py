"""Which exchanges a contract on a key reads: the arm's faulted exchanges (from its ledger, or
the time window for toxics and phases) with what was left out and why, the window while the
fault was on, and no_crash's span from the fault on to the end of its phase."""

from __future__ import annotations

import numpy as np

from harness.evidence import Evidence

from ..base import errors_of, kind_mask
from .ledger import NOT_APPLIED, has_ledger, ledger_states
from .outcomes import sent
from .timeline import Timeline


def faulted(evidence: Evidence, key: str, arm: str, timeline: Timeline) -> tuple[np.ndarray, int, dict[str, int], str]:
    """The arm's faulted exchanges F (applied, sent, not shed or internal), how many
    exchanges the fault reached (applied or not), the exclusions, and why F is empty."""
    n = evidence.n_exchanges
    cols = evidence.arms.get(arm)
    if cols is None or not np.any(cols.present):
        return np.zeros(n, bool), 0, {}, f"no {arm} copies in this run"
    present = np.asarray(cols.present, dtype=bool)
    err = errors_of(cols)
    excluded: dict[str, int] = {}
    if timeline.is_ledgerless(key):
        window = timeline.window_mask(evidence.started_at, key)
        if window is None:
            return np.zeros(n, bool), 0, {}, f"no time line for {key} (its phase is unknown)"
        applied = window & present
        fired = int(applied.sum())
    else:
        if cols.faults is None:
            return np.zeros(n, bool), 0, {}, "the capture has no fault ledger"
        states = ledger_states(cols, key, n)
        applied = states["applied"] & present
        for state in NOT_APPLIED:
            excluded[state] = int((states[state] & present).sum())
        fired = int(applied.sum()) + sum(excluded.values())
    shed = applied & kind_mask(err, "shed")
    internal = applied & ~shed & kind_mask(err, "internal")
    excluded["shed"] = int(shed.sum())
    excluded["internal"] = int(internal.sum())
    mask = applied & ~shed & ~internal
    why = ""
    if not mask.any():
        if fired == 0:
            why = f"the fault never reached the {arm}"
        else:
            parts = ", ".join(f"{v:,} {k}" for k, v in excluded.items() if v)
            why = f"the fault reached the {arm} {fired:,} times but was never applied to a copy it answered ({parts})"
    return mask, fired, excluded, why


def never_fired(evidence: Evidence, key: str, timeline: Timeline, fired: int) -> bool:
    """The ledger says the fault never fired: the contract is not applicable (a sweep's level
    0), rather than inconclusive. Only a ledger can say so; toxics and phases have none."""
    return fired == 0 and not timeline.is_ledgerless(key) and has_ledger(evidence)


def fault_window(evidence: Evidence, key: str, timeline: Timeline) -> np.ndarray:
    """X: exchanges that started while the fault was on (the time line's window; without
    one, from the first to the last exchange the fault reached in any arm)."""
    mask = timeline.window_mask(evidence.started_at, key)
    if mask is not None:
        return mask
    n = evidence.n_exchanges
    hit = np.zeros(n, dtype=bool)
    for cols in evidence.arms.values():
        states = ledger_states(cols, key, n)
        for m in states.values():
            hit |= m
    if not hit.any():
        return hit
    t = np.asarray(evidence.started_at, dtype=np.float64)
    lo, hi = t[hit].min(), t[hit].max()
    return (t >= lo) & (t <= hi)


def crash_window(evidence: Evidence, key: str, arm: str, timeline: Timeline, faulted_mask: np.ndarray) -> np.ndarray:
    """no_crash reads every exchange sent to the arm from the fault on: from the window's
    start (or the arm's first faulted exchange) to the end of its phase (or of the run)."""
    if not faulted_mask.any():
        return faulted_mask
    t = np.asarray(evidence.started_at, dtype=np.float64)
    sent_mask = sent(evidence.arms[arm])
    first = float(t[faulted_mask].min())
    span = timeline.span(key)
    if span is not None:
        start, end = min(span[0], first), span[1]
        return sent_mask & (t >= start) & (t < end)
    return sent_mask & (t >= first)
