"""A small HTTP/1.1 server on raw asyncio Protocols, shared by the shadow proxy and the demo servers.

An *app* is an async callable `Request -> Response`. The server owns the connection rules:
keep-alive, pipelining (answered strictly in order, one request at a time per connection),
`Expect: 100-continue`, HEAD, body and header limits, slow-client and idle timeouts, and a
graceful drain. Bad input is answered with a 4xx and the connection closed; the server keeps
serving everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable

from proxies.http1 import ProtocolError, Request, RequestReader, Response, encode_response, simple_response

log = logging.getLogger(__name__)

App = Callable[[Request], Awaitable[Response]]

_PIPELINE_DEPTH = 16  # queued requests per connection before we stop reading from it


class _Connection(asyncio.Protocol):
    __slots__ = (
        "server", "transport", "reader", "queue", "task", "closing", "message_started",
        "last_active", "paused",
    )

    def __init__(self, server: HTTPServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(server.max_body, server.max_header_bytes)
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task | None = None
        self.closing = False  # answer what is queued, read nothing more, then close
        self.message_started = 0.0  # monotonic time the current partial request began
        self.last_active = time.monotonic()
        self.paused = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.closing = True
        self.queue.clear()
        # By default an app call in progress goes on (the proxy still records its exchange);
        # a server whose calls may hang on purpose (the demo) frees them instead.
        if self.task is not None and self.server.cancel_on_disconnect:
            self.task.cancel()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            requests = self.reader.feed(data)
        except ProtocolError as exc:
            self.server.bad_requests += 1
            self._fail(exc.status, str(exc))
            return
        if not self.reader.in_message:
            self.message_started = 0.0
        elif not self.message_started:
            self.message_started = time.monotonic()  # slow-client clock: from a request's first bytes
        if self.reader.continue_wanted:
            self.reader.continue_wanted = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if requests:
            self.queue.extend(requests)
            if len(self.queue) >= _PIPELINE_DEPTH and not self.paused:
                self.paused = True
                self.transport.pause_reading()
            if self.task is None:
                self.task = self.server.loop.create_task(self._serve())

    def _fail(self, status: int, message: str) -> None:
        """Answer bad input once the requests before it are answered, then close."""
        self.closing = True
        self.transport.pause_reading()
        payload = simple_response(status, message, keep_alive=False)
        if self.task is None:
            self.transport.write(payload)
            self.transport.close()
        else:
            self.queue.append(payload)  # bytes: written verbatim after the queued answers

    async def _serve(self) -> None:
        server = self.server
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, bytes):
                    self.transport.write(item)
                    self.transport.close()
                    return
                if self.paused and len(self.queue) < _PIPELINE_DEPTH // 2 and not self.closing:
                    self.paused = False
                    self.transport.resume_reading()
                server.active += 1
                try:
                    response = await server.app(item)
                except Exception:
                    log.exception("app failed on %s %s", item.method, item.target)
                    response = Response(500, [(b"content-type", b"application/json")], b'{"error": "internal error"}')
                finally:
                    server.active -= 1
                if self.transport.is_closing():
                    return
                keep_alive = item.keep_alive and not server.draining
                self.transport.write(
                    encode_response(
                        response.status,
                        response.headers,
                        response.body,
                        reason=response.reason,
                        head=item.method == b"HEAD",
                        keep_alive=keep_alive,
                    )
                )
                self.last_active = time.monotonic()
                if not keep_alive:
                    self.transport.close()
                    return
        finally:
            self.task = None

    def check_timeouts(self, now: float) -> None:
        """Called about once a second by the server's sweeper."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.message_started:
            if now - self.message_started > self.server.client_timeout:
                self.server.slow_clients += 1
                self._fail(408, f"request not received within {self.server.client_timeout:g} s")
        elif self.task is None and not self.queue and now - self.last_active > self.server.idle_timeout:
            self.transport.close()


class HTTPServer:
    """Serve `app` on a TCP socket. `start()` binds; `drain()` stops accepting and waits."""

    def __init__(
        self,
        app: App,
        *,
        max_body: int = 8 << 20,
        max_header_bytes: int = 64 << 10,
        client_timeout: float = 10.0,
        idle_timeout: float = 75.0,
        cancel_on_disconnect: bool = False,
    ):
        self.app = app
        self.max_body = max_body
        self.max_header_bytes = max_header_bytes
        self.client_timeout = client_timeout
        self.idle_timeout = idle_timeout
        self.cancel_on_disconnect = cancel_on_disconnect
        self.connections: set[_Connection] = set()
        self.active = 0  # app calls in progress
        self.draining = False
        self.bad_requests = 0
        self.slow_clients = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, reuse_port: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), host, port, reuse_port=reuse_port or None, backlog=1024
        )
        self._sweeper = self.loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for conn in list(self.connections):
                conn.check_timeouts(now)

    async def drain(self, timeout: float = 10.0) -> bool:
        """Stop accepting, answer what is in progress, close idle connections.

        Returns True if everything in progress finished within `timeout`.
        """
        self.draining = True
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + timeout
        while (self.active or any(c.task for c in self.connections)) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        clean = not self.active
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        return clean


def install_event_loop() -> None:
    """Use uvloop where available: it is what the throughput figures in DESIGN.md assume."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_until_signal(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
) -> None:
    """Run `start()`, wait for SIGTERM or SIGINT, then run `stop()` (the drain) and return."""
    install_event_loop()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await start()
        await stopping.wait()
        await stop()

    asyncio.run(main())
