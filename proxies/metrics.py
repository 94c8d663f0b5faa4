"""Prometheus metrics of a shadow proxy, served on their own port (127.0.0.1 by default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from harness.records import ArmOutcome

# Upstream latency buckets (seconds): dense around the few-ms answers of a model server.
_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ProxyMetrics:
    """Per-arm counters and latency histograms; children are bound once, off the hot path."""

    def __init__(self, arms: tuple[str, ...]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("shadowline_requests", "Requests received from clients", registry=r)
        self.bad_requests = Counter("shadowline_bad_requests", "Client requests refused with a 4xx", registry=r)
        arm_requests = Counter("shadowline_arm_requests", "Requests sent to an arm", ["arm"], registry=r)
        shed = Counter("shadowline_shed", "Mirrored copies shed because the in-flight budget was full", ["arm"], registry=r)
        self._errors = Counter("shadowline_arm_errors", "Arm requests without a response, by kind", ["arm", "kind"], registry=r)
        self._responses = Counter("shadowline_arm_responses", "Arm responses by status class", ["arm", "class"], registry=r)
        latency = Histogram(
            "shadowline_arm_latency_seconds", "Arm latency, send to complete response", ["arm"], buckets=_BUCKETS, registry=r
        )
        self.inflight = Gauge("shadowline_mirror_inflight", "Mirrored requests in flight", registry=r)
        self._sent = {arm: arm_requests.labels(arm) for arm in arms}
        self._shed = {arm: shed.labels(arm) for arm in arms}
        self._latency = {arm: latency.labels(arm) for arm in arms}

    def sent(self, arm: str) -> None:
        self._sent[arm].inc()

    def shed(self, arm: str) -> None:
        self._shed[arm].inc()

    def outcome(self, arm: str, outcome: ArmOutcome) -> None:
        if outcome.error is not None:
            self._errors.labels(arm, outcome.error).inc()
            return
        self._latency[arm].observe(outcome.latency_s)
        self._responses.labels(arm, f"{outcome.status // 100}xx").inc()

    def serve(self, host: str, port: int):
        """Start the scrape endpoint in a background thread; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)
