"""Toxics, pure: JSON parsing and its errors, seeded draws, slicing and pacing arithmetic."""

import json

import numpy as np
import pytest

from proxies.toxics import (
    TOXIC_TYPES,
    Bandwidth,
    Latency,
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
    parse_toxic_json,
    toxic_rng,
)


def test_registry_has_toxiproxys_types():
    assert set(TOXIC_TYPES) == {"latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer", "limit_data"}


def test_parse_full_toxic_and_round_trip():
    payload = {
        "name": "slow-store",
        "type": "latency",
        "stream": "upstream",
        "toxicity": 0.25,
        "attributes": {"latency_ms": 100, "jitter_ms": 10},
    }
    toxic = parse_toxic(payload)
    assert toxic == Toxic("slow-store", Latency(100, 10), stream="upstream", toxicity=0.25)
    assert toxic.type == "latency"
    assert toxic.to_json() == payload
    assert parse_toxic(json.loads(json.dumps(toxic.to_json()))) == toxic


def test_defaults_follow_toxiproxy():
    toxic = parse_toxic({"type": "timeout"})
    assert (toxic.name, toxic.stream, toxic.toxicity, toxic.attributes) == ("timeout_downstream", "downstream", 1.0, Timeout(0))
    assert parse_toxic({"type": "reset_peer", "stream": "upstream"}).name == "reset_peer_upstream"


def test_toxiproxy_attribute_names_are_aliases():
    assert parse_toxic({"type": "latency", "attributes": {"latency": 50, "jitter": 5}}).attributes == Latency(50, 5)
    assert parse_toxic({"type": "bandwidth", "attributes": {"rate": 10}}).attributes == Bandwidth(10)
    assert parse_toxic({"type": "slow_close", "attributes": {"delay": 7}}).attributes == SlowClose(7)
    assert parse_toxic({"type": "reset_peer", "attributes": {"timeout": 3}}).attributes == ResetPeer(3)
    slicer = parse_toxic({"type": "slicer", "attributes": {"average_size": 8, "size_variation": 2, "delay": 10}})
    assert slicer.attributes == Slicer(8, 2, 10)
    assert parse_toxic({"type": "limit_data", "attributes": {"bytes": 100.0}}).attributes == LimitData(100)


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        ({}, "type is required"),
        ({"type": "lag"}, "type must be one of"),
        ({"type": "latency", "stream": "sideways", "attributes": {"latency_ms": 1}}, "stream"),
        ({"type": "latency", "toxicity": 1.5, "attributes": {"latency_ms": 1}}, "toxicity"),
        ({"type": "latency", "toxicity": "high", "attributes": {"latency_ms": 1}}, "toxicity"),
        ({"type": "latency", "toxicity": True, "attributes": {"latency_ms": 1}}, "toxicity"),
        ({"type": "latency", "name": "a b", "attributes": {"latency_ms": 1}}, "name"),
        ({"type": "latency", "name": "", "attributes": {"latency_ms": 1}}, "name"),
        ({"type": "latency", "colour": "red", "attributes": {"latency_ms": 1}}, "colour is not a toxic field"),
        ({"type": "latency", "attributes": [100]}, "attributes must be a JSON object"),
        ({"type": "latency", "attributes": {}}, "attributes.latency_ms is required"),
        ({"type": "latency", "attributes": {"latency_ms": -5}}, "attributes.latency_ms must be a finite number >= 0"),
        ({"type": "latency", "attributes": {"latency_ms": float("nan")}}, "attributes.latency_ms"),
        ({"type": "latency", "attributes": {"latency_ms": "100"}}, "attributes.latency_ms must be a number"),
        ({"type": "latency", "attributes": {"latency_ms": True}}, "attributes.latency_ms must be a number"),
        ({"type": "latency", "attributes": {"latency_ms": 1, "jiter_ms": 2}}, "attributes.jiter_ms is not an attribute"),
        ({"type": "latency", "attributes": {"latency_ms": 1, "latency": 2}}, "attributes.latency_ms is given twice"),
        ({"type": "bandwidth", "attributes": {"rate_kbps": 0}}, "attributes.rate_kbps must be > 0"),
        ({"type": "slicer", "attributes": {"average_size": 0}}, "attributes.average_size must be >= 1"),
        ({"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}}, "attributes.size_variation"),
        ({"type": "slicer", "attributes": {"average_size": 4.5}}, "attributes.average_size must be a whole number"),
        ({"type": "limit_data", "attributes": {"bytes": 1.5}}, "attributes.bytes must be a whole number"),
        ({"type": "limit_data"}, "attributes.bytes is required"),
    ],
)
def test_errors_name_the_field(payload, names):
    with pytest.raises(ToxicError, match=names.replace(".", r"\.")):
        parse_toxic(payload)


def test_not_an_object_and_bad_json():
    with pytest.raises(ToxicError, match="must be a JSON object"):
        parse_toxic(["latency"])
    with pytest.raises(ToxicError, match="not valid JSON"):
        parse_toxic_json("{latency")
    assert parse_toxic_json('{"type": "timeout", "attributes": {"timeout_ms": 5}}').attributes == Timeout(5)


def test_attributes_validate_when_built_in_python():
    with pytest.raises(ToxicError, match="^jitter_ms must be"):
        Latency(10, -1)
    with pytest.raises(ToxicError, match="stream"):
        Toxic("x", Latency(1), stream="both")
    with pytest.raises(ToxicError, match="attributes must be one of"):
        Toxic("x", {"latency_ms": 1})


def test_parse_state():
    assert parse_state({"enabled": False}) is False
    assert parse_state({"enabled": True}) is True
    with pytest.raises(ToxicError, match="enabled is required"):
        parse_state({})
    with pytest.raises(ToxicError, match="enabled must be true or false"):
        parse_state({"enabled": "no"})
    with pytest.raises(ToxicError, match="up is not a state field"):
        parse_state({"enabled": True, "up": 1})


def test_toxicity_draws_are_reproducible_and_keyed_by_name():
    first = [draw_applies(0.5, toxic_rng(7, n, "slow")) for n in range(200)]
    again = [draw_applies(0.5, toxic_rng(7, n, "slow")) for n in range(200)]
    other_seed = [draw_applies(0.5, toxic_rng(8, n, "slow")) for n in range(200)]
    other_name = [draw_applies(0.5, toxic_rng(7, n, "reset")) for n in range(200)]
    assert first == again
    assert first != other_seed and first != other_name
    assert 70 < sum(first) < 130  # about half, with room for a fixed seed's luck


def test_toxicity_bounds_and_rate():
    assert not any(draw_applies(0.0, toxic_rng(0, n, "t")) for n in range(100))
    assert all(draw_applies(1.0, toxic_rng(0, n, "t")) for n in range(100))
    hits = sum(draw_applies(0.1, toxic_rng(3, n, "t")) for n in range(2000))
    assert 140 < hits < 260


def test_latency_delay_and_jitter():
    rng = np.random.default_rng(0)
    assert Latency(100).delay_ms(rng) == 100.0
    delays = [Latency(100, 20).delay_ms(np.random.default_rng(s)) for s in range(500)]
    assert all(80 <= d <= 120 for d in delays)
    assert 95 < np.mean(delays) < 105
    assert all(d >= 0 for d in (Latency(5, 50).delay_ms(np.random.default_rng(s)) for s in range(100)))
    a = [Latency(100, 20).delay_ms(toxic_rng(1, 2, "x")) for _ in range(3)]
    assert a == [Latency(100, 20).delay_ms(toxic_rng(1, 2, "x")) for _ in range(3)]


@pytest.mark.parametrize(("n", "average", "variation"), [(1000, 10, 3), (65536, 100, 50), (97, 7, 0), (5, 10, 2)])
def test_slicer_sizes(n, average, variation):
    slicer = Slicer(average, variation)
    sizes = slicer.sizes(n, np.random.default_rng(1))
    assert sum(sizes) == n
    assert all(1 <= s <= average + variation for s in sizes)
    assert sizes == slicer.sizes(n, np.random.default_rng(1))  # seeded: the same slices
    if n > average + variation:
        assert average / 2 <= np.mean(sizes) <= average + variation
    assert slicer.sizes(0, np.random.default_rng(1)) == []


def test_bandwidth_pacing_arithmetic():
    bw = Bandwidth(rate_kbps=10)  # 10 000 bytes per second
    assert bw.seconds(10_000) == pytest.approx(1.0)
    assert bw.pieces(2500) == [1000, 1000, 500]  # at most 100 ms worth per piece
    assert bw.pieces(1000) == [1000] and bw.pieces(0) == []
    free = bw.schedule(0.0, 5.0, 1000)  # idle link: starts now
    assert free == pytest.approx(5.1)
    free = bw.schedule(free, 5.0, 1000)  # arrived together: queues behind the first
    assert free == pytest.approx(5.2)
    assert bw.schedule(free, 9.0, 500) == pytest.approx(9.05)  # idle again
    assert Bandwidth(0.001).pieces(3) == [1, 1, 1]  # never a zero-byte piece


def test_limit_data_allow():
    limit = LimitData(10)
    assert limit.allow(0, 4) == 4
    assert limit.allow(8, 4) == 2
    assert limit.allow(10, 4) == 0
    assert LimitData(0).allow(0, 4) == 0
