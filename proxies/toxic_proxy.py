"""The TCP fault proxy: put it between a model server and its own dependency, add toxics.

    model server ──► toxic proxy (listen) ──► dependency (upstream host:port)
                          ▲
                control API (HTTP, JSON) ◄── scenario, test, curl

Each accepted connection opens one connection to the upstream and pumps bytes both ways.
`upstream` toxics act on the client's bytes towards the dependency, `downstream` toxics on
the dependency's answers. A chunk goes through the toxics of its stream in the order they
were added; each one says when the chunk (or its slices) may be written, or drops it, or
closes or resets the connection. Toxicity is drawn per connection (see `proxies.toxics`).

Runtime changes (as in Toxiproxy) reach open connections too, not only new ones: an added
toxic takes hold on every open connection at once (its toxicity drawn for each; a timeout
starts its clock), and acts on the next chunk in its stream; a removed toxic stops acting,
and whatever it was holding back is written at once, never dropped. Data a timeout or
reset_peer already dropped stays dropped. This matters for model servers that pool their
dependency connections: a fault added mid-run reaches them without a reconnect.

Down (`POST /state {"enabled": false}`): the listener is closed (new connections are
refused) and open connections are closed; enabling listens again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from proxies.http1 import Request, Response
from proxies.httpserver import HTTPServer, run_until_signal
from proxies.toxics import (
    STREAMS,
    Bandwidth,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
    Toxic,
    ToxicError,
    draw_applies,
    parse_state,
    parse_toxic,
    toxic_rng,
)

log = logging.getLogger(__name__)

_READ_SIZE = 64 << 10
_READ_AHEAD = 64  # chunks read per direction while toxics hold earlier ones; then TCP backpressure
# Markers travel behind the data before them, so what was let through is written first.
EOF = "eof"  # half-close this direction
CLOSE_LIMIT = "close:limit_data"  # close the connection; the reason follows the colon
CLOSE_TIMEOUT = "close:timeout"
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class DuplicateToxic(ValueError):
    """A toxic with this name exists already (the control API answers 409)."""


class UnknownToxic(LookupError):
    """No toxic with this name (the control API answers 404)."""


class _State:
    """One toxic on one connection: whether it applies there, its draws and its counters."""

    __slots__ = ("toxic", "applies", "rng", "free_at", "sent", "done", "timer")

    def __init__(self, toxic: Toxic, applies: bool, rng):
        self.toxic = toxic
        self.applies = applies
        self.rng = rng
        self.free_at = 0.0  # bandwidth: when the simulated link is next free
        self.sent = 0  # limit_data: bytes passed so far
        self.done = False  # limit_data exhausted, reset_peer triggered
        self.timer: asyncio.Task | None = None


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: ToxicProxy, number: int, client, upstream):
        self.proxy = proxy
        self.number = number
        self.loop = asyncio.get_running_loop()
        (client_reader, client_writer), (up_reader, up_writer) = client, upstream
        self.ends = {"upstream": (client_reader, up_writer), "downstream": (up_reader, client_writer)}
        self.writers = (client_writer, up_writer)
        self.states: dict[str, _State] = {}  # insertion order is the order toxics act in
        self.tasks: set[asyncio.Task] = set()
        self.changed = asyncio.Event()  # set (and replaced) when a toxic is removed
        self.done = asyncio.Event()
        self.closed = False
        self.ended = 0  # directions finished by a clean EOF
        for toxic in proxy.toxics.values():
            self.add(toxic)

    # -- toxics coming and going ------------------------------------------------------------

    def add(self, toxic: Toxic) -> None:
        rng = toxic_rng(self.proxy.seed, self.number, toxic.name)
        state = _State(toxic, draw_applies(toxic.toxicity, rng), rng)
        self.states[toxic.name] = state
        self.proxy.draws[toxic.name]["applied" if state.applies else "skipped"] += 1
        attributes = toxic.attributes
        if state.applies and isinstance(attributes, Timeout) and attributes.timeout_ms > 0:
            self._later(state, attributes.timeout_ms / 1000.0, self.close, "timeout")

    def remove(self, name: str) -> None:
        state = self.states.pop(name, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()  # wakes pumps holding data for the removed toxic

    def _later(self, state: _State, delay: float, action: Callable[[str], None], reason: str) -> None:
        async def fire() -> None:
            await asyncio.sleep(delay)
            if self.states.get(state.toxic.name) is state:  # not removed meanwhile
                action(reason)

        state.timer = self._spawn(fire())

    # -- lifecycle ----------------------------------------------------------------------------

    def _spawn(self, coro) -> asyncio.Task:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self) -> None:
        for stream in STREAMS:
            reader, writer = self.ends[stream]
            inbox: asyncio.Queue = asyncio.Queue(_READ_AHEAD)
            self._spawn(self._read(reader, inbox))
            self._spawn(self._pump(stream, inbox, writer))
        try:
            await self.done.wait()
        finally:
            self.close("proxy_stopped")

    def close(self, reason: str) -> None:
        """Close both sides cleanly: what was written goes out, then FIN."""
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            writer.close()
        self._finish(reason)

    def reset(self, reason: str) -> None:
        """Close both sides with a TCP RST: peers see ECONNRESET, unsent data is dropped."""
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            try:
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:  # already gone: nothing to reset
                pass
            writer.transport.abort()
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        self.proxy.links.discard(self)
        self.proxy.closed_by[reason] += 1
        self.done.set()

    # -- moving bytes ---------------------------------------------------------------------------

    async def _read(self, reader: asyncio.StreamReader, inbox: asyncio.Queue) -> None:
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                await inbox.put((self.loop.time(), data or EOF))  # stamped on arrival: latency counts from here
                if not data:
                    return
        except ConnectionResetError:
            self.reset("peer_reset")  # pass the reset on: the other peer sees what this one did
        except OSError:
            self.close("peer_error")

    async def _pump(self, stream: str, inbox: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        counted = self.proxy.bytes
        try:
            while True:
                at, data = await inbox.get()
                for release, payload, held_by in self._plan(stream, at, data):
                    await self._hold(release, held_by)
                    if payload is EOF:
                        if writer.can_write_eof():
                            writer.write_eof()  # half-close: the other direction may still talk
                        self.ended += 1
                        if self.ended == len(STREAMS):
                            self.close("closed")
                        return
                    if isinstance(payload, str):  # a close marker
                        self.close(payload.partition(":")[2])
                        return
                    writer.write(payload)
                    counted[stream] += len(payload)
                    await writer.drain()
        except OSError:  # the peer went away while we wrote
            self.close("peer_error")

    async def _hold(self, release: float, held_by: frozenset) -> None:
        """Wait until `release`, or until a toxic that holds this piece is removed."""
        while True:
            wait = release - self.loop.time()
            if wait <= 0 or any(name not in self.states for name in held_by):
                return
            changed = self.changed
            try:
                async with asyncio.timeout(wait):
                    await changed.wait()
            except TimeoutError:
                return

    def _plan(self, stream: str, at: float, data) -> list[tuple[float, object, frozenset]]:
        """What to write for one chunk: (release time, bytes or marker, toxics holding it)."""
        pieces = [(at, data, frozenset())]
        for state in [s for s in self.states.values() if s.applies and s.toxic.stream == stream]:
            pieces = self._apply(state, pieces)
            if not pieces:
                break
        return pieces

    def _apply(self, state: _State, pieces: list) -> list:
        toxic, attributes, out = state.toxic, state.toxic.attributes, []
        name = frozenset((toxic.name,))
        if isinstance(attributes, Timeout):
            # Data is dropped; the end of the stream closes the connection (as in Toxiproxy).
            ends = [(r, CLOSE_TIMEOUT if p is EOF else p, h) for r, p, h in pieces if isinstance(p, str)]
            return ends[:1]
        if isinstance(attributes, ResetPeer):
            if not state.done:
                state.done = True
                delay = max(0.0, pieces[0][0] + attributes.timeout_ms / 1000.0 - self.loop.time())
                self._later(state, delay, self.reset, "reset_peer")
            return []
        for release, payload, held in pieces:
            if isinstance(payload, str):  # a marker
                if isinstance(attributes, SlowClose):
                    out.append((release + attributes.delay_ms / 1000.0, payload, held | name))
                elif not (isinstance(attributes, LimitData) and state.done):
                    out.append((release, payload, held))
                continue
            if isinstance(attributes, SlowClose):
                out.append((release, payload, held))
            elif isinstance(attributes, Bandwidth):
                pos = 0  # offsets, not repeated slicing: a 1-byte slicer on 64 KB stays linear
                for size in attributes.pieces(len(payload)):
                    state.free_at = attributes.schedule(state.free_at, release, size)
                    out.append((state.free_at, payload[pos : pos + size], held | name))
                    pos += size
            elif isinstance(attributes, Slicer):
                step = attributes.delay_us / 1e6
                held_here = held | name if step else held
                pos = 0
                for i, size in enumerate(attributes.sizes(len(payload), state.rng)):
                    out.append((release + i * step, payload[pos : pos + size], held_here))
                    pos += size
            elif isinstance(attributes, LimitData):
                if state.done:
                    continue
                allowed = attributes.allow(state.sent, len(payload))
                state.sent += allowed
                if allowed:
                    out.append((release, payload[:allowed], held))
                if state.sent >= attributes.bytes:
                    state.done = True
                    out.append((release, CLOSE_LIMIT, held))
            else:  # Latency
                out.append((release + attributes.delay_ms(state.rng) / 1000.0, payload, held | name))
        return out


class ToxicProxy:
    """Accept on (host, port), forward each connection to `upstream`, apply the toxics."""

    def __init__(
        self,
        upstream: tuple[str, int],
        toxics: Iterable[Toxic | Mapping] = (),
        *,
        seed: int = 0,
        connect_timeout: float = 5.0,
    ):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ToxicError(f"seed must be an integer >= 0, got {seed!r}")
        self.upstream = upstream
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.toxics: dict[str, Toxic] = {}
        self.enabled = True
        self.links: set[_Link] = set()
        self.accepted = 0  # also the next connection's number: its draws depend on it
        self.upstream_failures = 0
        self.bytes = Counter({stream: 0 for stream in STREAMS})  # written towards each side
        self.draws: dict[str, Counter] = {}  # per toxic: connections it applied to / skipped
        self.closed_by: Counter = Counter()
        self.host = "127.0.0.1"
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        for toxic in toxics:
            self.add(toxic)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._server = await asyncio.start_server(self._accept, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.close("proxy_stopped")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.enabled:  # accepted just before the listener closed
            writer.close()
            return
        number, self.accepted = self.accepted, self.accepted + 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                upstream = await asyncio.open_connection(*self.upstream)
        except OSError as exc:  # TimeoutError included
            # As Toxiproxy: the client's connection is closed. It sees the dependency gone.
            self.upstream_failures += 1
            log.warning("toxic proxy: upstream %s:%d unreachable: %r", *self.upstream, exc)
            writer.close()
            return
        if not self.enabled:
            upstream[1].close()
            writer.close()
            return
        link = _Link(self, number, (reader, writer), upstream)
        self.links.add(link)
        await link.run()

    # -- the control surface (also called in-process by tests) --------------------------------

    def add(self, toxic: Toxic | Mapping) -> Toxic:
        if not isinstance(toxic, Toxic):
            toxic = parse_toxic(toxic)
        if toxic.name in self.toxics:
            raise DuplicateToxic(f"a toxic named {toxic.name!r} exists already; remove it first or pick another name")
        self.toxics[toxic.name] = toxic
        self.draws.setdefault(toxic.name, Counter(applied=0, skipped=0))
        for link in list(self.links):
            link.add(toxic)
        log.info("toxic added: %s", json.dumps(toxic.to_json()))
        return toxic

    def remove(self, name: str) -> None:
        if self.toxics.pop(name, None) is None:
            raise UnknownToxic(f"no toxic named {name!r}; there are {sorted(self.toxics) or 'none'}")
        for link in list(self.links):
            link.remove(name)
        log.info("toxic removed: %s", name)

    async def reset(self) -> None:
        """Remove every toxic and enable the proxy (Toxiproxy's POST /reset)."""
        for name in list(self.toxics):
            self.remove(name)
        await self.set_enabled(True)

    async def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if not enabled:
            if self._server is not None:
                self._server.close()
                self._server = None
            for link in list(self.links):
                link.close("down")
            log.info("toxic proxy down: refusing connections")
        elif self.port:  # started before: listen on the same port again
            await self.start(self.host, self.port)
            log.info("toxic proxy up again on %s:%d", self.host, self.port)

    def stats(self) -> dict:
        return {
            "enabled": self.enabled,
            "seed": self.seed,
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
            "connections": {"total": self.accepted, "open": len(self.links), "upstream_failed": self.upstream_failures},
            "bytes": dict(self.bytes),
            "toxics": {name: dict(counts) for name, counts in self.draws.items()},
            "closed_by": dict(self.closed_by),
        }


# -- the control API ------------------------------------------------------------------------

_JSON = [(b"content-type", b"application/json")]


def _json(status: int, payload: object) -> Response:
    return Response(status, list(_JSON), json.dumps(payload).encode())


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class ControlApp:
    """HTTP control of one ToxicProxy, an app for `proxies.httpserver.HTTPServer`:

        GET    /toxics            list             POST /reset   remove all, enable
        POST   /toxics            add (JSON toxic)  GET|POST /state  {"enabled": bool}
        GET    /toxics/{name}     one toxic        GET  /stats   counters and the seed
        DELETE /toxics/{name}     remove
    """

    def __init__(self, proxy: ToxicProxy):
        self.proxy = proxy

    async def __call__(self, request: Request) -> Response:
        method = request.method.decode("latin-1")
        method = "GET" if method == "HEAD" else method
        path = urllib.parse.unquote(request.target.split(b"?", 1)[0].decode("utf-8", "replace")).rstrip("/") or "/"
        try:
            return await self._route(method, path, request.body)
        except ToxicError as exc:
            return _error(400, str(exc))
        except DuplicateToxic as exc:
            return _error(409, str(exc))
        except UnknownToxic as exc:
            return _error(404, exc.args[0])

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        proxy = self.proxy
        if path == "/toxics":
            if method == "GET":
                return _json(200, [t.to_json() for t in proxy.toxics.values()])
            if method == "POST":
                return _json(200, proxy.add(parse_toxic(_load(body))).to_json())
            return _not_allowed(method, path, "GET, POST")
        if path.startswith("/toxics/"):
            name = path[len("/toxics/") :]
            if method == "GET":
                if name not in proxy.toxics:
                    raise UnknownToxic(f"no toxic named {name!r}")
                return _json(200, proxy.toxics[name].to_json())
            if method == "DELETE":
                proxy.remove(name)
                return Response(204)
            return _not_allowed(method, path, "GET, DELETE")
        if path == "/reset":
            if method != "POST":
                return _not_allowed(method, path, "POST")
            await proxy.reset()
            return Response(204)
        if path == "/state":
            if method == "POST":
                await proxy.set_enabled(parse_state(_load(body)))
            elif method != "GET":
                return _not_allowed(method, path, "GET, POST")
            return _json(200, {"enabled": proxy.enabled})
        if path == "/stats":
            return _json(200, proxy.stats()) if method == "GET" else _not_allowed(method, path, "GET")
        return _error(404, f"no route {path}; see /toxics, /reset, /state, /stats")


def _load(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ToxicError(f"request body is not valid JSON: {exc}") from None


def _not_allowed(method: str, path: str, allowed: str) -> Response:
    response = _error(405, f"{method} not allowed on {path}; use {allowed}")
    response.headers.append((b"allow", allowed.encode()))
    return response


# -- process entry point ------------------------------------------------------------------------


def serve_toxic(
    listen: tuple[str, int],
    upstream: tuple[str, int],
    control_listen: tuple[str, int] | None = ("127.0.0.1", 8474),
    *,
    toxics: Iterable[Toxic | Mapping] = (),
    seed: int = 0,
    connect_timeout: float = 5.0,
    on_ready: Callable[[int, int | None], None] | None = None,
) -> None:
    """Run the toxic proxy (and its control API unless `control_listen` is None) until
    SIGTERM/SIGINT. Bad toxics raise ToxicError (a ValueError) before anything is bound.

    `on_ready(proxy_port, control_port)` runs once both listen; by default it prints the
    ready lines `toxic proxy` and then `toxic control` (harness.procs convention).
    """
    proxy = ToxicProxy(upstream, toxics, seed=seed, connect_timeout=connect_timeout)
    control = HTTPServer(ControlApp(proxy), max_body=64 << 10) if control_listen is not None else None

    async def start() -> None:
        await proxy.start(*listen)
        if control is not None:
            await control.start(*control_listen)
        log.info(
            "toxic proxy on %s:%d -> %s:%d, seed %d, toxics %s",
            listen[0], proxy.port, *upstream, seed, [t.to_json() for t in proxy.toxics.values()],
        )
        control_port = control.port if control is not None else None
        if on_ready is not None:
            on_ready(proxy.port, control_port)
        else:
            from harness.procs import ready_line

            ready_line("toxic proxy", listen[0], proxy.port)
            if control is not None:
                ready_line("toxic control", control_listen[0], control_port)

    async def stop() -> None:
        if control is not None:
            await control.drain(2.0)
        await proxy.stop()

    run_until_signal(start, stop)


# -- client --------------------------------------------------------------------------------------


class ToxicControlError(RuntimeError):
    """The control API refused a call; `status` is its HTTP status."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ToxicControl:
    """A blocking client of the control API (stdlib only), for scenarios and tests.

    From inside an event loop, call it through `asyncio.to_thread`.
    """

    def __init__(self, base_url: str, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def toxics(self) -> list[dict]:
        return self._call("GET", "/toxics")

    def add(self, toxic: Toxic | Mapping | str, /, **fields) -> dict:
        """Add a toxic: a Toxic, its JSON dict, or a type name with fields and attributes,
        e.g. `add("latency", name="slow", latency_ms=100, jitter_ms=10)`."""
        if isinstance(toxic, Toxic):
            payload = toxic.to_json()
        elif isinstance(toxic, str):
            top = {k: fields.pop(k) for k in ("name", "stream", "toxicity") if k in fields}
            attributes = {**fields.pop("attributes", {}), **fields}
            payload = {"type": toxic, **top, "attributes": attributes}
        else:
            payload = dict(toxic)
        return self._call("POST", "/toxics", payload)

    def remove(self, name: str) -> None:
        self._call("DELETE", "/toxics/" + urllib.parse.quote(name, safe=""))

    def reset(self) -> None:
        self._call("POST", "/reset")

    def set_enabled(self, enabled: bool) -> dict:
        return self._call("POST", "/state", {"enabled": enabled})

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def _call(self, method: str, path: str, payload: object = None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                message = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                message = body.decode("utf-8", "replace")
            raise ToxicControlError(exc.code, message) from None
        return json.loads(body) if body else None
