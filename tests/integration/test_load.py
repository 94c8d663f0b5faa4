"""The Locust load driver against a tiny real HTTP server on 127.0.0.1.

Short Locust runs (about 25 s in all): the main run, a rerun with the same seed for
reproducibility, a run stopped from a progress callback against a server that fails every
other request; then one run per load shape and traffic source capability: a ramp with a
feature schema, steps, a custom LoadTestShape, and replays of a capture and a JSON-lines file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.capture import CaptureWriter
from harness.demo_model import FEATURES
from harness.load import LoadError, LoadSpec, driver, run_load, shapes, start_load
from harness.records import ArmOutcome, Exchange

RESPONSE = json.dumps(
    {"model_name": "demo", "outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [0]}]}
).encode()


class RecordingServer:
    """Answers every POST with a fixed v2 response (model "flaky": 503 every other request)."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, str, dict, bytes]] = []  # (arrival, path, headers, body)
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the proxy will serve
            disable_nagle_algorithm = True  # else headers and body in two writes cost 40 ms

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with recorder.lock:
                    recorder.requests.append((time.monotonic(), self.path, dict(self.headers), body))
                    n = len(recorder.requests)
                status = 503 if "flaky" in self.path and n % 2 == 0 else 200
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(RESPONSE)))
                self.end_headers()
                self.wfile.write(RESPONSE)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def first_bodies(self) -> set[bytes]:
        """The first request body each user sent (request ids end in -u<user>-<counter>)."""
        return {body for _, _, headers, body in self.requests if headers["x-request-id"].endswith("-0")}


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def server():
    s = RecordingServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """3 s at 50 req/s, 5 users, 2 rows per request."""
    s = RecordingServer()
    progress: list[dict] = []
    spec = LoadSpec(s.url, rate=50, duration_s=3, users=5, rows_per_request=2, model="demo", seed=7)
    proc = start_load(spec, tmp_path_factory.mktemp("load"))
    result = proc.wait(on_progress=progress.append)
    s.close()
    return spec, s, proc, result, progress


def test_non_loopback_target_is_refused():
    for url, host in [
        ("http://10.0.0.1:8080", "10.0.0.1"),
        ("http://example.com/v2", "example.com"),
        ("http://0.0.0.0:80", "0.0.0.0"),
        ("https://[2001:db8::1]:443/", "2001:db8::1"),
    ]:
        with pytest.raises(ValueError, match=f"'{host}' is not a loopback address"):
            LoadSpec(url)
    for url in ("ftp://127.0.0.1/", "127.0.0.1:8080", ""):
        with pytest.raises(ValueError):
            LoadSpec(url)
    for url in ("http://127.0.0.1:8080", "http://127.9.0.1", "http://localhost:1", "http://[::1]:8080/"):
        LoadSpec(url)  # loopback passes


def test_locust_that_cannot_start_raises_with_its_log(monkeypatch, tmp_path):
    monkeypatch.setattr(driver, "LOCUSTFILE", tmp_path / "missing_locustfile.py")
    with pytest.raises(LoadError, match="locust.log"):
        run_load(LoadSpec("http://127.0.0.1:9", duration_s=1), tmp_path)


@pytest.mark.slow
def test_requests_arrive_as_valid_v2_at_the_target_rate(main_run):
    spec, server, proc, result, progress = main_run
    assert result.exit_code == 0 and not result.stopped
    assert proc.returncode is not None
    assert_gone(proc.pid)

    expected = spec.rate * spec.duration_s  # 150
    assert 0.8 * expected <= len(server.requests) <= 1.1 * expected
    # The final stats csv counts exactly what the server received.
    assert result.requests == len(server.requests)
    assert result.failures == 0
    assert 0.7 * spec.rate <= result.rps <= 1.3 * spec.rate
    assert 0 <= result.p50_ms <= result.p95_ms <= result.p99_ms < 1000
    assert result.log_path.exists()

    ids = set()
    for _, path, headers, raw in server.requests:
        assert path == "/v2/models/demo/infer"
        body = json.loads(raw)
        assert headers["x-request-id"] == body["id"]
        ids.add(body["id"])
        assert [i["name"] for i in body["inputs"]] == list(FEATURES)
        for tensor in body["inputs"]:
            assert tensor["shape"] == [2] and tensor["datatype"] == "FP32"
            assert len(tensor["data"]) == 2 and all(isinstance(v, float) for v in tensor["data"])
    assert len(ids) == len(server.requests)  # request ids are unique

    # Every user started and took its share of the rate.
    per_user = defaultdict(int)
    for rid in ids:
        per_user[rid.rsplit("-", 1)[0]] += 1
    assert len(per_user) == spec.users
    assert min(per_user.values()) >= 0.5 * expected / spec.users
    # Users are phased, so arrivals are a steady stream (one per 20 ms), not bursts of 5.
    arrivals = sorted(t for t, *_ in server.requests)
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    assert gaps[len(gaps) // 2] > 0.25 / spec.rate

    assert progress and all("elapsed_s" in p for p in progress)
    live = [p for p in progress if p.get("requests", 0) > 0]
    assert live, f"no live request counts in progress reports: {progress}"
    assert live[-1]["requests"] <= result.requests
    assert live[-1]["current_rps"] > 0

    # Locust (and its gevent monkey-patching) stayed in its own process.
    assert "locust" not in sys.modules and "gevent" not in sys.modules


@pytest.mark.slow
def test_same_seed_sends_the_same_first_bodies(main_run, server, tmp_path):
    spec, first_server, *_ = main_run
    rerun = LoadSpec(server.url, rate=50, duration_s=2, users=5, rows_per_request=2, model="demo", seed=7)
    run_load(rerun, tmp_path)
    assert len(first_server.first_bodies()) == spec.users
    assert server.first_bodies() == first_server.first_bodies()


@pytest.mark.slow
def test_failures_are_counted_and_an_interrupted_run_is_stopped(main_run, server, tmp_path):
    _, first_server, *_ = main_run
    spec = LoadSpec(server.url, rate=50, duration_s=30, users=5, rows_per_request=2, model="flaky", seed=8)
    proc = start_load(spec, tmp_path)

    class Interrupt(Exception):
        pass

    def on_progress(stats: dict) -> None:
        if stats.get("requests", 0) >= 40:
            raise Interrupt  # stands in for a KeyboardInterrupt in the caller

    with pytest.raises(Interrupt):
        proc.wait(on_progress=on_progress)
    assert proc.returncode is not None  # wait() stopped Locust on the way out
    assert_gone(proc.pid)

    result = proc.stop()  # idempotent; reads the stats Locust wrote on SIGTERM
    assert result.stopped
    assert result.requests == len(server.requests) >= 40
    assert 0.3 * result.requests <= result.failures <= 0.7 * result.requests  # 503 every other
    assert result.requests < spec.rate * spec.duration_s / 2
    # A different seed sends different data.
    assert server.first_bodies().isdisjoint(first_server.first_bodies())


# -- load shapes and traffic sources ---------------------------------------------------------


def per_second(server: RecordingServer, spec: LoadSpec) -> list[tuple[float, int]]:
    """(target, received) request counts for each second of a shaped run.

    The clock starts at the first arrival minus the moment that request was due, so Locust's
    start-up time does not shift the buckets.
    """
    schedule = shapes.Schedule(spec.resolved_shape())
    arrivals = sorted(t for t, *_ in server.requests)
    t0 = arrivals[0] - schedule.due_time(0.5)
    got = Counter(int((t - t0) // 1) for t in arrivals)
    assert max(got) < math.ceil(schedule.duration_s), f"requests after the shape ended: {sorted(got.items())}"
    return [(schedule.count_at(i + 1) - schedule.count_at(i), got.get(i, 0))
            for i in range(math.ceil(schedule.duration_s))]


def assert_follows(rows: list[tuple[float, int]], total: float, received: int) -> None:
    for second, (want, got) in enumerate(rows):
        assert abs(got - want) <= 0.15 * want + 3, f"second {second}: {got} requests, target {want:g}; all: {rows}"
    assert 0.9 * total <= received <= 1.05 * total, (received, total)


SCHEMA = [
    {"name": "age", "type": "int", "min": 18, "max": 90},
    {"name": "plan", "type": "category", "categories": ["free", "pro"], "missing": 0.3},
    {"name": "spend", "type": "float", "mean": 100, "std": 30, "min": 0},
]


@pytest.mark.slow
def test_ramp_shape_with_a_feature_schema(server, tmp_path):
    spec = LoadSpec(server.url, users=8, rows_per_request=3, seed=3,
                    shape={"type": "ramp", "from_rate": 10, "to_rate": 70, "over_s": 3},
                    source={"type": "synthetic", "features": SCHEMA})
    result = run_load(spec, tmp_path)
    assert result.exit_code == 0 and not result.stopped and result.failures == 0
    assert result.requests == len(server.requests)
    assert_follows(per_second(server, spec), 120, len(server.requests))  # 20, 40, 60
    nulls = 0
    for _, path, _, raw in server.requests:
        assert path == "/v2/models/demo/infer"
        inputs = {i["name"]: i for i in json.loads(raw)["inputs"]}
        assert [inputs[n]["datatype"] for n in ("age", "plan", "spend")] == ["INT64", "BYTES", "FP32"]
        assert all(i["shape"] == [3] for i in inputs.values())
        assert all(isinstance(v, int) and 18 <= v <= 90 for v in inputs["age"]["data"])
        assert all(v in ("free", "pro", None) for v in inputs["plan"]["data"])
        nulls += inputs["plan"]["data"].count(None)
        assert all(v >= 0 for v in inputs["spend"]["data"])
    assert 0.15 < nulls / (3 * len(server.requests)) < 0.45


@pytest.mark.slow
def test_step_shape_follows_its_steps(server, tmp_path):
    steps = [{"rate": 20, "duration_s": 1}, {"rate": 80, "duration_s": 1}, {"rate": 40, "duration_s": 1}]
    spec = LoadSpec(server.url, users=8, seed=4, shape={"type": "step", "steps": steps})
    result = run_load(spec, tmp_path)
    assert result.exit_code == 0 and not result.stopped and result.failures == 0
    assert result.requests == len(server.requests)
    assert_follows(per_second(server, spec), 140, len(server.requests))


@pytest.mark.slow
def test_custom_load_test_shape_is_imported_in_the_locust_process(server, tmp_path):
    shape_dir = tmp_path / "shapes"
    shape_dir.mkdir()
    (shape_dir / "my_shapes.py").write_text(textwrap.dedent("""
        from locust import LoadTestShape

        class TwoThenFour(LoadTestShape):
            # Never ends by itself: the spec's duration_s cuts it off.
            def tick(self):
                return (2, 10) if self.get_run_time() < 1 else (4, 10)
    """))
    spec = LoadSpec(server.url, rate=20, users=4, duration_s=2, seed=5,
                    shape={"type": "custom", "class": "my_shapes:TwoThenFour", "pythonpath": str(shape_dir)})
    started = time.monotonic()
    result = run_load(spec, tmp_path / "run")
    assert time.monotonic() - started < 2 + 10  # ended by the cap, not the deadline
    assert result.exit_code == 0 and not result.stopped
    # Each user sends rate/users = 5 req/s: about 2 x 5 in the first second, 4 x 5 in the second.
    arrivals = sorted(t for t, *_ in server.requests)
    first = [t for t in arrivals if t - arrivals[0] < 1]
    assert 6 <= len(first) <= 14 and 20 <= len(arrivals) <= 36, (len(first), len(arrivals))
    users = {h["x-request-id"].rsplit("-", 1)[0] for _, _, h, _ in server.requests}
    assert len(users) == 4
    assert "locust" not in sys.modules


@pytest.mark.slow
def test_a_capture_replays_exactly_as_recorded(server, tmp_path):
    db = tmp_path / "capture.db"
    recorded = [(f"/v2/models/{'ab'[i % 2]}/infer", b'{"id": "rec%d", "inputs": [{"data": [%d.5]}]}' % (i, i))
                for i in range(12)]
    with CaptureWriter(db) as writer:
        for i, (route, body) in enumerate(recorded):
            writer.write(Exchange(f"r{i}", 1.7e9 + i, "POST", route, body, {"incumbent": ArmOutcome(200, 0.01, b"{}")}))
    spec = LoadSpec(server.url, rate=10, duration_s=2, users=3, source={"type": "file", "path": str(db)})
    result = run_load(spec, tmp_path / "run")
    assert result.exit_code == 0 and result.failures == 0
    assert 16 <= len(server.requests) <= 22
    # Bodies and paths arrive byte for byte as recorded, first in recorded order ...
    arrived = [(path, body) for _, path, _, body in sorted(server.requests, key=lambda r: r[0])]
    assert arrived[:12] == recorded
    # ... then cycling: user u replays records u, u+3, u+6, u+9 over and over.
    for _, path, headers, body in server.requests:
        user, n = headers["x-request-id"].rsplit("-u", 1)[1].split("-")
        own = recorded[int(user)::3]
        assert (path, body) == own[int(n) % len(own)]


@pytest.mark.slow
def test_a_jsonl_file_replays_exactly_as_recorded(server, tmp_path):
    raw = '{"id":"x1",  "inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[0.10]}]}'
    wrapped = {"body": "{\"id\": \"x2\"}", "path": "/v2/models/other/infer", "headers": {"X-Tenant": "t7"}}
    path = tmp_path / "requests.jsonl"
    path.write_text(raw + "\n" + json.dumps(wrapped) + "\n")
    spec = LoadSpec(server.url, rate=10, duration_s=1, users=2, model="m", source={"type": "file", "path": str(path)})
    run_load(spec, tmp_path / "run")
    assert len(server.requests) >= 6
    for _, req_path, headers, body in server.requests:
        if body == raw.encode():
            assert req_path == "/v2/models/m/infer"
        else:
            assert (req_path, body, headers.get("X-Tenant")) == ("/v2/models/other/infer", b'{"id": "x2"}', "t7")
    assert {body for *_, body in server.requests} == {raw.encode(), b'{"id": "x2"}'}
