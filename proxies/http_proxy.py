"""The HTTP shadow proxy: answer from the incumbent, mirror a copy to the candidate (and baseline).

Production never waits for the shadow: the incumbent's request is written first, its
response is returned the moment it is complete, and mirrored copies run as separate tasks
bounded by an in-flight budget and a per-arm timeout. A copy beyond the budget is shed and
recorded as such. Each exchange is handed to the capture sink once every arm has an outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from harness.records import BASELINE, CANDIDATE, INCUMBENT, INTERNAL, SHED, TIMEOUT, ArmOutcome, Exchange
from harness.sampling import Sampler
from proxies.http1 import Request, Response, encode_request, end_to_end
from proxies.metrics import ProxyMetrics
from proxies.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

Sink = Callable[[Exchange], None]

_JSON = [(b"content-type", b"application/json")]


@dataclass
class ProxySettings:
    incumbent: str
    candidate: str | None = None
    baseline: str | None = None
    sample: float = 1.0  # fraction of requests mirrored, drawn from `seed`
    seed: int = 0
    incumbent_timeout: float = 30.0  # the client's answer: generous, the incumbent is production
    shadow_timeout: float = 5.0  # a mirrored copy: beyond this it is recorded as a timeout
    connect_timeout: float = 2.0
    max_inflight: int = 512  # mirrored requests in flight across arms; beyond it copies are shed
    max_body: int = 8 << 20  # request bodies; responses get 8x this


class _PendingExchange:
    """Collects arm outcomes; hands the exchange to the sink when the last arm reports."""

    __slots__ = ("exchange", "remaining", "sink")

    def __init__(self, exchange: Exchange, arms: int, sink: Sink | None):
        self.exchange = exchange
        self.remaining = arms
        self.sink = sink

    def done(self, arm: str, outcome: ArmOutcome) -> None:
        self.exchange.arms[arm] = outcome
        self.remaining -= 1
        if self.remaining == 0 and self.sink is not None:
            self.sink(self.exchange)


class RequestIds:
    """Unique 32-hex-digit ids without a syscall each: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._counter):016x}".encode()


def origin_form(target: bytes) -> bytes | None:
    """The path and query of a request target; None when it names no path we can forward.

    An absolute-form target (`http://other-host/x`) keeps only its path: the proxy forwards
    to its configured upstreams, never to a host the client names.
    """
    if target.startswith(b"/"):
        return target
    if target == b"*":
        return target
    if target.startswith((b"http://", b"https://")):
        slash = target.find(b"/", target.index(b"//") + 2)
        return target[slash:] if slash != -1 else b"/"
    return None


class ShadowProxy:
    """The app served by `HTTPServer`: one call per client request."""

    def __init__(self, settings: ProxySettings, sink: Sink | None = None, metrics: ProxyMetrics | None = None):
        self.settings = settings
        self.sink = sink
        response_limit = settings.max_body * 8

        def upstream(url: str) -> Upstream:
            return Upstream(url, connect_timeout=settings.connect_timeout, max_body=response_limit)

        self.incumbent = upstream(settings.incumbent)
        self.shadows = [(arm, upstream(url)) for arm, url in ((CANDIDATE, settings.candidate), (BASELINE, settings.baseline)) if url]
        self.arms = (INCUMBENT, *(arm for arm, _ in self.shadows))
        self.metrics = metrics or ProxyMetrics(self.arms)
        self.metrics.inflight = lambda: self.inflight
        self.sampler = Sampler(settings.sample, settings.seed)
        self.request_ids = RequestIds()
        self.inflight = 0
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, req: Request) -> Response:
        started_at = time.time()
        self.metrics.requests += 1
        target = origin_form(req.target)
        if target is None:
            self.metrics.bad_requests += 1
            return Response(400, _JSON, b'{"error": "request target must be a path"}')
        headers = [(k, v) for k, v in end_to_end(req.headers) if k != b"host"]
        request_id = req.header(b"x-request-id")
        if request_id is None:
            request_id = self.request_ids.next()
            headers.append((b"x-request-id", request_id))
        head = req.method == b"HEAD"
        exchange = Exchange(request_id.decode("latin-1"), started_at, req.method.decode(), target.decode("latin-1"), req.body)

        mirror = self.shadows and self.sampler.take()
        pending = _PendingExchange(exchange, 1 + (len(self.shadows) if mirror else 0), self.sink)
        incumbent_call = self.incumbent.request(
            self._encode(req, target, headers, self.incumbent), head=head, timeout=self.settings.incumbent_timeout
        )
        if mirror:
            shadow_headers = headers + [(b"x-shadow-request", b"1")]
            for arm, upstream in self.shadows:
                if self.inflight >= self.settings.max_inflight:
                    self.metrics.shed[arm] += 1
                    pending.done(arm, ArmOutcome(error=SHED))
                    continue
                self.inflight += 1
                data = self._encode(req, target, shadow_headers, upstream)
                task = asyncio.get_running_loop().create_task(self._mirror(arm, upstream, data, head, pending))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

        # The incumbent's bytes go out first: the mirror tasks only start at this await.
        self.metrics.sent[INCUMBENT] += 1
        sent = time.perf_counter()
        try:
            response, latency = await incumbent_call
        except UpstreamError as exc:
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=exc.kind)
            status = 504 if exc.kind == TIMEOUT else 502
            body = json.dumps({"error": f"incumbent: {exc}"}).encode()
            client_response = Response(status, _JSON, body)
        else:
            outcome = ArmOutcome(response.status, latency, response.body)
            out_headers = end_to_end(response.headers)
            if head:  # keep the length of the body a HEAD answer omits
                length = response.header(b"content-length")
                if length is not None:
                    out_headers.append((b"content-length", length))
            client_response = Response(response.status, out_headers, response.body, response.reason)
        self.metrics.outcome(INCUMBENT, outcome)
        pending.done(INCUMBENT, outcome)
        return client_response

    @staticmethod
    def _encode(req: Request, target: bytes, headers: list, upstream: Upstream) -> bytes:
        if upstream.prefix:
            target = upstream.prefix + target
        return encode_request(req.method, target, [(b"host", upstream.host_header), *headers], req.body)

    async def _mirror(self, arm: str, upstream: Upstream, data: bytes, head: bool, pending: _PendingExchange) -> None:
        self.metrics.sent[arm] += 1
        sent = time.perf_counter()
        try:
            response, latency = await upstream.request(data, head=head, timeout=self.settings.shadow_timeout)
            outcome = ArmOutcome(response.status, latency, response.body)
        except UpstreamError as exc:
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=exc.kind)
        except asyncio.CancelledError:
            # Cancelled by the drain deadline: still an outcome, and the exchange still lands.
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=TIMEOUT)
        except Exception:  # a bug here must not lose the exchange
            log.exception("mirror to %s failed", arm)
            outcome = ArmOutcome(latency_s=time.perf_counter() - sent, error=INTERNAL)
        finally:
            self.inflight -= 1
        self.metrics.outcome(arm, outcome)
        pending.done(arm, outcome)

    async def drain(self, timeout: float) -> None:
        """Let mirrored copies finish within `timeout`, then cancel (and record) the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for upstream in (self.incumbent, *(u for _, u in self.shadows)):
            upstream.close()
