"""Capture store: real SQLite files in tmp_path."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness.capture import SCHEMA_VERSION, CaptureError, CaptureReader, CaptureWriter, merge
from harness.records import ARMS, ERROR_KINDS, SHED, TIMEOUT, ArmOutcome, Exchange

REPO = Path(__file__).resolve().parents[2]

# Outcomes covering every shape an arm can take.
OUTCOMES = [
    ArmOutcome(status=200, latency_s=0.012, body=b'{"predictions": [1]}'),
    ArmOutcome(status=503, latency_s=0.5, body=b"overloaded"),
    ArmOutcome(status=200, latency_s=0.02, body=bytes(range(256)) * 3, faults=("nan", "latency")),
    ArmOutcome(status=200, latency_s=0.0, body=b""),  # empty body is not a missing body
    ArmOutcome(error=SHED),  # no status, no latency
    ArmOutcome(error=TIMEOUT, latency_s=1.0, faults=("hang",)),
    ArmOutcome(status=200, latency_s=0.3, body=b'{"pred', error="protocol"),  # truncated
    *[ArmOutcome(error=kind, latency_s=0.1) for kind in ERROR_KINDS],
    ArmOutcome(),  # every field empty: still a present arm
]


def all_combinations() -> list[Exchange]:
    """Every subset of arms (including none), cycling through the outcome shapes."""
    exchanges = []
    shapes = itertools.cycle(OUTCOMES)
    for n in range(len(ARMS) + 1):
        for subset in itertools.combinations(ARMS, n):
            for _ in range(len(OUTCOMES)):
                i = len(exchanges)
                exchanges.append(Exchange(
                    request_id=f"req-{i}",
                    started_at=1_700_000_000.0 + i * 0.001,
                    method="POST" if i % 2 else "GET",
                    route=f"/v2/models/m/infer?i={i}",
                    request_body=bytes([i % 256, 0, 255]) + b"\x00binary",
                    arms={arm: next(shapes) for arm in subset},
                ))
    return exchanges


def write_all(path: Path, exchanges, **kw) -> CaptureWriter:
    w = CaptureWriter(path, **kw)
    for ex in exchanges:
        w.write(ex)
    return w


def test_round_trip_all_arm_combinations(tmp_path):
    path = tmp_path / "capture.db"
    exchanges = all_combinations()
    w = write_all(path, exchanges, batch_size=7)  # several batches
    assert w.close() is True
    assert (w.written, w.errors) == (len(exchanges), 0)
    with CaptureReader(path) as r:
        back = list(r.exchanges())
    assert back == exchanges  # dataclass equality: every field, every arm, bytes exact


def test_missing_arm_is_all_null_in_sql(tmp_path):
    path = tmp_path / "c.db"
    ex = Exchange("r", 1.0, "POST", "/", b"x", {"incumbent": ArmOutcome(status=200, latency_s=0.1)})
    with CaptureWriter(path) as w:
        w.write(ex)
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM exchanges").fetchone()
    conn.close()
    for arm in ("candidate", "baseline"):
        assert all(row[k] is None for k in row.keys() if k.startswith(arm + "_"))
    assert row["incumbent_present"] == 1 and row["incumbent_faults"] is None
    assert row["incumbent_error"] is None and row["incumbent_body"] is None


def test_columns_dtypes_and_nulls(tmp_path):
    path = tmp_path / "c.db"
    exchanges = [
        Exchange("a", 10.0, "POST", "/p", b"", {
            "incumbent": ArmOutcome(status=200, latency_s=0.25),
            "candidate": ArmOutcome(error=SHED),
        }),
        Exchange("b", 11.5, "GET", "/q", b"", {
            "incumbent": ArmOutcome(status=500, latency_s=0.5),
            "candidate": ArmOutcome(error=TIMEOUT, latency_s=2.0),
            "baseline": ArmOutcome(status=200, latency_s=0.1),
        }),
    ]
    with write_all(path, exchanges):
        pass
    with CaptureReader(path) as r:
        cols = r.columns()
    expected_keys = {"seq", "started_at", "request_id", "method", "route"} | {
        f"{arm}_{c}" for arm in ARMS for c in ("status", "latency_s", "error", "present")
    }
    assert set(cols) == expected_keys
    assert cols["seq"].dtype == np.int64 and cols["seq"].tolist() == [1, 2]
    assert cols["started_at"].dtype == np.float64 and cols["started_at"].tolist() == [10.0, 11.5]
    assert cols["request_id"].dtype == object and cols["request_id"].tolist() == ["a", "b"]
    assert cols["method"].tolist() == ["POST", "GET"] and cols["route"].tolist() == ["/p", "/q"]
    assert cols["incumbent_status"].dtype == np.int64
    assert cols["incumbent_status"].tolist() == [200, 500]
    assert cols["candidate_status"].tolist() == [-1, -1]  # NULL -> -1
    assert cols["baseline_status"].tolist() == [-1, 200]
    lat = cols["candidate_latency_s"]
    assert lat.dtype == np.float64 and np.isnan(lat[0]) and lat[1] == 2.0  # NULL -> NaN
    assert cols["candidate_error"].dtype == object
    assert cols["candidate_error"].tolist() == [SHED, TIMEOUT]
    assert cols["incumbent_error"].tolist() == [None, None]
    assert cols["baseline_present"].dtype == bool
    assert cols["baseline_present"].tolist() == [False, True]
    assert cols["candidate_present"].tolist() == [True, True]
    assert np.isnan(cols["baseline_latency_s"][0])


def test_columns_across_read_chunks(tmp_path, monkeypatch):
    import harness.capture

    monkeypatch.setattr(harness.capture, "_READ_CHUNK", 7)  # many chunks, a partial last one
    path = tmp_path / "c.db"
    exchanges = all_combinations()
    with write_all(path, exchanges):
        pass
    with CaptureReader(path) as r:
        cols = r.columns()
    assert cols["request_id"].tolist() == [ex.request_id for ex in exchanges]
    for arm in ARMS:
        outs = [ex.arms.get(arm) for ex in exchanges]
        assert cols[f"{arm}_present"].tolist() == [o is not None for o in outs]
        assert cols[f"{arm}_status"].tolist() == [-1 if o is None or o.status is None else o.status
                                                  for o in outs]
        assert cols[f"{arm}_error"].tolist() == [None if o is None else o.error for o in outs]
        lat = cols[f"{arm}_latency_s"]
        expected = np.array([np.nan if o is None or o.latency_s is None else o.latency_s for o in outs])
        np.testing.assert_array_equal(lat, expected)  # NaN positions must match too


def test_columns_subset_empty_and_bad_arm(tmp_path):
    path = tmp_path / "c.db"
    CaptureWriter(path).close()
    with CaptureReader(path) as r:
        cols = r.columns(arms=["candidate"])
        assert r.count() == 0
        assert "incumbent_status" not in cols and "candidate_present" in cols
        assert all(len(v) == 0 for v in cols.values())
        assert cols["candidate_status"].dtype == np.int64
        assert cols["candidate_latency_s"].dtype == np.float64
        assert cols["candidate_present"].dtype == bool
        with pytest.raises(ValueError, match="unknown arm"):
            r.columns(arms=["shadow; DROP TABLE exchanges"])
        with pytest.raises(ValueError, match="unknown arm"):
            r.bodies("nope")


def test_bodies_request_bodies_summary_and_meta(tmp_path):
    path = tmp_path / "c.db"
    exchanges = all_combinations()
    with write_all(path, exchanges) as w:
        w.set_meta("seed", 1234)
        w.set_meta("argv", ["shadowline", "run", "x.yaml"])
        w.set_meta("note", "plain text")
    with CaptureReader(path) as r:
        assert r.request_bodies() == [ex.request_body for ex in exchanges]
        for arm in ARMS:
            expected = [ex.arms[arm].body if arm in ex.arms else None for ex in exchanges]
            assert r.bodies(arm) == expected
        meta = r.meta()
        summary = r.summary()
    assert meta["schema_version"] == SCHEMA_VERSION
    assert meta["seed"] == "1234" and meta["argv"] == '["shadowline", "run", "x.yaml"]'
    assert meta["note"] == "plain text"
    for arm in ARMS:
        outs = [ex.arms[arm] for ex in exchanges if arm in ex.arms]
        s = summary[arm]
        assert s["present"] == len(outs)
        assert s["ok"] == sum(o.ok for o in outs)
        assert s["errors"] == {k: sum(o.error == k for o in outs) for k in ERROR_KINDS
                               if any(o.error == k for o in outs)}
        assert sum(s["statuses"].values()) == sum(o.status is not None for o in outs)
        assert s["statuses"][200] == sum(o.status == 200 for o in outs)


def test_many_writes_then_close_loses_nothing(tmp_path):
    path = tmp_path / "c.db"
    n = 20_000
    w = CaptureWriter(path, batch_size=500, flush_interval=0.05)
    for i in range(n):
        w.write(Exchange(f"r{i}", float(i), "POST", "/", b"{}",
                         {"incumbent": ArmOutcome(status=200, latency_s=0.001, body=b"1")}))
    assert w.close(timeout=30) is True
    assert w.close() is True  # idempotent
    assert (w.written, w.errors) == (n, 0)
    with pytest.raises(RuntimeError, match="closed"):
        w.write(Exchange("late", 0.0, "GET", "/", b""))
    # a clean close checkpoints the WAL into the main file (checked before a read-only
    # reader opens, since such a reader leaves an empty -wal/-shm pair behind)
    assert not (tmp_path / "c.db-wal").exists()
    with CaptureReader(path) as r:
        cols = r.columns(arms=["incumbent"])
    assert len(cols["seq"]) == n
    # seq is insertion order, and insertion order is write() order
    assert cols["request_id"].tolist() == [f"r{i}" for i in range(n)]
    assert (np.diff(cols["seq"]) == 1).all()


def test_every_accepted_write_is_stored_when_close_races_writes(tmp_path):
    import threading

    path = tmp_path / "c.db"
    w = CaptureWriter(path, batch_size=50, flush_interval=0.01)
    accepted = []

    def hammer():
        for i in range(100_000):
            try:
                w.write(Exchange(f"r{i}", float(i), "GET", "/", b""))
            except RuntimeError:  # closed: the write was refused, not silently lost
                return
            accepted.append(i)

    t = threading.Thread(target=hammer)
    t.start()
    time.sleep(0.05)
    assert w.close() is True
    t.join()
    with CaptureReader(path) as r:
        assert r.count() == len(accepted) == w.written


def test_timed_batches_commit_without_flush(tmp_path):
    path = tmp_path / "c.db"
    w = CaptureWriter(path, batch_size=1000, flush_interval=0.05)
    try:
        w.write(Exchange("only", 1.0, "GET", "/", b""))
        deadline = time.monotonic() + 5
        with CaptureReader(path) as r:
            while r.count() == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.count() == 1  # a lone exchange is committed after flush_interval
    finally:
        w.close()


def test_read_while_writer_open(tmp_path):
    path = tmp_path / "c.db"
    w = CaptureWriter(path, flush_interval=10.0)  # only explicit flushes commit here
    try:
        for i in range(100):
            w.write(Exchange(f"a{i}", float(i), "GET", "/", b""))
        w.flush()
        assert w.written == 100
        with CaptureReader(path) as r:
            assert r.count() == 100
            for i in range(50):
                w.write(Exchange(f"b{i}", float(i), "GET", "/", b""))
            w.flush()
            assert r.count() == 150  # the same reader sees later commits
            assert len(r.columns()["seq"]) == 150
    finally:
        w.close()


def test_unflushed_writer_leaves_flushed_rows_readable(tmp_path):
    path = tmp_path / "c.db"
    w = CaptureWriter(path, batch_size=10_000, flush_interval=60.0)
    for i in range(30):
        w.write(Exchange(f"r{i}", float(i), "GET", "/", b""))
    w.flush()
    for i in range(30, 40):  # queued, not committed: the "last unflushed batch"
        w.write(Exchange(f"r{i}", float(i), "GET", "/", b""))
    with CaptureReader(path) as r:
        assert r.count() == 30
        assert [e.request_id for e in r.exchanges()] == [f"r{i}" for i in range(30)]
    w.close()


def test_killed_writer_process_leaves_readable_file(tmp_path):
    # A real crash: the writing process dies with os._exit (no close, no atexit, no
    # checkpoint) while a batch is still queued.
    path = tmp_path / "c.db"
    script = textwrap.dedent(f"""
        import os
        from harness.capture import CaptureWriter
        from harness.records import ArmOutcome, Exchange
        w = CaptureWriter({str(path)!r}, batch_size=10_000, flush_interval=60.0)
        for i in range(200):
            w.write(Exchange(f"r{{i}}", float(i), "POST", "/", b"\\x00body",
                             {{"candidate": ArmOutcome(status=200, latency_s=0.01, body=b"x")}}))
        w.flush()
        for i in range(200, 250):
            w.write(Exchange(f"r{{i}}", float(i), "POST", "/", b""))
        os._exit(9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 9, proc.stderr.decode()
    assert (tmp_path / "c.db-wal").exists()  # the committed rows live only in the WAL
    with CaptureReader(path) as r:
        assert r.count() == 200  # every flushed row, none of the unflushed
        assert r.bodies("candidate")[-1] == b"x"
        assert r._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # and a new writer can append to it
    with CaptureWriter(path) as w2:
        w2.write(Exchange("after", 0.0, "GET", "/", b""))
    with CaptureReader(path) as r:
        assert r.count() == 201


def test_failing_batch_is_logged_counted_and_thread_survives(tmp_path, caplog):
    path = tmp_path / "c.db"
    good = Exchange("good", 1.0, "GET", "/", b"")
    unbindable = Exchange("bad-bind", 1.0, "GET", "/", ["not", "bytes"])  # sqlite rejects it
    unconvertible = Exchange("bad-arms", 1.0, "GET", "/", b"", arms=None)  # _to_row fails
    w = CaptureWriter(path, batch_size=100, flush_interval=10.0)
    with caplog.at_level(logging.ERROR, logger="harness.capture"):
        w.write(good)
        w.write(unbindable)  # same batch as `good`: the whole batch is dropped
        w.flush()
        assert (w.written, w.errors) == (0, 2)
        w.write(unconvertible)  # only this row is dropped, the batch goes through
        w.write(good)
        w.flush()
        assert (w.written, w.errors) == (1, 3)
    assert "dropped a batch of 2" in caplog.text
    assert "cannot convert exchange" in caplog.text
    assert w.close() is True
    with CaptureReader(path) as r:
        assert [e.request_id for e in r.exchanges()] == ["good"]


def test_missing_file_is_capture_error_naming_path(tmp_path):
    path = tmp_path / "nope.db"
    with pytest.raises(CaptureError, match="nope.db"):
        CaptureReader(path)
    assert not path.exists()  # a reader never creates files
    assert issubclass(CaptureError, ValueError)


def test_garbage_file_is_capture_error_naming_path(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not sqlite at all\n" * 200)
    with pytest.raises(CaptureError, match="garbage.db"):
        CaptureReader(path)
    with pytest.raises(CaptureError, match="garbage.db"):
        CaptureWriter(path)


def test_foreign_sqlite_file_is_capture_error(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(CaptureError, match=r"other\.db.*not a Shadowline capture"):
        CaptureReader(path)


def test_merge_two_shards(tmp_path):
    shards = []
    for s in range(2):
        path = tmp_path / f"shard{s}.db"
        with CaptureWriter(path) as w:
            w.set_meta("seed", "7")
            w.set_meta("worker", str(s))
            for i in range(5 + s):
                w.write(Exchange(f"s{s}-{i}", float(i), "POST", "/", b"\x01",
                                 {"candidate": ArmOutcome(status=200 + s, latency_s=0.1, faults=("f",))}))
        shards.append(path)
    dest = tmp_path / "merged.db"
    assert merge(shards, dest) == 11
    with CaptureReader(dest) as r:
        ids = [e.request_id for e in r.exchanges()]
        cols = r.columns()
        meta = r.meta()
        back = list(r.exchanges())
    assert ids == [f"s0-{i}" for i in range(5)] + [f"s1-{i}" for i in range(6)]
    assert cols["seq"].tolist() == list(range(1, 12))  # renumbered
    assert back[0].arms["candidate"].faults == ("f",)
    assert cols["candidate_status"].tolist() == [200] * 5 + [201] * 6
    assert meta["seed"] == "7"  # same in every shard: kept
    assert "worker" not in meta  # differs between shards: only in merged_from
    assert meta["schema_version"] == SCHEMA_VERSION
    assert '"rows": 6' in meta["merged_from"] and "shard1.db" in meta["merged_from"]
    with pytest.raises(CaptureError, match="merged.db"):
        merge(shards, dest)  # never merges into an existing capture
    with pytest.raises(CaptureError, match="missing.db"):
        merge([shards[0], tmp_path / "missing.db"], tmp_path / "m2.db")
    assert not (tmp_path / "m2.db").exists()  # bad shards are found before anything is written


# ---------------------------------------------------------------------------------------------
# judge_read: columns() without the strings, plus the answered bodies, in spans


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return [(type(x), x) for x in a.tolist()] == [(type(x), x) for x in b.tolist()]
    return np.array_equal(a.view(np.int64), b.view(np.int64)) if a.dtype.kind == "f" else np.array_equal(a, b)


def _odd_capture(path: Path) -> list[Exchange]:
    exchanges = all_combinations() * 3
    with write_all(path, exchanges):
        pass
    conn = sqlite3.connect(path)  # values the writer never makes, but a capture may hold
    conn.execute("UPDATE exchanges SET candidate_status = 250.5 WHERE seq = 40")
    conn.execute("UPDATE exchanges SET incumbent_body = 'a text body' WHERE seq = 41 AND incumbent_status = 200")
    conn.execute("UPDATE exchanges SET baseline_error = 'mystery' WHERE seq = 42")
    conn.execute("UPDATE exchanges SET candidate_body = x'7b00ff7d' WHERE candidate_status = 200")
    conn.commit()
    conn.close()
    return exchanges


@pytest.mark.parametrize("chunk", [3, 10_000])
def test_judge_read_matches_columns_and_bodies(tmp_path, monkeypatch, chunk):
    import harness.capture

    monkeypatch.setattr(harness.capture, "_AGGREGATE_ROWS", chunk)
    path = tmp_path / "c.db"
    _odd_capture(path)
    with CaptureReader(path) as r:
        cols = r.columns()
        lo, hi = r.seq_bounds()
        prefixes = {"incumbent": b'{"predictions": [', "candidate": b"{", "baseline": b"\x00\x01"}
        for rare, prefix in (((), None), (("baseline",), prefixes), (ARMS, prefixes)):
            # rare arms are counted first, then read all the same; prefixes come back below
            parts = [r.judge_read(ARMS, bodies=ARMS, after=a, upto=min(a + 25, hi), rare=rare, prefixes=prefix)
                     for a in range(lo - 1, hi, 25)]
            got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
                   if k != "counts" and not k.endswith(("_buffer", "_lengths", "_values"))}
            for key, value in cols.items():
                if key not in ("request_id", "method", "route"):
                    assert _same_values(got[key], value), key
            for arm in ARMS:
                status = cols[f"{arm}_status"]
                answered = (cols[f"{arm}_present"] & (status >= 200) & (status < 300)
                            & np.equal(cols[f"{arm}_error"], None))
                assert got[f"{arm}_answered"].tolist() == answered.tolist()
                bodies = r.bodies(arm)
                expected = [bodies[i] for i in np.flatnonzero(answered)]
                found = []
                for p in parts:
                    if p[f"{arm}_body_values"] is not None:
                        found += p[f"{arm}_body_values"]
                        continue
                    buf, ends = p[f"{arm}_body_buffer"], np.cumsum(p[f"{arm}_body_lengths"] + 1) - 1
                    pre = (prefix or {}).get(arm, b"")
                    found += [pre + buf[e - n: e] if cut else buf[e - n: e] for e, n, cut in
                              zip(ends.tolist(), p[f"{arm}_body_lengths"].tolist(), p[f"{arm}_body_prefixed"].tolist())]
                    assert not p[f"{arm}_body_prefixed"].any() or pre
                assert [b if b is not None else b"" for b in expected] == [b if b is not None else b"" for b in found]
            assert r.add_counts(p["counts"] for p in parts) == r.summary()


def test_summary_counts_every_arm_and_kind(tmp_path):
    path = tmp_path / "c.db"
    _odd_capture(path)
    with CaptureReader(path) as r:
        expected = {}
        for arm in ARMS:  # the plain SQL way
            groups = r._conn.execute(f"SELECT {arm}_status, {arm}_error, COUNT(*) FROM exchanges "
                                     f"WHERE {arm}_present IS NOT NULL GROUP BY 1, 2").fetchall()
            errors, statuses = {}, {}
            for status, error, n in groups:
                if error is not None:
                    errors[error] = errors.get(error, 0) + n
                if status is not None:
                    statuses[int(status)] = statuses.get(int(status), 0) + n
            expected[arm] = {"present": sum(n for *_, n in groups),
                             "ok": sum(n for s, e, n in groups if s is not None and e is None),
                             "errors": dict(sorted(errors.items())), "statuses": dict(sorted(statuses.items()))}
        assert r.summary() == expected
        assert r.rare_arms() == () and r.seq_bounds() == (1, len(all_combinations()) * 3)


def test_rare_arm_that_turns_up_late_is_read(tmp_path):
    path = tmp_path / "c.db"
    exchanges = [Exchange(f"r{i}", float(i), "POST", "/", b"", {"incumbent": ArmOutcome(200, 0.1, b"{}")})
                 for i in range(3000)]
    exchanges[-1].arms["baseline"] = ArmOutcome(200, 0.2, b'{"predictions":[1]}')
    with write_all(path, exchanges):
        pass
    with CaptureReader(path) as r:
        assert r.rare_arms() == ("candidate", "baseline")
        data = r.judge_read(ARMS, bodies=ARMS, rare=r.rare_arms())
        assert data["baseline_present"].sum() == 1 and data["baseline_latency_s"][-1] == 0.2
        assert data["baseline_answered"][-1] and data["baseline_body_buffer"] == b'{"predictions":[1]}\x00'
        assert not data["candidate_present"].any() and np.isnan(data["candidate_latency_s"]).all()


def test_common_prefix_stops_outside_strings_and_tokens(tmp_path):
    path = tmp_path / "c.db"
    bodies = [b'{"model_name":"d:e,m{o","outputs":[{"data":[%d.5]}]}' % i for i in range(10, 40)]
    exchanges = [Exchange(f"r{i}", float(i), "POST", "/", b"", {"incumbent": ArmOutcome(200, 0.1, b)})
                 for i, b in enumerate(bodies)]
    with write_all(path, exchanges):
        pass
    with CaptureReader(path) as r:
        assert r.common_prefix("incumbent") == b'{"model_name":"d:e,m{o","outputs":[{"data":['
        assert r.common_prefix("incumbent", least=100) == b"" and r.common_prefix("candidate") == b""
