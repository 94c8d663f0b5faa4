"""Run Locust in its own process and read its numbers back.

Locust uses gevent, which monkey-patches the interpreter, so it never runs in our process:
`start_load` launches `python -m locust` headless on `locustfile.py`, and the numbers come
back through Locust's `--csv` files:

- `locust_stats_history.csv` is append-only, one Aggregated row per second (the locustfile
  makes Locust flush it every second): live progress reads its last complete row.
- `locust_stats.csv` is rewritten in place every second and once more at exit (the
  locustfile's quit hook): the final result reads its Aggregated row.

What to send and when: `LoadSpec.source` (see `harness.load.sources`) and `LoadSpec.shape`
(see `harness.load.shapes`) are checked here, in the parent, and handed to the Locust process
as JSON in SHADOWLINE_LOAD_SOURCE and SHADOWLINE_LOAD_SHAPE. With a shape, the locustfile's
LoadTestShape drives the run and ends it at the shape's duration (Locust's -u, -r and
--run-time are not passed); without one, the run is the constant `rate` it always was.

`LoadSpec.protocol` picks the user (SHADOWLINE_LOAD_PROTOCOL): `http` POSTs v2 JSON bodies to
an http:// target; `grpc` calls `inference.GRPCInferenceService/ModelInfer` on a grpc://host:port
(or host:port) target with the same rows (`harness.load.calls`).
"""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from harness.load import calls, shapes, sources

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # so the Locust process imports `harness`
STOP_TIMEOUT_S = 2  # Locust's --stop-timeout: time for in-flight requests to finish
_TERM_WAIT_S = 5.0  # after SIGTERM, how long Locust gets to write its stats before SIGKILL


def loopback_host(url: str, protocol: str = "http") -> str:
    """The host of `url` if it is a loopback address; ValueError otherwise.

    Only literal loopback IPs and `localhost` pass: names are not resolved, so a name that
    happens to resolve to 127.0.0.1 today cannot point the load elsewhere tomorrow. Over
    gRPC the target is grpc://host:port or host:port.
    """
    if protocol == "grpc":
        try:
            parts = urlsplit("grpc://" + calls.grpc_channel_target(url))
        except ValueError:
            raise ValueError(f"load target must be grpc://host:port (or host:port) on a loopback address, got {url!r}") from None
    else:
        parts = urlsplit(url)
    host = parts.hostname or ""
    if protocol != "grpc" and (parts.scheme not in ("http", "https") or not host):
        raise ValueError(f"load target must be an http(s) URL on a loopback address, got {url!r}")
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = host.lower() == "localhost"
    if not is_loopback:
        raise ValueError(
            f"load target host {host!r} is not a loopback address; Shadowline only loads loopback"
        )
    return host


@dataclass(frozen=True)
class LoadSpec:
    target: str  # base URL of the proxy (or model) under load, loopback only (gRPC: grpc://host:port)
    rate: float = 50.0  # requests/s over all users
    duration_s: int = 10  # Locust's --run-time takes whole seconds
    # Each user sends rate/users requests/s one after another, so a response slower than
    # users/rate seconds caps the achieved rate: raise users for slow or faulted targets.
    users: int = 5
    rows_per_request: int = 1
    model: str = "demo"
    seed: int = 0
    # users/s; None starts them all at once (the locustfile phases them so requests arrive
    # evenly, one every 1/rate s, instead of in bursts of `users`)
    spawn_rate: float | None = None
    timeout_s: float = 10.0  # per-request network timeout: a hanging target must not stall users
    grace_s: float = 20.0  # beyond duration_s: Locust start-up, ramp and shutdown
    # How the target rate moves over the run (harness.load.shapes): None is a constant `rate`
    # for `duration_s` (the behaviour before shapes existed). A shape's missing `users`,
    # `duration_s` and `per_user_rate` default to this spec's users, duration_s, rate/users.
    shape: dict | None = None
    # What to send (harness.load.sources): None is the demo model's synthetic rows.
    source: dict | None = None
    # "http": v2 JSON over HTTP; "grpc": the same rows as v2 ModelInfer calls (harness.load.calls)
    protocol: str = "http"

    def __post_init__(self) -> None:
        if self.protocol not in calls.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(calls.PROTOCOLS)}, got {self.protocol!r}")
        loopback_host(self.target, self.protocol)
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {self.rate}")
        if int(self.duration_s) != self.duration_s or self.duration_s < 1:
            raise ValueError(f"duration_s must be a whole number of seconds >= 1, got {self.duration_s}")
        if self.users < 1 or self.rows_per_request < 1:
            raise ValueError("users and rows_per_request must be >= 1")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {self.seed}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.model):
            raise ValueError(f"model name {self.model!r} may only hold letters, digits, '.', '_', '-'")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise ValueError(f"spawn_rate must be > 0 users/s, got {self.spawn_rate}")
        # Keep checked copies: later edits to the caller's dicts cannot change the run, and a
        # file source's path is made absolute (Locust runs in another directory).
        if self.shape is not None:
            object.__setattr__(self, "shape", shapes.validate_shape(self.shape, "shape"))
            self.resolved_shape()  # defaults that do not fit (a spike past duration_s) fail now
        if self.source is not None:
            object.__setattr__(self, "source", sources.validate_source(self.source, "source"))
            sources.check_replay_protocol(self.source, self.protocol, "source")

    def resolved_shape(self) -> dict | None:
        """The shape with this spec's defaults filled in: what the Locust process runs."""
        if self.shape is None:
            return None
        return shapes.resolve_shape(self.shape, rate=self.rate, users=self.users, duration_s=self.duration_s)

    @property
    def run_time_s(self) -> float:
        """How long the load runs: the shape's total duration, else `duration_s`."""
        shape = self.resolved_shape()
        return float(shape["duration_s"]) if shape is not None else float(self.duration_s)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    failures: int
    rps: float  # achieved requests/s, as Locust measured it
    p50_ms: float
    p95_ms: float
    p99_ms: float
    exit_code: int | None
    log_path: Path
    stopped: bool  # True when the driver stopped Locust (stop() or the hard deadline)


class LoadError(RuntimeError):
    """Locust ended without writing any stats (it failed to start); see the log."""


class LoadProcess:
    """A running Locust process. Use `wait()` or `stop()`; both always leave it ended."""

    def __init__(self, spec: LoadSpec, out_dir: str | os.PathLike) -> None:
        loopback_host(spec.target, spec.protocol)  # a spec built with object.__setattr__ tricks still gets checked
        self.spec = spec
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out_dir / "locust.log"
        self.stats_path = self.out_dir / "locust_stats.csv"
        self.history_path = self.out_dir / "locust_stats_history.csv"
        # A previous run's files in the same directory must not pass for this run's numbers.
        for stale in self.out_dir.glob("locust_*.csv"):
            stale.unlink()
        self.started_at = time.monotonic()
        # A shape ends on Locust's once-a-second tick, up to a second after its duration.
        extra_s = 1.0 if spec.shape is not None else 0.0
        self.deadline = self.started_at + spec.run_time_s + extra_s + spec.grace_s
        self._stopped = False
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                _command(spec, self.out_dir),
                env=_child_env(spec),
                cwd=self.out_dir,  # keeps Locust from reading a stray locust.conf or pyproject
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # a Ctrl-C in our terminal reaches us, and we stop it cleanly
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def progress(self) -> dict:
        """Elapsed seconds, plus requests/failures/current rps once Locust has reported."""
        stats = {"elapsed_s": round(time.monotonic() - self.started_at, 3)}
        rows = _aggregated_rows(self.history_path)
        if rows:
            last = rows[-1]
            stats.update(
                requests=int(last["Total Request Count"]),
                failures=int(last["Total Failure Count"]),
                users=int(last["User Count"]),
                current_rps=0.0,
            )
            # Locust's own "Requests/s" column is a ~10 s window that lags by 2 s and reads 0
            # for a short run's first seconds; the last two one-second rows give the live rate.
            if len(rows) >= 2:
                dt = int(last["Timestamp"]) - int(rows[-2]["Timestamp"])
                dn = int(last["Total Request Count"]) - int(rows[-2]["Total Request Count"])
                if dt > 0:
                    stats["current_rps"] = dn / dt
        return stats

    def wait(self, on_progress: Callable[[dict], None] | None = None, interval_s: float = 1.0) -> LoadResult:
        """Block until Locust exits or the hard deadline passes; then return its result."""
        try:
            while self._proc.poll() is None:
                if time.monotonic() >= self.deadline:
                    return self.stop()
                try:
                    self._proc.wait(timeout=min(interval_s, max(0.0, self.deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    if on_progress is not None:
                        on_progress(self.progress())
        except BaseException:
            self.stop()  # KeyboardInterrupt, or a progress callback that raised
            raise
        return self._result()

    def stop(self) -> LoadResult:
        """SIGTERM (Locust writes its stats and exits), then SIGKILL; by PID only."""
        if self._proc.poll() is None:
            self._stopped = True
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=_TERM_WAIT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._result()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _result(self) -> LoadResult:
        rows = _aggregated_rows(self.stats_path)
        if not rows:
            raise LoadError(
                f"Locust exited with code {self._proc.returncode} and wrote no stats; "
                f"see {self.log_path}:\n{_tail(self.log_path)}"
            )
        row = rows[-1]
        return LoadResult(
            requests=int(row["Request Count"]),
            failures=int(row["Failure Count"]),
            rps=float(row["Requests/s"]),
            p50_ms=_ms(row["50%"]),
            p95_ms=_ms(row["95%"]),
            p99_ms=_ms(row["99%"]),
            exit_code=self._proc.returncode,
            log_path=self.log_path,
            stopped=self._stopped,
        )


def start_load(spec: LoadSpec, out_dir: str | os.PathLike) -> LoadProcess:
    """Start Locust and return at once; call `.wait()` or `.stop()` on the handle."""
    return LoadProcess(spec, out_dir)


def run_load(
    spec: LoadSpec, out_dir: str | os.PathLike, *, on_progress: Callable[[dict], None] | None = None
) -> LoadResult:
    """Run Locust to completion; `on_progress(stats)` is called about once a second."""
    return start_load(spec, out_dir).wait(on_progress=on_progress)


def _command(spec: LoadSpec, out_dir: Path) -> list[str]:
    spawn_rate = spec.spawn_rate if spec.spawn_rate is not None else spec.users
    # With a shape, the locustfile's LoadTestShape sets users and ends the run; Locust would
    # only warn that these flags are ignored.
    users_and_time = [] if spec.shape is not None else [
        "-u", str(spec.users),
        "-r", str(spawn_rate),
        "--run-time", f"{int(spec.duration_s)}s",
    ]
    return [
        sys.executable, "-m", "locust",
        "-f", str(LOCUSTFILE),
        "--headless",
        "--host", spec.target,
        *users_and_time,
        "--only-summary",
        "--csv", str(out_dir / "locust"),
        "--stop-timeout", str(STOP_TIMEOUT_S),
        "--exit-code-on-error", "0",  # failed requests are data for the judge, not a crash
    ]  # fmt: skip


def _child_env(spec: LoadSpec) -> dict[str, str]:
    # LOCUST_* variables would silently override our flags, and a stray SHADOWLINE_LOAD_SHAPE
    # or _SOURCE in our environment would change the run: it must depend on the spec only.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "SHADOWLINE_LOAD_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH")]))
    env.update(
        SHADOWLINE_LOAD_SEED=str(spec.seed),
        SHADOWLINE_LOAD_MODEL=spec.model,
        SHADOWLINE_LOAD_ROWS=str(spec.rows_per_request),
        SHADOWLINE_LOAD_RATE=repr(float(spec.rate)),
        SHADOWLINE_LOAD_USERS=str(spec.users),
        SHADOWLINE_LOAD_TIMEOUT=repr(float(spec.timeout_s)),
        SHADOWLINE_LOAD_PROTOCOL=spec.protocol,
    )
    if spec.shape is not None:
        env["SHADOWLINE_LOAD_SHAPE"] = json.dumps(spec.resolved_shape())
        spawn_rate = spec.spawn_rate if spec.spawn_rate is not None else spec.resolved_shape().get("users", spec.users)
        env["SHADOWLINE_LOAD_SPAWN_RATE"] = repr(float(spawn_rate))
    if spec.source is not None:
        env["SHADOWLINE_LOAD_SOURCE"] = json.dumps(spec.source)
    return env


def _read_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    reader = csv.DictReader(text.splitlines())
    # A row Locust is halfway through writing is short: DictReader fills it with None.
    return [row for row in reader if None not in row.values() and None not in row]


def _aggregated_rows(path: Path) -> list[dict]:
    return [r for r in _read_rows(path) if r.get("Name") == "Aggregated"]


def _ms(value: str) -> float:
    return float(value) if value not in ("", "N/A") else float("nan")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
