"""build_evidence on real capture files written with CaptureWriter."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from harness.capture import CaptureReader, CaptureWriter
from harness.codecs import DecodeError, get_codec
from harness.demo_model import DemoModel, synthetic_rows
from harness.pairing import build_evidence
from harness.records import ArmOutcome, Exchange
from proxies.demo_server import DemoApp, DemoKnobs, infer_request_body
from proxies.http1 import Request

ROWS = synthetic_rows(40, 3)
INCUMBENT = DemoApp(DemoKnobs(role="incumbent"))
CANDIDATE = DemoApp(DemoKnobs(role="candidate", variant="broken"))  # ~40% flips: pairs must line up


def answer(app: DemoApp, rows: np.ndarray) -> bytes:
    response = asyncio.run(app(Request(b"POST", b"/v2/models/demo/infer", body=infer_request_body(rows))))
    assert response.status == 200
    return response.body


def ok(body: bytes, latency: float = 0.01) -> ArmOutcome:
    return ArmOutcome(status=200, latency_s=latency, body=body)


def write(path, exchanges: list[dict]) -> None:
    with CaptureWriter(path) as writer:
        for i, arms in enumerate(exchanges):
            writer.write(Exchange(f"r{i}", 1000.0 + i, "POST", "/v2/models/demo/infer", b"{}", arms))


def evidence_of(tmp_path, exchanges: list[dict], codec="v2", **kwargs):
    path = tmp_path / "capture.db"
    write(path, exchanges)
    with CaptureReader(path) as reader:
        return build_evidence(reader, get_codec(codec) if isinstance(codec, str) else codec, **kwargs), reader.columns()


def v1(predictions: list) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


@pytest.fixture(scope="module")
def demo_exchanges():
    """Every outcome an arm can have, with demo-server bodies; expected pairs in the docstrings."""
    one, three, single = ROWS[0:1], ROWS[1:4], ROWS[4:5]
    return [
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ok(answer(CANDIDATE, one))},  # 0: 1 pair
        {"incumbent": ok(answer(INCUMBENT, three)), "candidate": ok(answer(CANDIDATE, three))},  # 1: 3 pairs
        {"incumbent": ok(answer(INCUMBENT, one))},  # 2: not mirrored
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ArmOutcome(error="shed")},  # 3
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ArmOutcome(500, 0.01, b'{"error":"injected"}')},  # 4
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ArmOutcome(error="timeout", latency_s=1.0)},  # 5
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ok(answer(CANDIDATE, one)[:40])},  # 6: truncated 200
        {"incumbent": ok(answer(INCUMBENT, three)), "candidate": ok(answer(CANDIDATE, one))},  # 7: 3 rows vs 1
        {"incumbent": ArmOutcome(500, 0.01, b'{"error":"x"}'), "candidate": ok(answer(CANDIDATE, one))},  # 8
        {"incumbent": ok(answer(INCUMBENT, single)), "candidate": ok(answer(CANDIDATE, single))},  # 9: 1 pair
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ok(b'{"error":"oops"}')},  # 10: error body, 200
        {"incumbent": ok(b""), "candidate": ok(b"")},  # 11: empty 200s on both
        {"incumbent": ok(answer(INCUMBENT, one)), "candidate": ok(answer(CANDIDATE, one))},  # 12: repeats 0
    ]


def test_demo_capture_pairs_and_columns(tmp_path, demo_exchanges):
    ev, cols = evidence_of(tmp_path, demo_exchanges)
    assert ev.n_exchanges == 13 and ev.codec == "v2" and ev.task == "classification"
    assert set(ev.arms) == {"incumbent", "candidate"} and set(ev.pairs) == {"candidate"}
    np.testing.assert_array_equal(ev.started_at, cols["started_at"])

    cand = ev.arms["candidate"]
    np.testing.assert_array_equal(cand.status, cols["candidate_status"])
    np.testing.assert_array_equal(cand.latency_s, cols["candidate_latency_s"], strict=True)
    assert cand.present.tolist() == [True, True, False] + [True] * 10
    assert cand.decoded.tolist() == [True, True, False, False, False, False, False, True, True, True, False, False, True]
    assert list(cand.error) == [None, None, None, "shed", None, "timeout", "protocol", None, None, None,
                                "protocol", "protocol", None]
    inc = ev.arms["incumbent"]
    assert inc.decoded.tolist() == [True] * 8 + [False, True, True, False, True]
    assert inc.error[11] == "protocol" and inc.error[8] is None  # a 500 is a status, not a protocol error
    assert cols["candidate_error"][6] is None  # the capture itself is not rewritten

    pairs = ev.pairs["candidate"]
    assert pairs.exchange.tolist() == [0, 1, 1, 1, 9, 12]
    rows = np.concatenate([ROWS[0:1], ROWS[1:4], ROWS[4:5], ROWS[0:1]]).astype(np.float64)
    labels_i, probs_i = DemoModel("incumbent", "subtle").predict(rows)
    labels_c, probs_c = DemoModel("candidate", "broken").predict(rows)
    assert pairs.label_incumbent.tolist() == labels_i.tolist()
    assert pairs.label_other.tolist() == labels_c.tolist()
    assert (pairs.label_incumbent != pairs.label_other).any()  # the broken candidate flips some
    np.testing.assert_allclose(pairs.score_incumbent, probs_i[:, 1], rtol=1e-6)  # binary: P(class 1)
    np.testing.assert_allclose(pairs.score_other, probs_c[:, 1], rtol=1e-6)

    notes = "\n".join(ev.notes)
    assert "baseline: not in this capture" in notes
    assert "candidate: 3 2xx responses not decodable as v2 (counted as protocol errors)" in notes
    assert "error body: 'oops'" in notes and "empty body" in notes
    assert "incumbent: 1 2xx responses not decodable" in notes
    assert "candidate: 1 exchanges where candidate and incumbent returned different numbers of rows" in notes


def test_detected_codec_gives_the_same_evidence(tmp_path, demo_exchanges):
    named, _ = evidence_of(tmp_path, demo_exchanges)
    (tmp_path / "capture.db").unlink()
    detected, _ = evidence_of(tmp_path, demo_exchanges, codec=None)
    assert detected.codec == "v2"
    assert any(n.startswith("codec detected from the incumbent's responses: v2") for n in detected.notes)
    for field in ("exchange", "label_incumbent", "label_other", "score_incumbent", "score_other"):
        np.testing.assert_array_equal(getattr(detected.pairs["candidate"], field), getattr(named.pairs["candidate"], field))


def test_baseline_pairs(tmp_path):
    a, b = ROWS[0:2], ROWS[2:3]
    exchanges = [
        {"incumbent": ok(answer(INCUMBENT, a)), "candidate": ok(answer(CANDIDATE, a)), "baseline": ok(answer(INCUMBENT, a))},
        {"incumbent": ok(answer(INCUMBENT, b)), "candidate": ok(answer(CANDIDATE, b))},
        {"incumbent": ok(answer(INCUMBENT, b)), "baseline": ArmOutcome(error="connect")},
    ]
    ev, _ = evidence_of(tmp_path, exchanges)
    assert set(ev.pairs) == {"candidate", "baseline"}
    assert ev.pairs["candidate"].exchange.tolist() == [0, 0, 1]
    base = ev.pairs["baseline"]
    assert base.exchange.tolist() == [0, 0]
    np.testing.assert_array_equal(base.label_incumbent, base.label_other)  # same model: the noise floor
    np.testing.assert_array_equal(base.score_incumbent, base.score_other)
    assert ev.arms["baseline"].error.tolist() == [None, None, "connect"]
    with CaptureReader(tmp_path / "capture.db") as reader:
        only_candidate = build_evidence(reader, get_codec("v2"), arms=("candidate",))
    assert set(only_candidate.arms) == {"incumbent", "candidate"}


def test_multiclass_scores_use_the_incumbents_label(tmp_path):
    exchanges = [
        {"incumbent": ok(v1([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])), "candidate": ok(v1([[0.1, 0.3, 0.6], [0.2, 0.1, 0.7]]))},
        {"incumbent": ok(v1([{"label": 1, "probabilities": [0.5, 0.3, 0.2]}])),  # label given, not argmax
         "candidate": ok(v1([{"label": 1, "probabilities": [0.2, 0.6, 0.2]}]))},
    ]
    ev, _ = evidence_of(tmp_path, exchanges, codec="v1")
    pairs = ev.pairs["candidate"]
    assert ev.task == "classification"
    assert pairs.label_incumbent.tolist() == [0, 2, 1] and pairs.label_other.tolist() == [2, 2, 1]
    assert pairs.score_incumbent.tolist() == [0.7, 0.8, 0.3]
    assert pairs.score_other.tolist() == [0.1, 0.7, 0.6]  # P(incumbent's label) under the candidate


def test_regression_and_label_only_outputs(tmp_path):
    regression, _ = evidence_of(tmp_path, [
        {"incumbent": ok(v1([1.5, 2.5])), "candidate": ok(v1([1.25, 3.0]))},
        {"incumbent": ok(v1([[4.0]])), "candidate": ok(v1([[4.5]]))},
    ], codec="v1")
    assert regression.task == "regression"
    pairs = regression.pairs["candidate"]
    assert pairs.score_incumbent.tolist() == [1.5, 2.5, 4.0] and pairs.score_other.tolist() == [1.25, 3.0, 4.5]
    assert pairs.label_incumbent.tolist() == [-1, -1, -1] and pairs.label_other.tolist() == [-1, -1, -1]

    (tmp_path / "capture.db").unlink()
    labels_only, _ = evidence_of(tmp_path, [{"incumbent": ok(v1([1, 0, 2])), "candidate": ok(v1([1, 1, 2]))}],
                                 codec="v1")
    pairs = labels_only.pairs["candidate"]
    assert labels_only.task == "classification"
    assert pairs.label_other.tolist() == [1, 1, 2] and np.isnan(pairs.score_incumbent).all()


def test_repeated_bodies_map_back_to_their_exchanges(tmp_path):
    bodies = [v1([i % 3]) for i in range(30)]  # three distinct bodies, repeated
    exchanges = [{"incumbent": ok(bodies[i]), "candidate": ok(bodies[(i + 1) % 30])} for i in range(30)]
    ev, _ = evidence_of(tmp_path, exchanges, codec="v1")
    pairs = ev.pairs["candidate"]
    assert pairs.exchange.tolist() == list(range(30))
    assert pairs.label_incumbent.tolist() == [i % 3 for i in range(30)]
    assert pairs.label_other.tolist() == [(i + 1) % 3 for i in range(30)]


def test_no_successful_answers(tmp_path):
    ev, _ = evidence_of(tmp_path, [
        {"incumbent": ArmOutcome(503, 0.1, b"overloaded"), "candidate": ArmOutcome(error="reset", latency_s=0.2)},
        {"incumbent": ArmOutcome(error="timeout", latency_s=1.0), "candidate": ArmOutcome(error="shed")},
    ], codec=None)
    assert ev.codec == "" and ev.pairs["candidate"].n == 0
    assert not ev.arms["incumbent"].decoded.any()
    assert any("nothing to decode" in n for n in ev.notes)


def test_empty_capture(tmp_path):
    ev, _ = evidence_of(tmp_path, [], codec=None)
    assert ev.n_exchanges == 0 and set(ev.arms) == {"incumbent"} and ev.pairs == {}
    assert ev.arms["incumbent"].decoded.dtype == bool


def test_unrecognisable_traffic_needs_a_codec(tmp_path):
    exchanges = [{"incumbent": ok(b'{"result": {"cls": 1}}'), "candidate": ok(b'{"result": {"cls": 0}}')}]
    with pytest.raises(DecodeError, match="--codec generic --select"):
        evidence_of(tmp_path, exchanges, codec=None)
    (tmp_path / "capture.db").unlink()
    ev, _ = evidence_of(tmp_path, exchanges, codec=get_codec("generic", select="label=result.cls"))
    assert ev.codec == "generic" and ev.pairs["candidate"].label_other.tolist() == [0]


# ---------------------------------------------------------------------------------------------
# The fast paths (worker processes, spans, templated decoding, judge_read) change nothing.

from harness import pairing  # noqa: E402
from harness.evidence import Evidence  # noqa: E402


def assert_evidence_identical(a: Evidence, b: Evidence, path: str = "evidence") -> None:
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, path
        if a.dtype.kind == "f":  # bit for bit
            assert np.array_equal(a.view(np.int64), b.view(np.int64)), path
        elif a.dtype == object:
            assert [(type(x), x) for x in a.tolist()] == [(type(x), x) for x in b.tolist()], path
        else:
            assert np.array_equal(a, b), path
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b), path
        for name in a.__dataclass_fields__:
            assert_evidence_identical(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_evidence_identical(a[k], b[k], f"{path}[{k}]")
    else:
        assert a == b, (path, a, b)


def whole_capture_reference(reader: CaptureReader, codec, arms=("candidate", "baseline")) -> Evidence:
    """build_evidence the way it was first written: columns(), then every body of an arm at once."""
    others = [a for a in dict.fromkeys(arms) if a != "incumbent"]
    cols = reader.columns(("incumbent", *others))
    notes = [f"{a}: not in this capture" for a in others if not cols[f"{a}_present"].any()]
    others = [a for a in others if cols[f"{a}_present"].any()]
    names = ["incumbent", *others]
    answered = {arm: pairing._answered(cols, arm) for arm in names}
    return pairing._evidence_by_arm(reader, codec, cols, names, others, answered, notes)


def mixed_exchanges(n: int, seed: int = 0) -> list[dict]:
    """Every kind of outcome, batches of several sizes, a baseline now and then, bad bodies."""
    rng = np.random.default_rng(seed)
    rows = synthetic_rows(64, seed)
    cache: dict = {}

    def body(app, name, k):
        key = (name, k)
        if key not in cache:
            cache[key] = [answer(app, rows[i: i + k]) for i in range(0, 60, 3)]
        return cache[key][int(rng.integers(0, len(cache[key])))]

    out = []
    for i in range(n):
        k = int(rng.choice([1, 1, 1, 2, 3]))
        inc = ok(body(INCUMBENT, "i", k), float(rng.gamma(9, 0.001)))
        roll = rng.random()
        if roll < 0.70:
            cand = ok(body(CANDIDATE, "c", k if rng.random() < 0.97 else k % 3 + 1), float(rng.gamma(9, 0.001)))
        else:
            cand = [ArmOutcome(error="timeout", latency_s=1.0), ArmOutcome(error="shed"),
                    ArmOutcome(error="reset", latency_s=0.01), ArmOutcome(error="weird-kind", latency_s=0.2),
                    ArmOutcome(500, 0.01, b'{"error":"injected"}'), ArmOutcome(204, 0.01, b""),
                    ok(b'{"error":"oops"}'), ok(b""), ok(body(CANDIDATE, "c", 1)[:40]),
                    ok(b'{"outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[NaN]}]}'),
                    ok(b"\xff\xfe{}"), ArmOutcome(299, 0.02, body(CANDIDATE, "c", 1)),
                    ArmOutcome(300, 0.02, body(CANDIDATE, "c", 1))][int(rng.integers(0, 13))]
        arms = {"incumbent": inc, "candidate": cand}
        if i % 7 == 3:
            arms["baseline"] = ok(body(INCUMBENT, "i", k))
        if i % 11 == 5:
            del arms["candidate"]
        out.append(arms)
    return out


@pytest.mark.parametrize("codec", ["v2", None])
def test_fast_paths_give_identical_evidence(tmp_path, monkeypatch, codec):
    path = tmp_path / "capture.db"
    write(path, mixed_exchanges(3000))
    monkeypatch.setattr(pairing, "_SPAN", 700)  # several spans per worker
    with CaptureReader(path) as reader:
        reference = whole_capture_reference(reader, get_codec("v2"))
        plain = build_evidence(reader, get_codec(codec) if codec else None, workers=0, templated=False)
        detected = [note for note in plain.notes if note.startswith("codec detected from")]
        assert len(detected) == (codec is None)
        undetected = Evidence(**{**plain.__dict__, "notes": [n for n in plain.notes if n not in detected]})
        assert_evidence_identical(undetected, reference)
        assert "candidate: " in "\n".join(plain.notes) and plain.pairs["baseline"].n > 0
        for workers, templated in [(0, True), (2, False), (2, True)]:
            fast = build_evidence(reader, get_codec(codec) if codec else None, workers=workers, templated=templated)
            assert_evidence_identical(fast, plain, f"workers={workers},templated={templated}")


def test_regression_task_across_spans(tmp_path, monkeypatch):
    exchanges = [{"incumbent": ok(v1([float(i) + 0.5])), "candidate": ok(v1([float(i) + 0.25, 1.0][: 1 + i % 2]))}
                 for i in range(200)]
    path = tmp_path / "capture.db"
    write(path, exchanges)
    monkeypatch.setattr(pairing, "_SPAN", 30)
    with CaptureReader(path) as reader:
        reference = whole_capture_reference(reader, get_codec("v1"))
        assert reference.task == "regression"
        assert_evidence_identical(build_evidence(reader, get_codec("v1"), workers=2, templated=True), reference)


def test_summary_comes_from_the_evidence_pass_until_the_capture_changes(tmp_path):
    path = tmp_path / "capture.db"
    exchanges = mixed_exchanges(300, seed=4)
    writer = CaptureWriter(path)
    for i, arms in enumerate(exchanges):
        writer.write(Exchange(f"r{i}", 1000.0 + i, "POST", "/", b"{}", arms))
    writer.flush()
    try:
        with CaptureReader(path) as reader:
            counted = reader.summary()
            build_evidence(reader, get_codec("v2"))
            assert reader._kept_summary is not None and reader.summary() == counted
            assert counted["candidate"]["errors"]["weird-kind"] > 0 and counted["baseline"]["present"] > 0
            writer.write(Exchange("late", 5000.0, "POST", "/", b"{}", {"incumbent": ArmOutcome(error="reset")}))
            writer.flush()
            later = reader.summary()  # a commit since: counted again
            assert later["incumbent"]["present"] == counted["incumbent"]["present"] + 1
            assert later["incumbent"]["errors"].get("reset", 0) == counted["incumbent"]["errors"].get("reset", 0) + 1
    finally:
        writer.close()


def test_spans_that_disagree_with_the_columns_fall_back_to_whole_arms(tmp_path, monkeypatch):
    path = tmp_path / "capture.db"
    write(path, mixed_exchanges(200, seed=2))
    read_span = pairing._read_span

    def confused(*args):
        data = read_span(*args)
        if "candidate_answered" in data:
            data["candidate_answered"] = ~data["candidate_answered"]
        return data

    monkeypatch.setattr(pairing, "_read_span", confused)
    with CaptureReader(path) as reader:
        assert_evidence_identical(build_evidence(reader, get_codec("v2"), workers=0),
                                  whole_capture_reference(reader, get_codec("v2")))


def test_evidence_carries_the_fault_ledger_and_output_finiteness(tmp_path):
    ok = b'{"outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]},{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[0.2,0.8]}]}'
    nan = b'{"outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]},{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[NaN,0.8]}]}'
    path = tmp_path / "capture.db"
    with CaptureWriter(path) as writer:
        writer.set_meta("faults", {"seed": 1, "faults": [{"type": "nan"}]})
        for i, (body, faults) in enumerate([(ok, ()), (nan, ("nan",)), (ok, ("nan:noop",))]):
            arms = {"incumbent": ArmOutcome(200, 0.01, ok), "candidate": ArmOutcome(200, 0.01, body, faults=faults)}
            writer.write(Exchange(f"r{i}", 1.0 + i, "POST", "/", b"{}", arms))
    with CaptureReader(path) as reader:
        evidence = build_evidence(reader)
    candidate = evidence.arms["candidate"]
    assert candidate.faults.tolist() == [(), ("nan",), ("nan:noop",)]
    assert candidate.finite.tolist() == [True, False, True]
    assert evidence.arms["incumbent"].faults.tolist() == [(), (), ()]

    plain = tmp_path / "plain.db"  # no fault plan: no ledger at all, not an empty one
    with CaptureWriter(plain) as writer:
        writer.write(Exchange("r", 1.0, "POST", "/", b"{}", {"incumbent": ArmOutcome(200, 0.01, ok), "candidate": ArmOutcome(200, 0.01, ok)}))
    with CaptureReader(plain) as reader:
        assert build_evidence(reader).arms["candidate"].faults is None
