"""Pure parts of the proxy: sampling, target forms, exchange assembly, option parsing."""

from __future__ import annotations

import pytest

from harness.records import CANDIDATE, INCUMBENT, ArmOutcome, Exchange
from harness.sampling import Sampler
from proxies.http_proxy import PendingExchange, origin_form
from proxies.serve import split_host_port


def test_sampler_is_reproducible_and_near_its_fraction():
    a, b, c = Sampler(0.25, 5), Sampler(0.25, 5), Sampler(0.25, 6)
    draws_a = [a.take() for _ in range(10_000)]
    assert draws_a == [b.take() for _ in range(10_000)]
    assert draws_a != [c.take() for _ in range(10_000)]
    assert 0.23 < sum(draws_a) / len(draws_a) < 0.27
    assert all(Sampler(1.0, 0).take() for _ in range(100))
    assert not any(Sampler(0.0, 0).take() for _ in range(100))
    with pytest.raises(ValueError, match="within"):
        Sampler(1.5, 0)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/v2/models/m/infer?x=1", b"/v2/models/m/infer?x=1"),
        (b"http://evil.example/v2/x", b"/v2/x"),
        (b"https://evil.example", b"/"),
        (b"*", b"*"),
        (b"evil.example:443", None),
    ],
)
def test_origin_form_never_keeps_a_client_named_host(target, expected):
    assert origin_form(target) == expected


def test_pending_exchange_lands_once_when_every_arm_reported():
    landed: list[Exchange] = []
    pending = PendingExchange(Exchange("r", 0.0, "POST", "/", b""), 2, landed.append)
    pending.done(CANDIDATE, ArmOutcome(error="timeout"))
    assert landed == []
    pending.done(INCUMBENT, ArmOutcome(200, 0.01, b"{}"))
    assert [e.request_id for e in landed] == ["r"]
    assert set(landed[0].arms) == {INCUMBENT, CANDIDATE}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8000", ("127.0.0.1", 8000)), ("8000", ("127.0.0.1", 8000)), ("[::1]:9", ("::1", 9)), (":7", ("127.0.0.1", 7))],
)
def test_split_host_port(value, expected):
    assert split_host_port(value, what="--listen") == expected


@pytest.mark.parametrize("value", ["127.0.0.1:http", "host:", "1:99999"])
def test_split_host_port_names_the_option(value):
    with pytest.raises(ValueError, match="--listen"):
        split_host_port(value, what="--listen")


def test_request_ids_are_unique_across_calls_and_instances():
    from proxies.http_proxy import RequestIds

    a, b = RequestIds(), RequestIds()
    ids = [a.next() for _ in range(1000)] + [b.next() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_metrics_render_counts_and_histograms():
    from prometheus_client import generate_latest

    from proxies.metrics import ProxyMetrics

    metrics = ProxyMetrics((INCUMBENT, CANDIDATE))
    metrics.requests += 3
    metrics.sent[CANDIDATE] += 2
    metrics.outcome(INCUMBENT, ArmOutcome(200, 0.003, b""))
    metrics.outcome(INCUMBENT, ArmOutcome(503, 0.5, b""))
    metrics.outcome(CANDIDATE, ArmOutcome(error="timeout", latency_s=5.0))
    text = generate_latest(metrics.registry).decode()
    assert "shadowline_requests_total 3.0" in text
    assert 'shadowline_arm_requests_total{arm="candidate"} 2.0' in text
    assert 'shadowline_arm_errors_total{arm="candidate",kind="timeout"} 1.0' in text
    assert 'shadowline_arm_responses_total{arm="incumbent",class="5xx"} 1.0' in text
    assert 'shadowline_arm_latency_seconds_bucket{arm="incumbent",le="0.004"} 1.0' in text
    assert 'shadowline_arm_latency_seconds_bucket{arm="incumbent",le="+Inf"} 2.0' in text
    assert 'shadowline_arm_latency_seconds_count{arm="incumbent"} 2.0' in text
    assert 'shadowline_arm_latency_seconds_sum{arm="incumbent"} 0.503' in text
