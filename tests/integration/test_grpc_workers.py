"""`shadowline proxy grpc --workers 2`: one port, two processes, one merged capture.

The proxy runs as a CLI child process, stopped by PID with SIGTERM; the upstreams are in-process
grpc servers (threads). The kernel spreads *connections* over the workers (SO_REUSEPORT), so the
client opens many channels, each with its own connection.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from harness.procs import shadowline_command, spawn
from harness.sampling import Sampler
from proxies.grpc_workers import worker_seed

pytestmark = pytest.mark.timeout(90)

ECHO = "/test.Echo/Reverse"
CONNECTIONS = 32  # the chance that every connection lands on the same one of 2 workers: 2^-31


class _Echo(grpc.GenericRpcHandler):
    def service(self, details):
        return grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])


@pytest.fixture
def upstreams():
    """Incumbent, candidate and baseline echo servers (threads in this process)."""
    servers, targets = [], []
    for _ in range(3):
        server = grpc.server(futures.ThreadPoolExecutor(8))
        server.add_generic_rpc_handlers([_Echo()])
        targets.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        server.start()
        servers.append(server)
    yield targets
    for server in servers:
        server.stop(None)


def start_proxy(children, tmp_path: Path, targets: list[str], *args: str):
    run_dir = tmp_path / "run"
    incumbent, candidate, baseline = targets
    proxy = spawn("proxy", shadowline_command(
        "proxy", "grpc", "--workers", "2", "--listen", "127.0.0.1:0", "--run-dir", str(run_dir),
        "--incumbent", incumbent, "--candidate", candidate, "--baseline", baseline, *args),
        tmp_path / "logs" / "proxy.log")
    children.append(proxy)
    return proxy, run_dir


def open_channels(port: int) -> list[grpc.Channel]:
    # A local subchannel pool per channel: otherwise grpc shares one connection between them.
    return [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(CONNECTIONS)]


def send(channels: list[grpc.Channel], ids: range, tries: int = 1) -> None:
    """One call per id, round robin over the channels, each answered correctly."""
    for i in ids:
        body = b"call-%d" % i
        for attempt in range(tries):  # retries: only after a worker was killed under the channel
            try:
                answer = channels[i % len(channels)].unary_unary(ECHO)(
                    body, timeout=5, metadata=(("x-request-id", f"req-{i}"),), wait_for_ready=attempt > 0)
                break
            except grpc.RpcError:
                if attempt == tries - 1:
                    raise
        assert answer == body[::-1]


def read_capture(run_dir: Path) -> tuple[list[dict], dict[str, str]]:
    conn = sqlite3.connect(run_dir / "capture.db")
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM exchanges ORDER BY seq")]
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()
    return rows, meta


def worker_pids(proxy_pid: int) -> list[int]:
    """The worker processes of the proxy we started (its children; not the resource tracker)."""
    children = []
    for task in Path(f"/proc/{proxy_pid}/task").iterdir():
        children += [int(pid) for pid in (task / "children").read_text().split()]
    return [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]


def test_two_workers_capture_every_call_exactly_once(children, tmp_path, upstreams):
    proxy, run_dir = start_proxy(children, tmp_path, upstreams, "--sample", "0.5", "--seed", "7")
    channels = open_channels(proxy.port)
    try:
        send(channels, range(300))
    finally:
        for channel in channels:
            channel.close()
    assert proxy.stop() == 0

    rows, meta = read_capture(run_dir)
    assert sorted(r["request_id"] for r in rows) == sorted(f"req-{i}" for i in range(300))  # each exactly once
    for row in rows:
        assert row["incumbent_status"] == 0 and row["incumbent_body"] == row["request_body"][::-1]
        mirrored = row["candidate_present"] == 1
        assert (row["baseline_present"] == 1) == mirrored  # one draw per call, for every shadow
        if mirrored:
            assert row["candidate_status"] == 0 and row["baseline_status"] == 0
    assert 0 < sum(r["candidate_present"] == 1 for r in rows) < 300

    # Both workers served; each shard's meta says which worker it was and its sampling seed.
    shards = json.loads(meta["merged_from"])
    assert len(shards) == 2 and sum(s["rows"] for s in shards) == 300
    assert all(s["rows"] > 0 for s in shards), [s["rows"] for s in shards]
    assert json.loads(meta["proxy_settings"])["workers"] == 2 and meta["seed"] == "7"
    assert json.loads(meta["workers"])["failed"] == []
    assert not list(run_dir.glob("capture.worker-*"))  # merged, then removed
    assert json.loads((run_dir / "run.json").read_text())["extra"]["workers"] == 2

    # Reproducible: each worker's k-th call (arrival order) was mirrored by draw k of its own seed.
    offset = 0
    for shard in shards:
        worker = json.loads(shard["meta"]["worker"])
        assert worker["sample_seed"] == worker_seed(7, worker["index"], 2) and worker["plan_seq_stride"] == 2
        own = sorted(rows[offset:offset + shard["rows"]], key=lambda r: r["started_at"])
        sampler = Sampler(0.5, worker["sample_seed"])
        assert [r["candidate_present"] == 1 for r in own] == [sampler.take() for _ in own]
        offset += shard["rows"]


def test_a_dead_worker_leaves_the_other_serving_and_the_exit_non_zero(children, tmp_path, upstreams):
    proxy, run_dir = start_proxy(children, tmp_path, upstreams)
    channels = open_channels(proxy.port)
    try:
        send(channels, range(100))
        victim = worker_pids(proxy.pid)[1]
        os.kill(victim, signal.SIGKILL)  # a grandchild of this test: started by the proxy we started
        send(channels, range(100, 200), tries=3)  # connections to the dead worker reconnect to the live one
    finally:
        for channel in channels:
            channel.close()
    assert proxy.stop() == 4  # ran, but lost a worker: the run is not complete

    rows, meta = read_capture(run_dir)
    ids = [r["request_id"] for r in rows]
    assert len(ids) == len(set(ids))  # never twice
    assert {f"req-{i}" for i in range(100, 200)} <= set(ids)  # everything after the death was served and captured
    workers = json.loads(meta["workers"])
    assert len(workers["failed"]) == 1 and f"pid {victim}" in workers["failed"][0]
    log = (tmp_path / "logs" / "proxy.log").read_text()
    assert f"(pid {victim}) died" in log and "run failed: 1 of 2 grpc proxy workers failed" in log


def test_bad_worker_usage_is_exit_2_before_anything_starts(tmp_path, capsys):
    from harness.cli import EXIT_USAGE, main

    base = ["proxy", "grpc", "--incumbent", "127.0.0.1:1", "--listen", "127.0.0.1:0"]
    assert main([*base, "--workers", "0", "--run-dir", str(tmp_path / "a")]) == EXIT_USAGE
    assert "--workers must be >= 1" in capsys.readouterr().err

    used = tmp_path / "used"
    used.mkdir()
    (used / "capture.db").write_bytes(b"an earlier run")
    assert main([*base, "--workers", "2", "--run-dir", str(used)]) == EXIT_USAGE  # merge never overwrites
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"shadowline: error: {used / 'capture.db'}: already exists")
