"""Pooled keep-alive HTTP/1.1 connections to one upstream (a model server).

One request at a time per connection (no upstream pipelining: a slow answer must not hold
up the next). Idle connections are reused LIFO, so the warmest socket goes first. Every
failure becomes an `UpstreamError` whose `kind` is one of the capture's error kinds.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import deque
from urllib.parse import urlsplit

from harness.records import CONNECT, PROTOCOL, RESET, TIMEOUT
from proxies.http1 import ProtocolError, Response, ResponseReader


class UpstreamError(Exception):
    def __init__(self, kind: str, message: str, *, before_response: bool = False):
        super().__init__(message)
        self.kind = kind
        self.before_response = before_response  # nothing of a response had arrived


class _UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "reader", "waiter", "closed")

    def __init__(self, pool: Upstream):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader(pool.max_body)
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def send(self, data: bytes, head: bool) -> asyncio.Future:
        waiter = self.expect(head)
        self.transport.write(data)
        return waiter

    def expect(self, head: bool) -> asyncio.Future:
        """Get ready for a response; the caller writes the request."""
        self.reader.expect(head)
        self.waiter = self.pool.loop.create_future()
        return self.waiter

    def reset(self) -> None:
        """Close with a TCP RST (linger 0), as a crashed or killed peer would."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.abort()

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            # Bytes nobody asked for: the connection is out of step, never reuse it.
            self.abort()
            return
        try:
            response = self.reader.feed(data)
        except ProtocolError as exc:
            waiter.set_exception(UpstreamError(PROTOCOL, str(exc)))
            self.abort()
            return
        if response is not None:
            self.waiter = None
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            response = self.reader.eof()
            if response is not None:
                waiter.set_result(response)
            else:
                started = self.reader.started
                message = "upstream closed the connection" + (" mid-response" if started else "")
                waiter.set_exception(UpstreamError(RESET, message, before_response=not started))

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class Upstream:
    """A pool of connections to one `http://host:port` upstream."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 2.0,
        max_idle: int = 256,
        max_body: int = 64 << 20,
    ):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream URL must look like http://host:port, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/").encode()  # prepended to every request target
        self.host_header = parts.netloc.encode()
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.max_body = max_body
        self.loop: asyncio.AbstractEventLoop | None = None
        self._idle: deque[_UpstreamConnection] = deque()

    async def _connect(self) -> _UpstreamConnection:
        loop = self.loop
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _UpstreamConnection(self), self.host, self.port)
        except TimeoutError:
            raise UpstreamError(CONNECT, f"connect to {self.url} timed out after {self.connect_timeout:g} s") from None
        except OSError as exc:
            raise UpstreamError(CONNECT, f"cannot connect to {self.url}: {exc.strerror or exc}") from None
        return conn

    def _take_idle(self) -> _UpstreamConnection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    async def request(self, data: bytes, *, head: bool, timeout: float) -> tuple[Response, float]:
        """Send a fully encoded request; return the response and its latency in seconds.

        `timeout` covers connect, send and the whole response. A connection reused from
        the pool that turns out to have been closed by the upstream (the keep-alive race)
        is retried once on a fresh connection, since nothing of a response arrived.
        """
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        started = time.perf_counter()
        deadline = self.loop.time() + timeout
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                remaining = deadline - self.loop.time()
                try:
                    async with asyncio.timeout(remaining):
                        conn = await self._connect()
                except TimeoutError:
                    raise UpstreamError(TIMEOUT, f"no answer from {self.url} within {timeout:g} s") from None
            waiter = conn.send(data, head)
            timer = self.loop.call_at(deadline, _expire, waiter, conn, self.url, timeout)
            try:
                response = await waiter
            except UpstreamError as exc:
                if reused and exc.kind == RESET and exc.before_response:
                    reused, conn = False, None
                    continue
                raise
            except asyncio.CancelledError:
                conn.abort()  # its answer is still owed: the connection cannot be reused
                raise
            finally:
                timer.cancel()
            latency = time.perf_counter() - started
            if conn.reader.keep_alive and not conn.closed:
                self._release(conn)
            return response, latency

    async def request_faulty(
        self,
        data: bytes,
        *,
        head: bool,
        timeout: float,
        pace_bps: float | None = None,
        cut_at: int | None = None,
        reset_after_s: float | None = None,
    ) -> tuple[Response, float]:
        """Deliver a request badly, as a transport fault says, on a connection of its own.

        `pace_bps` trickles the bytes at that rate; `cut_at` sends only that many bytes then
        half-closes (the upstream sees its peer stop mid-request); `reset_after_s` sends
        everything, waits that long, then resets the connection without reading an answer.
        The connection is never pooled.
        """
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect()
                waiter = conn.expect(head)
                try:
                    payload = data if cut_at is None else data[:cut_at]
                    if pace_bps:
                        step = max(1, int(pace_bps / 20))  # 20 writes a second
                        for i in range(0, len(payload), step):
                            conn.transport.write(payload[i : i + step])
                            await asyncio.sleep(step / pace_bps)
                    else:
                        conn.transport.write(payload)
                    if reset_after_s is not None:
                        conn.waiter = None  # nobody will await this answer
                        await asyncio.sleep(reset_after_s)
                        conn.reset()
                        raise UpstreamError(RESET, "connection reset by a fault after sending the request")
                    if cut_at is not None and conn.transport.can_write_eof():
                        conn.transport.write_eof()
                    response = await waiter
                finally:
                    conn.abort()
        except TimeoutError:
            raise UpstreamError(TIMEOUT, f"no answer from {self.url} within {timeout:g} s") from None
        return response, time.perf_counter() - started

    def _release(self, conn: _UpstreamConnection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.transport.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().transport.close()


def _expire(waiter: asyncio.Future, conn: _UpstreamConnection, url: str, timeout: float) -> None:
    """The arm's timeout: fail the request and drop the connection (its answer may still come)."""
    if not waiter.done():
        waiter.set_exception(UpstreamError(TIMEOUT, f"no answer from {url} within {timeout:g} s"))
        conn.waiter = None
        conn.abort()
