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
from harness.faults import Decision, FaultPlan
from harness.faults.base import Action
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


class PendingExchange:
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


class FaultedPayload:
    """A faulted request body, built once for every arm it goes to, and only when a mirror
    task first needs it: by then the incumbent's request is already on the wire, so the
    decode-fault-encode work never delays production."""

    __slots__ = ("plan", "decision", "body", "_faulted")

    def __init__(self, plan: FaultPlan, decision: Decision, body: bytes):
        self.plan, self.decision, self.body = plan, decision, body
        self._faulted: bytes | None = None

    def faulted(self) -> bytes:
        if self._faulted is None:
            self._faulted = self.plan.apply_payload(self.decision, self.body) or self.body
        return self._faulted

    def request(self, method: bytes, target: bytes, headers: list, upstream: Upstream):
        """A callable giving (request bytes, body length) for this arm's copy."""

        def build() -> tuple[bytes, int]:
            body = self.faulted()
            return ShadowProxy._encode(method, target, headers, upstream, body), len(body)

        return build


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

    def __init__(
        self,
        settings: ProxySettings,
        sink: Sink | None = None,
        metrics: ProxyMetrics | None = None,
        plan: FaultPlan | None = None,
    ):
        self.settings = settings
        self.plan = plan if plan is not None and len(plan) else None
        self._seq = 0  # arrival order: the fault plan's request number
        self._t0: float | None = None  # monotonic time of the first request: fault windows count from it
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
        decision = payload = None
        if self.plan is not None:
            now = time.monotonic()
            if self._t0 is None:
                self._t0 = now
            decision = self.plan.decide(self._seq, now - self._t0)
            self._seq += 1
            if mirror and decision.payload:
                payload = FaultedPayload(self.plan, decision, req.body)
        pending = PendingExchange(exchange, 1 + (len(self.shadows) if mirror else 0), self.sink)
        incumbent_call = self.incumbent.request(
            self._encode(req.method, target, headers, self.incumbent, req.body), head=head, timeout=self.settings.incumbent_timeout
        )
        if mirror:
            shadow_headers = headers + [(b"x-shadow-request", b"1")]
            for arm, upstream in self.shadows:
                if self.inflight >= self.settings.max_inflight:
                    self.metrics.shed[arm] += 1
                    pending.done(arm, ArmOutcome(error=SHED))  # never sent: no fault was applied
                    continue
                self.inflight += 1
                if payload is not None and arm in decision.payload_arms:
                    copy = payload.request(req.method, target, shadow_headers, upstream)
                else:
                    copy = (self._encode(req.method, target, shadow_headers, upstream, req.body), len(req.body))
                task = asyncio.get_running_loop().create_task(self._mirror(arm, upstream, copy, head, pending, decision))
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
    def _encode(method: bytes, target: bytes, headers: list, upstream: Upstream, body: bytes) -> bytes:
        if upstream.prefix:
            target = upstream.prefix + target
        return encode_request(method, target, [(b"host", upstream.host_header), *headers], body)

    async def _mirror(
        self,
        arm: str,
        upstream: Upstream,
        copy,  # (request bytes, body length), or a callable making them (a faulted body, built late)
        head: bool,
        pending: PendingExchange,
        decision: Decision | None = None,
    ) -> None:
        self.metrics.sent[arm] += 1
        data, body_length = copy() if callable(copy) else copy
        # After the body is built: a payload fault that could not be applied has marked its label.
        labels, actions = (decision.faults_for(arm), decision.actions_for(arm)) if decision else ((), ())
        sent = time.perf_counter()
        timeout = self.settings.shadow_timeout
        try:
            if actions:
                status, latency, body = await self._deliver_faulted(upstream, data, body_length, head, actions)
                outcome = ArmOutcome(status, latency if latency is not None else time.perf_counter() - sent, body)
            else:
                response, latency = await upstream.request(data, head=head, timeout=timeout)
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
        outcome.faults = labels
        self.metrics.outcome(arm, outcome)
        pending.done(arm, outcome)

    async def _deliver_faulted(
        self, upstream: Upstream, data: bytes, body_length: int, head: bool, actions: tuple[Action, ...]
    ) -> tuple[int | None, float | None, bytes | None]:
        """Execute a fault plan's transport actions on one copy (see harness.faults.base.Action).

        Returns (status, latency or None to measure from the send, body); failures raise
        UpstreamError like a normal request, so they are recorded the same way.
        """
        timeout = self.settings.shadow_timeout
        started = time.perf_counter()
        pace = None
        for action in actions:
            if action.kind == "delay":
                await asyncio.sleep(action.delay_s)  # counts in the arm's latency: it is network time
            elif action.kind == "throttle":
                pace = action.bytes_per_s
            elif action.kind == "abort":  # the arm is never called
                return action.status, time.perf_counter() - started, action.body
            elif action.kind == "hang":  # nothing comes back before the arm's timeout
                await asyncio.sleep(timeout)
                raise UpstreamError(TIMEOUT, f"hang fault: no answer within {timeout:g} s")
            elif action.kind == "reset":
                await upstream.request_faulty(data, head=head, timeout=timeout, pace_bps=pace, reset_after_s=action.after_s)
            elif action.kind == "truncate":
                cut_at = len(data) - body_length + action.keep(body_length)
                response, _ = await upstream.request_faulty(data, head=head, timeout=timeout, pace_bps=pace, cut_at=cut_at)
                return response.status, time.perf_counter() - started, response.body
        if pace is not None:
            response, _ = await upstream.request_faulty(data, head=head, timeout=timeout, pace_bps=pace)
        else:
            response, _ = await upstream.request(data, head=head, timeout=timeout)
        return response.status, time.perf_counter() - started, response.body

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
