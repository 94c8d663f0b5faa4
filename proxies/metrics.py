"""Prometheus metrics of a shadow proxy, served on their own port (127.0.0.1 by default).

The hot path only bumps plain integers (prometheus-client's own counters take a lock per
increment, about a tenth of the proxy's Python time when measured); a custom collector
turns them into metric families when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from harness.records import ArmOutcome

# Upstream latency buckets (seconds): dense around the few-ms answers of a model server.
BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ProxyMetrics:
    """Per-arm counters and latency histograms, kept as plain numbers."""

    def __init__(self, arms: tuple[str, ...]):
        self.arms = arms
        self.requests = 0  # client requests received
        self.bad_requests = 0  # client requests refused with a 4xx by the proxy itself
        self.sent = dict.fromkeys(arms, 0)
        self.shed = dict.fromkeys(arms, 0)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)  # (arm, kind)
        self.responses: defaultdict[tuple[str, str], int] = defaultdict(int)  # (arm, "2xx")
        self.latency_counts = {arm: [0] * (len(BUCKETS) + 1) for arm in arms}  # last one: +Inf
        self.latency_sum = dict.fromkeys(arms, 0.0)
        self.inflight: Callable[[], int] = lambda: 0
        self.server = None  # the HTTPServer, whose own refusals and slow clients are counted there
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def outcome(self, arm: str, outcome: ArmOutcome) -> None:
        if outcome.error is not None:
            self.errors[arm, outcome.error] += 1
            return
        self.latency_counts[arm][bisect_left(BUCKETS, outcome.latency_s)] += 1
        self.latency_sum[arm] += outcome.latency_s
        self.responses[arm, f"{outcome.status // 100}xx"] += 1

    def collect(self):
        """Called by prometheus-client on a scrape (in its own thread)."""
        yield CounterMetricFamily("shadowline_requests", "Requests received from clients", value=self.requests)
        refused = self.bad_requests + getattr(self.server, "bad_requests", 0)
        yield CounterMetricFamily("shadowline_bad_requests", "Client requests refused with a 4xx", value=refused)
        slow = getattr(self.server, "slow_clients", 0)
        yield CounterMetricFamily("shadowline_slow_clients", "Clients dropped with 408: request not received in time", value=slow)
        sent = CounterMetricFamily("shadowline_arm_requests", "Requests sent to an arm", labels=["arm"])
        shed = CounterMetricFamily("shadowline_shed", "Mirrored copies shed: the in-flight budget was full", labels=["arm"])
        for arm in self.arms:
            sent.add_metric([arm], self.sent[arm])
            shed.add_metric([arm], self.shed[arm])
        yield sent
        yield shed
        errors = CounterMetricFamily("shadowline_arm_errors", "Arm requests without a response, by kind", labels=["arm", "kind"])
        for (arm, kind), n in list(self.errors.items()):
            errors.add_metric([arm, kind], n)
        yield errors
        responses = CounterMetricFamily("shadowline_arm_responses", "Arm responses by status class", labels=["arm", "class"])
        for (arm, cls), n in list(self.responses.items()):
            responses.add_metric([arm, cls], n)
        yield responses
        latency = HistogramMetricFamily("shadowline_arm_latency_seconds", "Arm latency, send to complete response", labels=["arm"])
        for arm in self.arms:
            cumulative, buckets = 0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.latency_counts[arm]):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([arm], buckets, self.latency_sum[arm])
        yield latency
        yield GaugeMetricFamily("shadowline_mirror_inflight", "Mirrored requests in flight", value=self.inflight())

    def serve(self, host: str, port: int):
        """Start the scrape endpoint in a background thread; returns (server, thread)."""
        return start_http_server(port, addr=host, registry=self.registry)
