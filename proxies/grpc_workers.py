"""Several worker processes for the gRPC shadow proxy: one port, one capture shard each.

grpc.aio serves about 7k unary calls/s per core, so `shadowline proxy grpc --workers N` runs N
processes. This module is the parent's side (see docs/grpc.md, "Workers"):

- Worker i is a `multiprocessing` 'spawn' process (grpc and fork do not mix: nothing is forked
  after grpc is initialised) running the ordinary single-process proxy, `serve_process`, on the
  same HOST:PORT. grpc sets SO_REUSEPORT on its sockets (`grpc.so_reuseport`, on by default on
  Linux), so the kernel spreads incoming *connections* over the workers. With port 0, worker 0
  binds first and the others bind the port it got.
- Worker i captures to `run_dir/capture.worker-<i>.db`, numbers its calls for the fault plan
  i, i+N, i+2N... (`proxy._seq = i`, `proxy.seq_stride = N`) and draws its sampling from its own
  seed, `worker_seed(seed, i, N)`, recorded in its shard's meta `worker` (so a worker's decisions
  replay from the run's seed alone).
- The ready callback runs once every worker listens.
- On SIGTERM/SIGINT the parent sends SIGTERM to each worker it started (by PID), waits for their
  drain (`drain_timeout` plus time to flush), SIGKILLs one that is still there, and merges the
  shards into `run_dir/capture.db` with `harness.capture.merge` (shard by shard, each in its own
  order; `merged_from` keeps each shard's rows and meta), then deletes the shards.
- A worker that dies (non-zero exit) is logged; the others keep serving the port (the kernel
  stops sending it connections; clients reconnect to a live one) so production traffic is not
  cut. At the end its shard is still merged (all but its last unflushed batch) and the parent
  exits non-zero (ChildFailed: exit 4) so the run is not taken for complete. When every worker
  has died, the parent stops at once, the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SHARD = "capture.worker-{index}.db"
READY_TIMEOUT = 60.0  # seconds for a worker to import, load its TLS files and listen
FLUSH_ALLOWANCE = 15.0  # seconds beyond drain_timeout for a worker to flush its capture and exit
POLL = 0.2  # seconds between the parent's looks at its workers and its stop flag


def worker_seed(seed: int, index: int, count: int) -> int:
    """The sampling seed of worker `index` of `count`: `seed` itself for a single process,
    else a seed derived from (seed, index) by numpy's SeedSequence (independent streams)."""
    if count == 1:
        return seed
    import numpy as np

    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1, np.uint64)[0])


def shard_paths(run_dir: Path, count: int) -> list[Path]:
    return [run_dir / SHARD.format(index=i) for i in range(count)]


# -- the worker process ------------------------------------------------------------------------


def _worker_main(index: int, count: int, settings, listen: tuple[str, int], run_dir: Path,
                 metrics_listen: tuple[str, int] | None, drain_timeout: float, plan, conn,
                 parent_pid: int, log_level: int) -> None:
    """Entry point of worker `index` (a spawned process): serve until SIGTERM, then drain."""
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s [worker {index}]: %(message)s")
    from harness.sampling import Sampler
    from proxies.grpc_proxy import serve_process

    _stop_when_orphaned(parent_pid)
    sample_seed = worker_seed(settings.seed, index, count)

    def setup(proxy, capture) -> None:
        proxy._seq = index  # the fault plan's request numbers: index, index + count, ...
        proxy.seq_stride = count
        proxy.sampler = Sampler(settings.sample, sample_seed)
        capture.set_meta("worker", {"index": index, "workers": count, "pid": os.getpid(),
                                    "sample_seed": sample_seed, "plan_seq_start": index, "plan_seq_stride": count})

    try:
        serve_process(settings, listen=listen, capture_path=run_dir / SHARD.format(index=index), run_dir=run_dir,
                      metrics_listen=metrics_listen, drain_timeout=drain_timeout,
                      on_ready=lambda port: conn.send(("ready", port)), plan=plan, workers=count, setup=setup)
    except Exception as exc:  # one line to the parent, which reports it; no traceback for a bind error
        log.error("worker %d failed: %s", index, exc)
        try:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        sys.exit(4)


def _stop_when_orphaned(parent_pid: int) -> None:
    """A worker whose parent is gone (killed with SIGKILL) drains and exits instead of holding the port."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.error("parent %d is gone: draining and exiting", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


# -- the parent ----------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    port: int | None = None
    seen_exit: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid


class _Stopped(Exception):
    """SIGTERM/SIGINT arrived while the workers were starting."""


def serve_workers(settings, *, listen: tuple[str, int], run_dir: Path, workers: int,
                  metrics_listen: tuple[str, int] | None = None, drain_timeout: float = 10.0,
                  on_ready=None, plan=None, ready_timeout: float = READY_TIMEOUT) -> None:
    """Run `workers` proxy processes on `listen` until SIGTERM/SIGINT; merge their captures.

    Call from the main thread (it installs signal handlers). Raises CaptureError before starting
    anything when `run_dir` already holds a capture or shards, ChildFailed when a worker could not
    start or died during the run (after merging what was captured).
    Metrics: worker i serves them on the metrics port + i (port 0: each picks a free one).
    """
    from harness.capture import CaptureError
    from harness.procs import ChildFailed

    dest = run_dir / "capture.db"
    shards = shard_paths(run_dir, workers)
    for path in (dest, *shards):
        if path.exists() and path.stat().st_size > 0:
            raise CaptureError(f"{path}: already exists; {workers} workers merge their captures into a new "
                               "capture.db (use a new --run-dir)")

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    ctx = multiprocessing.get_context("spawn")
    started: list[_Worker] = []
    failed: list[str] = []
    host, port = listen

    def start(index: int, port: int) -> _Worker:
        receiver, sender = ctx.Pipe(duplex=False)
        metrics = None
        if metrics_listen is not None:
            metrics = (metrics_listen[0], metrics_listen[1] + index if metrics_listen[1] else 0)
        process = ctx.Process(
            target=_worker_main, name=f"grpc-proxy-worker-{index}", daemon=True,
            args=(index, workers, settings, (host, port), run_dir, metrics, drain_timeout, plan, sender,
                  os.getpid(), logging.getLogger().getEffectiveLevel()))
        process.start()
        sender.close()  # the worker holds the only sending end: EOF when it dies
        worker = _Worker(index, process, receiver)
        started.append(worker)
        log.info("worker %d started, pid %d", index, process.pid)
        return worker

    def await_ready(batch: list[_Worker]) -> None:
        deadline = time.monotonic() + ready_timeout
        waiting = {w.conn: w for w in batch}
        while waiting:
            if stop.is_set():
                raise _Stopped
            if time.monotonic() > deadline:
                raise ChildFailed(f"grpc proxy worker {next(iter(waiting.values())).index} did not listen within {ready_timeout:g} s")
            for conn in multiprocessing.connection.wait(list(waiting), timeout=POLL):
                worker = waiting.pop(conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    worker.process.join(5)
                    raise ChildFailed(f"grpc proxy worker {worker.index} (pid {worker.pid}) exited with "
                                      f"{worker.process.exitcode} before listening (see its log above)") from None
                if kind != "ready":
                    raise ChildFailed(f"grpc proxy worker {worker.index}: {value}")
                worker.port = value

    try:
        try:
            # With port 0 the first worker picks the port; the others then share it (SO_REUSEPORT).
            first = [start(0, port)] if port == 0 else [start(i, port) for i in range(workers)]
            await_ready(first)
            port = first[0].port
            await_ready([start(i, port) for i in range(len(first), workers)])
            log.info("%d grpc proxy workers listening on %s:%d (pids %s)", workers, host, port,
                     ", ".join(str(w.pid) for w in started))
            if on_ready is not None:
                on_ready(port)
            failed += _supervise(started, stop)
        except _Stopped:
            log.info("stopped while the workers were starting")
        finally:
            failed += _stop_all(started, drain_timeout + FLUSH_ALLOWANCE)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        for worker in started:
            worker.conn.close()
        _merge(run_dir, [s for s in shards if s.exists()], dest, workers, port, failed)
    if failed:
        raise ChildFailed(f"{len(failed)} of {workers} grpc proxy workers failed ({'; '.join(failed)}); "
                          f"what they captured before is merged into {dest}")


def _supervise(workers: list[_Worker], stop: threading.Event) -> list[str]:
    """Until SIGTERM/SIGINT, or every worker is gone: log each worker that exits by itself."""
    failed: list[str] = []
    while not stop.is_set():
        alive = [w for w in workers if w.process.exitcode is None]
        for worker in workers:
            code = worker.process.exitcode
            if code is None or worker.seen_exit:
                continue
            worker.seen_exit = True
            if code == 0:  # it was sent SIGTERM by someone else and drained: nothing lost
                log.warning("worker %d (pid %d) was stopped by a signal from elsewhere and drained; %d still serving",
                            worker.index, worker.pid, len(alive))
            else:
                failed.append(f"worker {worker.index} (pid {worker.pid}) exited with {code}")
                log.error("worker %d (pid %d) died (exit %s); %d still serving the port; what it had not yet "
                          "written to its capture is lost", worker.index, worker.pid, code, len(alive))
        if not alive:
            log.error("every grpc proxy worker is gone: stopping")
            break
        multiprocessing.connection.wait([w.process.sentinel for w in alive], timeout=POLL)
    return failed


def _stop_all(workers: list[_Worker], timeout: float) -> list[str]:
    """SIGTERM each live worker (by PID), wait for their drain, SIGKILL the ones still there."""
    for worker in workers:
        if worker.process.exitcode is None:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    failed = []
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.exitcode is None:
            log.error("worker %d (pid %d) did not stop within %g s: killed", worker.index, worker.pid, timeout)
            worker.process.kill()
            worker.process.join(5)
            failed.append(f"worker {worker.index} (pid {worker.pid}) did not stop in time and was killed")
        elif worker.process.exitcode != 0 and not worker.seen_exit:  # failed while draining, or at start
            worker.seen_exit = True
            failed.append(f"worker {worker.index} (pid {worker.pid}) exited with {worker.process.exitcode}")
    return failed


def _merge(run_dir: Path, shards: list[Path], dest: Path, workers: int, port: int, failed: list[str]) -> None:
    """Merge the shards into `dest`, record the workers in its meta, delete the shards."""
    from harness.capture import CaptureWriter, merge

    if not shards:
        return
    for shard in shards:
        # A killed worker leaves its last commits in the WAL: fold them into the file (read-write
        # once) so the read-only merge sees them.
        conn = sqlite3.connect(shard)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.error("capture shard %s: %s", shard, exc)
        finally:
            conn.close()
    try:
        rows = merge(shards, dest)
    except Exception as exc:  # the shards stay, so nothing captured is lost
        from harness.procs import ChildFailed

        raise ChildFailed(f"merging the worker captures into {dest} failed ({exc}); they are kept: "
                          + ", ".join(str(s) for s in shards)) from None
    with CaptureWriter(dest) as capture:
        capture.set_meta("workers", {"count": workers, "port": port, "shards": [s.name for s in shards], "failed": failed})
    for shard in shards:
        for path in (shard, shard.with_name(shard.name + "-wal"), shard.with_name(shard.name + "-shm")):
            path.unlink(missing_ok=True)
    log.info("merged %d exchanges from %d worker captures into %s", rows, len(shards), dest)
