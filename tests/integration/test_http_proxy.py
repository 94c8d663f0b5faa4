"""The HTTP shadow proxy against real demo servers and real clients on loopback."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.capture import CaptureReader
from proxies.http1 import HOP_BY_HOP
from tests.integration.conftest import INFER, RecordingUpstream, infer_bodies, percentile, post


def _connect(child) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(child.host, child.port, timeout=10)


def _end_to_end(headers) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if k.lower().encode() not in HOP_BY_HOP)


def _exchange(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, _end_to_end(response.getheaders()), response.read()


def test_responses_are_identical_to_the_incumbents(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    candidate = start_demo("candidate", "--role", "candidate", "--variant", "broken")
    proxy = start_proxy(incumbent.url, candidate.url)
    direct, through = _connect(incumbent), _connect(proxy)
    cases = [("POST", INFER, body, {"content-type": "application/json", "x-request-id": f"id-{i}"}) for i, body in enumerate(infer_bodies(20))]
    cases += [
        ("GET", "/v2/health/ready", None, {}),
        ("GET", "/v2/models/demo", None, {}),
        ("HEAD", "/v2/models/demo", None, {}),
        ("GET", "/v2/models/nope", None, {}),
        ("POST", INFER, b"{not json", {"content-type": "application/json"}),
        ("DELETE", INFER, None, {}),
    ]
    for method, path, body, headers in cases:
        expected = _exchange(direct, method, path, body, headers)
        got = _exchange(through, method, path, body, headers)
        # The demo server stamps no Date, so whole header sets compare exactly.
        assert got == expected, (method, path)


def test_candidate_sees_every_mirrored_request_with_the_shadow_header(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    with RecordingUpstream() as candidate:
        proxy = start_proxy(incumbent.url, candidate.url)
        conn = _connect(proxy)
        bodies = infer_bodies(30)
        for i, body in enumerate(bodies):
            headers = {"x-request-id": f"client-{i}"} if i % 2 else {}
            assert post(conn, body, headers).status == 200
        deadline = time.monotonic() + 5
        while len(candidate.requests) < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Copies run concurrently, so they may arrive in any order; bodies are unique rows.
        seen_by_body = {r["body"]: r for r in candidate.requests}
        assert len(candidate.requests) == len(bodies) and set(seen_by_body) == set(bodies)
        for i, body in enumerate(bodies):
            seen = seen_by_body[body]
            headers = {k.lower(): v for k, v in seen["headers"].items()}
            assert headers["x-shadow-request"] == "1"
            assert headers["host"] == candidate.url.removeprefix("http://")  # rewritten per upstream
            assert seen["path"] == INFER
            if i % 2:
                assert headers["x-request-id"] == f"client-{i}"  # kept when the client sent one
            else:
                assert len(headers["x-request-id"]) == 32
        ids = {r["headers"]["x-request-id"] for r in candidate.requests}
        assert len(ids) == len(bodies)


def _incumbent_path_latencies(proxy, n=150, workers=4):
    """Client-side latency and failures of `n` requests through the proxy."""
    bodies = infer_bodies(n, seed=3)
    local = threading.local()

    def one(body):
        conn = getattr(local, "conn", None) or _connect(proxy)
        local.conn = conn
        started = time.perf_counter()
        try:
            status = post(conn, body).status
        except OSError:
            local.conn = None
            return None, False
        return time.perf_counter() - started, status == 200

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(one, bodies))
    latencies = [lat for lat, ok in results if ok]
    return latencies, sum(1 for _, ok in results if not ok)


@pytest.mark.slow
@pytest.mark.parametrize("trouble", ["stopped", "hanging", "10x slower"])
def test_a_bad_candidate_changes_nothing_for_the_client(trouble, start_demo, start_proxy, tmp_path):
    incumbent = start_demo("incumbent", "--latency-ms", "5")
    healthy_candidate = start_demo("healthy", "--role", "candidate", "--latency-ms", "5")
    healthy = start_proxy(incumbent.url, healthy_candidate.url, run_dir=tmp_path / "healthy")
    baseline_latencies, baseline_errors = _incumbent_path_latencies(healthy)
    assert baseline_errors == 0

    if trouble == "stopped":
        bad = start_demo("bad", "--role", "candidate")
        bad_url = bad.url
        bad.stop()
    elif trouble == "hanging":
        bad_url = start_demo("bad", "--role", "candidate", "--hang-rate", "1").url
    else:
        bad_url = start_demo("bad", "--role", "candidate", "--latency-ms", "50").url
    proxy = start_proxy(incumbent.url, bad_url, "--shadow-timeout", "2", run_dir=tmp_path / "bad")
    latencies, errors = _incumbent_path_latencies(proxy)

    assert errors == 0
    assert len(latencies) == 150
    # Loose bounds (2 cores, shared with the servers): waiting for the candidate at all would
    # cost 2 s (the shadow timeout) when it hangs, 50 ms when it is slow.
    assert percentile(latencies, 50) < percentile(baseline_latencies, 50) * 2 + 0.010
    assert percentile(latencies, 99) < 1.0
    proxy.stop()
    with CaptureReader(proxy.run_dir / "capture.db") as capture:
        summary = capture.summary()
    assert summary["incumbent"]["ok"] == 150
    assert summary["candidate"]["present"] == 150  # every failure is recorded, not dropped
    expected = {"stopped": "connect", "hanging": "timeout"}.get(trouble)
    if expected:
        assert summary["candidate"]["errors"] == {expected: 150}
    else:
        assert summary["candidate"]["ok"] == 150


def test_shed_beyond_the_inflight_budget(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    with RecordingUpstream(hang=True) as candidate:
        proxy = start_proxy(incumbent.url, candidate.url, "--max-inflight", "3", "--shadow-timeout", "30")
        conn = _connect(proxy)
        for body in infer_bodies(10):
            assert post(conn, body).status == 200
        candidate.release.set()
        proxy.stop()
    with CaptureReader(proxy.run_dir / "capture.db") as capture:
        summary = capture.summary()
    assert summary["incumbent"]["ok"] == 10
    assert summary["candidate"]["errors"].get("shed") == 7


@pytest.mark.slow
def test_sigterm_under_load_loses_no_answered_exchange(start_demo, start_proxy):
    incumbent = start_demo("incumbent", "--latency-ms", "2")
    candidate = start_demo("candidate", "--role", "candidate", "--latency-ms", "20")
    proxy = start_proxy(incumbent.url, candidate.url)
    answered: list[str] = []
    stop = threading.Event()
    bodies = infer_bodies(50)

    def client(worker: int) -> None:
        conn, i = _connect(proxy), 0
        while not stop.is_set() and i < 2000:
            rid = f"w{worker}-{i}"
            i += 1
            try:
                if post(conn, bodies[i % len(bodies)], {"x-request-id": rid}).status == 200:
                    answered.append(rid)
            except (OSError, http.client.HTTPException):
                return  # the proxy closed: stop this worker

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proxy.process.send_signal(signal.SIGTERM)
    assert proxy.process.wait(20) == 0
    stop.set()
    for t in threads:
        t.join(10)
    assert len(answered) > 50
    with CaptureReader(proxy.run_dir / "capture.db") as capture:
        columns = capture.columns()
    captured = set(columns["request_id"])
    assert set(answered) <= captured
    assert (columns["candidate_present"]).all()  # mirrored copies in flight were drained, not dropped


def _raw(proxy, payload: bytes, *, read_timeout=5.0) -> bytes:
    with socket.create_connection((proxy.host, proxy.port), timeout=read_timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_requests_get_4xx_and_the_proxy_keeps_serving(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    proxy = start_proxy(incumbent.url, None, "--max-body", "1000", "--client-timeout", "1")
    assert _raw(proxy, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert _raw(proxy, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    too_big = b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
    assert _raw(proxy, too_big).startswith(b"HTTP/1.1 413 ")
    chunked_too_big = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n" + b"x" * 2000 + b"\r\n0\r\n\r\n"
    assert _raw(proxy, chunked_too_big).startswith(b"HTTP/1.1 413 ")
    assert _raw(proxy, b"GET / HTTP/1.1\r\n" + b"x-big: " + b"a" * 70000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert _raw(proxy, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n").startswith(b"HTTP/1.1 501 ")
    # A slow client that never finishes its request is answered 408 and dropped.
    started = time.monotonic()
    assert _raw(proxy, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc").startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 4
    # ...and everyone else is still served.
    assert post(_connect(proxy), infer_bodies(1)[0]).status == 200
    metrics_free = urllib.request.urlopen(f"{proxy.url}/v2/health/ready", timeout=5)
    assert metrics_free.status == 200


def test_absolute_form_targets_go_to_the_configured_upstream_only(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    proxy = start_proxy(incumbent.url)
    reply = _raw(proxy, b"GET http://169.254.169.254/v2/health/ready HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")  # answered by the incumbent's /v2/health/ready


def test_unreachable_incumbent_is_a_quick_502(start_demo, start_proxy):
    gone = start_demo("gone")
    url = gone.url
    gone.stop()
    proxy = start_proxy(url)
    conn = _connect(proxy)
    started = time.monotonic()
    response = post(conn, infer_bodies(1)[0])
    assert response.status == 502
    assert time.monotonic() - started < 2.5
    assert post(conn, infer_bodies(1)[0]).status == 502  # the connection stays usable


def test_chunked_expect_continue_head_and_pipelining(start_demo, start_proxy):
    incumbent = start_demo("incumbent")
    with RecordingUpstream() as candidate:
        proxy = start_proxy(incumbent.url, candidate.url)
        body = infer_bodies(1)[0]
        # Chunked request body: decoded, forwarded with Content-Length to both arms.
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
        reply = _raw(
            proxy,
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked,
        )
        assert reply.startswith(b"HTTP/1.1 200 ") and b'"label"' in reply
        # Expect: 100-continue: the proxy says 100 before the body is sent.
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            sock.sendall(head.encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            sock.sendall(body)
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            assert rest.startswith(b"HTTP/1.1 200 ")
        # HEAD: headers only, with the length of the body it would have had.
        conn = _connect(proxy)
        conn.request("GET", "/v2/models/demo")
        full = conn.getresponse().read()
        conn.request("HEAD", "/v2/models/demo")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.getheader("content-length")) == len(full)
        # Pipelining: three requests in one write, three answers in order.
        pipelined = b"".join(
            f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in ("/v2/health/ready", "/v2/models/nope", "/v2/models/demo")
        )
        reply = _raw(proxy, pipelined + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)
        assert statuses == [b"200", b"404", b"200", b"200"]
        deadline = time.monotonic() + 5
        while len(candidate.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["body"] for r in candidate.requests] == [body, body]


def test_sampling_is_seeded_and_metrics_are_exposed(start_demo, start_proxy, tmp_path):
    incumbent = start_demo("incumbent")
    candidate = start_demo("candidate", "--role", "candidate")
    mirrored = []
    for attempt in range(2):
        metrics_sock = socket.socket()
        metrics_sock.bind(("127.0.0.1", 0))
        metrics_port = metrics_sock.getsockname()[1]
        metrics_sock.close()
        proxy = start_proxy(
            incumbent.url, candidate.url, "--sample", "0.3", "--seed", "11", "--metrics-listen", f"127.0.0.1:{metrics_port}",
            run_dir=tmp_path / f"run{attempt}",
        )
        conn = _connect(proxy)
        for i, body in enumerate(infer_bodies(200)):
            post(conn, body, {"x-request-id": f"r{i}"})
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "shadowline_requests_total 200.0" in metrics
        assert 'shadowline_arm_latency_seconds_count{arm="incumbent"} 200.0' in metrics
        proxy.stop()
        with CaptureReader(proxy.run_dir / "capture.db") as capture:
            columns = capture.columns()
        mirrored.append(set(columns["request_id"][columns["candidate_present"]]))
    assert mirrored[0] == mirrored[1]  # the same seed mirrors the same requests
    assert 30 < len(mirrored[0]) < 90
