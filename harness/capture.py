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
(WAL readers see the last committed batch). `columns()` returns numpy arrays for the judge;
bodies are read separately because they are large.

Column order matters for speed: SQLite stores a row as one record and reaching a column
means walking past the ones before it, through overflow pages for large blobs. So every small
column comes first and the bodies come last, which keeps `columns()` fast however big the
bodies are. See docs/capture.md for the schema.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from harness import __version__
from harness.records import ARMS, ArmOutcome, Exchange

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
_READ_CHUNK = 50_000  # rows per fetchmany() in columns()

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
                try:
                    item = q.get(timeout=remaining)
                except queue.Empty:
                    break
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

    def first_started_at(self) -> float | None:
        """The arrival time of the first exchange, None while there is none."""
        row = self._conn.execute("SELECT started_at FROM exchanges ORDER BY seq LIMIT 1").fetchone()
        return row[0] if row else None

    def paired_bodies_since(self, seq: int, arm: str) -> list[tuple[int, bytes | None, bytes | None]]:
        """(seq, incumbent body, `arm` body) of the rows after `seq`: for live views of a run."""
        (arm,) = _check_arms([arm])
        return self._conn.execute(
            f"SELECT seq, incumbent_body, {arm}_body FROM exchanges WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()

    def summary(self) -> dict[str, dict]:
        """Per arm: present, ok (a response with a status and no error), errors by kind,
        status counts. Computed in SQL, so cheap on large captures."""
        out = {}
        for arm in ARMS:
            # One scan per arm: counts by (status, error); everything else derives from them.
            groups = self._conn.execute(
                f"SELECT {arm}_status, {arm}_error, COUNT(*) FROM exchanges "
                f"WHERE {arm}_present IS NOT NULL GROUP BY 1, 2").fetchall()
            errors: dict[str, int] = {}
            statuses: dict[int, int] = {}
            for status, error, n in groups:
                if error is not None:
                    errors[error] = errors.get(error, 0) + n
                if status is not None:
                    statuses[status] = statuses.get(status, 0) + n
            out[arm] = {
                "present": sum(n for _, _, n in groups),
                "ok": sum(n for status, error, n in groups if status is not None and error is None),
                "errors": dict(sorted(errors.items())),
                "statuses": dict(sorted(statuses.items())),
            }
        return out


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
