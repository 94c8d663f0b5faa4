#!/usr/bin/env python3
"""`make bench`, gRPC part: unary `ModelInfer` direct to the incumbent vs through `shadowline proxy grpc`.

Starts the demo incumbent and candidate over gRPC (`shadowline serve-demo --grpc --port 0`) and two
gRPC shadow proxies (capture on): one process (run dir benchmarks/out/grpc/proxy-run/) and
`--workers N` processes (default 2; run dir benchmarks/out/grpc/workers-run/). Each path is driven
by a grpc.aio client in its own process (multiprocessing, so it does not share an event loop with
the servers): N calls kept in flight (closed loop) over `--channels` connections (the kernel spreads
connections, not calls, over the proxy's workers) for D seconds, every call's latency recorded.
Paths are measured in the same run, interleaved per round (the order rotates each round).

Prints throughput and p50/p99 per path, each proxy's throughput as a ratio to direct, added p50/p99
(and as a ratio to direct), the goals (proxy >= 0.5x direct; 8,300 calls/s with several workers),
capture rows vs calls through each proxy, and writes benchmarks/out/grpc/results.json. Everything
started is loopback-only and stopped by PID. See benchmarks/README.md ("gRPC").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shlex
import signal
import sqlite3
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOAL_RATIO = 0.5  # proxy throughput / direct throughput, same cores
GOAL_RPS = 8300.0  # calls/s through the proxy with several workers (`--workers`)
PATHS = ("direct", "proxy", "workers")


def cpu_capacity(summary: dict) -> dict | None:
    """What the measured CPU time per call implies (derived figures, labelled so): the proxy's
    and the incumbent's calls per core-second, the cores of proxy 8,300 calls/s needs, and the
    best proxy/direct ratio a proxy costing nothing could reach on CPUs shared with a candidate
    that repeats the incumbent's work."""
    direct, proxy = summary["direct"]["cpu_ms_per_call"], summary["proxy"]["cpu_ms_per_call"]
    needed = (direct.get("incumbent"), direct.get("client"), proxy.get("proxy"), proxy.get("incumbent"),
              proxy.get("candidate"), proxy.get("client"))
    if any(not v for v in needed):
        return None
    server, proxy_ms = direct["incumbent"], proxy["proxy"]
    return {
        "server_calls_per_core_s": 1000.0 / server,
        "proxy_calls_per_core_s": 1000.0 / proxy_ms,
        "proxy_over_server_per_core": server / proxy_ms,
        "cores_for_8300": GOAL_RPS * proxy_ms / 1000.0,
        "zero_cost_proxy_ceiling": (direct["client"] + direct["incumbent"])
        / (proxy["client"] + proxy["incumbent"] + proxy["candidate"]),
    }


def log(msg: str) -> None:
    print(f"[grpc-bench] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# The load generator: runs in a child process (spawn), one grpc.aio channel, N calls in flight.


def _load_worker(target: str, concurrency: int, channels: int, duration: float, warmup: float, conn) -> None:
    """Closed loop: `concurrency` tasks each send the next call when the last one returns, spread
    over `channels` channels, each its own connection (a local subchannel pool per channel).
    Calls started during `warmup` are not recorded; after `warmup + duration` no new call is
    started and the ones in flight are awaited (so every call started has ended: none cancelled)."""
    import asyncio
    from array import array

    import grpc
    import numpy as np

    from harness.demo_model import FEATURES
    from proxies.demo_grpc import infer_request_message
    from harness.codecs.grpc_v2 import method_path

    rows = np.array([[42.0, 52000.0, 24.0, 2.0, 1200.5, 680.0][: len(FEATURES)]
                     + [1.0] * max(0, len(FEATURES) - 6)], dtype=np.float64)
    request = infer_request_message(rows)

    async def main() -> dict:
        lat = array("d")
        counts = {"ok": 0, "errors": 0, "warmup_ok": 0, "warmup_errors": 0}
        codes: dict[str, int] = {}
        opened = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                  for _ in range(channels)]
        try:
            calls = [c.unary_unary(method_path("ModelInfer")) for c in opened]  # bytes in, bytes out
            for channel in opened:
                await asyncio.wait_for(channel.channel_ready(), 10)
            t0 = time.perf_counter()
            measure_from = t0 + warmup
            stop_at = measure_from + duration
            first_measured = None
            last_end = t0

            async def one_task(call) -> None:
                nonlocal first_measured, last_end
                perf = time.perf_counter
                while True:
                    start = perf()
                    if start >= stop_at:
                        return
                    measured = start >= measure_from
                    try:
                        await call(request, timeout=30)
                        ok = True
                    except grpc.aio.AioRpcError as exc:
                        ok = False
                        codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
                    end = perf()
                    if measured:
                        if ok:
                            lat.append(end - start)
                            counts["ok"] += 1
                        else:
                            counts["errors"] += 1
                        if first_measured is None or start < first_measured:
                            first_measured = start
                    else:
                        counts["warmup_ok" if ok else "warmup_errors"] += 1
                    last_end = max(last_end, end)

            await asyncio.gather(*(one_task(calls[i % channels]) for i in range(concurrency)))
            return {**counts, "codes": codes, "latencies_s": lat.tobytes(), "client_cpu_s": time.process_time(),
                    "window_s": duration, "tail_s": max(0.0, last_end - stop_at)}
        finally:
            for channel in opened:
                await channel.close()

    try:
        conn.send(asyncio.run(main()))
    except BaseException as exc:  # report, do not hang the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def run_load(target: str, concurrency: int, channels: int, duration: float, warmup: float, cpu: int | None) -> dict:
    """Runs `_load_worker` in a fresh process (optionally pinned to `cpu`); returns its figures."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_pinned_worker, args=(cpu, target, concurrency, channels, duration, warmup, child),
                       daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(warmup + duration + 60):
            raise RuntimeError(f"load generator against {target} did not report in time")
        res = parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)  # our own child, by PID
            proc.join(5)
    if "error" in res:
        raise RuntimeError(f"load generator against {target}: {res['error']}")
    from array import array

    lat = array("d")
    lat.frombytes(res.pop("latencies_s"))
    ms = sorted(x * 1000.0 for x in lat)
    res["calls_per_s"] = res["ok"] / res["window_s"]
    res["p50_ms"] = _pct(ms, 50)
    res["p90_ms"] = _pct(ms, 90)
    res["p99_ms"] = _pct(ms, 99)
    res["max_ms"] = ms[-1] if ms else None
    res["load_pid"] = proc.pid
    return res


def _pinned_worker(cpu: int | None, *args) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    _load_worker(*args)


def _pct(sorted_ms: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, int(-(-p * len(sorted_ms) // 100)) - 1))
    return sorted_ms[k]


# ---------------------------------------------------------------------------------------------
# The run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/grpc_bench.py",
                                description="gRPC unary ModelInfer: incumbent directly vs through `shadowline proxy grpc`.")
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run (default 10, 3 with --quick)")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight per client (default 32)")
    p.add_argument("--channels", type=int, default=8,
                   help="client connections the calls are spread over, on every path (default 8): the kernel "
                        "spreads connections, not calls, over the proxy's workers")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the `workers` path's proxy (default 2)")
    p.add_argument("--rounds", type=int, default=None, help="rounds, paths interleaved, medians reported (default 2, 1 with --quick)")
    p.add_argument("--warmup", type=float, default=None, help="seconds at the start of each run not recorded (default 1, 0.5 with --quick)")
    p.add_argument("--pin-client", type=int, default=None,
                   help="pin the load generator to this CPU (default: not pinned; the OS schedules it)")
    p.add_argument("--quick", action="store_true", help="smoke run: one round of 3 s runs")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "grpc", help="output directory")
    a = p.parse_args(argv)
    a.duration = a.duration if a.duration is not None else (3.0 if a.quick else 10.0)
    a.rounds = a.rounds if a.rounds is not None else (1 if a.quick else 2)
    a.warmup = a.warmup if a.warmup is not None else (0.5 if a.quick else 1.0)
    if a.duration <= 0 or a.concurrency <= 0 or a.rounds <= 0 or a.warmup < 0 or a.channels <= 0 or a.workers < 2:
        p.error("--duration, --concurrency, --channels and --rounds must be positive, --warmup not negative, --workers >= 2")
    return a


def _median_or_none(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def cpu_s(pid: int) -> float | None:
    """utime + stime of a process of ours, from /proc (None where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and its child processes (a proxy's workers), from /proc."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return pids


def tree_cpu_s(pids: list[int]) -> float | None:
    values = [cpu_s(pid) for pid in pids]
    return None if any(v is None for v in values) else sum(values)


def shard_rows(db: Path) -> list[int] | None:
    """Rows each worker captured, from the merged capture's `merged_from` meta."""
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT value FROM meta WHERE key='merged_from'").fetchone()
        return [s["rows"] for s in json.loads(row[0])] if row else None
    finally:
        con.close()


def count_capture(db: Path) -> int | None:
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM exchanges").fetchone()[0]
    finally:
        con.close()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from harness.procs import ChildFailed, shadowline_command, spawn

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "proxy-run"
    workers_run_dir = out / "workers-run"
    for d in (run_dir, workers_run_dir):
        if d.exists():
            for f in d.iterdir():
                if f.is_file():
                    f.unlink()
    logs = out / "logs"
    children = []
    commands: dict[str, list[str]] = {}
    load_start = os.getloadavg()
    try:
        inc_argv = shadowline_command("serve-demo", "--grpc", "--host", "127.0.0.1", "--port", "0", "--role", "incumbent")
        cand_argv = shadowline_command("serve-demo", "--grpc", "--host", "127.0.0.1", "--port", "0", "--role", "candidate")
        incumbent = spawn("incumbent", inc_argv, logs / "incumbent.log")
        children.append(incumbent)
        candidate = spawn("candidate", cand_argv, logs / "candidate.log")
        children.append(candidate)
        proxy_argv = shadowline_command(
            "proxy", "grpc", "--listen", "127.0.0.1:0",
            "--incumbent", f"127.0.0.1:{incumbent.port}", "--candidate", f"127.0.0.1:{candidate.port}",
            "--run-dir", str(run_dir))
        proxy = spawn("proxy", proxy_argv, logs / "proxy.log")
        children.append(proxy)
        workers_argv = shadowline_command(
            "proxy", "grpc", "--listen", "127.0.0.1:0", "--workers", str(a.workers),
            "--incumbent", f"127.0.0.1:{incumbent.port}", "--candidate", f"127.0.0.1:{candidate.port}",
            "--run-dir", str(workers_run_dir))
        workers_proxy = spawn("workers", workers_argv, logs / "workers-proxy.log", ready_timeout=60)
        children.append(workers_proxy)
        commands = {"incumbent": inc_argv, "candidate": cand_argv, "proxy": proxy_argv, "workers": workers_argv}
        worker_pids = process_tree(workers_proxy.pid)  # the parent and its workers
        log(f"incumbent pid {incumbent.pid} :{incumbent.port}, candidate pid {candidate.pid} :{candidate.port}, "
            f"proxy pid {proxy.pid} :{proxy.port}, {a.workers}-worker proxy pids {worker_pids} :{workers_proxy.port}")
        targets = {"direct": f"127.0.0.1:{incumbent.port}", "proxy": f"127.0.0.1:{proxy.port}",
                   "workers": f"127.0.0.1:{workers_proxy.port}"}

        runs: dict[str, list[dict]] = {p: [] for p in PATHS}
        through = {"proxy": 0, "workers": 0}  # calls that ended (answered or failed) through each proxy: one exchange each
        for r in range(a.rounds):
            order = list(PATHS[r % len(PATHS):] + PATHS[:r % len(PATHS)])  # rotates: each path goes first in turn
            for path in order:
                servers = {"incumbent": [incumbent.pid], "candidate": [candidate.pid], "proxy": [proxy.pid],
                           "workers": worker_pids}
                before = {k: tree_cpu_s(v) for k, v in servers.items()}
                res = run_load(targets[path], a.concurrency, a.channels, a.duration, a.warmup, a.pin_client)
                after = {k: tree_cpu_s(v) for k, v in servers.items()}
                calls = res["ok"] + res["errors"] + res["warmup_ok"] + res["warmup_errors"]
                # CPU ms per call of each process over the whole run (warm-up included); client too.
                res["cpu_ms_per_call"] = {
                    k: (None if before[k] is None or after[k] is None or not calls
                        else round((after[k] - before[k]) * 1000 / calls, 4)) for k in servers}
                res["cpu_ms_per_call"]["client"] = round(res["client_cpu_s"] * 1000 / calls, 4) if calls else None
                res["round"] = r + 1
                runs[path].append(res)
                if path in through:
                    through[path] += res["ok"] + res["errors"] + res["warmup_ok"] + res["warmup_errors"]
                log(f"round {r + 1} {path:7s}: {res['calls_per_s']:8.0f} calls/s  p50 {res['p50_ms']:.3f} ms  "
                    f"p99 {res['p99_ms']:.3f} ms  errors {res['errors']}  CPU ms/call {res['cpu_ms_per_call']}")
                time.sleep(0.5)  # mirrored backlog drains before the next run

        # Stop the proxies first (SIGTERM: they drain and flush, the workers' shards are merged), then count rows.
        proxy_exit = proxy.stop(30)
        workers_exit = workers_proxy.stop(60)
        capture_rows = {"proxy": count_capture(run_dir / "capture.db"),
                        "workers": count_capture(workers_run_dir / "capture.db")}
        per_worker_rows = shard_rows(workers_run_dir / "capture.db")
    except KeyboardInterrupt:
        print("grpc_bench: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    except (ChildFailed, RuntimeError, OSError) as exc:
        print(f"grpc_bench: error: {exc}", file=sys.stderr)
        return 4
    finally:
        for child in reversed(children):
            try:
                child.stop(15)
            except Exception:  # noqa: BLE001 - keep stopping the others
                pass

    def med(path: str, key: str) -> float | None:
        vals = [r[key] for r in runs[path] if r[key] is not None]
        return float(statistics.median(vals)) if vals else None

    summary = {p: {k: med(p, k) for k in ("calls_per_s", "p50_ms", "p90_ms", "p99_ms")} for p in runs}
    for p in runs:
        summary[p]["calls"] = sum(r["ok"] for r in runs[p])
        summary[p]["errors"] = sum(r["errors"] for r in runs[p])
        summary[p]["cpu_ms_per_call"] = {
            k: _median_or_none([r["cpu_ms_per_call"][k] for r in runs[p]])
            for k in ("client", "proxy", "workers", "incumbent", "candidate")}
    d, x, w = summary["direct"], summary["proxy"], summary["workers"]
    ratio = x["calls_per_s"] / d["calls_per_s"] if d["calls_per_s"] else None
    workers_ratio = w["calls_per_s"] / d["calls_per_s"] if d["calls_per_s"] else None
    added_p50 = x["p50_ms"] - d["p50_ms"]
    added_p99 = x["p99_ms"] - d["p99_ms"]
    capture_ok = {p: capture_rows[p] == through[p] for p in through}
    rps_met = w["calls_per_s"] is not None and w["calls_per_s"] >= GOAL_RPS
    capacity = cpu_capacity(summary)
    command = [sys.executable, *sys.argv] if argv is None else [sys.executable, __file__, *argv]
    res = {
        "schema": 1,
        "command": shlex.join(command),
        "commands": {k: shlex.join(v) for k, v in commands.items()},
        "settings": {"client": "grpc.aio, one channel, closed loop, own process (multiprocessing spawn)",
                     "method": "/inference.GRPCInferenceService/ModelInfer (unary, 1 row, typed contents)",
                     "concurrency": a.concurrency, "channels": a.channels, "duration_s": a.duration, "warmup_s": a.warmup,
                     "rounds": a.rounds, "pin_client": a.pin_client, "proxy_workers": {"proxy": 1, "workers": a.workers},
                     "capture": True},
        "machine": {"nproc": os.cpu_count(), "loadavg_at_start": list(load_start), "loadavg_at_end": list(os.getloadavg()),
                    "python": sys.version.split()[0]},
        "summary": summary,
        "ratios": {"throughput_proxy_over_direct": ratio, "throughput_workers_over_direct": workers_ratio,
                   "throughput_workers_over_proxy": w["calls_per_s"] / x["calls_per_s"] if x["calls_per_s"] else None,
                   "added_p50_ms": added_p50, "added_p99_ms": added_p99,
                   "p50_proxy_over_direct": x["p50_ms"] / d["p50_ms"] if d["p50_ms"] else None,
                   "p99_proxy_over_direct": x["p99_ms"] / d["p99_ms"] if d["p99_ms"] else None,
                   "added_p50_over_direct_p50": added_p50 / d["p50_ms"] if d["p50_ms"] else None,
                   "added_p99_over_direct_p99": added_p99 / d["p99_ms"] if d["p99_ms"] else None},
        "cpu_capacity": capacity,
        "goals": {"proxy_throughput_at_least_0.5x_direct": {"value": ratio, "goal": GOAL_RATIO,
                                                            "met": ratio is not None and ratio >= GOAL_RATIO},
                  "8300_calls_per_s_with_several_workers": {
                      "value": w["calls_per_s"], "goal": GOAL_RPS, "met": rps_met, "workers": a.workers,
                      "note": f"through `shadowline proxy grpc --workers {a.workers}`, on {os.cpu_count()} CPUs shared "
                              "with the client, the incumbent and the candidate"}},
        "capture": {"proxy": {"rows": capture_rows["proxy"], "calls_through_proxy": through["proxy"],
                              "complete": capture_ok["proxy"], "exit": proxy_exit, "run_dir": str(run_dir)},
                    "workers": {"rows": capture_rows["workers"], "calls_through_proxy": through["workers"],
                                "complete": capture_ok["workers"], "rows_per_worker": per_worker_rows,
                                "exit": workers_exit, "run_dir": str(workers_run_dir)}},
        "runs": runs,
    }
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")

    def f(v, spec=".3f"):
        return "n/a" if v is None else format(v, spec)

    print()
    print(f"gRPC unary ModelInfer, {a.concurrency} calls in flight over {a.channels} connections, "
          f"{a.duration:g} s x {a.rounds} round(s), median over rounds ({os.cpu_count()} CPUs, client in its own process)")
    print(f"{'path':8s} {'calls/s':>10s} {'p50 ms':>9s} {'p90 ms':>9s} {'p99 ms':>9s} {'errors':>7s}   (workers: --workers {a.workers})")
    for p in PATHS:
        s = summary[p]
        print(f"{p:8s} {f(s['calls_per_s'], '.0f'):>10s} {f(s['p50_ms']):>9s} {f(s['p90_ms']):>9s} "
              f"{f(s['p99_ms']):>9s} {s['errors']:>7d}")
    for p in PATHS:
        c = summary[p]["cpu_ms_per_call"]
        print(f"CPU ms per call, {p:7s}: " + "  ".join(f"{k} {f(v)}" for k, v in c.items()))
    rr = res["ratios"]
    print(f"throughput proxy/direct: {f(ratio, '.2f')}x   goal >= {GOAL_RATIO}x: {'MET' if res['goals']['proxy_throughput_at_least_0.5x_direct']['met'] else 'NOT MET'}")
    print(f"added p50: {f(added_p50)} ms ({f(rr['p50_proxy_over_direct'], '.2f')}x direct)   "
          f"added p99: {f(added_p99)} ms ({f(rr['p99_proxy_over_direct'], '.2f')}x direct)")
    print(f"throughput workers/direct: {f(workers_ratio, '.2f')}x  (workers/proxy: "
          f"{f(res['ratios']['throughput_workers_over_proxy'], '.2f')}x)")
    if capacity:
        print(f"per core (from CPU ms per call, derived, not a measured rate): incumbent {capacity['server_calls_per_core_s']:.0f} "
              f"calls/s, proxy {capacity['proxy_calls_per_core_s']:.0f} -> proxy/server {capacity['proxy_over_server_per_core']:.2f}x; "
              f"8,300 calls/s needs {capacity['cores_for_8300']:.1f} cores of proxy")
        print(f"ceiling on shared CPUs: a proxy costing nothing would reach {capacity['zero_cost_proxy_ceiling']:.2f}x direct "
              "(the candidate does the incumbent's work again on the same CPUs)")
    print(f"8,300 calls/s with {a.workers} proxy workers: {f(w['calls_per_s'], '.0f')} calls/s -> "
          f"{'MET' if rps_met else 'NOT MET'} (on {os.cpu_count()} CPUs shared with client, incumbent and candidate)")
    for p in through:
        print(f"capture, {p:7s}: {capture_rows[p]} rows vs {through[p]} calls ended through it "
              f"-> {'OK' if capture_ok[p] else 'MISMATCH'}" + (f"  (rows per worker: {per_worker_rows})" if p == "workers" else ""))
    print(f"command: {res['command']}")
    print(f"results: {out / 'results.json'}")
    return 0 if all(capture_ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
