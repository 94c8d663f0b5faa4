"""The gRPC shadow proxy against real grpc.aio servers on loopback (raw-bytes generic handlers).

Each test runs upstreams, the proxy and the client on one asyncio loop (`asyncio.run`), except
the drain test, which runs the proxy as a child process and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from harness.capture import CaptureWriter
from harness.procs import spawn
from proxies.grpc_proxy import GrpcProxySettings, GrpcShadowProxy, make_server

pytestmark = pytest.mark.timeout(60)

ECHO = "/test.Echo/Reverse"
SLOW = "/test.Echo/Slow"  # answers after 1 s
COUNT = "/test.Echo/Count"  # server streaming: N messages for a request of N bytes
CHAT = "/test.Echo/Chat"  # bidirectional: each message answered reversed; "stop" ends with ABORTED
BIG = 8 << 20


class Upstream(grpc.GenericRpcHandler):
    """mode 'echo': reversed bytes; 'fail': NOT_FOUND with details and trailers; 'hang': never answers."""

    def __init__(self, mode: str = "echo"):
        self.mode = mode
        self.calls: list[tuple[str, dict, float | None]] = []  # (method, metadata, time remaining)

    def service(self, details):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method

        def record(context):
            self.calls.append((method, {k: v for k, v in context.invocation_metadata()}, context.time_remaining()))

        if method == COUNT:
            async def count(request, context):
                record(context)
                for i in range(len(request)):
                    yield bytes([i])

            return grpc.unary_stream_rpc_method_handler(count)
        if method == CHAT:
            async def chat(requests, context):
                record(context)
                async for message in requests:
                    if message == b"stop":
                        await context.abort(grpc.StatusCode.ABORTED, "stopped", (("x-at", "stop"),))
                    yield message[::-1]

            return grpc.stream_stream_rpc_method_handler(chat)

        async def unary(request, context):
            record(context)
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "fail":
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, "no such model: v7", (("x-why", "missing"), ("x-raw-bin", b"\x00\xff"))
                )
            if method == SLOW:
                await asyncio.sleep(1.0)
            await context.send_initial_metadata((("x-upstream", "echo"),))
            context.set_trailing_metadata((("x-trail", "t1"), ("x-trail-bin", b"\x01\x02")))
            return request[::-1]

        return grpc.unary_unary_rpc_method_handler(unary)


async def start_upstream(mode: str = "echo", max_bytes: int = BIG):
    handler = Upstream(mode)
    options = [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes)]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, handler, f"127.0.0.1:{port}"


class Proxy:
    """The proxy in-process, on the running loop, capturing to a real CaptureWriter."""

    def __init__(self, settings: GrpcProxySettings, tmp_path: Path):
        self.capture = CaptureWriter(tmp_path / "capture.db")
        self.proxy = GrpcShadowProxy(settings, sink=self.capture.write)
        self.server, self.port = make_server(self.proxy, ("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> Proxy:
        await self.server.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.capture._closed:
            return
        await self.server.stop(1.0)
        await self.proxy.drain(5.0)
        self.capture.close()

    def rows(self) -> list[dict]:
        conn = sqlite3.connect(self.capture.path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM exchanges ORDER BY seq")]
        finally:
            conn.close()


def channel(target: str) -> grpc.aio.Channel:
    options = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]
    return grpc.aio.insecure_channel(target, options=options)


async def call(target: str, method: str, request: bytes, **kwargs):
    """(response or None, code, details, initial metadata, trailing metadata)."""
    async with channel(target) as ch:
        c = ch.unary_unary(method)(request, **kwargs)
        try:
            response = await c
        except grpc.aio.AioRpcError as e:
            return None, e.code(), e.details(), tuple(e.initial_metadata() or ()), tuple(e.trailing_metadata() or ())
        return response, await c.code(), await c.details(), tuple(await c.initial_metadata()), tuple(await c.trailing_metadata())


def test_answers_identical_and_candidate_gets_every_copy(tmp_path):
    async def scenario():
        inc_server, inc, inc_target = await start_upstream("echo")
        fail_server, _, fail_target = await start_upstream("fail")
        cand_server, cand, cand_target = await start_upstream("echo")
        settings = GrpcProxySettings(
            incumbent=f"grpc://{inc_target}", candidate=cand_target, stream_methods=(COUNT, CHAT)
        )
        async with Proxy(settings, tmp_path) as p:
            # Success: bytes, initial and trailing metadata as the incumbent sent them.
            direct = await call(inc_target, ECHO, b"hello", metadata=(("x-request-id", "rid-1"),))
            proxied = await call(p.target, ECHO, b"hello", metadata=(("x-request-id", "rid-1"),))
            assert proxied[0] == direct[0] == b"olleh"
            assert proxied[1] == direct[1] == grpc.StatusCode.OK
            assert ("x-upstream", "echo") in proxied[3]
            assert proxied[4] == direct[4] == (("x-trail", "t1"), ("x-trail-bin", b"\x01\x02"))
            for i in range(5):
                assert (await call(p.target, ECHO, bytes([i]) * 3))[0] == bytes([i]) * 3
            # A server-streaming method listed in stream_methods is relayed message by message.
            async with channel(p.target) as ch:
                got = [m async for m in ch.unary_stream(COUNT)(b"abcd")]
            assert got == [b"\x00", b"\x01", b"\x02", b"\x03"]
            # A bidirectional one too, and its failure status comes back as the incumbent sent it.
            async with channel(p.target) as ch:
                chat = ch.stream_stream(CHAT)()
                await chat.write(b"ab")
                assert await chat.read() == b"ba"
                await chat.write(b"cd")
                assert await chat.read() == b"dc"
                await chat.done_writing()
                assert await chat.read() is grpc.aio.EOF
                assert await chat.code() == grpc.StatusCode.OK
                failing = ch.stream_stream(CHAT)(iter([b"xy", b"stop"]))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [m async for m in failing]
                assert err.value.code() == grpc.StatusCode.ABORTED and err.value.details() == "stopped"
                assert tuple(err.value.trailing_metadata()) == (("x-at", "stop"),)
        # Failure: code, details and trailing metadata as the incumbent sent them.
        settings = GrpcProxySettings(incumbent=fail_target, candidate=cand_target)
        (tmp_path / "f").mkdir()
        async with Proxy(settings, tmp_path / "f") as pf:
            direct = await call(fail_target, ECHO, b"x")
            proxied = await call(pf.target, ECHO, b"x")
            assert proxied[0] is None
            assert proxied[1:3] == direct[1:3] == (grpc.StatusCode.NOT_FOUND, "no such model: v7")
            assert proxied[4] == direct[4] == (("x-why", "missing"), ("x-raw-bin", b"\x00\xff"))
        for s in (inc_server, fail_server, cand_server):
            await s.stop(0)
        return p, pf, inc, cand

    p, pf, inc, cand = asyncio.run(scenario())
    # The candidate got every unary call (6 + 1), marked and with a request id; the incumbent never the marker.
    mirrored = [c for c in cand.calls if c[0] == ECHO]
    assert len(mirrored) == 7
    assert all(md.get("x-shadow-request") == "1" and md.get("x-request-id") for _, md, _ in mirrored)
    assert mirrored[0][1]["x-request-id"] == "rid-1"  # the client's id is kept
    assert len({md["x-request-id"] for _, md, _ in mirrored}) == 7
    assert not any("x-shadow-request" in md for _, md, _ in inc.calls)
    assert not any(c[0] == COUNT for c in cand.calls)  # streams are not mirrored
    rows = p.rows()
    assert len(rows) == 9  # 6 unary + 3 streams, each exactly once
    unary = [r for r in rows if r["route"] == ECHO]
    assert all(r["method"] == "GRPC" and r["incumbent_status"] == 0 and r["candidate_status"] == 0 for r in unary)
    assert unary[0]["request_id"] == "rid-1" and unary[0]["request_body"] == b"hello"
    assert unary[0]["incumbent_body"] == b"olleh" == unary[0]["candidate_body"]
    stream = [r for r in rows if r["route"] == COUNT]
    assert stream[0]["incumbent_status"] == 0 and stream[0]["candidate_present"] is None
    chats = [r["incumbent_status"] for r in rows if r["route"] == CHAT]
    assert sorted(chats) == [0, grpc.StatusCode.ABORTED.value[0]]
    (failed,) = pf.rows()
    assert failed["incumbent_status"] == grpc.StatusCode.NOT_FOUND.value[0] == 5
    assert failed["candidate_status"] == 0


def test_dead_or_hanging_candidate_changes_nothing_for_the_client(tmp_path):
    n = 40

    async def run(candidate: str | None, run_dir: Path, inc_target: str):
        run_dir.mkdir()
        settings = GrpcProxySettings(incumbent=inc_target, candidate=candidate, shadow_timeout=1.0)
        async with Proxy(settings, run_dir) as p:
            latencies = []
            async with channel(p.target) as ch:
                stub = ch.unary_unary(ECHO)
                await stub(b"warm")
                for i in range(n):
                    t = time.perf_counter()
                    assert await stub(b"abc%d" % i) == (b"%d" % i)[::-1] + b"cba"
                    latencies.append(time.perf_counter() - t)
        return statistics.median(latencies), max(latencies), p.rows()

    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        healthy_server, _, healthy_target = await start_upstream("echo")
        hang_server, _, hang_target = await start_upstream("hang")
        dead_server, _, dead_target = await start_upstream("echo")
        await dead_server.stop(0)  # the port is closed: nothing listens
        healthy = await run(healthy_target, tmp_path / "healthy", inc_target)
        dead = await run(dead_target, tmp_path / "dead", inc_target)
        hanging = await run(hang_target, tmp_path / "hang", inc_target)
        for s in (inc_server, healthy_server, hang_server):
            await s.stop(0)
        return healthy, dead, hanging

    healthy, dead, hanging = asyncio.run(scenario())
    for p50, worst, rows in (dead, hanging):
        assert p50 <= 2 * healthy[0] + 0.010
        assert worst < 0.5  # nobody waited the 1 s shadow timeout
        assert len(rows) == n + 1 and all(r["incumbent_status"] == 0 for r in rows)
    assert all(r["candidate_status"] == 0 for r in healthy[2])
    assert {r["candidate_error"] for r in dead[2]} == {"connect"}
    assert {r["candidate_error"] for r in hanging[2]} == {"timeout"}
    assert all(0.9 < r["candidate_latency_s"] < 2.0 for r in hanging[2])


def test_mirrors_beyond_the_budget_are_shed(tmp_path):
    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        hang_server, hang, hang_target = await start_upstream("hang")
        settings = GrpcProxySettings(incumbent=inc_target, candidate=hang_target, shadow_timeout=0.5, max_inflight=3)
        async with Proxy(settings, tmp_path) as p:
            async with channel(p.target) as ch:
                stub = ch.unary_unary(ECHO)
                answers = await asyncio.gather(*(stub(b"x%d" % i) for i in range(10)))
            assert len(answers) == 10
            shed = p.proxy.metrics.shed["candidate"]
            assert p.proxy.metrics.responses["incumbent", "OK"] == 10
            assert b'shadowline_arm_responses_total{arm="incumbent",class="OK"} 10.0' in generate_latest(p.proxy.metrics.registry)
        for s in (inc_server, hang_server):
            await s.stop(0)
        return p.rows(), shed, hang

    rows, shed, hang = asyncio.run(scenario())
    errors = [r["candidate_error"] for r in rows]
    assert len(rows) == 10
    assert errors.count("shed") == shed == 7
    assert errors.count("timeout") == 3 and len(hang.calls) == 3


def test_deadline_propagated(tmp_path):
    async def scenario():
        inc_server, inc, inc_target = await start_upstream("echo")
        async with Proxy(GrpcProxySettings(incumbent=inc_target), tmp_path) as p:
            t = time.perf_counter()
            result = await call(p.target, SLOW, b"x", timeout=0.2)
            elapsed = time.perf_counter() - t
            ok = await call(p.target, ECHO, b"ab", timeout=5)
        await inc_server.stop(0)
        return result, elapsed, ok, inc, p.rows()

    result, elapsed, ok, inc, rows = asyncio.run(scenario())
    assert result[1] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 0.6
    slow_remaining = [r for m, _, r in inc.calls if m == SLOW][0]
    assert slow_remaining is not None and slow_remaining <= 0.25  # grpc-timeout rounds up a little
    assert ok[0] == b"ba"
    assert [r["incumbent_error"] for r in rows] == ["timeout", None]


def test_message_size_limit_both_ways(tmp_path):
    five_mib = bytes(range(256)) * (5 * 4096)
    assert len(five_mib) == 5 << 20

    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        (tmp_path / "big").mkdir()
        (tmp_path / "small").mkdir()
        async with Proxy(GrpcProxySettings(incumbent=inc_target, max_message_bytes=BIG), tmp_path / "big") as p:
            big = await call(p.target, ECHO, five_mib)
        async with Proxy(GrpcProxySettings(incumbent=inc_target), tmp_path / "small") as p2:
            small = await call(p2.target, ECHO, five_mib)
        await inc_server.stop(0)
        return big, small

    big, small = asyncio.run(scenario())
    assert big[1] == grpc.StatusCode.OK and big[0] == five_mib[::-1]
    assert small[1] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_child_process_drains_on_sigterm_and_captures_every_call(tmp_path):
    run_dir = tmp_path / "run"

    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        cand_server, _, cand_target = await start_upstream("echo")
        code = textwrap.dedent(
            f"""
            from pathlib import Path
            from harness.procs import ready_line
            from proxies.grpc_proxy import GrpcProxySettings, serve_grpc_proxy
            settings = GrpcProxySettings(incumbent={inc_target!r}, candidate={cand_target!r})
            serve_grpc_proxy(settings, listen=("127.0.0.1", 0), run_dir=Path({str(run_dir)!r}), drain_timeout=5.0,
                             on_ready=lambda port: ready_line("grpc proxy", "127.0.0.1", port))
            """
        )
        child = await asyncio.to_thread(spawn, "grpc-proxy", [sys.executable, "-c", code], tmp_path / "proxy.log")
        try:
            target = f"{child.host}:{child.port}"
            async with channel(target) as ch:
                stub = ch.unary_unary(ECHO)
                answers = await asyncio.gather(*(stub(b"m%d" % i) for i in range(20)))
                fail = ch.unary_unary("/test.Missing/Method")  # the echo upstream answers any method
                assert await fail(b"z") == b"z"
            returncode = await asyncio.to_thread(child.stop, 10.0)
        finally:
            if child.process.poll() is None:
                child.process.kill()
        for s in (inc_server, cand_server):
            await s.stop(0)
        return answers, returncode

    answers, returncode = asyncio.run(scenario())
    assert answers == [(b"m%d" % i)[::-1] for i in range(20)]
    assert returncode == 0
    conn = sqlite3.connect(run_dir / "capture.db")
    rows = conn.execute("SELECT route, incumbent_status, candidate_status FROM exchanges").fetchall()
    conn.close()
    assert len(rows) == 21
    assert all(r[1] == 0 and r[2] == 0 for r in rows)


def test_unlisted_streaming_method_is_cut_by_the_incumbent_timeout(tmp_path):
    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        async with Proxy(GrpcProxySettings(incumbent=inc_target, incumbent_timeout=0.3), tmp_path) as p:
            t = time.perf_counter()
            async with channel(p.target) as ch:  # no client deadline: only the cap ends it
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    [m async for m in ch.unary_stream(COUNT)(b"abc")]
            elapsed = time.perf_counter() - t
        await inc_server.stop(0)
        return err.value.code(), elapsed, p.rows()

    code, elapsed, rows = asyncio.run(scenario())
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 2.0
    assert [r["incumbent_error"] for r in rows] == ["timeout"]


def test_a_client_that_leaves_does_not_make_the_incumbent_fail(tmp_path):
    """The client cancels mid-call: the incumbent's call goes on and its own answer is recorded
    (as the HTTP proxy records an incumbent answer whose client has gone)."""

    async def scenario():
        inc_server, _, inc_target = await start_upstream("echo")
        cand_server, _, cand_target = await start_upstream("echo")
        async with Proxy(GrpcProxySettings(incumbent=inc_target, candidate=cand_target), tmp_path) as p:
            async with channel(p.target) as ch:
                pending = ch.unary_unary(SLOW)(b"abc", timeout=10)
                await asyncio.sleep(0.2)
                pending.cancel()
                assert await pending.code() == grpc.StatusCode.CANCELLED
            await p.stop()  # drains: waits for the incumbent's answer
        for s in (inc_server, cand_server):
            await s.stop(0)
        return p.rows()

    rows = asyncio.run(scenario())
    assert len(rows) == 1
    row = rows[0]
    assert row["incumbent_status"] == 0 and row["incumbent_error"] is None
    assert row["incumbent_body"] == b"cba" and row["incumbent_latency_s"] >= 1.0
    assert row["candidate_status"] == 0
