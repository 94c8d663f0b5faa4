"""Codecs: fixed payloads for v2, v1 and generic JSON; request round trips; detection."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from harness.codecs import (
    CODECS,
    DecodeError,
    Features,
    GenericCodec,
    Selector,
    V1Codec,
    V2Codec,
    detect_codec,
    get_codec,
    parse_spec,
)
from harness.demo_model import FEATURES, DemoModel, synthetic_rows
from proxies.demo_server import DemoApp, infer_request_body
from proxies.http1 import Request

ROWS = synthetic_rows(3, 7)  # a batch of 3


def demo_response(rows: np.ndarray, layout: str = "named", **knobs) -> bytes:
    from proxies.demo_server import DemoKnobs

    app = DemoApp(DemoKnobs(**knobs)) if knobs else DemoApp()
    body = infer_request_body(rows, layout)
    return asyncio.run(app(Request(b"POST", b"/v2/models/demo/infer", body=body))).body


def v2_body(*outputs: dict, **top) -> bytes:
    return json.dumps({"model_name": "m", **top, "outputs": list(outputs)}).encode()


def out(name: str, datatype: str, shape: list, data: list) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def same_features(a: Features, b: Features) -> bool:
    if a.n != b.n or a.names != b.names:
        return False
    for name in a.names:
        x, y = a.columns[name], b.columns[name]
        if x.dtype != y.dtype:
            return False
        if x.dtype.kind == "f":
            if not np.array_equal(x, y, equal_nan=True):
                return False
        elif list(x) != list(y):
            return False
    return True


# --- v2 responses ---------------------------------------------------------------------------


def test_v2_demo_server_batch_of_three():
    body = demo_response(ROWS)
    labels, probabilities = DemoModel("incumbent", "subtle").predict(ROWS.astype(np.float64))
    p = V2Codec().decode_response(body)
    assert p.n == 3
    assert p.labels.dtype == np.int64 and p.labels.tolist() == labels.tolist()
    assert p.probabilities.dtype == np.float64 and p.probabilities.shape == (3, 2)
    np.testing.assert_allclose(p.probabilities, probabilities, rtol=1e-6)
    assert p.values is None


def test_v2_nested_and_flat_data_decode_the_same():
    flat = v2_body(out("label", "INT64", [3], [0, 2, 1]),
                   out("probabilities", "FP32", [3, 3], [0.7, 0.2, 0.1, 0.1, 0.1, 0.8, 0.2, 0.6, 0.2]))
    nested = v2_body(out("label", "INT64", [3, 1], [[0], [2], [1]]),
                     out("probabilities", "FP32", [3, 3], [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]]))
    a, b = V2Codec().decode_response(flat), V2Codec().decode_response(nested)
    assert a.labels.tolist() == b.labels.tolist() == [0, 2, 1]
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.probabilities[1].tolist() == [0.1, 0.1, 0.8]


@pytest.mark.parametrize("datatype,data,expected", [
    ("BOOL", [True, False, True], [1, 0, 1]),
    ("UINT8", [0, 1, 255], [0, 1, 255]),
    ("UINT64", [0, 1, 2], [0, 1, 2]),
    ("INT8", [-1, 0, 1], [-1, 0, 1]),
    ("INT16", [1, 1, 0], [1, 1, 0]),
    ("INT32", [3, 1, 2], [3, 1, 2]),
    ("INT64", [1.0, 0, 1], [1, 0, 1]),  # an integral float in an INT tensor is still a label
])
def test_v2_integer_datatypes_are_labels(datatype, data, expected):
    p = V2Codec().decode_response(v2_body(out("y", datatype, [3], data)))
    assert p.labels.tolist() == expected and p.probabilities is None and p.values is None


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP32", "FP64"])
def test_v2_float_datatypes(datatype):
    score = V2Codec().decode_response(v2_body(out("y", datatype, [3, 1], [0.5, 1, -2.25])))
    assert score.values.tolist() == [0.5, 1.0, -2.25] and score.labels is None
    probs = V2Codec().decode_response(v2_body(out("p", datatype, [3, 2], [0.5, 0.5, 1, 0, 0.25, 0.75])))
    assert probs.probabilities.tolist() == [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]


def test_v2_label_with_score_and_ignored_outputs():
    body = v2_body(out("text", "BYTES", [3], ["a", "b", "c"]),
                   out("embedding", "FP32", [3, 2, 2], list(range(12))),
                   out("predicted", "INT64", [3], [1, 0, 1]),
                   out("margin", "FP64", [3], [0.9, 0.1, 0.7]))
    p = V2Codec().decode_response(body)
    assert p.labels.tolist() == [1, 0, 1] and p.values.tolist() == [0.9, 0.1, 0.7]
    assert p.probabilities is None


def test_v2_named_outputs_override_defaults():
    body = v2_body(out("a", "INT64", [2], [1, 0]), out("b", "INT64", [2], [0, 0]),
                   out("p", "FP32", [2, 2], [0.2, 0.8, 0.6, 0.4]), out("s", "FP32", [2], [3.5, 4.5]))
    with pytest.raises(DecodeError, match="several v2 outputs could be the label.*label_output="):
        V2Codec().decode_response(body)
    p = V2Codec(label_output="b").decode_response(body)
    assert p.labels.tolist() == [0, 0] and p.values.tolist() == [3.5, 4.5]
    # A single probability per row is P(class 1), stored as two classes.
    q = V2Codec(label_output="a", probabilities_output="s", score_output=None).decode_response(
        v2_body(out("a", "INT64", [2], [1, 0]), out("s", "FP32", [2, 1], [0.75, 0.25])))
    assert q.probabilities.tolist() == [[0.25, 0.75], [0.75, 0.25]] and q.values is None
    with pytest.raises(DecodeError, match="no v2 output named 'nope'"):
        V2Codec(score_output="nope").decode_response(body)


def test_v2_conventional_names_break_ties():
    body = v2_body(out("label", "INT64", [2], [1, 0]), out("class_count", "INT64", [2], [5, 5]))
    assert V2Codec().decode_response(body).labels.tolist() == [1, 0]


@pytest.mark.parametrize("body,message", [
    (b'{"error": "model not ready"}', "error body: 'model not ready'"),
    (b'{"outputs": "x"}', "no 'outputs' list"),
    (v2_body(out("y", "BYTES", [1], ["cat"])), "no v2 output is a prediction"),
    (v2_body(out("y", "INT64", [3], [1, 0])), r"declares shape \[3\] \(3 values\) but holds 2"),
    (v2_body(out("y", "INT64", [2], [1, "0"])), "non-numeric value '0'"),
    (v2_body(out("y", "INT64", [2], [1, 0.5])), "non-integer value 0.5"),
    (v2_body(out("y", "INT64", [2], [1, 2**70])), "beyond int64"),
    (v2_body(out("p", "FP32", [2, 2], [[0.1, 0.9], [0.2]])), "nested data does not match"),
    (v2_body(out("y", "INT64", [2], [1, 0]), out("p", "FP32", [3, 2], [0.5] * 6)), "disagree on the batch size"),
    (v2_body(out("y", "INT64", ["2"], [1, 0])), "invalid shape"),
    (v2_body(out("y", "INT64", [2, [1]], [1, 0])), "invalid shape"),
    (v2_body({"datatype": "INT64", "shape": [1], "data": [1]}), "no string 'name'"),
    (b'{"outputs": [[1, 2]]}', "not an object"),
])
def test_v2_undecodable_bodies(body, message):
    with pytest.raises(DecodeError, match=message):
        V2Codec().decode_response(body)


def test_v2_a_malformed_body_does_not_poison_later_ones():
    # Layouts are cached by (name, datatype, shape[1:]); [] and [n] share that key.
    scalar = v2_body(out("label", "INT64", [], [1]))
    good = v2_body(out("label", "INT64", [1], [1]))
    batch = V2Codec().decode_responses([scalar, good, scalar])
    assert batch.decoded.tolist() == [False, True, False]
    assert "invalid shape []" in batch.errors[0]


def test_v2_null_and_nan_in_floats_are_predictions():
    p = V2Codec().decode_response(b'{"outputs":[{"name":"p","datatype":"FP32","shape":[2,2],'
                                  b'"data":[NaN,null,0.5,0.5]}]}')
    assert np.isnan(p.probabilities[0]).all() and p.probabilities[1].tolist() == [0.5, 0.5]


def test_v2_empty_batch_is_zero_rows():
    p = V2Codec().decode_response(v2_body(out("label", "INT64", [0], [])))
    assert p.n == 0 and p.labels.tolist() == []


# --- v1 responses ---------------------------------------------------------------------------


@pytest.mark.parametrize("body,labels,probabilities,values", [
    ({"predictions": [1, 0, 2]}, [1, 0, 2], None, None),
    ({"predictions": [True, False]}, [1, 0], None, None),
    ({"predictions": [1.5, 0, -2]}, None, None, [1.5, 0.0, -2.0]),
    ({"predictions": [[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]}, None, [[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]], None),
    ({"predictions": [[3.5], [1.25]]}, None, None, [3.5, 1.25]),  # TF-Serving's [n, 1] regression
    ({"predictions": [{"label": 1, "probabilities": [0.1, 0.9]}, {"label": 0, "probabilities": [0.8, 0.2]}]},
     [1, 0], [[0.1, 0.9], [0.8, 0.2]], None),
    ({"predictions": [{"class": 2, "score": 0.7}, {"class": 0, "score": 0.4}]}, [2, 0], None, [0.7, 0.4]),
    ({"outputs": [[0.3, 0.7]]}, None, [[0.3, 0.7]], None),
    ({"outputs": {"label": [1, 0], "scores": [[0.4, 0.6], [0.9, 0.1]]}}, [1, 0], [[0.4, 0.6], [0.9, 0.1]], None),
    ({"outputs": {"y": [0.5, 1.5]}}, None, None, [0.5, 1.5]),
    ({"predictions": []}, None, None, None),
])
def test_v1_predictions(body, labels, probabilities, values):
    p = V1Codec().decode_response(json.dumps(body).encode())
    assert (p.labels.tolist() if p.labels is not None else None) == labels
    assert (p.probabilities.tolist() if p.probabilities is not None else None) == probabilities
    assert (p.values.tolist() if p.values is not None else None) == values


def test_v1_options():
    assert V1Codec(scalars="value").decode_response(b'{"predictions": [1, 0]}').values.tolist() == [1.0, 0.0]
    body = b'{"predictions": [{"y": 1, "p": 0.9, "probabilities": [0.1, 0.9]}]}'
    p = V1Codec(label_key="y", score_key="p").decode_response(body)
    assert p.labels.tolist() == [1] and p.values.tolist() == [0.9] and p.probabilities.tolist() == [[0.1, 0.9]]
    with pytest.raises(DecodeError, match="has no 'label'"):
        V1Codec(label_key="label").decode_response(b'{"predictions": [{"y": 1}]}')
    with pytest.raises(ValueError, match="scalars must be one of"):
        V1Codec(scalars="maybe")


@pytest.mark.parametrize("body,message", [
    (b'{"error": "Tensor name: x has no shape information"}', "error body"),
    (b'{"result": [1]}', "no 'predictions' or 'outputs'"),
    (b'{"predictions": 1}', "not a list"),
    (b'{"predictions": [1, [0.5]]}', "mixes row types"),
    (b'{"predictions": ["cat", "dog"]}', "non-numeric value 'cat'"),
    (b'{"predictions": [[0.2, 0.8], [0.5]]}', "same length"),
    (b'{"predictions": [{"label": 1}, {"score": 0.5}]}', "missing from some rows"),
    (b'{"predictions": [{"name": "a", "id": 3}]}', "none of the keys"),
    (b'{"predictions": [{"name": "a"}]}', "'predictions.name' holds non-numeric value 'a'"),
])
def test_v1_undecodable_bodies(body, message):
    with pytest.raises(DecodeError, match=message):
        V1Codec().decode_response(body)


# --- generic selectors ----------------------------------------------------------------------


def test_selector_syntax():
    doc = {"outputs": [{"data": [1, 2]}, {"data": [3]}], "odd.key": {"x-y": 5}, "rows": [{"p": 0.1}, {"p": 0.2}]}
    assert Selector.parse("outputs[0].data").select(doc) == [1, 2]
    assert Selector.parse("$.outputs[-1].data[0]").select(doc) == 3
    assert Selector.parse("$['odd.key'][\"x-y\"]").select(doc) == 5
    assert Selector.parse("rows[*].p").select(doc) == [0.1, 0.2]
    assert Selector.parse("outputs[*].data").select(doc) == [[1, 2], [3]]
    assert Selector.parse("$").select(doc) is doc
    with pytest.raises(DecodeError, match="no key 'missing'"):
        Selector.parse("missing").select(doc)
    with pytest.raises(DecodeError, match=r"no element \[5\]"):
        Selector.parse("outputs[5]").select(doc)
    with pytest.raises(DecodeError, match=r"\[\*\] needs a list"):
        Selector.parse("odd.key[*]").select({"odd": {"key": 1}})
    for bad in ("a[", "a[x]", "a..b", "a[1.5]"):
        with pytest.raises(ValueError, match="cannot read"):
            Selector.parse(bad)


def test_spec_parsing():
    spec = parse_spec("label=predictions[*].label, score=predictions[*]['p,q'] ,feature.age=rows[*].age")
    assert set(spec) == {"label", "score", "feature.age"}
    assert spec["score"].steps == (("key", "predictions"), ("all", None), ("key", "p,q"))
    assert set(parse_spec({"probs": "p", "value": "v"})) == {"probabilities", "score"}
    with pytest.raises(ValueError, match="unknown role 'lable'"):
        parse_spec("lable=x")
    with pytest.raises(ValueError, match="expected ROLE=SELECTOR"):
        parse_spec("label")
    with pytest.raises(ValueError, match="given twice"):
        parse_spec("score=a,value=b")


def test_generic_responses():
    codec = get_codec("generic", select="label=predictions[*].label,score=predictions[*].p")
    p = codec.decode_response(b'{"predictions":[{"label":1,"p":0.9},{"label":0,"p":0.2},{"label":1,"p":0.6}]}')
    assert p.n == 3 and p.labels.tolist() == [1, 0, 1] and p.values.tolist() == [0.9, 0.2, 0.6]
    # Probabilities: rows of k; a flat list through [*] is P(class 1) per row; without [*], one row.
    rows = GenericCodec(select="probabilities=out.probs").decode_response(b'{"out":{"probs":[[0.1,0.9],[0.7,0.3]]}}')
    assert rows.probabilities.tolist() == [[0.1, 0.9], [0.7, 0.3]]
    per_row = GenericCodec(select="probs=r[*].p").decode_response(b'{"r":[{"p":0.9},{"p":0.2}]}')
    assert per_row.probabilities.tolist() == [[pytest.approx(0.1), 0.9], [0.8, 0.2]]
    one_row = GenericCodec(select="probs=p").decode_response(b'{"p":[0.2,0.3,0.5]}')
    assert one_row.n == 1 and one_row.probabilities.tolist() == [[0.2, 0.3, 0.5]]
    scalar = GenericCodec(select="value=result.y").decode_response(b'{"result":{"y":4.5}}')
    assert scalar.n == 1 and scalar.values.tolist() == [4.5]
    v2_like = GenericCodec(select="label=outputs[0].data").decode_response(
        v2_body(out("y", "INT64", [2, 1], [[1], [0]])))
    assert v2_like.labels.tolist() == [1, 0]


def test_generic_undecodable():
    codec = GenericCodec(select="label=predictions[*].label,score=scores")
    with pytest.raises(DecodeError, match="error body: 'overloaded'"):
        codec.decode_response(b'{"error":"overloaded"}')
    with pytest.raises(DecodeError, match="no key 'label'"):
        codec.decode_response(b'{"predictions":[{"lbl":1}],"scores":[0.5]}')
    with pytest.raises(DecodeError, match="gives 2 rows, another selector 1"):
        codec.decode_response(b'{"predictions":[{"label":1}],"scores":[0.5,0.6]}')
    with pytest.raises(DecodeError, match="no response selectors"):
        GenericCodec(select="features=instances").decode_response(b'{"predictions":[1]}')
    with pytest.raises(DecodeError, match="no request selectors"):
        codec.decode_request(b'{"instances":[1]}')


# --- undecodable bodies never crash ---------------------------------------------------------

GARBAGE = [b"", None, b"{", b'{"outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "da',
           b"\xff\xfe\x00", b"null", b"[]", b'"text"', b"42", b"<html>502 Bad Gateway</html>", b"[" * 100_000,
           b'{"outputs": null, "predictions": null}']
CODEC_INSTANCES = [V2Codec(), V1Codec(), GenericCodec(select="label=predictions[*].label")]


@pytest.mark.parametrize("codec", CODEC_INSTANCES, ids=lambda c: c.name)
def test_garbage_is_a_decode_error(codec):
    for body in GARBAGE:
        with pytest.raises(DecodeError):
            codec.decode_response(body)
        if body is not None:
            with pytest.raises(DecodeError):
                codec.decode_request(body)
    batch = codec.decode_responses(GARBAGE)  # the batch path records instead of raising
    assert not batch.decoded.any() and set(batch.errors) == set(range(len(GARBAGE)))
    assert batch.rows.tolist() == [0] * len(GARBAGE)


def test_batch_path_matches_single_bodies():
    bodies = [demo_response(ROWS[:1]), b'{"error":"x"}', demo_response(ROWS), demo_response(ROWS[:1]),
              v2_body(out("s", "FP32", [2], [0.5, 1.5])), b"", v2_body(out("p", "FP64", [1, 3], [0.2, 0.3, 0.5]))]
    codec = V2Codec()
    batch = codec.decode_responses(bodies)
    assert batch.decoded.tolist() == [True, False, True, True, True, False, True]
    assert batch.rows.tolist() == [1, 0, 3, 1, 2, 0, 1]
    for i, body in enumerate(bodies):
        if not batch.decoded[i]:
            with pytest.raises(DecodeError):
                codec.decode_response(body)
            continue
        single, from_batch = codec.decode_response(body), batch.prediction(i)
        for field in ("labels", "probabilities", "values"):
            a, b = getattr(single, field), getattr(from_batch, field)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b)
    assert batch.probabilities.shape[1] == 3  # padded to the widest body
    assert batch.prediction(6).probabilities.tolist() == [[0.2, 0.3, 0.5]]


# --- requests: decode and encode round trips ------------------------------------------------


@pytest.mark.parametrize("layout", ["named", "tensor"])
def test_v2_request_round_trip(layout):
    body = infer_request_body(ROWS, layout, request_id="abc")
    codec = V2Codec(feature_names=list(FEATURES)) if layout == "tensor" else V2Codec()
    features = codec.decode_request(body)
    assert features.n == 3 and features.names == list(FEATURES)
    np.testing.assert_array_equal(np.column_stack([features.columns[f] for f in FEATURES]), ROWS)
    again = codec.encode_request(features, body)
    assert same_features(codec.decode_request(again), features)
    assert json.loads(again)["id"] == "abc"  # other fields kept
    assert json.loads(again) == json.loads(body)  # nothing changed, nothing moved


def test_v2_tensor_columns_without_feature_names():
    features = V2Codec().decode_request(infer_request_body(ROWS, "tensor"))
    assert features.names == [f"features[{j}]" for j in range(len(FEATURES))]


def test_v2_encode_applies_feature_changes():
    body = infer_request_body(ROWS)
    codec = V2Codec()
    features = codec.decode_request(body)
    cols = dict(features.columns)
    cols["age"] = np.array([np.nan, np.inf, 30.0])  # NaN / Inf faults
    del cols["income"]  # missing field
    cols["extra"] = np.array([1, 2, 3])  # a column the template lacks
    faulted = codec.encode_request(Features(cols, 3), body)
    assert b"NaN" in faulted and b"Infinity" in faulted
    payload = json.loads(faulted)
    names = [i["name"] for i in payload["inputs"]]
    assert "income" not in names and names[-1] == "extra"
    assert payload["inputs"][-1]["datatype"] == "INT64"
    back = codec.decode_request(faulted)
    assert same_features(back, Features(cols, 3))
    # An oversize / empty batch rewrites every shape.
    big = codec.encode_request(Features({k: np.repeat(v, 4) for k, v in features.columns.items()}, 12), body)
    assert {tuple(i["shape"]) for i in json.loads(big)["inputs"]} == {(12,)}
    empty = codec.encode_request(Features({k: v[:0] for k, v in features.columns.items()}, 0), body)
    assert codec.decode_request(empty).n == 0


def test_v2_integer_inputs_and_strings():
    body = json.dumps({"inputs": [
        {"name": "count", "datatype": "INT32", "shape": [2, 1], "data": [[3], [4]]},
        {"name": "city", "datatype": "BYTES", "shape": [2], "data": ["Oslo", "Lima"]},
        {"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1.5, None, 2.5, 3.5]},
    ]}).encode()
    codec = V2Codec()
    f = codec.decode_request(body)
    assert f.names == ["count", "city", "x[0]", "x[1]"]
    assert f.columns["count"].dtype == np.int64 and f.columns["city"].dtype == object
    assert np.isnan(f.columns["x[1]"][0])
    # Noise on an INT input: whole values stay integers, fractions are sent as they are.
    cols = dict(f.columns, count=np.array([5.0, 6.5]))
    payload = json.loads(codec.encode_request(Features(cols, 2), body))
    assert payload["inputs"][0]["data"] == [5, 6.5] and payload["inputs"][0]["shape"] == [2, 1]
    assert same_features(codec.decode_request(codec.encode_request(f, body)), f)


V1_REQUESTS = [
    {"signature_name": "serving_default", "instances": [{"age": 40, "income": 5.5e4, "tags": [1, 2]},
                                                         {"age": 41, "income": 6.0e4, "tags": [3, 4]}]},
    {"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]},
    {"instances": [0.5, 1.5, 2.5]},
    {"inputs": {"age": [40, 41], "signal": [[1.0, 2.0], [3.0, 4.0]], "city": ["Oslo", "Lima"]}},
    {"inputs": [[1, 2], [3, 4]]},
]


@pytest.mark.parametrize("payload", V1_REQUESTS, ids=["dict-rows", "list-rows", "scalar-rows", "columnar", "inputs-rows"])
def test_v1_request_round_trip(payload):
    body = json.dumps(payload).encode()
    codec = V1Codec()
    f = codec.decode_request(body)
    again = codec.encode_request(f, body)
    assert json.loads(again) == payload
    assert same_features(codec.decode_request(again), f)


def test_v1_request_columns():
    f = V1Codec().decode_request(json.dumps(V1_REQUESTS[0]).encode())
    assert f.n == 2 and f.names == ["age", "income", "tags[0]", "tags[1]"]
    assert f.columns["age"].tolist() == [40, 41] and f.columns["tags[1]"].tolist() == [2, 4]
    rows = V1Codec(feature_names=["a", "b", "c"])
    g = rows.decode_request(json.dumps(V1_REQUESTS[1]).encode())
    assert g.names == ["a", "b", "c"] and g.columns["c"].tolist() == [3.0, 6.0]
    assert json.loads(rows.encode_request(g, json.dumps(V1_REQUESTS[1]).encode())) == V1_REQUESTS[1]
    # A key missing from one row reads as NaN; rows of different widths are an error.
    h = V1Codec().decode_request(b'{"instances":[{"a":1.0},{"a":2.0,"b":3.0}]}')
    assert np.isnan(h.columns["b"][0])
    with pytest.raises(DecodeError, match="different lengths"):
        V1Codec().decode_request(b'{"instances":[[1,2],[3]]}')
    with pytest.raises(DecodeError, match="no 'instances' or 'inputs'"):
        V1Codec().decode_request(b'{"rows":[1]}')


def test_v1_encode_with_faults():
    body = json.dumps(V1_REQUESTS[0]).encode()
    codec = V1Codec()
    f = codec.decode_request(body)
    cols = dict(f.columns)
    cols["age"] = np.array(["forty", None], dtype=object)  # wrong type and null
    del cols["income"]
    payload = json.loads(codec.encode_request(Features(cols, 2), body))
    assert payload["instances"] == [{"age": "forty", "tags": [1, 2]}, {"age": None, "tags": [3, 4]}]
    assert payload["signature_name"] == "serving_default"


def test_generic_request_round_trip():
    codec = GenericCodec(select="features=data.table,feature.user=meta.users[*].id")
    payload = {"data": {"table": [{"x": 1.5, "y": 2}, {"x": 2.5, "y": 3}]},
               "meta": {"users": [{"id": 7, "keep": True}, {"id": 8, "keep": True}]}}
    body = json.dumps(payload).encode()
    f = codec.decode_request(body)
    assert f.names == ["x", "y", "user"] and f.columns["user"].tolist() == [7, 8]
    assert json.loads(codec.encode_request(f, body)) == payload
    # More rows: rows are copied from the template's last one, then written.
    three = Features({k: np.concatenate([v, v[:1]]) for k, v in f.columns.items()}, 3)
    grown = json.loads(codec.encode_request(three, body))
    assert [u["id"] for u in grown["meta"]["users"]] == [7, 8, 7] and grown["meta"]["users"][2]["keep"] is True
    assert same_features(codec.decode_request(codec.encode_request(three, body)), three)
    # A missing column is removed from every row.
    missing = Features({k: v for k, v in f.columns.items() if k != "user"}, 2)
    assert json.loads(codec.encode_request(missing, body))["meta"]["users"] == [{"keep": True}, {"keep": True}]


def test_generic_request_scalar_paths():
    codec = GenericCodec(select="feature.age=person.age,features=rows[*]")
    body = b'{"person":{"age":33},"rows":[[1,2],[3,4]]}'
    with pytest.raises(DecodeError, match="'age' has 1 rows but 'rows\\[0\\]' has 2"):
        codec.decode_request(body)
    single = GenericCodec(select="feature.age=person.age")
    f = single.decode_request(body)
    assert f.n == 1 and f.columns["age"].tolist() == [33]
    assert json.loads(single.encode_request(Features({"age": np.array([34])}, 1), body))["person"] == {"age": 34}
    with pytest.raises(ValueError, match=r"\[\*\] may only end it"):
        GenericCodec(select="features=a[*].b")


# --- detection and the registry -------------------------------------------------------------


def test_detect_v2_from_demo_traffic():
    requests = [infer_request_body(ROWS[i:i + 1]) for i in range(3)]
    responses = [demo_response(ROWS[i:i + 1]) for i in range(3)] + [b'{"error":"x"}', None, b""]
    codec, reason = detect_codec(requests, responses)
    assert isinstance(codec, V2Codec)
    assert "v2 (Open Inference Protocol)" in reason and "3 of 4 sampled responses" in reason and "3 decoded" in reason


def test_detect_v1():
    codec, reason = detect_codec([b'{"instances":[[1,2]]}'], [b'{"predictions":[[0.1,0.9]]}'] * 5)
    assert isinstance(codec, V1Codec) and "5 of 5" in reason
    # Only requests to go by (every response failed): they decide.
    codec, reason = detect_codec([b'{"instances":[[1,2]]}'], [b'{"error":"down"}'])
    assert isinstance(codec, V1Codec) and "requests" in reason


def test_detect_unknown_names_what_it_saw():
    with pytest.raises(DecodeError) as info:
        detect_codec([b'{"rows":[1]}'], [b'{"result":{"cls":1}}', b"not json"])
    message = str(info.value)
    assert "keys result" in message and "not JSON" in message and "--codec generic --select" in message
    with pytest.raises(DecodeError, match="no bodies"):
        detect_codec([], [None, b""])
    with pytest.raises(DecodeError, match="none of 1 sampled decoded"):
        detect_codec([], [v2_body(out("t", "BYTES", [1], ["x"]))])


def test_registry():
    assert set(CODECS) == {"v2", "v1", "generic", "v2grpc", "grpc"}
    codec = get_codec("v2", label_output="label")
    assert codec.spec() == {"name": "v2", "label_output": "label"}
    assert get_codec(**codec.spec()).options() == codec.options()
    generic = get_codec("generic", select="label=a[*]")
    assert get_codec(**generic.spec()).selectors == generic.selectors
    with pytest.raises(ValueError, match="unknown codec 'v3'"):
        get_codec("v3")
    with pytest.raises(ValueError, match="has no option 'labl'.*label_output"):
        get_codec("v2", labl="x")
    with pytest.raises(ValueError, match="select"):
        get_codec("generic")
    with pytest.raises(ValueError, match="unknown role"):
        get_codec("generic", select="nope=x")


# ---------------------------------------------------------------------------------------------
# The templated batch path (harness.codecs.template) must give exactly the per-body result.

from harness.codecs import template  # noqa: E402
from harness.codecs.base import PredictionBatch  # noqa: E402


def assert_batches_identical(a: PredictionBatch, b: PredictionBatch) -> None:
    for name in ("decoded", "offsets", "has_labels", "n_classes", "has_values", "labels", "probabilities", "values"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        if x.dtype.kind == "f":  # bit for bit: NaN where NaN, -0.0 where -0.0
            assert np.array_equal(x.view(np.int64), y.view(np.int64)), name
        else:
            assert np.array_equal(x, y), name
    assert list(a.errors.items()) == list(b.errors.items())


_STYLES = ["{:.9g}", "{!r}", "{:.17g}", "{:.3e}", "{:.3E}", "{:.2f}", "{:.25f}"]
_ODD = ["0", "1", "-0", "-0.0", "0.0", "1.5e+300", "1e400", "123456789012345", "1234567890123456789",
        "01", "1.", ".5", "1e", "--1", "1.2.3", "+1", "-", "1e+", "NaN", "Infinity", "-Infinity", "null", "true"]


def _number(rng: np.random.Generator, style: str) -> str:
    """A JSON number as a server prints it (`style`), now and then one that is odd or invalid."""
    if rng.random() < 0.02:
        return str(rng.choice(_ODD))
    x = float(rng.random()) * float(rng.choice([1.0, 1e-6, -1.0]))
    return style.format(x)


def _style(rng: np.random.Generator) -> str:
    return _STYLES[0] if rng.random() < 0.8 else str(rng.choice(_STYLES))


def _v2_body(rng: np.random.Generator) -> bytes:
    n = int(rng.choice([1, 1, 1, 2, 3]))
    k = int(rng.choice([2, 2, 3]))
    label = {"name": "label", "shape": [n], "datatype": str(rng.choice(["INT64", "INT64", "BOOL", "FP32"])),
             "data": [int(v) for v in rng.integers(0, k, n)]}
    probs = {"name": "probabilities", "shape": [n, k], "datatype": "FP32", "data": None}
    text = json.dumps({"model_name": "demo", "outputs": [label, probs]}, separators=(",", ":"))
    style = _style(rng)
    numbers = ",".join(_number(rng, style) for _ in range(n * k))
    shape_variants = {f'"shape":[{n},{k}]': [f'"shape":[{n},{k}]'] * 8 + [
        f'"shape":[{n}, {k}]', f'"shape":[{k},{n}]', f'"shape":[{n},{k},1]', f'"shape":[{n}.0,{k}]']}
    text = text.replace('"data":null', f'"data":[{numbers}]')
    old = f'"shape":[{n},{k}]'
    text = text.replace(old, str(rng.choice(shape_variants[old])))
    extra = rng.random()
    if extra < 0.01:
        text = text.replace('"model_name":"demo"', f'"id":"{rng.integers(0, 10**9)}-a1b2","model_name":"demo"')
    elif extra < 0.08:
        text = text.replace('"demo"', '"d\\u00e9mo \\"quoted\\""')  # escapes: the ordinary path
    elif extra < 0.10:
        text = text.replace("{", "{ ").replace(",", ",\n  ")  # pretty-printed
    elif extra < 0.12:
        text = text[: int(rng.integers(1, len(text)))]  # truncated
    elif extra < 0.13:
        text = '{"error":"model 7 overloaded: 503"}'
    elif extra < 0.14:
        text = text.replace('"model_name":"demo"', '"outputs":[],"model_name":"demo"')  # duplicate key
    elif extra < 0.15:
        text = "\ufeff" + text
    elif extra < 0.16:
        text = text.replace('"name":"label"', '"name":"label","shape2":[true,false,null,1e5]')
    return text.encode()


def _v1_body(rng: np.random.Generator) -> bytes:
    n = int(rng.choice([1, 1, 2]))
    form = rng.random()
    style = _style(rng)
    if form < 0.3:
        rows = ",".join(str(int(v)) for v in rng.integers(0, 3, n))
    elif form < 0.55:
        rows = ",".join(_number(rng, style) for _ in range(n))
    elif form < 0.8:
        rows = ",".join("[" + ",".join(_number(rng, style) for _ in range(2)) + "]" for _ in range(n))
    else:
        rows = ",".join('{"label":%d,"probabilities":[%s,%s]}' % (rng.integers(0, 2), _number(rng, style),
                                                                  _number(rng, style)) for _ in range(n))
    return ('{"predictions":[%s]}' % rows).encode()


def _corpus(make, m: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    bodies = [make(rng) for _ in range(m)]
    for i in rng.choice(m, m // 50, replace=False).tolist():  # repeats, empties, None, odd bytes
        bodies[i] = [bodies[0], b"", None, b"\x00{}", b'{"outputs":[]}\xff', b"[1,2]", b"5"][rng.integers(0, 7)]
    return bodies


@pytest.mark.parametrize("codec,make", [
    (V2Codec(), _v2_body),
    (V1Codec(), _v1_body),
    (GenericCodec(select="probabilities=outputs[1].data,label=outputs[0].data"), _v2_body),
    (V2Codec(label_output="label", probabilities_output="probabilities"), _v2_body),
], ids=["v2", "v1", "generic", "v2-named"])
def test_templated_batch_is_identical_to_per_body(codec, make, monkeypatch):
    bodies = _corpus(make, 6000, seed=len(codec.name))
    expected = codec.decode_responses(bodies, templated=False)
    assert expected.decoded.mean() > 0.5 and expected.errors  # both kinds are there
    planned = []
    add = template._Blocks.add
    monkeypatch.setattr(template._Blocks, "add", lambda self, bodies, plan, V: (
        planned.append(len(bodies)), add(self, bodies, plan, V))[1])
    assert_batches_identical(template.decode_templated(codec, bodies), expected)
    assert sum(planned) > len(bodies) / 2  # most bodies took the templated path
    assert_batches_identical(codec.decode_responses(bodies), expected)  # large: templated by default
    usable = [b if type(b) is bytes else b"" for b in bodies]
    lengths = np.array([len(b) for b in usable], dtype=np.int64)
    buffer = b"".join(b + b"\x00" for b in usable)
    as_list = codec.decode_responses(usable, templated=False)
    assert_batches_identical(template.decode_buffer(codec, buffer, lengths, templated=True), as_list)
    assert_batches_identical(template.decode_buffer(codec, buffer, lengths, templated=False), as_list)


def test_templated_batch_small_and_degenerate_inputs():
    codec = V2Codec()
    for bodies in ([], [None], [b""], [b"\x00"], [demo_response(ROWS)], GARBAGE, [b"1", b"2.5", b"-3"],
                   [b'{"outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[%d]}]}' % i
                    for i in range(-3, 40)]):
        expected = codec.decode_responses(bodies, templated=False)
        assert_batches_identical(template.decode_templated(codec, bodies), expected)


def test_templated_batch_gives_up_on_layouts_that_never_repeat():
    codec = V2Codec()
    bodies = [v2_body(out("label", "INT64", [1], [i % 2]), id=f"req-{i}x") for i in range(3000)]  # unique skeletons
    assert_batches_identical(template.decode_templated(codec, bodies), codec.decode_responses(bodies, templated=False))


def test_templated_plans_copy_values_and_check_structure():
    codec = V2Codec()
    bodies = [v2_body(out("label", "INT64", [n], list(range(n))), out("p", "FP32", [n, 2], [0.25, -0.5] * n))
              for n in (1, 2, 1, 2, 1)] * 500
    # the shapes disagree:
    bodies += [v2_body(out("label", "INT64", [2], [1, 2]), out("p", "FP32", [1, 2], [0.25, 0.5]))] * 3
    expected = codec.decode_responses(bodies, templated=False)
    assert len(expected.errors) == 3
    assert_batches_identical(template.decode_templated(codec, bodies), expected)


def test_number_tokens_follow_the_json_grammar():
    import itertools

    tokens = [t.encode() for n in range(1, 7) for t in map("".join, itertools.product("01-.eE", repeat=n))
              if t[0] in "-01"]
    rng = np.random.default_rng(5)
    tokens += [_number(rng, str(rng.choice(_STYLES))).encode() for _ in range(3000)]
    tokens += [str(v).encode() for v in _ODD]
    # The scan's number tokens: runs of 0-9 - . e E (a '+' ends one, so "1e+5" is left to the codec).
    tokens = [t for t in tokens if t and all(c in b"0123456789-.eE" for c in t) and t[:1] in b"-0123456789"]
    valid, is_float, value = template.number_tokens(tokens)
    for t, ok, f, v in zip(tokens, valid.tolist(), is_float.tolist(), value.tolist()):
        try:
            parsed = json.loads(t)
        except ValueError:
            assert not ok, t
            continue
        if type(parsed) is int and len(t.lstrip(b"-")) > 15:
            assert not ok, t  # left to the codec
            continue
        assert ok and f == (type(parsed) is float), t
        assert np.float64(v).view(np.int64) == np.float64(float(parsed)).view(np.int64), t


def test_parse_json_with_orjson_is_json():
    from harness.codecs import base

    def typed(x):  # the value with its types, floats bit for bit
        if isinstance(x, dict):
            return ("dict", [(k, typed(v)) for k, v in x.items()])
        if isinstance(x, list):
            return ("list", [typed(v) for v in x])
        if isinstance(x, float):
            return ("float", np.float64(x).view(np.int64).item())
        return (type(x).__name__, x)

    rng = np.random.default_rng(9)
    bodies = [_v2_body(rng) for _ in range(400)] + [_v1_body(rng) for _ in range(400)] + [
        b'{"a":1,"b":2,"a":3}', b"[12345678901234567890]", b"[-9223372036854775809]", b"[18446744073709551615]",
        b"[1e400]", b"[-1e400]", b"[1.7976931348623159e308]", b"[NaN, Infinity, -Infinity]", b'["\\ud800"]',
        b"\xef\xbb\xbf[1]", b" [1] ", b"[1]\n", b'["a\\u0000b"]', b"[" * 5000 + b"]" * 5000, b"[0.1e-400]", b"-0",
        b'{"x": "12345678901234567890"}', b"[1.00000000000000000000000001]", b'["\xc3("]', b"", b"nul", b"[01]"]
    orjson_on = base._orjson_loads
    assert orjson_on is not None
    for body in bodies:
        outcomes = []
        for use_orjson in (orjson_on, None):
            base._orjson_loads = use_orjson
            try:
                outcomes.append(("ok", typed(base.parse_json(body))))
            except DecodeError as exc:
                outcomes.append(("error", str(exc)))
            finally:
                base._orjson_loads = orjson_on
        assert outcomes[0] == outcomes[1], body[:80]


def test_templated_batch_follows_escapes_in_strings():
    codec = V2Codec()
    names = ['plain', 'a\\\\"b', 'a\\\\\\"b', 'x\\\\', '\\"1.5\\"', '\\u0031\\u00e9', 'q\\\\\\\\"']  # JSON source text
    bodies = []
    for i in range(4000):
        name = names[i % len(names)]
        bodies.append(('{"model_name":"%s","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[%d]},'
                       '{"name":"p","shape":[1,2],"datatype":"FP32","data":[%.9g,%.9g]}]}'
                       % (name, i % 3, i / 4001, 1 - i / 4001)).encode())
    expected = codec.decode_responses(bodies, templated=False)
    assert_batches_identical(template.decode_templated(codec, bodies), expected)


def test_decode_buffer_puts_prefixes_back():
    codec = V2Codec()
    rng = np.random.default_rng(3)
    bodies = [_v2_body(rng) for _ in range(5000)]
    prefix = b'{"model_name":"demo","outputs":['
    cut = np.array([b.startswith(prefix) and rng.random() < 0.9 for b in bodies])
    pieces = [b[len(prefix):] if c else b for b, c in zip(bodies, cut.tolist())]
    buffer = b"".join(p + b"\x00" for p in pieces)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    expected = codec.decode_responses(bodies, templated=False)
    assert cut.mean() > 0.5
    for templated in (True, False):
        got = template.decode_buffer(codec, buffer, lengths, templated=templated, prefix=prefix, prefixed=cut)
        assert_batches_identical(got, expected)
    cut = np.array([b.startswith(b'{"model_name":"de') for b in bodies])  # inside a string: not scannable alone
    pieces = [b[17:] if c else b for b, c in zip(bodies, cut.tolist())]
    buffer, lengths = b"".join(p + b"\x00" for p in pieces), np.array([len(p) for p in pieces], dtype=np.int64)
    got = template.decode_buffer(codec, buffer, lengths, templated=True, prefix=b'{"model_name":"de', prefixed=cut)
    assert_batches_identical(got, expected)


# --- detection of gRPC captures ------------------------------------------------------------------


def _v2grpc_response(labels: list[int]) -> bytes:
    from harness.codecs.v2grpc import tensor_to_contents
    from harness.codecs.grpc_v2 import pb

    message = pb.ModelInferResponse(model_name="demo")
    out = message.outputs.add(name="label", datatype="INT64", shape=[len(labels)])
    tensor_to_contents("INT64", np.array(labels), out.contents)
    return message.SerializeToString()


def _v2grpc_request(values: list[float]) -> bytes:
    from harness.codecs.v2grpc import tensor_to_contents
    from harness.codecs.grpc_v2 import pb

    message = pb.ModelInferRequest(model_name="demo")
    tensor = message.inputs.add(name="age", datatype="FP64", shape=[len(values)])
    tensor_to_contents("FP64", np.array(values), tensor.contents)
    return message.SerializeToString()


def test_detect_v2grpc_from_binary_bodies_without_routes():
    from harness.codecs import V2GrpcCodec

    responses = [_v2grpc_response([1, 0]), _v2grpc_response([0]), None, b""]
    codec, reason = detect_codec([], responses)
    assert isinstance(codec, V2GrpcCodec)
    assert reason == "v2 gRPC (Open Inference Protocol, ModelInferResponse): 2 of 2 sampled responses decoded"
    # No response to go by: the requests decide.
    codec, reason = detect_codec([_v2grpc_request([1.0, 2.0])] * 3, [None])
    assert isinstance(codec, V2GrpcCodec) and "3 of 3 sampled requests decoded" in reason


def test_detect_v2grpc_from_the_modelinfer_route():
    from harness.codecs import V2GrpcCodec
    from harness.codecs.detect import V2_GRPC_ROUTE

    codec, reason = detect_codec([], [_v2grpc_response([1])] * 4, grpc_routes=[V2_GRPC_ROUTE])
    assert isinstance(codec, V2GrpcCodec) and "4 of 4" in reason
    with pytest.raises(DecodeError, match=r"gRPC calls are /inference\.GRPCInferenceService/ModelInfer but 2 of 2 "
                                          r"sampled responses do not decode as ModelInferResponse"):
        detect_codec([], [b"\x08\x01", b"\x08\x02"], grpc_routes=[V2_GRPC_ROUTE])


def test_detect_other_grpc_services_asks_for_the_descriptor_set():
    from harness.codecs.detect import V2_GRPC_ROUTE

    body = b"\x08\x01\x15\x00\x00\x00\x3f"  # fraud.Prediction{label: 1, score: 0.5}: parses, but no v2 outputs
    with pytest.raises(DecodeError) as info:
        detect_codec([], [body] * 3, grpc_routes=["/fraud.Scorer/Score", V2_GRPC_ROUTE])
    message = str(info.value)
    assert message.startswith("cannot detect the codec of gRPC method /fraud.Scorer/Score: only v2 inference")
    assert "--codec grpc --descriptor-set FILE --grpc-method /package.Service/Method --select" in message
    assert "--reflection HOST:PORT" in message and "\n" not in message
    # Without routes: binary bodies that are not v2 gRPC get the same advice.
    with pytest.raises(DecodeError, match=r"if this is gRPC traffic, pass the service's descriptor set: --codec grpc "
                                          r"--descriptor-set FILE"):
        detect_codec([], [body] * 3)


def test_detect_prefers_json_over_v2grpc():
    codec, _ = detect_codec([], [b'{"predictions":[1]}'] * 3 + [_v2grpc_response([1])])
    assert isinstance(codec, V1Codec)
