#!/usr/bin/env python3
"""`make bench`: Shadowline's HTTP shadow proxy against direct access and nginx `mirror`, in one run.

Three paths to the same two demo model servers (`shadowline serve-demo`, started here):

  direct      load -> incumbent
  shadowline  load -> `shadowline proxy http` (capture on) -> incumbent, mirrored to candidate
  nginx       load -> nginx (`mirror`, keep-alive pools)   -> incumbent, mirrored to candidate

For each path: throughput at saturation (wrk, closed loop, fixed connections and duration)
and latency p50/p99 at a fixed offered rate (h2load `--rps`, default 8,300 req/s). Results
go to stdout (a table) and benchmarks/out/results.json. Everything started is stopped by
PID at the end, also on Ctrl-C or an error. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import loadgen, results  # noqa: E402
from benchmarks.nginx_conf import nginx_argv, write_nginx_conf  # noqa: E402
from benchmarks.procs import (  # noqa: E402
    LOOPBACK,
    Child,
    Processes,
    cpu_seconds,
    free_ports,
    http_request,
    tcp_open,
    wait_until,
)

INFER_PATH = "/v2/models/demo/infer"
READY_PATH = "/v2/health/ready"
TOOLS = {"wrk": "wrk", "nginx": "nginx", "h2load": "nghttp2-client"}  # binary -> Debian package
SCHEMA_VERSION = 1
# What the static stand-in upstreams answer (`--upstreams static`): a v2 response of the demo's shape.
STATIC_RESPONSE = (
    '{"model_name":"demo","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[0]},'
    '{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[0.7,0.3]}]}'
)

# The body from the task brief, used only if the project's own helpers are missing.
_FALLBACK_VALUES = {
    "age": 42.0, "income": 52000.0, "tenure_months": 24.0, "num_products": 2.0,
    "balance": 1200.5, "credit_score": 680.0,
}


class BenchError(Exception):
    """A failure with a one-line explanation for the user."""


def log(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Tools


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = Path(d) / name
        if p.exists() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_tools(allow_install: bool) -> dict[str, str]:
    missing = [name for name in TOOLS if find_tool(name) is None]
    if missing:
        packages = sorted({TOOLS[m] for m in missing})
        if not allow_install:
            raise BenchError(f"missing {', '.join(missing)}; install with: apt-get install -y {' '.join(packages)}")
        if shutil.which("apt-get") is None:
            raise BenchError(f"missing {', '.join(missing)} and no apt-get here; install Debian packages {' '.join(packages)}")
        if os.geteuid() != 0:
            raise BenchError(f"missing {', '.join(missing)}; run as root or: sudo apt-get install -y {' '.join(packages)}")
        log(f"missing {', '.join(missing)}: installing Debian packages {' '.join(packages)} "
            "(apt-get update, then apt-get install -y)")
        _apt_install(packages)
        still = [name for name in TOOLS if find_tool(name) is None]
        if still:
            raise BenchError(f"apt-get install finished but {', '.join(still)} is still missing")
    return {name: find_tool(name) for name in TOOLS}  # type: ignore[misc]


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Installing nginx must not start the system nginx service (it would listen on 0.0.0.0:80).
    # Debian's documented switch for that is /usr/sbin/policy-rc.d exiting 101; put one in
    # place for the install only, unless the machine already has one.
    policy = Path("/usr/sbin/policy-rc.d")
    placed = False
    if not policy.exists():
        policy.write_text("#!/bin/sh\n# placed by benchmarks/run.py during apt-get install\nexit 101\n")
        policy.chmod(0o755)
        placed = True
    try:
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
                raise BenchError(f"`{' '.join(cmd)}` failed with exit {proc.returncode}: {last}")
    finally:
        if placed:
            policy.unlink(missing_ok=True)


def resolve_shadowline(explicit: str | None) -> list[str]:
    if explicit:
        argv = shlex.split(explicit)
    else:
        exe = Path(sys.executable).parent / "shadowline"
        argv = [str(exe)] if exe.exists() else ([shutil.which("shadowline")] if shutil.which("shadowline") else [])
    if not argv:
        raise BenchError("the `shadowline` command is not installed in this environment (run `make bench`, "
                         "which installs the project into .venv first)")
    probe = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise BenchError(f"`{' '.join(argv)} --help` failed: {(probe.stderr or probe.stdout).strip()[-300:]}")
    for sub in ("serve-demo", "proxy"):
        if sub not in probe.stdout:
            raise BenchError(f"`{' '.join(argv)}` has no `{sub}` command (needed by the benchmark)")
    return argv


# ---------------------------------------------------------------------------------------------
# The request body


def make_body() -> tuple[bytes, str]:
    """One v2 infer request body, from the project's own helpers when they exist."""
    rows = None
    features: tuple[str, ...] | None = None
    try:
        demo_model = importlib.import_module("harness.demo_model")
        features = tuple(demo_model.FEATURES)
        rows = demo_model.synthetic_rows(1, 0)
    except Exception:
        pass
    if rows is not None:
        for mod_name in ("harness.demo_server", "proxies.demo_server"):
            try:
                fn = importlib.import_module(mod_name).infer_request_body
            except Exception:
                continue
            body = fn(rows)
            if isinstance(body, dict | list):
                body = json.dumps(body, separators=(",", ":"))
            if isinstance(body, str):
                body = body.encode()
            return bytes(body), f"{mod_name}.infer_request_body(harness.demo_model.synthetic_rows(1, 0))"
    names = features or tuple(_FALLBACK_VALUES)
    inputs = []
    for i, name in enumerate(names):
        value = float(rows[0, i]) if rows is not None else _FALLBACK_VALUES.get(name, 0.0)
        inputs.append({"name": name, "shape": [1], "datatype": "FP32", "data": [value]})
    source = "harness.demo_model.FEATURES" if features else "the fallback body in benchmarks/run.py"
    return json.dumps({"inputs": inputs}, separators=(",", ":")).encode(), source


# ---------------------------------------------------------------------------------------------
# Capture


def count_capture(run_dir: Path) -> dict:
    """Rows in the exchange table of run_dir/capture.db (after the proxy has stopped)."""
    db = run_dir / "capture.db"
    if not db.exists():
        found = sorted(run_dir.rglob("*.db"))
        if not found:
            return {"path": str(db), "exists": False, "rows": None, "tables": {}}
        db = found[0]
    con = sqlite3.connect(str(db), timeout=10)
    try:
        names = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        tables = {n: con.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0] for n in names}
        table = next((n for n in ("exchanges", "exchange") if n in tables), None)
        table = table or next((n for n in tables if "exchange" in n.lower()), None)
        table = table or (max(tables, key=tables.get) if tables else None)
        mirror = _mirror_outcomes(con, table) if table else None
    finally:
        con.close()
    return {"path": str(db), "exists": True, "table": table, "rows": tables.get(table) if table else None,
            "tables": tables, "candidate": mirror}


def _mirror_outcomes(con: sqlite3.Connection, table: str) -> dict | None:
    """How the mirrored copies ended (answered, shed, timed out...), when the columns exist.

    A proxy that sheds copies under load does less work than nginx, which never sheds: the
    throughput ratio is read together with this.
    """
    cols = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
    if not {"candidate_status", "candidate_error"} <= cols:
        return None
    by_status = dict(con.execute(f'SELECT candidate_status, COUNT(*) FROM "{table}" GROUP BY candidate_status'))
    by_error = dict(con.execute(f'SELECT candidate_error, COUNT(*) FROM "{table}" GROUP BY candidate_error'))
    return {
        "answered_2xx": sum(v for k, v in by_status.items() if k is not None and 200 <= k < 300),
        "by_status": {str(k): v for k, v in by_status.items()},
        "by_error": {str(k): v for k, v in by_error.items()},
    }


# ---------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, str], shadowline: list[str], body: bytes):
        self.args = args
        self.tools = tools
        self.shadowline = shadowline
        self.body = body
        self.out: Path = args.out
        self.procs = Processes(self.out / "logs")
        ports = free_ports(5)
        self.port = dict(zip(("incumbent", "candidate", "shadowline", "nginx", "metrics"), ports, strict=True))
        self.body_path = self.out / "body.json"
        self.body_path.write_bytes(body)
        self.lua = loadgen.write_wrk_script(self.out / "post.lua", self.body_path)
        self.commands: dict[str, list[str]] = {}
        self.capture_sessions: list[dict] = []
        self.fronts: dict[str, Front] = {}

    # -- processes ----------------------------------------------------------------------------

    def start_upstreams(self) -> None:
        if self.args.upstreams == "static":
            self._start_static_upstreams()
            return
        for role in ("incumbent", "candidate"):
            argv = [*self.shadowline, "serve-demo", "--role", role, "--host", LOOPBACK,
                    "--port", str(self.port[role])]
            if self.args.upstream_latency_ms is not None:
                argv += ["--latency-ms", str(self.args.upstream_latency_ms), "--jitter-ms", "0"]
            if self.args.upstream_workers:
                argv += ["--workers", str(self.args.upstream_workers)]
            self.commands[role] = argv
            child = self.procs.start(role, argv)
            log(f"started {role} (pid {child.pid}) on {LOOPBACK}:{self.port[role]}")
            wait_until(child, lambda p=self.port[role]: http_request(LOOPBACK, p, "GET", READY_PATH)[0] == 200,
                       timeout=60, what=f"{role} {READY_PATH}")
        status, payload = http_request(LOOPBACK, self.port["incumbent"], "POST", INFER_PATH, self.body)
        if status != 200:
            raise BenchError(f"the incumbent answered the benchmark's infer body with {status}: {payload[:300]!r}")

    def _start_static_upstreams(self) -> None:
        """`--upstreams static`: one nginx answering fixed v2 responses on both upstream ports."""
        prefix = self.out / "static-upstreams"
        ports = {r: self.port[r] for r in ("incumbent", "candidate")}
        conf = write_nginx_conf(prefix, static_upstreams=True, ports=ports, response_body=STATIC_RESPONSE)
        argv = nginx_argv(self.tools["nginx"], prefix, conf)
        self.commands["static_upstreams"] = argv
        child = self.procs.start("static-upstreams", argv, stop_signal=signal.SIGQUIT)
        log(f"started static upstreams (nginx pid {child.pid}) on ports {ports}")
        for role, port in ports.items():
            wait_until(child, lambda p=port: http_request(LOOPBACK, p, "GET", READY_PATH)[0] == 200,
                       timeout=30, what=f"static {role}")

    def _start_front(self, path: str) -> Front:
        """Start what sits in front of the incumbent for `path` (nothing for direct)."""
        if path == "direct":
            return Front(path, None, self.port["incumbent"])
        if path == "shadowline":
            run_dir = self.out / "shadowline-run"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            argv = [*self.shadowline, "proxy", "http",
                    "--listen", f"{LOOPBACK}:{self.port['shadowline']}",
                    "--incumbent", f"http://{LOOPBACK}:{self.port['incumbent']}",
                    "--candidate", f"http://{LOOPBACK}:{self.port['candidate']}",
                    "--sample", "1.0",
                    "--run-dir", str(run_dir),
                    "--metrics-listen", f"{LOOPBACK}:{self.port['metrics']}",
                    *self.args.proxy_arg]
            self.commands["shadowline"] = argv
            # SIGTERM: the proxy drains in-flight work and flushes the capture, then exits.
            child = self.procs.start("shadowline-proxy", argv, stop_signal=signal.SIGTERM)
            front = Front(path, child, self.port["shadowline"], run_dir=run_dir)
        else:
            prefix = self.out / "nginx"
            conf = write_nginx_conf(
                prefix, listen_port=self.port["nginx"],
                incumbent=(LOOPBACK, self.port["incumbent"]), candidate=(LOOPBACK, self.port["candidate"]),
                workers=self.args.nginx_workers,
            )
            check = subprocess.run(nginx_argv(self.tools["nginx"], prefix, conf, test=True),
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise BenchError(f"nginx -t rejected {conf}: {check.stderr.strip()}")
            argv = nginx_argv(self.tools["nginx"], prefix, conf)
            self.commands["nginx"] = argv
            # SIGQUIT: nginx's graceful shutdown (finish in-flight requests, mirrors included).
            child = self.procs.start("nginx-mirror", argv, stop_signal=signal.SIGQUIT)
            front = Front(path, child, self.port["nginx"])
        log(f"started {path} front (pid {child.pid}) on {LOOPBACK}:{front.port}")
        wait_until(child, lambda: tcp_open(LOOPBACK, front.port), timeout=60, what=f"{path} listening on {front.port}")
        return front

    def start_fronts(self) -> None:
        """The proxy and nginx stay up for the whole run: an idle front costs nothing, and it lets
        the rounds interleave the paths."""
        for path in self.args.paths:
            front = self._start_front(path)
            self.fronts[path] = front
            n = self.probe(front.port)
            front.answered(n, n)

    def probe(self, port: int, n: int = 20) -> int:
        """Send `n` infer requests one by one; all must be answered 200. Returns how many were answered."""
        for i in range(n):
            status, payload = http_request(LOOPBACK, port, "POST", INFER_PATH, self.body, timeout=10)
            if status != 200:
                raise BenchError(f"probe {i} on port {port} answered {status}: {payload[:300]!r}")
        return n

    def settle(self) -> None:
        time.sleep(self.args.settle)

    def stop_fronts(self) -> None:
        for path, front in self.fronts.items():
            if front.child is None:
                continue
            code = self.procs.stop(front.child, grace=30.0)
            if path != "shadowline":
                continue
            info = count_capture(front.run_dir)
            rows = info.get("rows")
            complete = rows is not None and front.answered_min <= rows <= front.answered_max
            self.capture_sessions.append({
                "session": "shadowline-run", "run_dir": str(front.run_dir), "proxy_exit_code": code,
                "rows": rows, "answered_min": front.answered_min, "answered_max": front.answered_max,
                "complete": complete, **{k: v for k, v in info.items() if k != "rows"},
            })
            mirror = info.get("candidate") or {}
            mirrored = f"; candidate answered 2xx: {mirror.get('answered_2xx')}, errors {mirror.get('by_error')}" if mirror else ""
            log(f"capture {front.run_dir}/capture.db: {rows} rows (answered {front.answered_min}..{front.answered_max})"
                f" -> {'OK' if complete else 'MISMATCH'}{mirrored}")
        self.fronts.clear()

    def order(self, r: int) -> list[str]:
        """Round r's order of the paths: rotated each round, so no path always goes first."""
        paths = self.args.paths
        k = r % len(paths)
        return paths[k:] + paths[:k]

    # -- measurements -------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.fronts[path].port}{INFER_PATH}"

    def measure_throughput(self) -> dict[str, dict]:
        a = self.args
        for path in a.paths:  # warm-up, not counted: fills the pools and the caches
            warm = loadgen.run_wrk(
                loadgen.wrk_argv(self.tools["wrk"], self.url(path), self.lua, connections=a.connections,
                                 threads=a.threads, duration_s=a.warmup), timeout=a.warmup + 60)
            self.fronts[path].answered(warm.requests, warm.requests + a.connections)
        self.settle()
        rounds: dict[str, list[dict]] = {p: [] for p in a.paths}
        for r in range(a.rounds):
            for path in self.order(r):
                front = self.fronts[path]
                cpu0 = cpu_seconds(front.pid) if front.pid else None
                argv = loadgen.wrk_argv(self.tools["wrk"], self.url(path), self.lua, connections=a.connections,
                                        threads=a.threads, duration_s=a.duration)
                res = loadgen.run_wrk(argv, timeout=a.duration + 60)
                cpu1 = cpu_seconds(front.pid) if front.pid else None
                front.answered(res.requests, res.requests + a.connections)
                d = res.to_dict()
                d["round"] = r
                if cpu0 is not None and cpu1 is not None:
                    d["front_cpu_s"] = cpu1 - cpu0
                rounds[path].append(d)
                log(f"round {r + 1}/{a.rounds} {path}: {res.rps:,.0f} req/s at saturation ({a.connections} connections,"
                    f" {res.duration_s:.1f} s, {res.non_2xx} non-2xx, errors {sum(res.errors.values())})")
                self.settle()
        return {p: summarise_throughput(rs) for p, rs in rounds.items()}

    def measure_latency(self, rate: float, saturation: dict[str, float]) -> dict[str, dict]:
        a = self.args
        rounds: dict[str, list[dict]] = {p: [] for p in a.paths}
        span = a.latency_warmup + a.duration + 0.2
        for r in range(a.rounds):
            for path in self.order(r):
                total, sendable = int(rate * span), rate
                sat = saturation.get(path)
                if sat and sat < rate:
                    # This path cannot take `rate` with wrk's closed loop; cap the request count so
                    # an overloaded run still ends after about `span` seconds.
                    total, sendable = int(sat * span), sat
                connections = min(a.rate_connections, max(1, total))
                logf = self.out / f"h2load-{path}-{int(rate)}-r{r + 1}.log"
                argv = loadgen.h2load_argv(self.tools["h2load"], self.url(path), self.body_path, logf, rate=rate,
                                           connections=connections, total_requests=total)
                res = loadgen.run_h2load(argv, logf, target_rps=rate, warmup_s=a.latency_warmup,
                                         timeout=3 * total / sendable + 60)
                self.fronts[path].answered(res.summary["succeeded"], res.summary["started"])
                d = res.to_dict()
                d["round"] = r
                rounds[path].append(d)
                mark = "" if res.reached else "  (target NOT reached)"
                log(f"round {r + 1}/{a.rounds} {path}: {rate:,.0f}/s offered -> {res.achieved_rps:,.0f}/s achieved,"
                    f" p50 {_ms(res.p50_ms)} ms, p99 {_ms(res.p99_ms)} ms, {res.non_2xx} non-2xx{mark}")
                self.settle()
        return {p: summarise_latency(rs, rate) for p, rs in rounds.items()}

    def run(self) -> dict:
        a = self.args
        started = time.time()
        load_at_start = _loadavg()
        cpu_at_start = _proc_stat()
        self.start_upstreams()
        self.start_fronts()
        try:
            thr = self.measure_throughput()
            rps = {p: thr[p]["rps"] for p in thr}

            rates = [float(a.rate)]
            min_sat = min(rps.values()) if rps else None
            if a.common_rate == "auto":
                if min_sat is not None and min_sat < a.rate:
                    common = max(100.0, (0.7 * min_sat) // 100 * 100)
                    rates.append(common)
                    log(f"the slowest path saturates at {min_sat:,.0f} req/s < {a.rate:,.0f}: also measuring every "
                        f"path at a common feasible rate of {common:,.0f} req/s")
            elif a.common_rate != "off":
                rates.append(float(a.common_rate))

            latency_sets = []
            for i, rate in enumerate(rates):
                per_path = self.measure_latency(rate, rps)
                latency_sets.append({
                    "kind": "target" if i == 0 else "common_feasible",
                    "target_rps": rate,
                    "per_path": per_path,
                    "comparison": results.compare_latency(per_path),
                })
        finally:
            self.stop_fronts()

        throughput = {"per_path": thr, "ratios": results.compare_throughput(rps),
                      "connections": a.connections, "threads": a.threads, "duration_s": a.duration,
                      "rounds": a.rounds}
        goals = results.judge_goals(throughput["ratios"], latency_sets[0]["comparison"])
        capture_ok = all(s["complete"] for s in self.capture_sessions)
        return {
            "schema_version": SCHEMA_VERSION,
            "started": _dt.datetime.fromtimestamp(started, _dt.UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(time.time() - started, 1),
            "command": shlex.join([sys.executable, *sys.argv]),
            "settings": {
                "paths": a.paths, "rate": a.rate, "rates_measured": rates, "rounds": a.rounds,
                "aggregation": "median over rounds; paths interleaved, order rotated each round",
                "throughput": {"tool": "wrk", "connections": a.connections, "threads": a.threads,
                               "duration_s": a.duration, "warmup_s": a.warmup},
                "fixed_rate": {"tool": "h2load --h1 --rps (per-request log)", "connections": a.rate_connections,
                               "duration_s": a.duration, "warmup_s": a.latency_warmup},
                "upstreams": a.upstreams,
                "nginx_workers": a.nginx_workers, "upstream_latency_ms": a.upstream_latency_ms,
                "upstream_workers": a.upstream_workers, "proxy_extra_args": a.proxy_arg,
                "body_source": self.body_source, "body_bytes": len(self.body),
                "ports": self.port,
            },
            "commands": self.commands,
            # Other work on the machine skews every figure: the load averages show whether there was any.
            "machine": {**machine_facts(), "loadavg_1_5_15_at_start": load_at_start,
                        "loadavg_1_5_15_at_end": _loadavg(), **_cpu_shares(cpu_at_start, _proc_stat())},
            "versions": versions(self.tools, self.shadowline),
            "throughput": throughput,
            "latency": latency_sets,
            "goals": goals,
            "capture": {"enabled": "shadowline" in a.paths, "sessions": self.capture_sessions, "complete": capture_ok},
        }


@dataclass
class Front:
    """What the load generator talks to for one path, and how many answers it has had from it."""

    path: str
    child: Child | None  # None for direct: the incumbent itself
    port: int
    run_dir: Path | None = None
    answered_min: int = 0  # responses the load tools received
    answered_max: int = 0  # ... plus what may have been in flight when a tool stopped

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def answered(self, at_least: int, at_most: int) -> None:
        self.answered_min += at_least
        self.answered_max += at_most


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def summarise_throughput(rounds: list[dict]) -> dict:
    """Median over rounds (and the spread), with totals for the counts."""
    rps = [r["rps"] for r in rounds]
    requests = sum(r["requests"] for r in rounds)
    errors: dict[str, int] = {}
    for r in rounds:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    out = {
        "rps": _median(rps), "rps_min": min(rps), "rps_max": max(rps),
        "requests": requests, "non_2xx": sum(r["non_2xx"] for r in rounds), "errors": errors,
        "latency_p50_ms": _median([r["latency_p50_ms"] for r in rounds]),
        "latency_p99_ms": _median([r["latency_p99_ms"] for r in rounds]),
        "rounds": rounds,
    }
    cpu = [r.get("front_cpu_s") for r in rounds]
    if all(c is not None for c in cpu) and requests:
        out["front_cpu_ms_per_1k_requests"] = sum(cpu) * 1e6 / requests
    return out


def summarise_latency(rounds: list[dict], rate: float) -> dict:
    """Median over rounds of achieved rate and percentiles; reached when most rounds reached it."""
    reached = sum(bool(r["reached"]) for r in rounds)
    out = {
        "target_rps": rate,
        "achieved_rps": _median([r["achieved_rps"] for r in rounds]),
        "reached": 2 * reached > len(rounds),
        "rounds_reached": reached,
        "rounds_total": len(rounds),
        "measured_requests": sum(r["measured_requests"] for r in rounds),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "failed": sum(r["failed"] for r in rounds),
        "rounds": rounds,
    }
    for key in ("p50_ms", "p90_ms", "p99_ms", "p999_ms"):
        out[key] = _median([r[key] for r in rounds])
        vals = [r[key] for r in rounds if r[key] is not None]
        out[key + "_spread"] = [min(vals), max(vals)] if vals else None
    maxes = [r["max_ms"] for r in rounds if r["max_ms"] is not None]
    out["max_ms"] = max(maxes) if maxes else None
    return out


# ---------------------------------------------------------------------------------------------
# Facts about the machine and the software


def _run_text(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout + proc.stderr).strip()


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _proc_stat() -> list[int] | None:
    """The aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def _cpu_shares(before: list[int] | None, after: list[int] | None) -> dict:
    """Busy and steal shares of all CPUs over the run. Steal is time the hypervisor gave to
    someone else: a high value means the figures were measured on a contended host."""
    if not before or not after or len(before) < 8 or len(after) < 8:
        return {}
    delta = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(delta)
    if total <= 0:
        return {}
    idle = delta[3] + delta[4]
    return {"cpu_busy_share_during_run": round(1 - idle / total, 3),
            "cpu_steal_share_during_run": round(delta[7] / total, 4)}


def machine_facts() -> dict:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "os": _os_release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
    }


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def versions(tools: dict[str, str], shadowline: list[str]) -> dict:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for pkg in ("shadowline", "uvloop", "httptools", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    for binary, deb in TOOLS.items():
        v = _run_text(["dpkg-query", "-W", "-f=${Version}", deb]) if shutil.which("dpkg-query") else ""
        if not v or "no packages" in v.lower():
            v = _run_text([tools[binary], "-v" if binary != "h2load" else "--version"]).splitlines()[0:1]
            v = v[0] if v else None
        out[binary] = v
    out["git_commit"] = _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"]) or None
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Shadowline proxy vs direct vs nginx mirror: throughput at saturation and latency at a fixed rate.",
    )
    p.add_argument("--quick", action="store_true", help="one round of 3 s runs (smoke run, under a minute)")
    p.add_argument("--duration", type=float, default=None,
                   help="measured seconds of each run (a wrk run or an h2load run); default 5, or 3 with --quick")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per measurement; paths interleave, order rotated, median reported (default 3, 1 with --quick)")
    p.add_argument("--rate", type=float, default=8300.0, help="fixed offered rate in req/s (default 8300)")
    p.add_argument("--common-rate", default="auto",
                   help="'auto' (default): if a path saturates below --rate, also measure every path at 70%% of the "
                        "slowest path's saturation; 'off'; or a number of req/s")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--rate-connections", type=int, default=50, help="h2load connections at fixed rate (default 50)")
    p.add_argument("--paths", default="direct,shadowline,nginx", help="comma-separated subset of direct,shadowline,nginx")
    p.add_argument("--nginx-workers", type=int, default=1,
                   help="nginx worker_processes (default 1: one event loop, like the proxy)")
    p.add_argument("--upstreams", choices=("demo", "static"), default="demo",
                   help="demo (default): `shadowline serve-demo` incumbent and candidate; static: nginx answering a "
                        "fixed response on both ports, to measure the proxy's own cost without the model's")
    p.add_argument("--upstream-latency-ms", type=float, default=0.0,
                   help="--latency-ms for both demo servers (default 0: measure the proxy, not the model)")
    p.add_argument("--upstream-workers", type=int, default=None, help="--workers for both demo servers, if serve-demo offers it (default: not passed)")
    p.add_argument("--proxy-arg", action="append", default=[],
                   help="extra argument for `shadowline proxy http` (repeatable, e.g. --proxy-arg=--max-inflight=512)")
    p.add_argument("--shadowline", default=None, help="the shadowline command (default: the one next to this Python)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="output directory")
    p.add_argument("--no-install", action="store_true", help="never apt-get install missing tools; fail instead")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is not met")
    args = p.parse_args(argv)

    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 5.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.warmup = 1.0 if args.quick else 2.0  # wrk warm-up per path, not counted
    args.latency_warmup = 0.5  # the start of each h2load run, left out of its figures
    args.settle = 0.5  # pause after each run: the mirrored backlog drains before the next one
    args.paths = [s.strip() for s in args.paths.split(",") if s.strip()]
    bad = [s for s in args.paths if s not in results.PATHS]
    if bad or not args.paths:
        p.error(f"--paths: unknown {bad}; choose from {','.join(results.PATHS)}")
    if args.common_rate not in ("auto", "off"):
        try:
            float(args.common_rate)
        except ValueError:
            p.error("--common-rate must be auto, off or a number")
    if args.duration <= 0 or args.rate <= 0 or args.rounds <= 0:
        p.error("--duration, --rounds and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(signum, frame):  # make `kill PID` clean up like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    bench = None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        tools = ensure_tools(allow_install=not args.no_install)
        shadowline = resolve_shadowline(args.shadowline)
        body, body_source = make_body()
        log(f"tools: {tools}; shadowline: {' '.join(shadowline)}; body from {body_source}")
        bench = Bench(args, tools, shadowline, body)
        bench.body_source = body_source
        res = bench.run()
    except KeyboardInterrupt:
        print("benchmarks: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 4
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 4
    finally:
        if bench is not None:
            bench.procs.stop_all()

    out_file = args.out / "results.json"
    out_file.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print()
    print(results.format_table(res))
    print(f"\nresults: {out_file}")
    if not res["capture"]["complete"]:
        print("benchmarks: error: the capture does not hold one row per answered request (see above)", file=sys.stderr)
        return 1
    if args.strict and not all(g["met"] for g in res["goals"].values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
