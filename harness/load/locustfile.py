"""Locustfile run by the Locust process that `harness.load.driver` starts.

It POSTs Open Inference Protocol v2 infer requests built from synthetic feature rows. Locust
owns argv, so the driver passes our settings as SHADOWLINE_LOAD_* environment variables:

    SHADOWLINE_LOAD_SEED     base seed (int)
    SHADOWLINE_LOAD_MODEL    model name in /v2/models/{model}/infer
    SHADOWLINE_LOAD_ROWS     rows per request (N in each input's shape [N])
    SHADOWLINE_LOAD_RATE     target requests/s for the whole run
    SHADOWLINE_LOAD_USERS    number of users the rate is spread over
    SHADOWLINE_LOAD_TIMEOUT  per-request network timeout, seconds

This module only ever runs inside Locust (gevent monkey-patches the process); the main
process must never import it.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time

import gevent
import locust.stats
import numpy as np
from locust import FastHttpUser, constant_throughput, events, task

from harness.demo_model import FEATURES, synthetic_rows

SEED = int(os.environ.get("SHADOWLINE_LOAD_SEED", "0"))
MODEL = os.environ.get("SHADOWLINE_LOAD_MODEL", "demo")
ROWS = int(os.environ.get("SHADOWLINE_LOAD_ROWS", "1"))
RATE = float(os.environ.get("SHADOWLINE_LOAD_RATE", "10"))
USERS = int(os.environ.get("SHADOWLINE_LOAD_USERS", "1"))
TIMEOUT_S = float(os.environ.get("SHADOWLINE_LOAD_TIMEOUT", "10"))

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
    prefix = getattr(_environment.parsed_options, "csv_prefix", None) if _environment else None
    if not prefix:
        return
    path = f"{prefix}_stats.csv"
    with open(path + ".tmp", "w", newline="") as f:
        locust.stats.StatsCSV(_environment, locust.stats.PERCENTILES_TO_REPORT).requests_csv(csv.writer(f))
    os.replace(path + ".tmp", path)


# Users are created one after another in this process, so a counter gives each a stable
# index; together with the worker index it stays distinct when Locust runs distributed.
_user_index = itertools.count()


def build_request(rng: np.random.Generator, request_id: str, rows: int) -> dict:
    """One v2 infer request: one FP32 input per feature, `rows` values each."""
    # Drawing from the user's own generator makes its whole request stream a pure function
    # of (seed, worker, user), independent of timing and of the other users.
    block = synthetic_rows(rows, rng)
    return {
        "id": request_id,
        "inputs": [
            {"name": name, "shape": [rows], "datatype": "FP32", "data": block[:, j].tolist()}
            for j, name in enumerate(FEATURES)
        ],
    }


class InferUser(FastHttpUser):
    # constant_throughput paces task runs per user, so USERS * (RATE / USERS) = RATE overall
    # regardless of latency (as long as latency stays below USERS / RATE seconds).
    wait_time = constant_throughput(RATE / USERS)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def on_start(self) -> None:
        runner = self.environment.runner
        worker = getattr(runner, "worker_index", 0) or 0
        self.user_index = next(_user_index)
        self.rng = np.random.default_rng([SEED, worker, self.user_index])
        self.id_prefix = f"load-{SEED}-w{worker}-u{self.user_index}"
        self.sent = 0
        self.path = f"/v2/models/{MODEL}/infer"
        # Locust starts a spawn batch of users at the same instant, so they would fire in
        # bursts of USERS every USERS/RATE s. Phase each user by its index instead: together
        # they then send one request every 1/RATE s, a steady stream. constant_throughput
        # anchors its schedule at `_cp_last_run` (set when the user is created), so move the
        # anchor to the end of the phase; if Locust renames it, only the phasing is lost.
        gevent.sleep((self.user_index % USERS) / RATE)
        self._cp_last_run = time.perf_counter()

    @task
    def infer(self) -> None:
        request_id = f"{self.id_prefix}-{self.sent}"
        self.sent += 1
        body = json.dumps(build_request(self.rng, request_id, ROWS))
        # A non-2xx is recorded as a failure by FastHttpUser and the user carries on.
        self.client.post(
            self.path,
            data=body,
            headers={"content-type": "application/json", "x-request-id": request_id},
            name="v2 infer",
        )
