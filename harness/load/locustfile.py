"""Locustfile run by the Locust process that `harness.load.driver` starts.

It sends requests from a traffic source (`harness.load.sources`: by default Open Inference
Protocol v2 infer requests built from the demo model's synthetic rows) at the rate a load
shape sets (`harness.load.shapes`). Locust owns argv, so the driver passes our settings as
SHADOWLINE_LOAD_* environment variables:

    SHADOWLINE_LOAD_SEED        base seed (int)
    SHADOWLINE_LOAD_MODEL       model name in /v2/models/{model}/infer
    SHADOWLINE_LOAD_ROWS        rows per request (N in each input's shape [N])
    SHADOWLINE_LOAD_RATE        target requests/s for the whole run (without a shape)
    SHADOWLINE_LOAD_USERS       number of users the rate is spread over (without a shape)
    SHADOWLINE_LOAD_TIMEOUT     per-request network timeout, seconds
    SHADOWLINE_LOAD_SHAPE       optional: a resolved shape, JSON (`shapes.resolve_shape`)
    SHADOWLINE_LOAD_SPAWN_RATE  optional, with a shape: users started per second
    SHADOWLINE_LOAD_SOURCE      optional: a validated source, JSON (`sources.validate_source`)
    SHADOWLINE_LOAD_PROTOCOL    http (default: v2 JSON POSTs) or grpc (v2 ModelInfer calls)

One user class runs, by protocol: `InferUser` (FastHttpUser) over HTTP, `GrpcInferUser` (a
plain User whose client is a grpc channel, `harness.load.grpc_client`) over gRPC; the other is
abstract. Both send the same stream (`harness.load.calls.UserStream`) at the same pace.

Without SHADOWLINE_LOAD_SHAPE, no LoadTestShape is defined and Locust's own -u, -r and
--run-time drive the run (as docker-compose does). With a built-in shape, `SpecShape` keeps
the shape's pool of users running and ends the run at its duration; with a custom one, the
user's LoadTestShape is imported here (it must be importable in this process) and wrapped so
the run still ends at the shape's duration.

Users pace themselves on a shared schedule (`shapes.Pacer`): user i of a pool of U sends the
run's requests i, i+U, i+2U, ..., each at the moment the shape's cumulative target count
reaches it, so together they send one evenly spread stream at the shape's current rate.

This module only ever runs inside Locust (gevent monkey-patches the process); the main
process must never import it.
"""

from __future__ import annotations

import csv
import importlib
import inspect
import itertools
import json
import logging
import os
import sys
import time

import gevent
import locust.stats
from locust import FastHttpUser, LoadTestShape, User, events, task

from harness.load import calls, shapes, sources


def _json_env(name: str) -> dict | None:
    raw = os.environ.get(name)
    return json.loads(raw) if raw else None


SEED = int(os.environ.get("SHADOWLINE_LOAD_SEED", "0"))
MODEL = os.environ.get("SHADOWLINE_LOAD_MODEL", "demo")
ROWS = int(os.environ.get("SHADOWLINE_LOAD_ROWS", "1"))
RATE = float(os.environ.get("SHADOWLINE_LOAD_RATE", "10"))
USERS = int(os.environ.get("SHADOWLINE_LOAD_USERS", "1"))
TIMEOUT_S = float(os.environ.get("SHADOWLINE_LOAD_TIMEOUT", "10"))
SHAPE = _json_env("SHADOWLINE_LOAD_SHAPE")
SOURCE = _json_env("SHADOWLINE_LOAD_SOURCE")
PROTOCOL = os.environ.get("SHADOWLINE_LOAD_PROTOCOL", "http")
if PROTOCOL not in calls.PROTOCOLS:
    raise ValueError(f"SHADOWLINE_LOAD_PROTOCOL must be one of {', '.join(calls.PROTOCOLS)}, got {PROTOCOL!r}")
if PROTOCOL == "grpc":
    # Switches grpc to gevent: after Locust's monkey-patching (import locust, above), before any channel.
    from harness.load.grpc_client import GrpcClient

# Locust rewrites its --csv files every second but flushes them only every 5 s (documented
# knob). The driver reads them for live progress, so flush on every write.
locust.stats.CSV_STATS_FLUSH_INTERVAL_SEC = 0

_environment = None


@events.init.add_listener
def _keep_environment(environment, **_kwargs) -> None:
    global _environment
    _environment = environment
    # gevent's loop caches "now" and Locust's imports (numpy, ours) ran since it last looked;
    # --run-time is a spawn_later on that stale clock and would end the run up to a second
    # early. Refresh it: init fires just before Locust starts the run-time timer.
    gevent.get_hub().loop.update_now()


@events.quit.add_listener
def _write_final_stats(**_kwargs) -> None:
    """Rewrite <csv>_stats.csv from the final numbers.

    Locust refreshes that file only once a second and does not refresh it at exit, so up to a
    second of requests is missing from it otherwise. `quit` fires after the users have
    stopped. Write-then-rename, so Locust's own still-open handle cannot overwrite it.
    """
    if _skipped_slots:
        logging.warning(
            "%d scheduled requests were not sent: users were still waiting for earlier answers. "
            "The target rate needs more users (each sustains at most 1/latency requests/s).", _skipped_slots
        )
    prefix = getattr(_environment.parsed_options, "csv_prefix", None) if _environment else None
    if not prefix:
        return
    path = f"{prefix}_stats.csv"
    with open(path + ".tmp", "w", newline="") as f:
        locust.stats.StatsCSV(_environment, locust.stats.PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
    os.replace(path + ".tmp", path)


# -- when: the shape --------------------------------------------------------------------------

if SHAPE is None or SHAPE["type"] == "custom":
    # A constant stream of RATE req/s over a pool of USERS (custom: per_user_rate per user,
    # however many users the custom shape runs), with no end of its own.
    _per_user = RATE / USERS if SHAPE is None else SHAPE["per_user_rate"]
    SCHEDULE = shapes.Schedule({"type": "constant", "rate": _per_user * USERS})
    POOL = USERS
else:
    SCHEDULE = shapes.Schedule(SHAPE)
    POOL = int(SHAPE["users"])


def _custom_shape(spec: dict) -> type:
    """The user's LoadTestShape ("module:Class"), cut off at the spec's duration."""
    if spec.get("pythonpath"):
        sys.path.insert(0, spec["pythonpath"])
    module_name, _, class_name = spec["class"].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(
            f"shape.class {spec['class']!r}: cannot import {module_name!r} in the Locust process ({e}). "
            "It must be importable there: put its directory on PYTHONPATH or in shape.pythonpath."
        ) from e
    base = getattr(module, class_name, None)
    if not (inspect.isclass(base) and issubclass(base, LoadTestShape)):
        raise TypeError(f"shape.class {spec['class']!r} is not a locust.LoadTestShape subclass")
    cap = float(spec["duration_s"])

    class Bounded(base):
        abstract = False

        def tick(self):
            if self.get_run_time() >= cap:
                return None
            return super().tick()

    Bounded.__name__ = Bounded.__qualname__ = f"Bounded{class_name}"
    return Bounded


if SHAPE is not None and SHAPE["type"] == "custom":
    SpecShape = _custom_shape(SHAPE)
elif SHAPE is not None:
    SPAWN_RATE = float(os.environ.get("SHADOWLINE_LOAD_SPAWN_RATE", str(POOL)))

    class SpecShape(LoadTestShape):
        """Runs the shape's pool of users until the shape's duration; the users pace the rate."""

        def tick(self):
            t = self.get_run_time()
            if t >= SCHEDULE.duration_s:
                return None
            return shapes.users_at(SHAPE, t, POOL), SPAWN_RATE


# The users' common time origin: the start of the test (perf_counter seconds).
_run_started: float | None = None


@events.test_start.add_listener
def _mark_start(**_kwargs) -> None:
    global _run_started
    _run_started = time.perf_counter()


# -- what: the source -------------------------------------------------------------------------

FEATURES = None
LAYOUT = "named"
RECORDS: list[sources.RecordedRequest] = []
if SOURCE is not None and SOURCE["type"] == "synthetic":
    LAYOUT = SOURCE.get("layout", "named")
    if SOURCE.get("features"):
        FEATURES = sources.validate_features(SOURCE["features"])
elif SOURCE is not None and SOURCE["type"] == "file":
    RECORDS = sources.load_records(SOURCE)
    if not RECORDS:
        raise ValueError(f"source.path {SOURCE['path']}: no recorded requests")

# Users are created one after another in this process, so a counter gives each a stable
# index; together with the worker index it stays distinct when Locust runs distributed.
_user_index = itertools.count()
_skipped_slots = 0  # slots users let pass because they were busy (logged at quit)


class _PacedUser:
    """What both users share: the request stream and the pace (mixed into a Locust User)."""

    def on_start(self) -> None:
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) or 0
        self.user_index = next(_user_index)
        # Drawing from the user's own generator makes its whole request stream a pure
        # function of (seed, worker, user), independent of timing and of the other users.
        self.stream = calls.UserStream(
            protocol=PROTOCOL, seed=SEED, worker=worker, user_index=self.user_index, pool=POOL, model=MODEL,
            rows=ROWS, layout=LAYOUT, features=FEATURES, records=RECORDS,
        )
        # Locust starts a spawn batch of users at the same instant; phasing each user onto
        # its own slots of the schedule turns them into one steady stream instead of bursts.
        self.t0 = _run_started if _run_started is not None else time.perf_counter()
        self.pacer = shapes.Pacer(SCHEDULE, self.user_index % POOL, POOL)
        self.pacer.start(time.perf_counter() - self.t0)

    def on_stop(self) -> None:
        global _skipped_slots
        pacer = getattr(self, "pacer", None)
        _skipped_slots += pacer.skipped if pacer is not None else 0

    def wait_time(self) -> float:
        # At most a second at a time: a slot beyond the shape's end is due "never", and the
        # shape ends the run meanwhile.
        return min(max(self.pacer.due - (time.perf_counter() - self.t0), 0.0), 1.0)

    def due(self) -> bool:
        """Whether the user's next slot has come (else wait_time sleeps towards it)."""
        return time.perf_counter() - self.t0 >= self.pacer.due - 0.001

    def sent(self) -> None:
        self.pacer.sent(time.perf_counter() - self.t0)


class InferUser(_PacedUser, FastHttpUser):
    abstract = PROTOCOL != "http"
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    @task
    def infer(self) -> None:
        if not self.due():
            return
        call = self.stream.next()
        # A non-2xx is recorded as a failure by FastHttpUser and the user carries on.
        # No redirects: a Location header must not take the load off the loopback target.
        body = call.body if call.body or call.method not in ("GET", "HEAD") else None
        self.client.request(call.method, call.path, data=body, headers=call.headers, name=call.name, allow_redirects=False)
        self.sent()


class GrpcInferUser(_PacedUser, User):
    abstract = PROTOCOL != "grpc"

    def on_start(self) -> None:
        super().on_start()
        self.client = GrpcClient(self.host, self.environment, TIMEOUT_S)

    def on_stop(self) -> None:
        super().on_stop()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()

    @task
    def infer(self) -> None:
        if not self.due():
            return
        # A status other than OK is a Locust failure (GrpcClient) and the user carries on.
        self.client.call(self.stream.next())
        self.sent()
