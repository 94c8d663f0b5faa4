"""A toy feature store: the demo model server's upstream dependency, for fault-proxy demos.

Line protocol over TCP, one request line at a time per connection, connections kept open
so clients can pool them:

    GET <key>\\n   ->  OK <value>\\n      value: a deterministic number in [0, 1) for the key
    PING\\n        ->  PONG\\n
    anything else  ->  ERR <message>\\n

Deterministic answers (a hash of the key), so a run through the toxic proxy can be checked
byte for byte against a run without it.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable

from proxies.httpserver import run_until_signal

log = logging.getLogger(__name__)

MAX_LINE = 1024
IDLE_TIMEOUT = 300.0  # seconds a pooled connection may sit idle before we close it


def value_for(key: str) -> str:
    """The value stored under `key`: the same on every run and every machine."""
    return f"{zlib.crc32(key.encode()) / 2**32:.6f}"


def answer(line: bytes) -> bytes:
    """The reply to one request line (without its newline)."""
    parts = line.strip().split()
    if len(parts) == 2 and parts[0] == b"GET":
        return b"OK " + value_for(parts[1].decode("utf-8", "replace")).encode() + b"\n"
    if parts == [b"PING"]:
        return b"PONG\n"
    return b"ERR expected 'GET <key>' or 'PING'\n"


class FeatureStore:
    """The server; `start()` binds (port 0 picks one), `stop()` closes it and its connections."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                async with asyncio.timeout(IDLE_TIMEOUT):
                    line = await reader.readuntil(b"\n")
                self.requests += 1
                writer.write(answer(line))
                await writer.drain()
        except asyncio.LimitOverrunError:
            writer.write(b"ERR line too long\n")
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass  # the client left, went quiet, or reset: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()


def serve_feature_store(listen: tuple[str, int], on_ready: Callable[[int], None] | None = None) -> None:
    """Run the feature store until SIGTERM/SIGINT. `on_ready(port)` runs once it listens;
    by default it prints the ready line `feature store` (harness.procs convention)."""
    store = FeatureStore()

    async def start() -> None:
        await store.start(*listen)
        log.info("feature store on %s:%d", listen[0], store.port)
        if on_ready is not None:
            on_ready(store.port)
        else:
            from harness.procs import ready_line

            ready_line("feature store", listen[0], store.port)

    async def stop() -> None:
        await store.stop()
        log.info("feature store stopped after %d requests", store.requests)

    run_until_signal(start, stop)
