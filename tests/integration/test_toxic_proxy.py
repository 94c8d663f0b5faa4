"""The toxic proxy on real loopback sockets: each toxic as a client sees it, the control API,
and the demo model server seeing its dependency's resets and timeouts as such.

Servers (feature store, echo, toxic proxy, control API, demo app) run on one uvloop event
loop in a background thread; the test speaks to them with blocking sockets and urllib.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import uvloop

from proxies.demo_server import DemoApp, DemoKnobs
from proxies.feature_store import FeatureStore, answer, value_for
from proxies.httpserver import HTTPServer
from proxies.toxic_proxy import ControlApp, ToxicControl, ToxicControlError, ToxicProxy
from proxies.toxics import draw_applies, toxic_rng

from .conftest import INFER, infer_bodies

pytestmark = pytest.mark.timeout(60)


class LoopThread:
    """An event loop in a daemon thread; `run(coro)` waits for its result from the test."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="toxic-test-loop")
        self.thread.start()

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def _echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


class Rig:
    """Feature store and echo server, a toxic proxy in front of one of them, its control API."""

    def __init__(self, loop: LoopThread):
        self.loop = loop
        self.store = FeatureStore()
        self.servers = []
        self.proxies = []

    async def _start(self) -> None:
        await self.store.start()
        self.echo = await asyncio.start_server(_echo, "127.0.0.1", 0)

    def proxy(self, upstream: str = "store", toxics=(), seed: int = 0) -> tuple[ToxicProxy, ToxicControl]:
        port = self.store.port if upstream == "store" else self.echo.sockets[0].getsockname()[1]

        async def start():
            proxy = ToxicProxy(("127.0.0.1", port), toxics, seed=seed)
            await proxy.start("127.0.0.1", 0)
            control = HTTPServer(ControlApp(proxy))
            await control.start("127.0.0.1", 0)
            return proxy, control

        proxy, control = self.loop.run(start())
        self.proxies.append(proxy)
        self.servers.append(control)
        return proxy, ToxicControl(f"http://127.0.0.1:{control.port}")

    def serve_demo(self, knobs: DemoKnobs) -> int:
        async def start():
            server = HTTPServer(DemoApp(knobs), cancel_on_disconnect=True)
            await server.start("127.0.0.1", 0)
            return server

        server = self.loop.run(start())
        self.servers.append(server)
        return server.port

    async def _stop(self) -> None:
        for server in self.servers:
            await server.drain(0.5)
        for proxy in self.proxies:
            await proxy.stop()
        self.echo.close()
        await self.store.stop()


@pytest.fixture
def rig():
    loop = LoopThread()
    rig = Rig(loop)
    loop.run(rig._start())
    yield rig
    loop.run(rig._stop())
    loop.close()


def connect(proxy: ToxicProxy, timeout: float = 3.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout)


def round_trip(sock: socket.socket, key: int) -> bytes:
    sock.sendall(b"GET %d\n" % key)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            raise EOFError(f"closed after {line!r}")
        line += chunk
    return line


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def mean_round_trip(sock: socket.socket, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        assert round_trip(sock, i) == b"OK %s\n" % value_for(str(i)).encode()
    return (time.perf_counter() - start) / n


# -- bytes and toxics as a client sees them -------------------------------------------------------


def test_feature_store_protocol():
    assert answer(b"GET 7\n") == b"OK " + value_for("7").encode() + b"\n"
    assert value_for("7") == value_for("7") and 0 <= float(value_for("7")) < 1
    assert answer(b"PING\n") == b"PONG\n"
    assert answer(b"PUT 7 1\n").startswith(b"ERR ")


def test_clean_proxy_passes_bytes_through(rig):
    proxy, control = rig.proxy()
    with connect(proxy) as sock:
        for key in range(5):
            assert round_trip(sock, key) == b"OK %s\n" % value_for(str(key)).encode()
    stats = control.stats()
    assert stats["connections"]["total"] == 1
    assert stats["bytes"]["upstream"] == sum(len(b"GET %d\n" % k) for k in range(5))
    assert stats["bytes"]["downstream"] > 0


@pytest.mark.parametrize(("stream", "trips"), [("downstream", 20), ("upstream", 5)])
def test_latency_adds_the_configured_delay(rig, stream, trips):
    proxy, control = rig.proxy()
    with connect(proxy) as sock:
        base = mean_round_trip(sock, trips)
    control.add("latency", name="slow", stream=stream, latency_ms=100, jitter_ms=0)
    with connect(proxy) as sock:
        slow = mean_round_trip(sock, trips)
    added_ms = (slow - base) * 1000
    assert 90 <= added_ms <= 200, f"added {added_ms:.1f} ms"
    draws = control.stats()["toxics"]["slow"]  # the first connection may still be closing: 1 or 2
    assert draws["applied"] >= 1 and draws["skipped"] == 0


def test_reset_peer_is_seen_as_econnreset(rig):
    proxy, control = rig.proxy(toxics=[{"type": "reset_peer", "attributes": {"timeout_ms": 0}}])
    with connect(proxy) as sock:
        sock.sendall(b"GET 1\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
    control.remove("reset_peer_downstream")
    control.add("reset_peer", stream="upstream", timeout_ms=150)
    with connect(proxy) as sock:
        start = time.perf_counter()
        sock.sendall(b"GET 1\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)
        assert time.perf_counter() - start >= 0.14
    assert control.stats()["closed_by"]["reset_peer"] == 2


def test_timeout_passes_nothing_then_closes(rig):
    proxy, control = rig.proxy(toxics=[{"type": "timeout", "attributes": {"timeout_ms": 0}}])
    with connect(proxy, timeout=0.4) as sock:
        sock.sendall(b"GET 1\n")
        with pytest.raises(socket.timeout):
            sock.recv(1024)  # 0: held open forever, nothing passes
    control.reset()
    control.add("timeout", timeout_ms=200)
    with connect(proxy) as sock:
        start = time.perf_counter()
        sock.sendall(b"GET 1\n")
        assert sock.recv(1024) == b""  # no data, then the close
        assert 0.18 <= time.perf_counter() - start < 2.0


def test_down_refuses_and_closes_then_recovers(rig):
    proxy, control = rig.proxy()
    with connect(proxy) as sock:
        assert round_trip(sock, 1).startswith(b"OK ")
        assert control.set_enabled(False) == {"enabled": False}
        assert sock.recv(1024) == b""  # open connections are closed
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    control.set_enabled(True)
    with connect(proxy) as sock:
        assert round_trip(sock, 2).startswith(b"OK ")
    control.set_enabled(False)
    control.reset()  # reset enables again
    with connect(proxy) as sock:
        assert round_trip(sock, 3).startswith(b"OK ")


def test_limit_data_closes_after_n_bytes(rig):
    proxy, control = rig.proxy("echo", toxics=[{"type": "limit_data", "attributes": {"bytes": 10}}])
    with connect(proxy) as sock:
        sock.sendall(bytes(range(100)))
        assert read_all(sock) == bytes(range(10))
    assert control.stats()["closed_by"]["limit_data"] == 1


def test_bandwidth_slicer_and_slow_close(rig):
    payload = os.urandom(30_000)
    proxy, control = rig.proxy("echo", toxics=[{"type": "bandwidth", "attributes": {"rate_kbps": 100}}])
    with connect(proxy) as sock:
        start = time.perf_counter()
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == payload
        assert 0.25 <= time.perf_counter() - start < 3.0  # 30 KB at 100 KB/s: 0.3 s
    control.reset()
    control.add("slicer", average_size=100, size_variation=40, delay_us=50)
    control.add("slow_close", delay_ms=300)
    with connect(proxy) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        start = time.perf_counter()
        assert read_all(sock) == payload  # sliced, intact, in order
        assert time.perf_counter() - start >= 0.28  # the close came late


def test_runtime_changes_reach_open_connections(rig):
    proxy, control = rig.proxy()
    with connect(proxy) as sock:
        assert mean_round_trip(sock, 2) < 0.1
        control.add("latency", name="slow", latency_ms=300)
        assert mean_round_trip(sock, 1) >= 0.28  # the pooled connection sees the new toxic
        control.remove("slow")
        control.add("latency", name="very-slow", latency_ms=5000)
        sock.sendall(b"GET 9\n")
        time.sleep(0.2)
        start = time.perf_counter()
        control.remove("very-slow")  # what it held is let go at once, not dropped
        assert sock.recv(1024).startswith(b"OK ")
        assert time.perf_counter() - start < 1.0


def test_toxicity_draws_follow_the_seed(rig):
    seed, name, n = 11, "flaky", 10
    proxy, control = rig.proxy("echo", seed=seed)
    control.add("limit_data", name=name, toxicity=0.5, bytes=0)  # applied: closed at the first byte
    hit = []
    for _ in range(n):
        with connect(proxy) as sock:
            sock.sendall(b"x")
            hit.append(sock.recv(16) == b"")
    expected = [draw_applies(0.5, toxic_rng(seed, i, name)) for i in range(n)]
    assert hit == expected
    assert 0 < sum(expected) < n  # the seed gives a mix, so both branches are exercised
    assert control.stats()["toxics"][name] == {"applied": sum(expected), "skipped": n - sum(expected)}
    assert control.stats()["seed"] == seed


# -- the control API ----------------------------------------------------------------------------------


def test_control_api_lists_adds_removes_and_refuses(rig):
    proxy, control = rig.proxy()
    added = control.add({"name": "lag", "type": "latency", "attributes": {"latency": 5}})
    assert added == {
        "name": "lag", "type": "latency", "stream": "downstream", "toxicity": 1.0,
        "attributes": {"latency_ms": 5, "jitter_ms": 0.0},
    }
    assert [t["name"] for t in control.toxics()] == ["lag"]

    with pytest.raises(ToxicControlError) as err:
        control.add("latency", name="lag", latency_ms=1)
    assert err.value.status == 409 and "lag" in err.value.message
    with pytest.raises(ToxicControlError) as err:
        control.add("latency", name="bad", latency_ms=-1)
    assert err.value.status == 400 and "attributes.latency_ms" in err.value.message
    with pytest.raises(ToxicControlError) as err:
        control.add({"type": "latency", "toxicity": 2, "attributes": {"latency_ms": 1}})
    assert err.value.status == 400 and "toxicity" in err.value.message
    with pytest.raises(ToxicControlError) as err:
        control.set_enabled("off")
    assert err.value.status == 400 and "enabled" in err.value.message
    with pytest.raises(ToxicControlError) as err:
        control.remove("nope")
    assert err.value.status == 404 and "nope" in err.value.message

    base = control.base_url.removeprefix("http://")
    conn = http.client.HTTPConnection(base, timeout=5)
    conn.request("POST", "/toxics", body=b"{not json")
    response = conn.getresponse()
    assert response.status == 400 and "not valid JSON" in json.loads(response.read())["error"]
    conn.request("PUT", "/toxics")
    response = conn.getresponse()
    assert response.status == 405 and response.getheader("allow") == "GET, POST"
    response.read()
    conn.request("GET", "/toxics/lag")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["name"] == "lag"
    conn.request("GET", "/nowhere")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.close()

    control.remove("lag")
    assert control.toxics() == []
    stats = control.stats()
    assert stats["enabled"] is True and stats["toxics"]["lag"] == {"applied": 0, "skipped": 0}


# -- end to end: the demo model server and its dependency ------------------------------------------


def infer(port: int, body: bytes) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", INFER, body=body, headers={"content-type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_demo_model_server_sees_dependency_faults_as_such(rig):
    proxy, control = rig.proxy()
    knobs = DemoKnobs(role="candidate", dependency=f"127.0.0.1:{proxy.port}", dependency_timeout_ms=200)
    port = rig.serve_demo(knobs)
    body = infer_bodies(1)[0]

    status, payload = infer(port, body)
    assert status == 200 and "outputs" in payload
    assert infer(port, body)[0] == 200
    assert rig.store.requests == 2 and control.stats()["connections"]["total"] == 1  # pooled

    control.add("latency", name="slow-store", latency_ms=400)
    assert infer(port, body) == (504, {"error": "dependency timed out"})
    control.remove("slow-store")
    assert infer(port, body)[0] == 200

    control.add("timeout", name="hung-store", timeout_ms=0)
    assert infer(port, body) == (504, {"error": "dependency timed out"})
    control.remove("hung-store")

    control.add("reset_peer", name="flaky-store")
    assert infer(port, body) == (502, {"error": "dependency unavailable: reset"})
    control.remove("flaky-store")
    assert infer(port, body)[0] == 200

    control.set_enabled(False)
    assert infer(port, body) == (502, {"error": "dependency unavailable: refused"})
    control.set_enabled(True)
    assert infer(port, body)[0] == 200


# -- the process entry point -------------------------------------------------------------------------


def test_serve_toxic_prints_ready_lines_and_stops_on_sigterm(rig):
    code = (
        "from proxies.toxic_proxy import serve_toxic\n"
        f"serve_toxic(('127.0.0.1', 0), ('127.0.0.1', {rig.store.port}), ('127.0.0.1', 0),"
        " toxics=[{'type': 'latency', 'attributes': {'latency_ms': 1}}], seed=3)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        lines = _read_lines(process, 2, timeout=15)
        assert lines[0].startswith(b"shadowline: toxic proxy listening on 127.0.0.1:")
        assert lines[1].startswith(b"shadowline: toxic control listening on 127.0.0.1:")
        proxy_port, control_port = (int(line.rsplit(b":", 1)[1]) for line in lines)
        control = ToxicControl(f"http://127.0.0.1:{control_port}")
        assert [t["name"] for t in control.toxics()] == ["latency_downstream"]
        assert control.stats()["seed"] == 3
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=3) as sock:
            assert round_trip(sock, 4).startswith(b"OK ")
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def _read_lines(process: subprocess.Popen, n: int, timeout: float) -> list[bytes]:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    buffered, deadline = b"", time.monotonic() + timeout
    try:
        while buffered.count(b"\n") < n and time.monotonic() < deadline:
            if selector.select(0.1):
                chunk = os.read(process.stdout.fileno(), 4096)
                if not chunk:
                    break
                buffered += chunk
    finally:
        selector.close()
    lines = buffered.splitlines()
    assert len(lines) >= n, f"ready lines not seen: {buffered!r}"
    return lines[:n]
