"""Capture -> Evidence: decode every arm's responses and pair predictions row by row.

For each arm, the 2xx bodies are decoded once per distinct body (responses repeat: a label-only
model answers a handful of distinct bodies) through the codec's batch path, giving one row
table per arm. Pairs are then built with numpy alone: an exchange contributes its rows when
the incumbent and the other arm both answered 2xx, both decoded, and both returned the same
number of rows. A 2xx body that does not decode is an outcome, counted as a `protocol` error
in the evidence columns and explained in `notes`, never an exception.

Scores, per row: binary probabilities -> P(class 1); multiclass -> the probability of the
incumbent's label (for both arms, so the two are comparable); no probabilities but a value ->
the value (regression, or a score next to a label); labels only -> NaN. Labels come from the
label output, else the argmax of the probabilities, else -1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.capture import CaptureReader
from harness.codecs import Codec, detect_codec
from harness.codecs.base import PredictionBatch
from harness.codecs.detect import SAMPLE
from harness.evidence import ArmColumns, Evidence, Pairs
from harness.records import BASELINE, CANDIDATE, INCUMBENT, PROTOCOL

_EXAMPLES = 3  # distinct decode errors quoted per arm in the notes


@dataclass(frozen=True)
class _ArmRows:
    """One arm's decoded predictions: per exchange where its rows start, and the row table."""

    decoded: np.ndarray  # bool (n_exchanges,)
    rows: np.ndarray  # int64 (n_exchanges,): rows per exchange, 0 where not decoded
    start: np.ndarray  # int64 (n_exchanges,): first row in the tables below
    label: np.ndarray  # int64 (table rows,): label output, else argmax, else -1
    n_classes: np.ndarray  # int64 (table rows,): probability columns, 0 when none
    probabilities: np.ndarray  # float64 (table rows, max k)
    value: np.ndarray  # float64 (table rows,): NaN when none
    has_value: np.ndarray  # bool (table rows,)
    is_classifier: bool  # some decoded body had a label or probabilities
    has_values: bool  # some decoded body had a value


def build_evidence(reader: CaptureReader, codec: Codec | None = None, *,
                   arms: Sequence[str] = (CANDIDATE, BASELINE)) -> Evidence:
    """Decode a capture into per-exchange columns and paired predictions.

    `arms` are the arms compared with the incumbent; those that never took part in an exchange
    are left out of `Evidence.arms` and `Evidence.pairs` (and noted). With no codec, it is
    detected from the responses (DecodeError, a ValueError, when they are neither v2 nor v1).
    """
    others = [a for a in dict.fromkeys(arms) if a != INCUMBENT]
    cols = reader.columns((INCUMBENT, *others))
    notes: list[str] = []
    for arm in others:
        if not cols[f"{arm}_present"].any():
            notes.append(f"{arm}: not in this capture")
    others = [a for a in others if cols[f"{a}_present"].any()]
    names = [INCUMBENT, *others]

    answered = {arm: _answered(cols, arm) for arm in names}
    n = len(cols["seq"])
    rows: dict[str, _ArmRows] = {}
    for arm in names:  # one arm's bodies in memory at a time: they are the bulk of a capture
        if not answered[arm].any():
            rows[arm] = _nothing_decoded(n)
            continue
        bodies = reader.bodies(arm)
        if codec is None:  # detected from the first arm with 2xx answers (normally the incumbent)
            codec = _detect(arm, answered[arm], bodies, notes)
        rows[arm], failures = _decode_arm(codec, bodies, answered[arm])
        del bodies
        if failures:
            total = sum(failures.values())
            examples = "; ".join(f"{msg} ({k}x)" for msg, k in failures.most_common(_EXAMPLES))
            notes.append(f"{arm}: {total} 2xx responses not decodable as {codec.name} "
                         f"(counted as protocol errors): {examples}")
    if codec is None:
        notes.append("no codec: no arm answered 2xx, so there is nothing to decode")

    evidence_arms = {}
    for arm in names:
        error = cols[f"{arm}_error"]
        undecodable = answered[arm] & ~rows[arm].decoded
        if undecodable.any():
            error = error.copy()
            error[undecodable] = PROTOCOL
        evidence_arms[arm] = ArmColumns(
            present=cols[f"{arm}_present"], status=cols[f"{arm}_status"], latency_s=cols[f"{arm}_latency_s"],
            error=error, decoded=rows[arm].decoded)

    task = _task(rows, names)
    pairs = {}
    for arm in others:
        pairs[arm], mismatched = _pair(rows[INCUMBENT], rows[arm], regression=task == "regression")
        if mismatched:
            notes.append(f"{arm}: {mismatched} exchanges where {arm} and {INCUMBENT} returned different "
                         f"numbers of rows (not paired)")
    return Evidence(started_at=cols["started_at"], arms=evidence_arms, pairs=pairs, task=task,
                    codec=codec.name if codec else "", notes=notes)


def _answered(cols: dict, arm: str) -> np.ndarray:
    """A complete 2xx response: the only kind worth decoding."""
    status = cols[f"{arm}_status"]
    return cols[f"{arm}_present"] & (status >= 200) & (status < 300) & np.equal(cols[f"{arm}_error"], None)


def _detect(arm: str, answered: np.ndarray, bodies: list, notes: list[str]) -> Codec:
    """The codec from a spread sample of one arm's 2xx bodies; DecodeError when unrecognisable."""
    idx = np.flatnonzero(answered)
    idx = idx[:: max(1, len(idx) // SAMPLE)]  # spread over the run, not just its first seconds
    codec, reason = detect_codec((), [bodies[i] for i in idx.tolist()])
    notes.append(f"codec detected from the {arm}'s responses: {reason}")
    return codec


def _decode_arm(codec: Codec, bodies: list, answered: np.ndarray) -> tuple[_ArmRows, Counter]:
    n = len(answered)
    idx = np.flatnonzero(answered)
    distinct: dict = {}
    # Index of each answered body among the distinct ones (setdefault inserts the next index).
    which = [distinct.setdefault(bodies[i], len(distinct)) for i in idx.tolist()]
    batch = codec.decode_responses(list(distinct))
    body_of = np.full(n, -1, dtype=np.int64)
    body_of[idx] = which

    decoded = np.zeros(n, dtype=bool)
    rows = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    decoded[idx] = batch.decoded[body_of[idx]]
    rows[idx] = batch.rows[body_of[idx]]
    start[idx] = batch.offsets[body_of[idx]]

    failures: Counter = Counter()
    if batch.errors:
        uses = np.bincount(np.asarray(which, dtype=np.int64), minlength=len(batch))
        for i, message in batch.errors.items():
            failures[message] += int(uses[i])
    return _row_table(batch, decoded, rows, start), failures


def _row_table(batch: PredictionBatch, decoded, rows, start) -> _ArmRows:
    owner = np.repeat(np.arange(len(batch)), batch.rows)  # body of each table row
    n_classes = batch.n_classes[owner]
    probabilities = batch.probabilities
    label = np.full(len(owner), -1, dtype=np.int64)
    if probabilities.shape[1]:
        finite = np.where(np.isnan(probabilities), -np.inf, probabilities)
        from_argmax = (n_classes > 0) & np.isfinite(finite).any(axis=1)
        label[from_argmax] = finite[from_argmax].argmax(axis=1)
    has_labels = batch.has_labels[owner]
    label[has_labels] = batch.labels[has_labels]
    ok = batch.decoded
    return _ArmRows(
        decoded=decoded, rows=rows, start=start, label=label, n_classes=n_classes,
        probabilities=probabilities, value=batch.values, has_value=batch.has_values[owner],
        is_classifier=bool((batch.has_labels | (batch.n_classes > 0))[ok].any()),
        has_values=bool(batch.has_values[ok].any()))


def _nothing_decoded(n: int) -> _ArmRows:
    zeros = np.zeros(n, dtype=np.int64)
    return _ArmRows(np.zeros(n, dtype=bool), zeros, zeros, np.empty(0, np.int64), np.empty(0, np.int64),
                    np.empty((0, 0)), np.empty(0), np.empty(0, bool), False, False)


def _task(rows: dict[str, _ArmRows], names: list[str]) -> str:
    """Regression when the outputs are values with no label or probabilities (the incumbent
    decides; another arm only when the incumbent decoded nothing)."""
    for arm in names:
        r = rows[arm]
        if r.is_classifier:
            return "classification"
        if r.has_values:
            return "regression"
    return "classification"


def _pair(inc: _ArmRows, other: _ArmRows, *, regression: bool) -> tuple[Pairs, int]:
    both = inc.decoded & other.decoded
    same = inc.rows == other.rows
    mismatched = int((both & ~same).sum())
    ex = np.flatnonzero(both & same & (inc.rows > 0))
    counts = inc.rows[ex]
    total = int(counts.sum())
    exchange = np.repeat(ex, counts)
    position = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    row_inc = np.repeat(inc.start[ex], counts) + position
    row_other = np.repeat(other.start[ex], counts) + position
    label_inc = inc.label[row_inc]
    label_other = other.label[row_other]
    score_inc = _score(inc, row_inc, label_inc)
    score_other = _score(other, row_other, label_inc)
    if regression:  # Evidence: labels are -1 for a regression output
        label_inc = np.full(total, -1, dtype=np.int64)
        label_other = label_inc.copy()
    return Pairs(exchange, label_inc, label_other, score_inc, score_other), mismatched


def _score(arm: _ArmRows, rows: np.ndarray, reference_label: np.ndarray) -> np.ndarray:
    """P(class 1) for binary, P(reference label) for multiclass, else the value (NaN if none)."""
    score = np.full(len(rows), np.nan)
    k = arm.n_classes[rows]
    if arm.probabilities.shape[1]:  # zero columns when no body had probabilities
        binary = k == 2
        score[binary] = arm.probabilities[rows[binary], 1]
        multi = np.flatnonzero((k > 2) & (reference_label >= 0) & (reference_label < k))
        score[multi] = arm.probabilities[rows[multi], reference_label[multi]]
    valued = (k == 0) & arm.has_value[rows]
    score[valued] = arm.value[rows[valued]]
    return score

