"""Capture -> Evidence: decode every arm's responses and pair predictions row by row.

For each arm, its 2xx bodies are decoded through the codec's batch path (templated: bodies
that share a layout are decoded together, see `harness.codecs.template`), giving one row table
per arm. Pairs are then built with numpy alone: an exchange contributes its rows when the
incumbent and the other arm both answered 2xx, both decoded, and both returned the same number
of rows. A 2xx body that does not decode is an outcome, counted as a `protocol` error in the
evidence columns and explained in `notes`, never an exception.

Scores, per row: binary probabilities -> P(class 1); multiclass -> the probability of the
incumbent's label (for both arms, so the two are comparable); no probabilities but a value ->
the value (regression, or a score next to a label); labels only -> NaN. Labels come from the
label output, else the argmax of the probabilities, else -1.

Speed: a capture is read in seq spans, each span by one task (`CaptureReader.judge_read`: the
small columns and the answered bodies, then the decoding). A large capture's tasks run in
worker processes (fork, one per core), a small one's in this process; the tasks are the same,
so the result is too.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np

from harness.capture import CaptureReader
from harness.codecs import Codec, detect_codec
from harness.codecs.base import PredictionBatch
from harness.codecs.detect import SAMPLE
from harness.codecs.template import decode_buffer
from harness.evidence import ArmColumns, Evidence, Pairs
from harness.records import ARMS, BASELINE, CANDIDATE, GRPC_METHOD, INCUMBENT, PROTOCOL

_EXAMPLES = 3  # distinct decode errors quoted per arm in the notes
PARALLEL_MIN = 50_000  # exchanges: fewer are judged in this process (starting workers costs more)
WORKERS = 2  # worker processes for a large capture
_SPAN = 100_000  # seq span per task in workers: small enough to balance, big enough to pay


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
                   arms: Sequence[str] = (CANDIDATE, BASELINE), workers: int | None = None,
                   templated: bool | None = None) -> Evidence:
    """Decode a capture into per-exchange columns and paired predictions.

    `arms` are the arms compared with the incumbent; those that never took part in an exchange
    are left out of `Evidence.arms` and `Evidence.pairs` (and noted). With no codec, it is
    detected from the responses (DecodeError, a ValueError, when they are neither v2 nor v1).
    `workers`: processes to read and decode in (default: `WORKERS` from `PARALLEL_MIN`
    exchanges, else none); `templated`: as for `Codec.decode_responses`. Neither changes the result.
    """
    return EvidenceJob(reader, codec, arms=arms, workers=workers, templated=templated).result()


class EvidenceJob:
    """`build_evidence`, started here and finished by `result()`: with workers, the capture is
    read and decoded while this process does something else meanwhile (its imports, say).

        job = EvidenceJob(reader, codec)   # returns at once; the reader must stay open
        ...                                # other work
        evidence = job.result()            # DecodeError (no codec fits) is raised here
    """

    def __init__(self, reader: CaptureReader, codec: Codec | None = None, *,
                 arms: Sequence[str] = (CANDIDATE, BASELINE), workers: int | None = None,
                 templated: bool | None = None):
        self.reader, self.codec, self.templated = reader, codec, templated
        self.others = [a for a in dict.fromkeys(arms) if a != INCUMBENT]
        self.read = (INCUMBENT, *self.others)
        self.version = reader.data_version()
        lo, hi = reader.seq_bounds()
        if workers is None:
            workers = WORKERS if hi - lo + 1 >= PARALLEL_MIN else 0
        pieces = max(2 * workers, -(-(hi - lo + 1) // _SPAN)) if workers else 1
        edges = np.linspace(lo - 1, hi, pieces + 1).round().astype(np.int64).tolist()
        self.spans = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a] or [(lo - 1, hi)]
        rare = reader.rare_arms(self.read)  # (the baseline, usually) counted first, read only if there
        # What every body of an arm starts with stays in SQLite: fewer bytes to copy and scan.
        self.prefixes = {arm: reader.common_prefix(arm) for arm in self.read if arm not in rare}
        self.tasks = _Tasks(reader, workers)
        # With a codec, one pass reads and decodes everything; without, the columns come first
        # (detection samples the answered bodies of the first arm that has any).
        self.pending = self.tasks.submit(self.spans, self.read, self.read if codec is not None else (), rare,
                                         self.prefixes, codec, templated)

    @property
    def parallel(self) -> bool:
        """The work runs in worker processes (so this one is free until `result()`)."""
        return self.tasks.pool is not None

    def done(self) -> bool:
        """The workers have finished the first round of reading (so `result()` will not wait long)."""
        futures = self.pending[1]
        return futures is None or all(f.done() for f in futures)

    def result(self) -> Evidence:
        try:
            return self._finish()
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers (result() does); pending work is dropped."""
        self.tasks.close()

    def __enter__(self) -> EvidenceJob:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _finish(self) -> Evidence:
        reader, codec, read, others, spans = self.reader, self.codec, self.read, self.others, self.spans
        notes: list[str] = []
        parts = self.tasks.gather(self.pending)
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "counts"
                and not k.endswith(("_answered", "_decoded", "_finite", "_failures", "_flags", "_pairs", "_mismatched",
                                    "_faulted"))}
        # The fault ledger came with the columns (before `parts` is reused for the bodies below).
        faulted = {arm: [p[f"{arm}_faulted"] for p in parts] for arm in read}
        ledger_offsets = np.cumsum([0] + [len(p["seq"]) for p in parts])
        if set(read) == set(ARMS):  # judge() asks for summary() next: the same rows, already counted
            reader.keep_summary(reader.add_counts(p["counts"] for p in parts), self.version)
        for arm in others:
            if not cols[f"{arm}_present"].any():
                notes.append(f"{arm}: not in this capture")
        others = [a for a in others if cols[f"{a}_present"].any()]
        names = [INCUMBENT, *others]
        answered = {arm: _answered(cols, arm) for arm in names}
        n = len(cols["seq"])
        if codec is None:
            first = next((arm for arm in names if answered[arm].any()), None)
            if first is not None:  # detected from the first arm with 2xx answers (normally the incumbent)
                codec = _detect(reader, first, answered[first], cols["seq"], notes)
                wanted = tuple(arm for arm in names if answered[arm].any())
                parts = self.tasks.gather(self.tasks.submit(spans, (), wanted, (), self.prefixes, codec,
                                                            self.templated))
        spans_ok = all(np.array_equal(np.concatenate([p[f"{arm}_answered"] for p in parts]), answered[arm])
                       for arm in names if answered[arm].any())
        if not spans_ok:  # odd values (a REAL status, say) that SQL and numpy compare differently
            return _evidence_by_arm(reader, codec, cols, names, others, answered, notes)
        decoded, finite, failures, flags = {}, {}, {}, {}
        for arm in names:
            if answered[arm].any():
                decoded[arm] = np.concatenate([p[f"{arm}_decoded"] for p in parts])
                finite[arm] = np.concatenate([p[f"{arm}_finite"] for p in parts])
                failures[arm] = Counter(m for p in parts for m in p[f"{arm}_failures"])
                flags[arm] = tuple(any(p[f"{arm}_flags"][i] for p in parts) for i in (0, 1))
            else:
                decoded[arm], failures[arm], flags[arm] = np.zeros(n, dtype=bool), Counter(), (False, False)
                finite[arm] = decoded[arm]
        task = _task_of([flags[arm] for arm in names])
        pairs, mismatched = {}, {}
        offsets = np.cumsum([0] + [len(p["seq"]) for p in parts])
        for arm in others:
            span_pairs = [p[f"{arm}_pairs"] for p in parts] if answered[arm].any() else []
            pairs[arm] = _joined_pairs(span_pairs, offsets, regression=task == "regression")
            mismatched[arm] = sum(p[f"{arm}_mismatched"] for p in parts) if answered[arm].any() else 0
        ledger = {arm: _ledger(reader, faulted[arm], ledger_offsets) for arm in names}
        return _assemble(cols, names, others, answered, decoded, finite, ledger, failures, pairs, mismatched, task,
                         codec, notes)


def _ledger(reader: CaptureReader, spans: list, offsets: np.ndarray) -> np.ndarray | None:
    """`CaptureReader.fault_ledger` of the whole capture from the spans' `<arm>_faulted`."""
    if all(s is None for s in spans) and not reader.has_fault_plan():
        return None
    ledger = np.empty(int(offsets[-1]), dtype=object)
    ledger[:] = [()] * len(ledger)
    for span, base in zip(spans, offsets.tolist()):
        if span is not None:
            for i, labels in zip((span[0] + base).tolist(), span[1]):
                ledger[i] = labels
    return ledger


def _assemble(cols, names, others, answered, decoded, finite, ledger, failures, pairs, mismatched, task, codec,
              notes) -> Evidence:
    for arm in names:
        if failures[arm]:
            total = sum(failures[arm].values())
            examples = "; ".join(f"{msg} ({k}x)" for msg, k in failures[arm].most_common(_EXAMPLES))
            notes.append(f"{arm}: {total} 2xx responses not decodable as {codec.name} "
                         f"(counted as protocol errors): {examples}")
    if codec is None:
        notes.append("no codec: no arm answered 2xx, so there is nothing to decode")
    evidence_arms = {}
    for arm in names:
        error = cols[f"{arm}_error"]
        undecodable = answered[arm] & ~decoded[arm]
        if undecodable.any():
            error = error.copy()
            error[undecodable] = PROTOCOL
        evidence_arms[arm] = ArmColumns(
            present=cols[f"{arm}_present"], status=cols[f"{arm}_status"], latency_s=cols[f"{arm}_latency_s"],
            error=error, decoded=decoded[arm], faults=ledger[arm], finite=finite[arm])
    for arm in others:
        if mismatched[arm]:
            notes.append(f"{arm}: {mismatched[arm]} exchanges where {arm} and {INCUMBENT} returned different "
                         f"numbers of rows (not paired)")
    return Evidence(started_at=cols["started_at"], arms=evidence_arms, pairs=pairs, task=task,
                    codec=codec.name if codec else "", notes=notes)


def _evidence_by_arm(reader, codec, cols, names, others, answered, notes) -> Evidence:
    """The whole-capture way (every body of an arm in memory at once), for when spans cannot be trusted."""
    n = len(cols["seq"])
    rows, failures = {}, {}
    for arm in names:
        if answered[arm].any():
            rows[arm], failures[arm] = _decode_arm(codec, reader.bodies(arm), answered[arm])
        else:
            rows[arm], failures[arm] = _nothing_decoded(n), Counter()
    task = _task_of([(rows[arm].is_classifier, rows[arm].has_values) for arm in names])
    pairs, mismatched = {}, {}
    for arm in others:
        pairs[arm], mismatched[arm] = _pair(rows[INCUMBENT], rows[arm], regression=task == "regression")
    ledger = {arm: reader.fault_ledger(arm, cols["seq"]) for arm in names}
    return _assemble(cols, names, others, answered, {a: rows[a].decoded for a in names},
                     {a: _finite(rows[a]) for a in names}, ledger, failures, pairs, mismatched, task, codec, notes)


def _joined_pairs(spans: list[Pairs], offsets: np.ndarray, *, regression: bool) -> Pairs:
    """Pairs of consecutive spans as one (exchange indices shifted to the whole capture)."""
    if not spans:
        empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0)
        spans = [Pairs(empty_i, empty_i, empty_i, empty_f, empty_f)]
        offsets = np.zeros(2, dtype=np.int64)
    exchange = np.concatenate([p.exchange + base for p, base in zip(spans, offsets.tolist())])
    label_inc = np.concatenate([p.label_incumbent for p in spans])
    label_other = np.concatenate([p.label_other for p in spans])
    if regression:  # Evidence: labels are -1 for a regression output
        label_inc = np.full(len(exchange), -1, dtype=np.int64)
        label_other = label_inc.copy()
    return Pairs(exchange, label_inc, label_other, np.concatenate([p.score_incumbent for p in spans]),
                 np.concatenate([p.score_other for p in spans]))


# ---------------------------------------------------------------------------------------------
# Tasks: one seq span each, in worker processes or here


def _read_span(source, arms: tuple, bodies: tuple, rare: tuple, prefixes: dict, codec: Codec | None,
               templated: bool | None, after: int, upto: int) -> dict:
    """One span: the judge's columns of `arms`; for `bodies`, their answered bodies decoded
    (per exchange: decoded; the failures; the task flags) and each one's pairs with the incumbent."""
    reader = source if isinstance(source, CaptureReader) else CaptureReader(source)
    try:
        data = reader.judge_read(arms, bodies=bodies, after=after, upto=upto, rare=rare, prefixes=prefixes,
                                 faults=True)
    finally:
        if reader is not source:
            reader.close()
    rows = {}
    for arm in bodies:
        buffer, lengths = data.pop(f"{arm}_body_buffer"), data.pop(f"{arm}_body_lengths")
        values, prefixed = data.pop(f"{arm}_body_values"), data.pop(f"{arm}_body_prefixed")
        answered = data[f"{arm}_answered"]
        if not answered.any():
            rows[arm], errors = _nothing_decoded(len(answered)), {}
        else:
            if values is not None:  # a body that is not a BLOB: the values as they are
                batch = codec.decode_responses(values, templated=templated)
            else:
                batch = decode_buffer(codec, buffer, lengths, templated=templated, prefix=prefixes.get(arm, b""),
                                      prefixed=prefixed)
            rows[arm], errors = _arm_rows(answered, batch)
        data[f"{arm}_decoded"] = rows[arm].decoded
        data[f"{arm}_finite"] = _finite(rows[arm])
        data[f"{arm}_failures"] = list(errors.values())
        data[f"{arm}_flags"] = (rows[arm].is_classifier, rows[arm].has_values)
    if bodies:
        incumbent = rows.get(INCUMBENT) or _nothing_decoded(len(data["seq"]))
        for arm in bodies:
            if arm != INCUMBENT:
                data[f"{arm}_pairs"], data[f"{arm}_mismatched"] = _pair(incumbent, rows[arm], regression=False)
    return data


class _Tasks:
    """Runs `_read_span` over spans: in a pool of forked workers, or here (when asked for)."""

    def __init__(self, reader: CaptureReader, workers: int):
        self.reader = reader
        self.pool = None
        if workers > 0 and "fork" in multiprocessing.get_all_start_methods():
            # fork: the workers start in milliseconds with everything imported; each opens its
            # own read-only connection (SQLite connections must not cross a fork).
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))

    def submit(self, spans: list, arms: tuple, bodies: tuple, rare: tuple, prefixes: dict, codec, templated
               ) -> tuple:
        args = [(arms, bodies, rare, prefixes, codec, templated, a, b) for a, b in spans]
        futures = None
        if self.pool is not None:
            try:
                futures = [self.pool.submit(_read_span, str(self.reader.path), *x) for x in args]
            except BrokenProcessPool:
                self.close()
        return args, futures

    def gather(self, pending: tuple) -> list[dict]:
        args, futures = pending
        if futures is not None:
            try:
                return [f.result() for f in futures]
            except BrokenProcessPool:  # a worker died (killed, out of memory): carry on here
                self.close()
        return [_read_span(self.reader, *x) for x in args]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _arm_rows(answered: np.ndarray, batch: PredictionBatch) -> tuple[_ArmRows, dict]:
    """Per-exchange rows from the batch of the answered exchanges' bodies (in order), and its errors."""
    n = len(answered)
    idx = np.flatnonzero(answered)
    decoded = np.zeros(n, dtype=bool)
    rows = np.zeros(n, dtype=np.int64)
    start = np.zeros(n, dtype=np.int64)
    decoded[idx] = batch.decoded
    rows[idx] = batch.rows
    start[idx] = batch.offsets[:-1]
    return _row_table(batch, decoded, rows, start), batch.errors


def _answered(cols: dict, arm: str) -> np.ndarray:
    """A complete 2xx response: the only kind worth decoding."""
    status = cols[f"{arm}_status"]
    ok = ((status >= 200) & (status < 300)) | (status == 0)  # HTTP 2xx, or gRPC OK (code 0)
    return cols[f"{arm}_present"] & ok & np.equal(cols[f"{arm}_error"], None)


def _detect(reader: CaptureReader, arm: str, answered: np.ndarray, seq: np.ndarray, notes: list[str]) -> Codec:
    """The codec from a spread sample of one arm's 2xx bodies; DecodeError when unrecognisable."""
    idx = np.flatnonzero(answered)
    idx = idx[:: max(1, len(idx) // SAMPLE)]  # spread over the run, not just its first seconds
    codec, reason = detect_codec((), reader.bodies_at(arm, seq[idx].tolist()), grpc_routes=reader.routes(GRPC_METHOD))
    notes.append(f"codec detected from the {arm}'s responses: {reason}")
    return codec


def _decode_arm(codec: Codec, bodies: list, answered: np.ndarray) -> tuple[_ArmRows, Counter]:
    """Decoded rows from every body of an arm (the way round when `judge_read` cannot be used)."""
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


def _finite(arm: _ArmRows) -> np.ndarray:
    """Per exchange: decoded, and every output value in it finite (labels always are)."""
    k = arm.n_classes
    probabilities_ok = np.all(np.isfinite(arm.probabilities) | (np.arange(arm.probabilities.shape[1]) >= k[:, None]), axis=1)
    row_ok = probabilities_ok & (~arm.has_value | np.isfinite(arm.value))
    bad_before = np.concatenate(([0], np.cumsum(~row_ok)))  # bad table rows before each row
    end = arm.start + arm.rows
    bad = np.where(arm.decoded, bad_before[np.minimum(end, len(row_ok))] - bad_before[np.minimum(arm.start, len(row_ok))], 0)
    return arm.decoded & (bad == 0)


def _task_of(flags: list[tuple[bool, bool]]) -> str:
    """Regression when the outputs are values with no label or probabilities (the incumbent
    decides; another arm only when the incumbent decoded nothing). `flags`: per arm in order,
    (some body had a label or probabilities, some body had a value)."""
    for is_classifier, has_values in flags:
        if is_classifier:
            return "classification"
        if has_values:
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

