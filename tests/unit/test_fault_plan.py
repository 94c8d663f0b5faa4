"""The fault plan: seeded, order-independent decisions; probabilities, windows, arms; the
faulted body and the ledger; never raising into the proxy."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from harness.codecs import V2Codec
from harness.faults import FaultPlan, make_fault

BODY = json.dumps({"inputs": [
    {"name": "age", "shape": [4], "datatype": "INT64", "data": [30, 40, 50, 60]},
    {"name": "income", "shape": [4], "datatype": "FP64", "data": [1000.5, 2000.5, 3000.5, 4000.5]},
]}).encode()


def plan_of(*specs, seed: int = 7, codec=None) -> FaultPlan:
    return FaultPlan([make_fault(s) for s in specs], seed=seed, codec=codec)


def ledger(plan: FaultPlan, seqs, elapsed_s: float = 0.0, arm: str = "candidate") -> list[tuple]:
    """Per seq: the arm's labels and its actions (delays included), before any payload is applied."""
    out = []
    for seq in seqs:
        d = plan.decide(seq, elapsed_s)
        out.append((d.faults_for(arm), d.actions_for(arm)))
    return out


MIXED = (
    {"type": "nan", "fields": ["age"], "probability": 0.3, "fraction": 0.5},
    {"type": "latency", "ms": 100, "jitter_ms": 50, "probability": 0.5},
    {"type": "abort", "probability": 0.2, "arms": ["candidate"]},
    {"type": "reset", "probability": 0.2},
)


def test_same_seed_same_plan_other_seed_other_plan():
    a, b, c = plan_of(*MIXED), plan_of(*MIXED), plan_of(*MIXED, seed=8)
    assert ledger(a, range(500)) == ledger(b, range(500))
    assert ledger(a, range(500)) != ledger(c, range(500))
    bodies_a = [a.apply_payload(a.decide(s), BODY) for s in range(200)]
    bodies_b = [b.apply_payload(b.decide(s), BODY) for s in range(200)]
    bodies_c = [c.apply_payload(c.decide(s), BODY) for s in range(200)]
    assert bodies_a == bodies_b and bodies_a != bodies_c
    assert any(x is not None for x in bodies_a) and any(x is None for x in bodies_a)


def test_decisions_do_not_depend_on_the_order_they_are_asked_in():
    plan = plan_of(*MIXED)
    forward = dict(zip(range(300), ledger(plan, range(300))))
    order = list(range(300))
    random.Random(1).shuffle(order)
    fresh = plan_of(*MIXED)
    assert dict(zip(order, ledger(fresh, order))) == forward
    # Nor on which other faults are in the plan's decision for that request: the abort draw
    # is a function of (seed, seq, its index) alone.
    assert [plan.decide(s).faults_for("candidate").count("abort:503") for s in order] == \
           [fresh.decide(s).faults_for("candidate").count("abort:503") for s in order]


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9])
def test_probability_matches_the_observed_frequency(p):
    plan = plan_of({"type": "hang", "probability": p}, seed=123)
    n = 10_000
    fired = sum(plan.decide(seq).fired for seq in range(n))
    assert abs(fired / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-9


def test_faults_fire_independently():
    plan = plan_of({"type": "hang", "probability": 0.5}, {"type": "latency", "probability": 0.5}, seed=5)
    both = sum(len(plan.decide(seq).faults_for("candidate")) == 2 for seq in range(10_000))
    assert abs(both / 10_000 - 0.25) < 0.02


def test_probability_zero_and_one():
    assert not any(plan_of({"type": "hang", "probability": 0}).decide(s).fired for s in range(1000))
    assert all(plan_of({"type": "hang"}).decide(s).fired for s in range(1000))


def test_window_is_respected():
    plan = plan_of({"type": "latency", "window": [10, 20]})
    assert [plan.decide(0, t).fired for t in (0.0, 9.999, 10.0, 15.0, 19.999, 20.0, 100.0)] == \
           [False, False, True, True, True, False, False]


def test_phases_by_window():
    plan = plan_of({"type": "latency", "ms": 50, "window": [0, 60]}, {"type": "abort", "window": [60, 120]})
    assert plan.decide(1, 30).faults_for("baseline") == ("latency:50ms",)
    assert plan.decide(1, 90).faults_for("baseline") == ("abort:503",)


def test_arms_targeting():
    plan = plan_of({"type": "nan", "fields": ["age"], "arms": ["candidate"]},
                   {"type": "latency", "ms": 10, "arms": ["baseline"]}, codec=V2Codec())
    d = plan.decide(0)
    assert d.payload_arms == ("candidate",)
    assert plan.apply_payload(d, BODY) is not None
    assert d.faults_for("candidate") == ("nan:age",) and d.actions_for("candidate") == ()
    assert d.faults_for("baseline") == ("latency:10ms",)
    assert d.faults_for("incumbent") == () and d.actions_for("incumbent") == ()


def test_payload_faults_must_share_their_arms():
    with pytest.raises(ValueError, match="payload faults in one plan must target the same arms"):
        plan_of({"type": "nan", "arms": ["candidate"]}, {"type": "inf"})
    plan_of({"type": "nan", "arms": ["candidate"]}, {"type": "hang"})  # transport faults may differ


def test_the_same_faulted_body_for_candidate_and_baseline():
    plan = plan_of({"type": "noise", "fields": ["income"]}, codec=V2Codec())
    d = plan.decide(3)
    body = plan.apply_payload(d, BODY)
    assert d.payload_arms == ("candidate", "baseline")
    assert d.faults_for("candidate") == d.faults_for("baseline") == ("noise:income",)
    assert body == plan_of({"type": "noise", "fields": ["income"]}, codec=V2Codec()).apply_payload(d, BODY)


def test_transport_actions_in_execution_order_with_one_terminal():
    plan = plan_of({"type": "hang", "label": "first"}, {"type": "latency", "ms": 20},
                   {"type": "abort"}, {"type": "bandwidth", "bytes_per_s": 100})
    d = plan.decide(0)
    assert [a.kind for a in d.actions_for("candidate")] == ["delay", "throttle", "hang"]
    assert d.faults_for("candidate") == ("latency:20ms", "bandwidth:100Bps", "first")  # abort never ran


def test_jitter_is_drawn_per_request_and_reproducible():
    plan = plan_of({"type": "latency", "ms": 100, "jitter_ms": 50})
    delays = [plan.decide(s).actions_for("candidate")[0].delay_s for s in range(2000)]
    assert min(delays) >= 0.05 and max(delays) < 0.15 and len(set(delays)) == 2000
    assert abs(np.mean(delays) - 0.1) < 0.003
    assert delays == [plan_of({"type": "latency", "ms": 100, "jitter_ms": 50}).decide(s).actions_for("baseline")[0]
                      .delay_s for s in range(2000)]


def test_feature_faults_then_byte_faults():
    plan = plan_of({"type": "oversize", "size_bytes": 5000}, {"type": "nan", "fields": ["age"]}, codec=V2Codec())
    d = plan.decide(0)
    out = plan.apply_payload(d, BODY)
    assert len(out) == 5000 and np.isnan(V2Codec().decode_request(out).columns["age"]).all()
    assert d.faults_for("candidate") == ("oversize", "nan:age")  # plan order in the ledger


def test_undecodable_bodies_are_recorded_never_raised():
    plan = plan_of({"type": "nan"}, {"type": "malformed_json"}, {"type": "latency"}, codec=V2Codec())
    d = plan.decide(0)
    out = plan.apply_payload(d, b"\xff not json")
    assert out is not None  # the byte-level fault still applies
    assert d.faults_for("candidate") == ("nan:undecodable", "malformed_json", "latency:100ms")
    d = plan.decide(1)
    assert plan.apply_payload(d, b'{"instances": [[1, 2]]}') is not None  # v1 is not v2: malformed still runs
    assert d.faults_for("candidate")[0] == "nan:undecodable"
    only = plan_of({"type": "shape_mismatch"})
    d = only.decide(0)
    assert only.apply_payload(d, b"{oops") is None and d.faults_for("candidate") == ("shape_mismatch:undecodable",)


class _NoTextV2(V2Codec):
    """A v2 codec whose format cannot carry text, as a protobuf number field cannot."""

    def encode_request(self, features, template_body):
        for name, col in features.columns.items():
            if col.dtype == object:
                from harness.codecs import DecodeError

                raise DecodeError(f"field {name!r}: a number field cannot hold text")
        return super().encode_request(features, template_body)


def test_a_value_the_codec_cannot_write_is_recorded_unrepresentable_not_an_error(caplog):
    plan = plan_of({"type": "wrong_type", "fields": ["age"], "to": "string"}, codec=_NoTextV2())
    d = plan.decide(0)
    assert plan.apply_payload(d, BODY) is None  # sent without the fault
    assert d.faults_for("candidate") == ("wrong_type:age:unrepresentable",)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # not logged as a bug


def test_without_a_codec_v2_and_v1_are_recognised():
    plan = plan_of({"type": "nan", "fields": ["a"]})
    v1 = b'{"instances": [{"a": 1, "b": 2}]}'
    d = plan.decide(0)
    assert json.loads(plan.apply_payload(d, v1).replace(b"NaN", b"null")) == {"instances": [{"a": None, "b": 2}]}
    d = plan.decide(1)
    assert b"NaN" in plan.apply_payload(d, BODY.replace(b'"age"', b'"a"'))


def test_a_fault_with_nothing_to_change_is_a_noop():
    plan = plan_of({"type": "nan", "fields": ["height"]}, {"type": "category_shift"}, codec=V2Codec())
    d = plan.decide(0)
    assert plan.apply_payload(d, BODY) is None
    assert d.faults_for("baseline") == ("nan:height:noop", "category_shift:noop")


def test_a_failing_fault_is_skipped_and_marked(monkeypatch):
    plan = plan_of({"type": "nan", "fields": ["age"]}, {"type": "inf", "fields": ["income"]}, codec=V2Codec())

    def boom(self, features, rng):
        raise RuntimeError("bug")

    monkeypatch.setattr(type(plan.faults[0]), "apply", boom)
    d = plan.decide(0)
    out = plan.apply_payload(d, BODY)
    assert d.faults_for("candidate") == ("nan:age:error", "inf:income")
    assert np.isinf(V2Codec().decode_request(out).columns["income"]).all()


def test_payload_randomness_is_per_fault():
    """A fault's draws depend on (seed, seq, its index), not on whether earlier faults fired."""
    noise = {"type": "noise", "fields": ["income"], "fraction": 0.5}
    sometimes = plan_of({"type": "nan", "fields": ["age"], "probability": 0.5}, noise, codec=V2Codec())
    never = plan_of({"type": "nan", "fields": ["age"], "probability": 0.0}, noise, codec=V2Codec())
    fired = 0
    for seq in range(50):
        a, b = sometimes.decide(seq), never.decide(seq)
        fired += "nan:age" in a.labels
        out_a = V2Codec().decode_request(sometimes.apply_payload(a, BODY))
        out_b = V2Codec().decode_request(never.apply_payload(b, BODY))
        assert out_a.columns["income"].tolist() == out_b.columns["income"].tolist()
    assert 10 < fired < 40


def test_no_faults_costs_nothing_and_changes_nothing():
    plan = FaultPlan([], seed=1)
    d = plan.decide(42, 1.0)
    assert not d.fired and d.faults_for("candidate") == () and plan.apply_payload(d, BODY) is None
    assert plan.describe() == []


def test_seed_and_fault_types_are_checked():
    with pytest.raises(ValueError, match="seed must be an integer"):
        FaultPlan([], seed="7")
    with pytest.raises(TypeError):
        FaultPlan([{"type": "nan"}], seed=1)
    assert plan_of({"type": "hang", "probability": 0.5}, seed=-3).decide(0) is not None  # any int seeds
    assert FaultPlan.from_specs([{"type": "hang"}], seed=2**100).decide(0).fired
