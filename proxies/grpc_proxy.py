"""The gRPC shadow proxy: answer from the incumbent, mirror a copy to the candidate (and baseline).

A `grpc.aio` server with one generic handler forwards raw bytes, so any service works without
generated code. Every method is forwarded as unary-unary except the methods named in
`GrpcProxySettings.stream_methods`, which are forwarded as stream-stream (that covers
server-streaming, client-streaming and bidirectional calls: the wire format is the same) to the
incumbent only. See docs/grpc.md.

The same guarantees as the HTTP proxy (proxies/http_proxy.py): the incumbent's call is started
first and its answer returned the moment it arrives; mirrored copies are separate tasks that the
client path never awaits, bounded by an in-flight budget (beyond it a copy is shed and recorded)
and a per-arm timeout; each exchange goes to the capture sink exactly once, when every arm has an
outcome. An arm's `status` is the gRPC status code as an int (0 = OK).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from harness.faults import FaultPlan, TransportFault
from harness.faults.base import Action
from harness.faults.plan import Decision
from harness.records import BASELINE, CANDIDATE, CONNECT, GRPC_METHOD, INCUMBENT, INTERNAL, RESET, SHED, TIMEOUT, ArmOutcome, Exchange
from harness.sampling import Sampler
from proxies.http_proxy import RequestIds, FaultedPayload, PendingExchange
from proxies.metrics import BUCKETS, ProxyMetrics

log = logging.getLogger(__name__)

Sink = Callable[[Exchange], None]


# Metadata never forwarded: hop-by-hop (RFC 9113 8.2.2), pseudo-headers, and what the gRPC
# library sets itself on each call (user-agent, content-type, te, grpc-timeout, grpc-encoding...).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "host",
     "content-type", "content-length", "user-agent"}
)

_CONNECT_HINTS = ("failed to connect", "connection refused", "dns resolution failed", "name resolution")
_CODES = {code.value[0]: code for code in grpc.StatusCode}

# Transport fault actions a gRPC copy can be given. Throttle and truncate work on the bytes of
# one HTTP/1.1 connection; gRPC multiplexes calls on one HTTP/2 connection and grpcio frames
# each message itself, so neither can be done to one call without touching the others.
GRPC_ACTIONS = frozenset({"delay", "abort", "hang", "reset"})


async def _detached(call):
    """Await a grpc.aio call without tying it to the awaiting task: awaiting the call itself
    would cancel it when the task is cancelled (the client left), and the incumbent's call
    must go on to give its own outcome. A future and a done callback: cheaper than shield()."""
    done = asyncio.get_running_loop().create_future()
    call.add_done_callback(lambda _: done.done() or done.set_result(None))
    await done
    return await call  # finished: returns its answer or raises its AioRpcError at once


MAX_CACHED_CALLABLES = 1024  # (arm, method) pairs; beyond, callables are made per call


def check_plan(plan: FaultPlan) -> None:
    """ValueError naming the first transport fault the gRPC proxy cannot execute."""
    for fault in plan.faults:
        if isinstance(fault, TransportFault) and fault.action(0.0).kind not in GRPC_ACTIONS:
            raise ValueError(f"fault {fault.name!r} is not supported over gRPC (supported transport faults: "
                             "latency, abort, hang, reset; payload faults go through the codec)")


@dataclass
class GrpcProxySettings:
    incumbent: str  # host:port or grpc://host:port
    candidate: str | None = None
    baseline: str | None = None
    sample: float = 1.0  # fraction of calls mirrored, drawn from `seed`
    seed: int = 0
    shadow_timeout: float = 5.0  # a mirrored copy: beyond this it is recorded as a timeout
    # A unary call to the incumbent: the client's deadline, capped by this (None: no cap). Streams
    # get the client's deadline only. The cap also ends a streaming method not listed below,
    # which otherwise hangs until a deadline (grpc waits for a unary answer's end forever).
    incumbent_timeout: float | None = 30.0
    max_inflight: int = 512  # mirrored calls in flight across arms; beyond it copies are shed
    max_message_bytes: int = 4 << 20  # largest message received or sent, both directions, every hop
    stream_methods: tuple[str, ...] = ()  # full method paths forwarded as streams, e.g. "/pkg.Svc/Watch"
    # TLS, from PEM files (proxies/grpc_tls.py; docs/grpc.md "TLS and mTLS"). Paths, never the
    # contents, so the settings can be recorded in the capture without leaking a key.
    tls_cert: str | None = None  # the listener's certificate chain; with tls_key, clients must use TLS
    tls_key: str | None = None
    tls_client_ca: str | None = None  # CA of client certificates: set, clients must present one (mTLS)
    # Every grpcs:// upstream: CA bundle (None: grpcio's bundled roots), client cert + key (mTLS),
    # name expected in its certificate when not the host (grpc.ssl_target_name_override).
    upstream_ca: str | None = None
    upstream_cert: str | None = None
    upstream_key: str | None = None
    upstream_server_name: str | None = None
    # Per-arm overrides of the four above: {"candidate": {"ca": ..., "cert": ..., "key": ..., "server_name": ...}}.
    upstream_tls_by_arm: dict[str, dict[str, str]] | None = None


def grpc_target(value: str) -> str:
    """'grpc://host:port', 'grpcs://host:port' or 'host:port' -> 'host:port' (the channel target).

    Whether the upstream is called over TLS is `grpc_tls.uses_tls(value)`: grpcs:// (or https://)."""
    for scheme in ("grpc://", "http://", "grpcs://", "https://"):
        if value.startswith(scheme):
            value = value[len(scheme):]
            break
    value = value.rstrip("/")
    if "/" in value or ":" not in value:
        raise ValueError(f"gRPC upstream: expected host:port, grpc://host:port or grpcs://host:port, got {value!r}")
    return value


def forwardable(metadata) -> list[tuple[str, str | bytes]]:
    """End-to-end metadata: drops hop-by-hop keys, pseudo-headers and grpc-* reserved keys."""
    out = []
    for item in metadata or ():
        key, value = item[0], item[1]
        key = key.lower()
        if key.startswith((":", "grpc-")) or key in _HOP_BY_HOP:
            continue
        out.append((key, value))
    return out


def _code(code: grpc.StatusCode) -> int:
    return code.value[0]


class GrpcProxyMetrics(ProxyMetrics):
    """ProxyMetrics whose response classes are gRPC code names ("OK", "NOT_FOUND"...), not "2xx"."""

    def outcome(self, arm: str, outcome: ArmOutcome) -> None:
        if outcome.error is not None or outcome.status is None:
            super().outcome(arm, outcome)
            return
        self.latency_counts[arm][bisect_left(BUCKETS, outcome.latency_s)] += 1
        self.latency_sum[arm] += outcome.latency_s
        code = _CODES.get(outcome.status)
        self.responses[arm, code.name if code else str(outcome.status)] += 1


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: GrpcShadowProxy):
        self.proxy = proxy

    def service(self, handler_call_details):
        method = handler_call_details.method
        if isinstance(method, bytes):  # older grpcio
            method = method.decode()
        if method in self.proxy.stream_methods:
            async def stream(request_iterator, context):
                async for response in self.proxy.forward_stream(method, request_iterator, context):
                    yield response

            return grpc.stream_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context) -> bytes:
            return await self.proxy.unary(method, request, context)

        return grpc.unary_unary_rpc_method_handler(unary)  # no (de)serializers: bytes in, bytes out


class GrpcShadowProxy:
    """Forwards calls to the incumbent, mirrors unary calls to the shadows, reports exchanges."""

    def __init__(
        self,
        settings: GrpcProxySettings,
        sink: Sink | None = None,
        metrics: ProxyMetrics | None = None,
        plan: FaultPlan | None = None,
    ):
        self.settings = settings
        self.plan = plan if plan is not None and len(plan) else None
        if self.plan is not None:
            check_plan(self.plan)
        # The fault plan's request number: arrival order of unary calls. Worker i of N numbers
        # its calls i, i+N, i+2N... (set `_seq = i`, `seq_stride = N`), so workers never share one.
        self._seq = 0
        self.seq_stride = 1
        self._t0: float | None = None  # the plan's windows count from the first call
        self.sink = sink
        self.stream_methods = frozenset(settings.stream_methods)
        self.channel_options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
        # One channel per upstream, opened lazily on the serving loop (a grpc.aio channel binds to it).
        self.targets = {INCUMBENT: grpc_target(settings.incumbent)}
        for arm, url in ((CANDIDATE, settings.candidate), (BASELINE, settings.baseline)):
            if url:
                self.targets[arm] = grpc_target(url)
        self.shadows = tuple(arm for arm in self.targets if arm != INCUMBENT)
        self.arms = (INCUMBENT, *self.shadows)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._callables: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable] = {}
        self.metrics = metrics or GrpcProxyMetrics(self.arms)
        self.metrics.inflight = lambda: self.inflight
        self.sampler = Sampler(settings.sample, settings.seed)
        self.request_ids = RequestIds()
        self.inflight = 0
        self._tasks: set[asyncio.Task] = set()

    def handler(self) -> grpc.GenericRpcHandler:
        return _Handler(self)

    def channel(self, arm: str) -> grpc.aio.Channel:
        channel = self._channels.get(arm)
        if channel is None:
            from proxies.grpc_tls import channel_credentials

            # A grpcs:// upstream: its PEM files are read here, once per arm (serve_grpc_proxy opens
            # every channel before listening, so a bad file stops the start, not a call).
            secure = channel_credentials(self.settings, arm)
            if secure is None:
                channel = grpc.aio.insecure_channel(self.targets[arm], options=self.channel_options)
            else:
                credentials, tls_options = secure
                channel = grpc.aio.secure_channel(self.targets[arm], credentials, options=self.channel_options + tls_options)
            self._channels[arm] = channel
        return channel

    def callable(self, arm: str, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        """The arm's unary callable for `method`, made once: building one per call costs about
        as much as the proxy's own Python per call. Bounded: clients choose method names."""
        key = (arm, method)
        fn = self._callables.get(key)
        if fn is None:
            fn = self.channel(arm).unary_unary(method)
            if len(self._callables) < MAX_CACHED_CALLABLES:
                self._callables[key] = fn
        return fn

    @staticmethod
    def _deadline(context, limit: float | None) -> float | None:
        remaining = context.time_remaining()
        if remaining is None:
            return limit
        return remaining if limit is None else min(remaining, limit)

    # -- unary: forwarded and mirrored -------------------------------------------------------

    async def unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started_at = time.time()
        self.metrics.requests += 1
        metadata = forwardable(context.invocation_metadata())
        request_id = next((v for k, v in metadata if k == "x-request-id"), None)
        if request_id is None:
            request_id = self.request_ids.next().decode()
            metadata.append(("x-request-id", request_id))
        elif isinstance(request_id, bytes):
            request_id = request_id.decode("latin-1")
        exchange = Exchange(request_id, started_at, GRPC_METHOD, method, request)
        timeout = self._deadline(context, self.settings.incumbent_timeout)

        mirror = bool(self.shadows) and self.sampler.take()
        decision = payload = None
        if self.plan is not None:  # decided for every call, mirrored or not, like the HTTP proxy
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            decision = self.plan.decide(self._seq, now - self._t0)
            self._seq += self.seq_stride
            if mirror and decision.payload:
                payload = FaultedPayload(self.plan, decision, request)
        pending = PendingExchange(exchange, 1 + (len(self.shadows) if mirror else 0), self.sink)
        # The incumbent's call is created first: grpc.aio starts it before any mirror task runs.
        self.metrics.sent[INCUMBENT] += 1
        sent = time.perf_counter()
        call = self.callable(INCUMBENT, method)(request, metadata=metadata, timeout=timeout)
        if mirror:
            shadow_metadata = metadata + [("x-shadow-request", "1")]
            shadow_timeout = self.settings.shadow_timeout
            if timeout is not None:  # the client's deadline is propagated to the copies too
                shadow_timeout = min(shadow_timeout, timeout)
            loop = asyncio.get_running_loop()
            for arm in self.shadows:
                if self.inflight >= self.settings.max_inflight:
                    self.metrics.shed[arm] += 1
                    pending.done(arm, ArmOutcome(error=SHED))
                    continue
                self.inflight += 1
                copy = payload if payload is not None and arm in decision.payload_arms else request
                self._track(loop.create_task(self._mirror(arm, method, copy, shadow_metadata, shadow_timeout, pending, decision)))

        try:
            response = await _detached(call)
        except grpc.aio.AioRpcError as exc:
            latency = time.perf_counter() - sent
            outcome = self._error_outcome(exc, latency, timeout)
            self.metrics.outcome(INCUMBENT, outcome)
            pending.done(INCUMBENT, outcome)
            initial = forwardable(exc.initial_metadata())
            if initial:
                await context.send_initial_metadata(initial)
            await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
            raise AssertionError("unreachable: abort raises")  # pragma: no cover
        except asyncio.CancelledError:
            # The client went away (cancelled, or its deadline passed). As over HTTP, the
            # incumbent's call goes on and its own outcome is recorded: the client leaving
            # says nothing about the incumbent. The call carries the client's deadline, so it
            # ends by then at the latest.
            self._track(asyncio.get_running_loop().create_task(self._finish_orphan(call, sent, timeout, pending)))
            raise
        latency = time.perf_counter() - sent
        outcome = ArmOutcome(0, latency, response)
        self.metrics.outcome(INCUMBENT, outcome)
        pending.done(INCUMBENT, outcome)
        initial = forwardable(await call.initial_metadata())
        if initial:
            await context.send_initial_metadata(initial)
        trailing = await call.trailing_metadata()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        return response

    async def _finish_orphan(self, call, sent: float, timeout: float | None, pending: PendingExchange) -> None:
        """Record the outcome of an incumbent call whose client is gone."""
        try:
            response = await call
            outcome = ArmOutcome(0, time.perf_counter() - sent, response)
        except grpc.aio.AioRpcError as exc:
            outcome = self._error_outcome(exc, time.perf_counter() - sent, timeout)
        except asyncio.CancelledError:  # the drain deadline
            call.cancel()
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT)
        self.metrics.outcome(INCUMBENT, outcome)
        pending.done(INCUMBENT, outcome)

    def _track(self, task: asyncio.Task) -> None:
        """Keep a background task until it ends; drain() waits for (then cancels) these."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _error_outcome(exc: grpc.aio.AioRpcError, latency: float, timeout: float | None) -> ArmOutcome:
        code = exc.code()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None and latency >= timeout * 0.95:
            return ArmOutcome(latency_s=latency, error=TIMEOUT)  # our deadline, not the upstream's answer
        if code == grpc.StatusCode.UNAVAILABLE:
            details = (exc.details() or "").lower()
            if any(hint in details for hint in _CONNECT_HINTS):
                return ArmOutcome(latency_s=latency, error=CONNECT)
        return ArmOutcome(_code(code), latency, None)

    async def _mirror(
        self,
        arm: str,
        method: str,
        copy: bytes | FaultedPayload,  # a faulted body is built here, off the client's path
        metadata,
        timeout: float,
        pending: PendingExchange,
        decision: Decision | None = None,
    ) -> None:
        self.metrics.sent[arm] += 1
        request = copy if isinstance(copy, bytes) else copy.faulted()
        # After the body is built: a payload fault that could not be applied has marked its label.
        labels, actions = (decision.faults_for(arm), decision.actions_for(arm)) if decision else ((), ())
        sent = time.perf_counter()
        try:
            if actions:
                outcome = await self._deliver_faulted(arm, method, request, metadata, timeout, actions, sent)
            else:
                response = await self.callable(arm, method)(request, metadata=metadata, timeout=timeout)
                outcome = ArmOutcome(0, time.perf_counter() - sent, response)
        except grpc.aio.AioRpcError as exc:
            outcome = self._error_outcome(exc, time.perf_counter() - sent, timeout)
        except asyncio.CancelledError:
            # Cancelled by the drain deadline: still an outcome, and the exchange still lands.
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT)
        except Exception:  # a bug here must not lose the exchange
            log.exception("mirror to %s failed", arm)
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=INTERNAL)
        finally:
            self.inflight -= 1
        outcome.faults = labels
        self.metrics.outcome(arm, outcome)
        pending.done(arm, outcome)

    async def _deliver_faulted(
        self, arm: str, method: str, request: bytes, metadata, timeout: float, actions: tuple[Action, ...], sent: float
    ) -> ArmOutcome:
        """Execute a fault plan's transport actions on one copy (the kinds in GRPC_ACTIONS).

        The arm's deadline covers any delay, as over HTTP; failures of the call itself raise
        AioRpcError, recorded by the caller like those of an unfaulted copy.
        """
        call = None
        for action in actions:
            if action.kind == "delay":  # counts in the arm's latency: it is network time
                await asyncio.sleep(min(action.delay_s, timeout))
            elif action.kind == "abort":  # the arm is never called
                return ArmOutcome(action.grpc_status, time.perf_counter() - sent, None)
            elif action.kind == "hang":  # nothing comes back before the arm's deadline
                await asyncio.sleep(timeout)
                return ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT)
            elif action.kind == "reset":  # send, then cancel the call (RST_STREAM) unread
                remaining = timeout - (time.perf_counter() - sent)
                call = self.callable(arm, method)(request, metadata=metadata, timeout=max(remaining, 0.001))
                await asyncio.sleep(min(action.after_s, max(remaining, 0.0)))
                call.cancel()
                return ArmOutcome(latency_s=time.perf_counter() - sent, error=RESET)
        remaining = timeout - (time.perf_counter() - sent)
        if remaining <= 0:
            return ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT)
        response = await self.callable(arm, method)(request, metadata=metadata, timeout=remaining)
        return ArmOutcome(0, time.perf_counter() - sent, response)

    # -- streams: forwarded to the incumbent only ------------------------------------------

    async def forward_stream(self, method: str, request_iterator, context) -> AsyncIterator[bytes]:
        """Any-cardinality call relayed message by message; captured with the incumbent arm only.

        The exchange's request body is empty and the arm's body None: streams are not recorded
        message by message (yet); status and latency are.
        """
        started_at = time.time()
        self.metrics.requests += 1
        metadata = forwardable(context.invocation_metadata())
        request_id = next((v for k, v in metadata if k == "x-request-id"), None)
        if request_id is None:
            request_id = self.request_ids.next().decode()
            metadata.append(("x-request-id", request_id))
        elif isinstance(request_id, bytes):
            request_id = request_id.decode("latin-1")
        pending = PendingExchange(Exchange(request_id, started_at, GRPC_METHOD, method, b""), 1, self.sink)
        timeout = self._deadline(context, None)

        async def requests():
            async for message in request_iterator:
                yield message

        self.metrics.sent[INCUMBENT] += 1
        sent = time.perf_counter()
        call = self.channel(INCUMBENT).stream_stream(method)(requests(), metadata=metadata, timeout=timeout)
        outcome = None
        try:
            initial = forwardable(await call.initial_metadata())
            if initial:
                await context.send_initial_metadata(initial)
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as exc:
            outcome = self._error_outcome(exc, time.perf_counter() - sent, timeout)
            self._finish(pending, outcome)
            await context.abort(exc.code(), exc.details() or "", tuple(exc.trailing_metadata() or ()))
        except BaseException:
            call.cancel()
            self._finish(pending, ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT))
            raise
        code = await call.code()
        if code != grpc.StatusCode.OK:  # the iterator ends without raising on some paths
            self._finish(pending, ArmOutcome(_code(code), time.perf_counter() - sent, None))
            await context.abort(code, await call.details() or "", tuple(await call.trailing_metadata() or ()))
        trailing = await call.trailing_metadata()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        self._finish(pending, ArmOutcome(0, time.perf_counter() - sent, None))

    def _finish(self, pending: PendingExchange, outcome: ArmOutcome) -> None:
        if pending.remaining:
            self.metrics.outcome(INCUMBENT, outcome)
            pending.done(INCUMBENT, outcome)

    # -- shutdown --------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Let mirrored copies finish within `timeout`, then cancel (and record) the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=max(timeout, 0.0))
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self.close()

    async def close(self) -> None:
        channels, self._channels, self._callables = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()


def make_server(proxy: GrpcShadowProxy, listen: tuple[str, int]) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server (not started) serving `proxy` on `listen`; returns it and the bound port.

    TLS (mTLS with a client CA) when the settings name a certificate: proxies/grpc_tls.py.
    grpc sets SO_REUSEPORT on the socket (option `grpc.so_reuseport`, on by default on Linux):
    that is what lets several worker processes serve one port (proxies/grpc_workers.py)."""
    from proxies.grpc_tls import server_credentials

    credentials = server_credentials(proxy.settings)
    server = grpc.aio.server(options=proxy.channel_options)
    server.add_generic_rpc_handlers([proxy.handler()])
    host, port = listen
    address = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return server, bound


def serve_grpc_proxy(
    settings: GrpcProxySettings,
    *,
    listen: tuple[str, int],
    run_dir: Path,
    metrics_listen: tuple[str, int] | None = None,
    drain_timeout: float = 10.0,
    on_ready=None,
    plan: FaultPlan | None = None,
    workers: int = 1,
) -> None:
    """Run the gRPC shadow proxy, capturing to `run_dir/capture.db`, until SIGTERM or SIGINT.

    Drain order: stop accepting and let calls in progress finish (grace: `drain_timeout`),
    let mirrored copies finish within what is left of it (then cancel and record them),
    close the channels, flush the capture. `on_ready(port)` is called once listening.
    Runs on the standard asyncio loop (grpc.aio does not support uvloop).

    With `workers` > 1, that many processes serve the same port, each capturing to its own
    shard; on SIGTERM they drain and the shards are merged into `run_dir/capture.db`, and
    `on_ready` is called once every worker listens (proxies/grpc_workers.py).
    TLS files are checked first (ValueError, one line) before anything is created.
    """
    from proxies.grpc_tls import check

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check(settings)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        from proxies.grpc_workers import serve_workers

        serve_workers(settings, listen=listen, run_dir=run_dir, workers=workers, metrics_listen=metrics_listen,
                      drain_timeout=drain_timeout, on_ready=on_ready, plan=plan)
        return
    serve_process(settings, listen=listen, capture_path=run_dir / "capture.db", run_dir=run_dir,
                  metrics_listen=metrics_listen, drain_timeout=drain_timeout, on_ready=on_ready, plan=plan)


def serve_process(
    settings: GrpcProxySettings,
    *,
    listen: tuple[str, int],
    capture_path: Path,
    run_dir: Path,
    metrics_listen: tuple[str, int] | None = None,
    drain_timeout: float = 10.0,
    on_ready=None,
    plan: FaultPlan | None = None,
    workers: int = 1,
    setup: Callable[[GrpcShadowProxy, object], None] | None = None,
) -> None:
    """One serving process (the whole proxy, or one worker of `workers`), capturing to `capture_path`.

    `setup(proxy, capture)` runs once the proxy exists, before it listens: a worker numbers its
    calls and seeds its sampler there, and records which worker it is in its shard's meta.
    The first SIGTERM/SIGINT starts the drain; later ones are ignored until the process exits.
    """
    from harness.capture import CaptureWriter
    from proxies.serve import record_plan

    capture = CaptureWriter(capture_path)
    capture.set_meta("seed", settings.seed)
    capture.set_meta("proxy_settings", {**vars(settings), "protocol": "grpc", "stream_methods": list(settings.stream_methods),
                                        "workers": workers})
    record_plan(plan, capture, run_dir)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        proxy = GrpcShadowProxy(settings, sink=capture.write, plan=plan)
        if setup is not None:
            setup(proxy, capture)
        for arm in proxy.arms:  # reads the upstreams' TLS files now, not on the first call
            proxy.channel(arm)
        server, port = make_server(proxy, listen)
        await server.start()
        if metrics_listen is not None:
            proxy.metrics.serve(*metrics_listen)
        log.info("grpc shadow proxy on %s:%d -> incumbent %s", listen[0], port, settings.incumbent)
        if on_ready is not None:
            on_ready(port)
        await stopping.wait()
        # From now on further SIGTERM/SIGINT are ignored for good: the drain is bounded anyway, and
        # a worker sent SIGINT by the terminal and SIGTERM by its parent must not die of the second.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        deadline = time.monotonic() + drain_timeout
        await server.stop(drain_timeout)
        await proxy.drain(deadline - time.monotonic())
        capture.close()
        log.info("drained; %d exchanges captured", capture.written)

    try:
        asyncio.run(main())
    finally:
        capture.close()
