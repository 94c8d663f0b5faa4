"""The capture store: one SQLite row per `Exchange`, written off the event loop.

Writing. `CaptureWriter.write()` is called on the proxy's hot path, so it only appends the
`Exchange` object to an in-memory queue (no conversion, no I/O, no lock). One background
thread drains the queue in batches (up to `batch_size` rows, or whatever arrived within
`flush_interval` seconds), converts them to row tuples and inserts each batch with
`executemany` inside a single transaction.

Durability. The database runs in WAL mode with `synchronous=NORMAL`, and each batch is one
transaction. A committed batch survives a crash of the process; a crash (kill -9, OOM) loses
at most what is still queued or being inserted at that moment (normally the last batch: the
thread is far faster than the hot path), and never corrupts the file: an interrupted
transaction is simply not part of the database when it is next opened.
(`synchronous=NORMAL` in WAL mode may lose the last commits on a power cut or OS crash, but
still not corrupt the file; that is the usual trade for throughput.) `close()` drains the
queue and loses nothing.

Reading. `CaptureReader` opens the file read-only and works while a writer still has it open
(WAL readers see the last committed batch). `columns()` returns numpy arrays; bodies are read
separately because they are large. The judge reads through `judge_read()`: a seq span at a time
(so worker processes can share a capture), integers and bodies concatenated by SQLite's
group_concat instead of one Python object per value, and `summary()`'s counts on the way.

Column order matters for speed: SQLite stores a row as one record and reaching a column
means walking past the ones before it, through overflow pages for large blobs. So every small
column comes first and the bodies come last, which keeps `columns()` fast however big the
bodies are. See docs/capture.md for the schema.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from harness import __version__
from harness.jsonprefix import structural_cut
from harness.records import ARMS, ERROR_KINDS, ArmOutcome, Exchange

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_READ_CHUNK = 50_000  # rows per fetchmany() in columns()
_AGGREGATE_ROWS = 10_000  # seq span per group_concat query in judge_read(): small strings grow fastest
_PREFIXED = 1 << 42  # added to a body's length in judge_read's query: it came without its prefix

# Small per-arm columns (read by columns()) and the blob; order as stored.
_ARM_SMALL = ("present", "status", "latency_s", "error", "faults")


def _arm_columns(arm: str) -> list[str]:
    return [f"{arm}_{c}" for c in _ARM_SMALL]


# Insert order: everything except seq, which SQLite assigns (insertion order).
_INSERT_COLUMNS = (
    ["request_id", "started_at", "method", "route"]
    + [c for arm in ARMS for c in _arm_columns(arm)]
    + ["request_body"]
    + [f"{arm}_body" for arm in ARMS]
)
_INSERT_SQL = (
    f"INSERT INTO exchanges ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
)


def _schema_sql() -> str:
    arm_cols = []
    for arm in ARMS:
        arm_cols += [
            # 1 when the arm was part of the exchange, NULL when not (so a missing arm is
            # all NULL). Explicit, so even an outcome with every field empty is "present".
            f"{arm}_present INTEGER",
            f"{arm}_status INTEGER",
            f"{arm}_latency_s REAL",
            f"{arm}_error TEXT",
            f"{arm}_faults TEXT",
        ]
    cols = (
        ["seq INTEGER PRIMARY KEY", "request_id TEXT", "started_at REAL", "method TEXT", "route TEXT"]
        + arm_cols
        + ["request_body BLOB"]
        + [f"{arm}_body BLOB" for arm in ARMS]
    )
    return (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);\n"
        f"CREATE TABLE IF NOT EXISTS exchanges (\n  {', '.join(cols)}\n);\n"
        "CREATE INDEX IF NOT EXISTS exchanges_request_id ON exchanges (request_id);\n"
    )


class CaptureError(ValueError):
    """A capture file is missing, unreadable or not a Shadowline capture."""


def _check_arms(arms: Iterable[str]) -> tuple[str, ...]:
    # Arm names are interpolated into SQL, so only the known ones are allowed.
    arms = tuple(arms)
    for arm in arms:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; expected one of {', '.join(ARMS)}")
    return arms


def _to_row(ex: Exchange) -> tuple:
    """Exchange -> row tuple in _INSERT_COLUMNS order (runs in the writer thread)."""
    small: list = [ex.request_id, ex.started_at, ex.method, ex.route]
    bodies: list = [ex.request_body]
    for arm in ARMS:
        out = ex.arms.get(arm)
        if out is None:
            small += [None] * len(_ARM_SMALL)
            bodies.append(None)
        else:
            faults = json.dumps(list(out.faults)) if out.faults else None
            small += [1, out.status, out.latency_s, out.error, faults]
            bodies.append(out.body)
    return tuple(small + bodies)


NAP_S = 0.02  # the writer thread's wait between looks at its queue while a batch fills


class _Flush:
    """Queue marker: commit everything before me, then set the event."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()  # queue marker: drain, commit and end the thread


class CaptureWriter:
    """Batched, non-blocking writer of exchanges to a SQLite capture file.

    `write()` is safe to call from the event loop (it never touches the disk); `flush()` and
    `close()` block and belong to shutdown paths and tests.
    """

    def __init__(self, path: str | Path, *, batch_size: int = 1000, flush_interval: float = 0.2):
        if batch_size < 1 or flush_interval <= 0:
            raise ValueError("batch_size must be >= 1 and flush_interval > 0")
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.written = 0  # rows committed (updated by the writer thread only)
        self.errors = 0  # rows dropped because their conversion or batch failed
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False  # no more write(); set first thing by close()
        self._finished = False  # thread done, stragglers committed, connection closed
        # One connection shared by the writer thread and set_meta(); the lock serialises them
        # so the two never contend for SQLite's write lock.
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per batch.
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":  # e.g. some network filesystems
                log.warning("capture %s: journal_mode is %s, not WAL", self.path, mode)
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_schema_sql())
            existing = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as e:
            if hasattr(self, "_conn"):
                self._conn.close()
            raise CaptureError(f"{self.path}: cannot open as a capture database: {e}") from e
        if existing is not None and existing[0] != SCHEMA_VERSION:
            self._conn.close()
            raise CaptureError(
                f"{self.path}: capture schema_version {existing[0]}, this writer needs {SCHEMA_VERSION}"
            )
        self.set_meta("schema_version", SCHEMA_VERSION)
        self.set_meta("writer", f"shadowline {__version__}")
        self._thread = threading.Thread(target=self._run, name=f"capture-writer:{self.path.name}", daemon=True)
        self._thread.start()

    # -- hot path -------------------------------------------------------------------------

    def write(self, exchange: Exchange) -> None:
        """Queue one exchange for writing. Non-blocking; conversion happens in the thread.

        No lock, to stay cheap: the no-loss guarantee of close() holds for writes that
        returned before close() was called (in practice: call both from the event loop).
        """
        if self._closed:
            raise RuntimeError(f"capture writer for {self.path} is closed")
        self._queue.put(exchange)

    @property
    def pending(self) -> int:
        """Approximate number of exchanges queued but not yet committed (for metrics)."""
        return self._queue.qsize()

    # -- synchronous API ------------------------------------------------------------------

    def set_meta(self, key: str, value: object) -> None:
        """Record a run fact (seed, argv, versions). Non-str values are stored as JSON."""
        text = value if isinstance(value, str) else json.dumps(value)
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, text))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every exchange written before this call is committed."""
        if self._closed:
            return  # close() already drained everything
        marker = _Flush()
        self._queue.put(marker)
        deadline = None if timeout is None else time.monotonic() + timeout
        # Poll so a dead thread or a timeout raises instead of hanging forever.
        while not marker.done.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError(f"capture writer thread for {self.path} is not running")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"capture flush of {self.path} did not finish in {timeout}s")

    def close(self, timeout: float | None = 30.0) -> bool:
        """Drain the queue, commit, stop the thread and close the file. Idempotent.

        Returns True when everything queued was handled (committed or counted in `errors`),
        False when the thread did not finish within `timeout` (the file is then left open
        to the still-running thread, so nothing is corrupted; call close() again to wait more).
        """
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        if self._finished:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("capture writer for %s did not finish within %ss; %d pending",
                      self.path, timeout, self.pending)
            return False
        # A write() racing close() from another thread can land behind the stop marker;
        # commit such stragglers here rather than lose them.
        late = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                item.done.set()
            elif item is not _STOP:
                late.append(item)
        if late:
            self._commit(late)
        self._conn.close()  # last connection: SQLite checkpoints the WAL into the main file
        self._finished = True
        return True

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch, marker = self._collect()
                if batch:
                    self._commit(batch)
                if isinstance(marker, _Flush):
                    marker.done.set()
                elif marker is _STOP:
                    return
        except Exception:  # a bug here must be loud, not a silently dead thread
            log.exception("capture writer thread for %s crashed", self.path)
            raise

    def _collect(self) -> tuple[list[Exchange], object]:
        """Take up to batch_size exchanges, waiting at most flush_interval after the first.

        Stops early at a marker (flush/stop) and returns it, so markers are handled after the
        exchanges queued before them are committed.
        """
        q = self._queue
        first = q.get()
        if first is _STOP or isinstance(first, _Flush):
            return [], first
        batch = [first]
        deadline = time.monotonic() + self.flush_interval
        while len(batch) < self.batch_size:
            try:
                item = q.get_nowait()  # fast path under load: no timeout bookkeeping
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Let exchanges accumulate: waking on each one (a blocking get) costs the
                # serving thread a GIL hand-off per exchange; a nap costs one per NAP_S.
                time.sleep(min(remaining, NAP_S))
                continue
            if item is _STOP or isinstance(item, _Flush):
                return batch, item
            batch.append(item)
        return batch, None

    def _commit(self, batch: list[Exchange]) -> None:
        rows = []
        for ex in batch:
            try:
                rows.append(_to_row(ex))
            except Exception:  # one malformed exchange must not cost the whole batch
                self.errors += 1
                log.exception("capture %s: cannot convert exchange %r", self.path,
                              getattr(ex, "request_id", ex))
        if not rows:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany(_INSERT_SQL, rows)
                self._conn.execute("COMMIT")
                self.written += len(rows)
            except sqlite3.Error:
                self.errors += len(rows)
                log.exception("capture %s: dropped a batch of %d exchanges", self.path, len(rows))
                try:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                except sqlite3.Error:  # e.g. disk I/O error: SQLite rolls back itself on reopen
                    log.exception("capture %s: rollback failed", self.path)


def _open_ro(path: Path) -> sqlite3.Connection:
    """Open an existing capture read-only; CaptureError (naming the file) otherwise."""
    if not path.is_file():
        raise CaptureError(f"{path}: capture file not found")
    uri = path.resolve().as_uri() + "?mode=ro"  # as_uri percent-encodes odd characters
    try:
        conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        raise CaptureError(f"{path}: cannot open capture ({e})") from e
    try:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        conn.execute("SELECT seq FROM exchanges LIMIT 0")
    except sqlite3.Error as e:  # "file is not a database", "no such table", ...
        conn.close()
        raise CaptureError(f"{path}: not a Shadowline capture ({e})") from e
    if version is None:
        conn.close()
        raise CaptureError(f"{path}: not a Shadowline capture (no schema_version in meta)")
    if version[0] != SCHEMA_VERSION:
        conn.close()
        raise CaptureError(f"{path}: capture schema_version {version[0]}, this reader needs {SCHEMA_VERSION}")
    return conn


def _int_list(text: bytes | None) -> np.ndarray:
    """Integers from a group_concat (comma-separated); ValueError if any is not an integer."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    if b"." in text or b"e" in text or b"E" in text:
        raise ValueError("not integers")
    return np.fromstring(text, dtype=np.int64, sep=",")


def _object_array(values: Sequence) -> np.ndarray:
    # Assign into a preallocated array so numpy never tries to nest sequences.
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


class CaptureReader:
    """Read-only view of a capture file, safe while a writer is still appending.

    Each call reads the rows committed at that moment. On a capture that is still being
    written, a later call may see more rows than an earlier one; all are in seq order, so
    the shorter result aligns with the start of the longer one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._conn = _open_ro(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta"))

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]

    def columns(self, arms: Iterable[str] = ARMS) -> dict[str, np.ndarray]:
        """Vectorised columns for the judge, in seq order (bodies excluded).

        NULLs: `<arm>_status` -1, `<arm>_latency_s` NaN, `<arm>_error` None.
        """
        arms = _check_arms(arms)
        select = ["seq", "started_at", "request_id", "method", "route"]
        for arm in arms:
            # NULL handling in SQL is cheaper than per-value Python checks afterwards.
            select += [f"IFNULL({arm}_status, -1)", f"{arm}_latency_s", f"{arm}_error",
                       f"{arm}_present IS NOT NULL"]
        kinds = ["i", "f", "o", "o", "o"] + ["i", "f", "o", "b"] * len(arms)
        dtypes = {"i": np.int64, "f": np.float64, "b": bool}
        parts: list[list[np.ndarray]] = [[] for _ in select]
        cur = self._conn.execute(f"SELECT {', '.join(select)} FROM exchanges ORDER BY seq")
        # Chunks: transposing a cache-sized block at a time is faster than one fetchall()
        # plus a zip(*rows) over a million tuples, and peak memory stays small.
        while chunk := cur.fetchmany(_READ_CHUNK):
            for i, values in enumerate(zip(*chunk)):
                kind = kinds[i]  # float64 conversion turns None (NULL latency) into NaN
                parts[i].append(_object_array(values) if kind == "o" else np.array(values, dtype=dtypes[kind]))
        arrays = [
            np.concatenate(p) if p else np.empty(0, dtype=object if k == "o" else dtypes[k])
            for p, k in zip(parts, kinds)
        ]
        out = dict(zip(["seq", "started_at", "request_id", "method", "route"], arrays))
        for i, arm in enumerate(arms):
            status, latency, error, present = arrays[5 + 4 * i: 9 + 4 * i]
            out[f"{arm}_status"] = status
            out[f"{arm}_latency_s"] = latency
            out[f"{arm}_error"] = error
            out[f"{arm}_present"] = present
        return out

    def seq_bounds(self) -> tuple[int, int]:
        """(first seq, last seq), (1, 0) when empty: `judge_read` reads spans `after < seq <= upto`."""
        # Two statements: SQLite answers MIN or MAX of the rowid from the b-tree, but not both at once.
        lo = self._conn.execute("SELECT MIN(seq) FROM exchanges").fetchone()[0]
        hi = self._conn.execute("SELECT MAX(seq) FROM exchanges").fetchone()[0]
        return (lo, hi) if lo is not None and hi is not None else (1, 0)

    def data_version(self) -> int:
        """Changes whenever another connection (a writer) commits."""
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def rare_arms(self, arms: Iterable[str] = ARMS, *, first: int = 2000) -> tuple[str, ...]:
        """Arms with nothing at all in the first rows: probably not in the capture (`judge_read`'s `rare`)."""
        lo, _ = self.seq_bounds()
        out = []
        for arm in _check_arms(arms):
            found = self._conn.execute(
                f"SELECT count({arm}_present) + count({arm}_status) + count({arm}_latency_s) + count({arm}_error) "
                f"FROM exchanges WHERE seq >= ? AND seq < ?", (lo, lo + first)).fetchone()[0]
            if not found:
                out.append(arm)
        return tuple(out)

    def common_prefix(self, arm: str, *, sample: int = 64, first: int = 5000, least: int = 16) -> bytes:
        """The bytes the first answered BLOB bodies of an arm all start with, cut after the last
        `{ [ , :` outside a JSON string (so no token or string is split); b"" if that is under
        `least` bytes. For `judge_read(prefixes=...)`: any prefix is correct, a long one is cheap."""
        (arm,) = _check_arms([arm])
        lo, _ = self.seq_bounds()
        bodies = [r[0] for r in self._conn.execute(
            f"SELECT {arm}_body FROM exchanges WHERE seq >= ? AND seq < ? AND {arm}_present IS NOT NULL "
            f"AND (({arm}_status >= 200 AND {arm}_status < 300) OR {arm}_status = 0) AND {arm}_error IS NULL "
            f"AND typeof({arm}_body) = 'blob' LIMIT ?", (lo, lo + first, sample))]
        if len(bodies) < 2:
            return b""
        common = os.path.commonprefix(bodies)
        cut = structural_cut(common)
        return bytes(common[:cut]) if cut >= least else b""

    def judge_read(self, arms: Iterable[str] = ARMS, *, bodies: Iterable[str] = (), after: int | None = None,
                   upto: int | None = None, rare: Iterable[str] = (), prefixes: dict[str, bytes] | None = None,
                   faults: bool = False) -> dict:
        """What the judge reads, for the rows with `after < seq <= upto` (default: all), in seq order.

        Keys: `seq`, `started_at`, and per arm in `arms` `<arm>_present`, `<arm>_status`,
        `<arm>_latency_s`, `<arm>_error`: the values `columns()` gives (without request_id,
        method, route), read without a Python object per value where possible (integers and
        error kinds travel as text numbers through group_concat; only the floats come row by row).

        Per arm in `bodies`, its answered bodies (present, HTTP 2xx or gRPC OK (0), no error):
        `<arm>_answered` (bool per row), `<arm>_body_buffer` (the answered bodies, each followed
        by a NUL byte, NULL read as empty), `<arm>_body_lengths` (bytes per answered body) and
        `<arm>_body_values` (None, or the answered bodies as a list when one is not a BLOB).

        With `prefixes` (per arm, say from `common_prefix`), a body that starts with its arm's
        prefix comes without it: `<arm>_body_prefixed` (bool per answered body) says which (the
        bytes to read are fewer; the caller puts the prefix back where it needs the whole body).

        `counts`: `summary()`'s figures for these rows and `arms` (unsorted; see `add_counts`).
        `rare` arms (say, from `rare_arms`) are first only counted, and read only if the count
        finds a value: the same result, cheaper for an arm that is not there.

        With `faults`, per arm in `arms` `<arm>_faulted`: None when no row of the span has a fault
        label for that arm, else (positions in the span (int64), the labels of each as a tuple):
        `fault_ledger`'s entries, read in the same pass (the column is only counted unless set).
        """
        arms = _check_arms(arms)
        if after is None or upto is None:
            lo, hi = self.seq_bounds()
            after = lo - 1 if after is None else after
            upto = hi if upto is None else upto
        out = self._read_small(arms, _check_arms(bodies), after, upto, frozenset(_check_arms(rare)), prefixes or {})
        n = len(out["seq"])
        faulted = out.pop("faulted")
        if faults:
            for arm in arms:
                out[f"{arm}_faulted"] = None
                if faulted.get(arm):  # the column has values in this span: the rows that have one
                    rows = self._conn.execute(f"SELECT seq, {arm}_faults FROM exchanges WHERE seq > ? AND seq <= ? "
                                              f"AND {arm}_faults IS NOT NULL", (after, upto)).fetchall()
                    where = np.searchsorted(out["seq"], np.array([r[0] for r in rows], dtype=np.int64))
                    out[f"{arm}_faulted"] = (where, [tuple(json.loads(labels)) for _, labels in rows])
        # Floats row by row (exact: SQLite's own text for a REAL is not), all in one query.
        read = [arm for arm in arms if arm not in out["absent"]]
        select = ["started_at"] + [f"{arm}_latency_s" for arm in read]
        floats = np.empty((n, len(select)), dtype=np.float64)
        cur = self._conn.execute(f"SELECT {', '.join(select)} FROM exchanges WHERE seq > ? AND seq <= ?",
                                 (after, upto))
        at = 0
        while chunk := cur.fetchmany(_READ_CHUNK):
            floats[at: at + len(chunk)] = chunk  # None -> NaN
            at += len(chunk)
        if at != n:
            raise CaptureError(f"{self.path}: rows changed while being read")
        out["started_at"] = floats[:, 0].copy()
        for arm in arms:
            out[f"{arm}_latency_s"] = floats[:, 1 + read.index(arm)].copy() if arm in read else np.full(n, np.nan)
            del out[f"{arm}_status_null"]
        del out["absent"]
        return out

    def _read_small(self, arms: tuple[str, ...], body_arms: tuple[str, ...], after: int, upto: int,
                    rare: frozenset = frozenset(), prefixes: dict[str, bytes] | None = None) -> dict:
        """judge_read without the floats; with `<arm>_status_null` (the status is NULL),
        `absent` (the rare arms that have no value in these rows) and `faulted` (per arm read,
        how many rows have fault labels)."""
        prefixes = {arm: p for arm, p in (prefixes or {}).items() if p}
        asked = (arms, body_arms)
        probe = [arm for arm in dict.fromkeys(arms + body_arms) if arm in rare]
        arms = tuple(a for a in arms if a not in probe)
        body_arms = tuple(a for a in body_arms if a not in probe)
        whens = " ".join(f"WHEN '{k}' THEN {i + 1}" for i, k in enumerate(ERROR_KINDS))
        other = len(ERROR_KINDS) + 1  # an error that is not a known kind: read as it is
        ints = ["seq"]
        for arm in arms:
            error_code = f"CASE WHEN {arm}_error IS NULL THEN 0 ELSE CASE {arm}_error {whens} ELSE {other} END END"
            ints += [f"IFNULL({arm}_status, -1)",
                     f"({arm}_present IS NOT NULL) + 2 * ({arm}_status IS NULL) + 4 * ({error_code})"]
        blobs = []
        for arm in body_arms:
            answered = (f"{arm}_present IS NOT NULL AND (({arm}_status >= 200 AND {arm}_status < 300) OR {arm}_status = 0) "
                        f"AND {arm}_error IS NULL")
            body, length = f"{arm}_body", f"length({arm}_body)"
            if arm in prefixes:  # (substr and length count bytes in a BLOB)
                n = len(prefixes[arm])
                has = f"substr({arm}_body, 1, {n}) = x'{prefixes[arm].hex()}'"
                body = f"CASE WHEN {has} THEN substr({arm}_body, {n + 1}) ELSE {arm}_body END"
                length = f"CASE WHEN {has} THEN {_PREFIXED} + length({arm}_body) - {n} ELSE length({arm}_body) END"
            ints.append(f"CASE WHEN {answered} THEN (CASE typeof({arm}_body) WHEN 'blob' THEN {length} "
                        f"WHEN 'null' THEN 0 ELSE -2 END) ELSE -1 END")
            blobs.append(f"CASE WHEN {answered} THEN (CASE WHEN typeof({arm}_body) = 'blob' THEN {body} "
                         f"ELSE x'' END) END")
        # (No need to count bodies: with no present arm, no body is an answer.)
        counted = " + ".join(f"count({a}_present) + count({a}_status) + count({a}_latency_s) + count({a}_error)"
                             f" + count({a}_faults)" for a in probe) or "0"
        where = "FROM exchanges WHERE seq > ? AND seq <= ?"
        sql = (f"SELECT {counted}, {', '.join(f'group_concat({c})' for c in ints)}"
               f"{''.join(f', group_concat({b}, x{chr(39)}00{chr(39)})' for b in blobs)}"
               f"{''.join(f', count({a}_faults)' for a in arms)} {where}")
        faulted = dict.fromkeys(arms, 0)
        parts: list[list[np.ndarray]] = [[] for _ in ints]
        buffers: list[list[bytes]] = [[] for _ in body_arms]
        text_factory = self._conn.text_factory
        self._conn.text_factory = bytes  # group_concat of BLOBs is TEXT to SQLite, bytes here
        try:
            # Small spans: group_concat's strings grow by copying, which costs more the longer they get.
            for a in range(after, upto, _AGGREGATE_ROWS):
                b = min(a + _AGGREGATE_ROWS, upto)
                found, *row = self._conn.execute(sql, (a, b)).fetchone()
                if found:  # a "rare" arm is there after all: read everything as usual
                    self._conn.text_factory = text_factory
                    return self._read_small(*asked, after, upto, frozenset(), prefixes)
                for arm, k in zip(arms, row[len(ints) + len(blobs):]):
                    faulted[arm] += k
                if row[0] is None:
                    continue
                try:
                    values = [_int_list(text) for text in row[: len(ints)]]
                except ValueError:  # e.g. a REAL status: converted as columns() does
                    rows = self._conn.execute(f"SELECT {', '.join(ints)} {where}", (a, b)).fetchall()
                    values = [np.array(v, dtype=np.int64) for v in zip(*rows)]
                for i, v in enumerate(values):
                    parts[i].append(v)
                for j, text in enumerate(row[len(ints): len(ints) + len(blobs)]):
                    if text is not None:
                        buffers[j].append(text)
        finally:
            self._conn.text_factory = text_factory
        cat = [np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for p in parts]
        seq = cat[0]
        n = len(seq)
        # Every aggregate sees the rows in the order of the rowid range scan; check it anyway.
        if any(len(c) != n for c in cat) or (n > 1 and not (np.diff(seq) > 0).all()):
            raise CaptureError(f"{self.path}: rows changed while being read")
        out: dict = {"seq": seq, "absent": probe, "counts": {}, "faulted": faulted}
        errors = np.array([None, *ERROR_KINDS, None], dtype=object)
        for i, arm in enumerate(arms):
            status, flags = cat[1 + 2 * i], cat[2 + 2 * i]
            present = (flags & 1).astype(bool)
            status_null = (flags & 2).astype(bool)
            code = flags >> 2
            error = errors[code]
            unusual = np.flatnonzero(code == other)
            if len(unusual):  # read those as they are
                found = dict(self._conn.execute(
                    f"SELECT seq, {arm}_error {where} AND {arm}_error IS NOT NULL "
                    f"AND {arm}_error NOT IN ({', '.join(repr(k) for k in ERROR_KINDS)})", (after, upto)))
                error[unusual] = [found[s] for s in seq[unusual].tolist()]
            out[f"{arm}_present"], out[f"{arm}_status"], out[f"{arm}_status_null"] = present, status, status_null
            out[f"{arm}_error"] = error
            # summary() figures: counted here, where the error kinds are still small numbers.
            kinds = np.bincount(code[present], minlength=other + 1)
            by_kind = {ERROR_KINDS[k - 1]: int(kinds[k]) for k in range(1, other) if kinds[k]}
            for kind in error[unusual[present[unusual]]].tolist():
                by_kind[kind] = by_kind.get(kind, 0) + 1
            values, counts = np.unique(status[present & ~status_null], return_counts=True)
            ok = present & ~status_null & (code == 0)
            out["counts"][arm] = {"present": int(present.sum()), "ok": int(ok.sum()),
                                  "errors": by_kind, "statuses": dict(zip(values.tolist(), counts.tolist()))}
        for arm in probe:  # nothing there: the values columns() gives for all-NULL columns
            if arm in asked[0]:
                out[f"{arm}_present"], out[f"{arm}_status_null"] = np.zeros(n, dtype=bool), np.ones(n, dtype=bool)
                out[f"{arm}_status"] = np.full(n, -1, dtype=np.int64)
                out[f"{arm}_error"] = np.full(n, None, dtype=object)
                out["counts"][arm] = {"present": 0, "ok": 0, "errors": {}, "statuses": {}}
            if arm in asked[1]:
                out[f"{arm}_answered"] = np.zeros(n, dtype=bool)
                out[f"{arm}_body_buffer"], out[f"{arm}_body_lengths"] = b"", np.zeros(0, dtype=np.int64)
                out[f"{arm}_body_values"], out[f"{arm}_body_prefixed"] = None, np.zeros(0, dtype=bool)
        for j, arm in enumerate(body_arms):
            lengths = cat[1 + 2 * len(arms) + j]
            answered = lengths != -1
            out[f"{arm}_answered"] = answered
            lengths = lengths[answered]
            buffer = b"\x00".join(buffers[j]) + b"\x00" if buffers[j] else b""
            out[f"{arm}_body_values"] = None
            prefixed = lengths >= _PREFIXED
            lengths = np.where(prefixed, lengths - _PREFIXED, lengths)
            out[f"{arm}_body_prefixed"] = prefixed
            if (lengths == -2).any():  # a TEXT (or number) body: the caller decodes the values themselves
                rows = self._conn.execute(f"SELECT {arm}_body {where}", (after, upto)).fetchall()
                out[f"{arm}_body_values"] = [r[0] for r, a in zip(rows, answered.tolist()) if a]
                lengths = np.maximum(lengths, 0)
            if len(buffer) != int(lengths.sum()) + len(lengths):
                raise CaptureError(f"{self.path}: rows changed while being read")
            out[f"{arm}_body_buffer"] = buffer
            out[f"{arm}_body_lengths"] = lengths
        return out

    @staticmethod
    def add_counts(parts: Iterable[dict]) -> dict[str, dict]:
        """`judge_read` counts of consecutive spans -> `summary()` (keys sorted)."""
        total: dict[str, dict] = {}
        for part in parts:
            for arm, c in part.items():
                t = total.setdefault(arm, {"present": 0, "ok": 0, "errors": {}, "statuses": {}})
                t["present"] += c["present"]
                t["ok"] += c["ok"]
                for key in ("errors", "statuses"):
                    for k, v in c[key].items():
                        t[key][k] = t[key].get(k, 0) + v
        return {arm: {**t, "errors": dict(sorted(t["errors"].items())), "statuses": dict(sorted(t["statuses"].items()))}
                for arm, t in total.items()}

    def keep_summary(self, summary: dict[str, dict], data_version: int) -> None:
        """Let `summary()` answer with this (computed elsewhere, e.g. by the judge's workers from
        the same rows) while `data_version()` is still `data_version`."""
        self._kept_summary = (data_version, copy.deepcopy(summary))

    def bodies_at(self, arm: str, seqs: Sequence[int]) -> list[bytes | None]:
        """One arm's bodies of the rows with these seqs, in that order (None where absent)."""
        (arm,) = _check_arms([arm])
        found: dict = {}
        seqs = list(seqs)
        for i in range(0, len(seqs), 500):  # well under SQLite's variable limit
            part = seqs[i: i + 500]
            found.update(self._conn.execute(
                f"SELECT seq, {arm}_body FROM exchanges WHERE seq IN ({', '.join('?' * len(part))})", part))
        return [found.get(s) for s in seqs]

    def bodies(self, arm: str) -> list[bytes | None]:
        """One arm's response bodies in seq order (None where absent)."""
        (arm,) = _check_arms([arm])
        return [r[0] for r in self._conn.execute(f"SELECT {arm}_body FROM exchanges ORDER BY seq")]

    def request_bodies(self) -> list[bytes]:
        return [r[0] for r in self._conn.execute("SELECT request_body FROM exchanges ORDER BY seq")]

    def exchanges(self) -> Iterator[Exchange]:
        """Stream the exchanges back as `Exchange` objects, in seq order."""
        cur = self._conn.execute(f"SELECT {', '.join(_INSERT_COLUMNS)} FROM exchanges ORDER BY seq")
        n_small = 4 + len(_ARM_SMALL) * len(ARMS)
        for row in cur:
            arms = {}
            for i, arm in enumerate(ARMS):
                k = 4 + i * len(_ARM_SMALL)
                present, status, latency, error, faults = row[k: k + len(_ARM_SMALL)]
                if present is None:
                    continue
                arms[arm] = ArmOutcome(
                    status=status, latency_s=latency, error=error,
                    body=row[n_small + 1 + i],
                    faults=tuple(json.loads(faults)) if faults else (),
                )
            yield Exchange(request_id=row[0], started_at=row[1], method=row[2], route=row[3],
                           request_body=row[n_small], arms=arms)

    def fault_ledger(self, arm: str, seq: np.ndarray) -> np.ndarray | None:
        """Per row of `seq` (sorted), the tuple of fault labels applied to `arm`'s copy; None
        when no copy of this capture was faulted (so "no ledger" and "no fault" stay apart)."""
        (arm,) = _check_arms([arm])
        rows = self._conn.execute(
            f"SELECT seq, {arm}_faults FROM exchanges WHERE {arm}_faults IS NOT NULL AND seq BETWEEN ? AND ?",
            (int(seq[0]), int(seq[-1])) if len(seq) else (0, -1),
        ).fetchall()
        if not rows and not self.has_fault_plan():
            return None
        ledger = np.empty(len(seq), dtype=object)
        ledger[:] = [()] * len(seq)
        if rows:
            where = np.searchsorted(seq, np.array([r[0] for r in rows], dtype=np.int64))
            for i, (_, labels) in zip(where.tolist(), rows):
                ledger[i] = tuple(json.loads(labels))
        return ledger

    def has_fault_plan(self) -> bool:
        """The capture records a fault plan (meta `faults`), so its fault ledger is meaningful even
        where no copy was faulted."""
        return self._conn.execute("SELECT 1 FROM meta WHERE key = 'faults'").fetchone() is not None

    def first_started_at(self) -> float | None:
        """The arrival time of the first exchange, None while there is none."""
        row = self._conn.execute("SELECT started_at FROM exchanges ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    def routes(self, method: str) -> list[str]:
        """The distinct routes of the exchanges with `method` (e.g. the gRPC methods called)."""
        rows = self._conn.execute("SELECT DISTINCT route FROM exchanges WHERE method = ? ORDER BY route", (method,))
        return [r[0] for r in rows]

    def paired_bodies_since(self, seq: int, arm: str) -> list[tuple[int, bytes | None, bytes | None]]:
        """(seq, incumbent body, `arm` body) of the rows after `seq`: for live views of a run."""
        (arm,) = _check_arms([arm])
        return self._conn.execute(
            f"SELECT seq, incumbent_body, {arm}_body FROM exchanges WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()

    def summary(self) -> dict[str, dict]:
        """Per arm: present, ok (a response with a status and no error), errors by kind,
        status counts. One pass over the rows' small columns, counted with numpy."""
        kept = getattr(self, "_kept_summary", None)
        if kept is not None and kept[0] == self.data_version():
            return copy.deepcopy(kept[1])
        lo, hi = self.seq_bounds()
        counts = self._read_small(ARMS, (), lo - 1, hi, frozenset(self.rare_arms()))["counts"]
        return {arm: self.add_counts([counts])[arm] for arm in ARMS}


def merge(sources: Sequence[str | Path], dest: str | Path) -> int:
    """Merge capture shards (e.g. one per proxy worker) into a new file `dest`.

    Rows are appended shard by shard, each shard in its own seq order; seq is renumbered.
    Meta keys equal in every shard are kept; `merged_from` records each shard's path, row
    count and meta. Returns the number of rows merged.
    """
    dest = Path(dest)
    if dest.exists() and dest.stat().st_size > 0:
        raise CaptureError(f"{dest}: merge destination already exists")
    shard_meta = []
    for src in sources:  # validate every shard before writing anything
        with CaptureReader(src) as r:
            shard_meta.append({"path": str(src), "rows": r.count(), "meta": r.meta()})
    writer = CaptureWriter(dest)
    writer.close()  # creates the schema and meta; rows are copied below in plain SQL
    common = {}
    if shard_meta:
        first = shard_meta[0]["meta"]
        common = {k: v for k, v in first.items()
                  if k not in ("schema_version", "writer") and all(s["meta"].get(k) == v for s in shard_meta)}
    select = f"SELECT {', '.join(_INSERT_COLUMNS)} FROM exchanges ORDER BY seq"
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one transaction: a failed merge leaves no partial rows
        for src in sources:
            with CaptureReader(src) as r:
                conn.executemany(_INSERT_SQL, r._conn.execute(select))  # streamed, not loaded whole
        for k, v in common.items():
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('merged_from', ?)", (json.dumps(shard_meta),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    return sum(s["rows"] for s in shard_meta)
