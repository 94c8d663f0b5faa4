"""Payload and transport faults on fixed v2, v1 and generic JSON payloads.

Each payload fault runs through a one-fault plan (decide, then apply_payload, as the proxy
does); the faulted body is decoded again and compared column by column with the original, so
every test checks both what changed and that nothing else did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from harness.codecs import Features, GenericCodec, V1Codec, V2Codec
from harness.faults import FAULTS, Action, FaultPlan, make_fault
from harness.faults.payload import BROKEN, INVALID_UTF8, PAD_KEY, UNSEEN

AGES = [30, 40, 50, 60]
INCOMES = [1000.5, 2000.5, 3000.5, 4000.5]
CITIES = ["Oslo", "Lima", "Rome", "Kyiv"]
X = [[0.5, 1.5, 2.5], [3.5, 4.5, 5.5], [6.5, 7.5, 8.5], [9.5, 10.5, 11.5]]


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


V2_NAMED = dumps({"id": "r1", "parameters": {"trace": True}, "inputs": [
    {"name": "age", "shape": [4], "datatype": "INT64", "data": AGES},
    {"name": "income", "shape": [4, 1], "datatype": "FP32", "data": INCOMES},
    {"name": "city", "shape": [4], "datatype": "BYTES", "data": CITIES},
]})
V2_TENSOR = dumps({"inputs": [{"name": "x", "shape": [4, 3], "datatype": "FP32", "data": [v for r in X for v in r]}]})
V1_ROWS = dumps({"signature_name": "serving_default",
                 "instances": [{"age": a, "income": i, "city": c} for a, i, c in zip(AGES, INCOMES, CITIES)]})
V1_COLUMNAR = dumps({"inputs": {"age": AGES, "income": INCOMES, "city": CITIES}})
V1_LISTS = dumps({"instances": X})
GENERIC_CODEC = GenericCodec(select="features=data.rows,feature.city=meta.users[*].city")
GENERIC = dumps({"data": {"rows": [{"age": a, "income": i} for a, i in zip(AGES, INCOMES)]},
                 "meta": {"users": [{"city": c, "keep": True} for c in CITIES]}})

# layout -> (body, codec, an integer column, a float column, a text column or None)
LAYOUTS = {
    "v2-named": (V2_NAMED, V2Codec(), "age", "income", "city"),
    "v2-tensor": (V2_TENSOR, V2Codec(), None, "x[1]", None),
    "v1-rows": (V1_ROWS, V1Codec(), "age", "income", "city"),
    "v1-columnar": (V1_COLUMNAR, V1Codec(), "age", "income", "city"),
    "generic": (GENERIC, GENERIC_CODEC, "age", "income", "city"),
}
NUMERIC_LAYOUTS = list(LAYOUTS)
TEXT_LAYOUTS = [k for k, v in LAYOUTS.items() if v[4]]


def run(spec: dict, body: bytes, codec=None, seed: int = 0, seq: int = 0):
    """(faulted body or None, ledger for the candidate) from a one-fault plan."""
    plan = FaultPlan([make_fault(spec)], seed=seed, codec=codec)
    decision = plan.decide(seq, 0.0)
    out = plan.apply_payload(decision, body)
    return out, decision.faults_for("candidate")


def values(col: np.ndarray) -> list:
    return [None if isinstance(v, float) and np.isnan(v) else v for v in col.tolist()]


def changed_columns(before: Features, after: Features) -> set[str]:
    """Columns whose values (or presence) differ; NaN equals NaN."""
    names = set(before.columns) | set(after.columns)
    return {n for n in names if n not in before.columns or n not in after.columns
            or values(before.columns[n]) != values(after.columns[n])}


def decode_both(layout: str, out: bytes):
    body, codec, *_ = LAYOUTS[layout]
    return codec.decode_request(body), codec.decode_request(out)


# --- missing values -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_nan_sets_every_row_of_the_selected_column_and_nothing_else(layout):
    body, codec, _, col, _ = LAYOUTS[layout]
    out, ledger = run({"type": "nan", "fields": [col]}, body, codec)
    assert ledger == (f"nan:{col}",) and b"NaN" in out
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {col}
    assert np.isnan(after.columns[col]).all() and after.n == 4


def test_nan_on_an_integer_input_keeps_the_other_integers_exact():
    out, _ = run({"type": "nan", "fields": ["age"], "fraction": 0.5}, V1_ROWS, V1Codec())
    ages = [row["age"] for row in json.loads(out)["instances"]]
    assert sum(isinstance(a, float) and np.isnan(a) for a in ages) == 2
    assert all(type(a) is int for a in ages if not isinstance(a, float))  # 30, not 30.0


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_null_writes_json_null(layout):
    body, codec, _, col, _ = LAYOUTS[layout]
    out, _ = run({"type": "null", "fields": [col], "fraction": 0.25}, body, codec)
    assert b"null" in out
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {col}
    assert int(np.isnan(after.columns[col].astype(float)).sum()) == 1  # 25% of 4 rows


@pytest.mark.parametrize("sign,expected", [("+", [np.inf]), ("-", [-np.inf]), ("random", [np.inf, -np.inf])])
def test_inf(sign, expected):
    out, _ = run({"type": "inf", "fields": ["#1"], "sign": sign}, V2_TENSOR, V2Codec())
    before, after = decode_both("v2-tensor", out)
    assert changed_columns(before, after) == {"x[1]"}
    assert set(after.columns["x[1]"].tolist()) <= set(expected)
    assert b"Infinity" in out


def test_inf_by_default_hits_every_numeric_column_but_not_text():
    out, _ = run({"type": "inf"}, V2_NAMED, V2Codec())
    before, after = decode_both("v2-named", out)
    assert changed_columns(before, after) == {"age", "income"}


# --- MCAR / MAR / MNAR ----------------------------------------------------------------------


def nan_rows(out: bytes, column: str = "income") -> list[int]:
    after = V1Codec().decode_request(out)
    return np.flatnonzero(np.isnan(after.columns[column].astype(float))).tolist()


@pytest.mark.parametrize("params,rows", [
    ({"threshold": 45}, [2, 3]),  # age >= 45
    ({"threshold": 45, "side": "below"}, [0, 1]),
    ({}, [2, 3]),  # the request's median age (45) is the cut
    ({"quantile": 0.75}, [3]),  # 52.5
    ({"threshold": "Lima", "depends_on": "city"}, [1]),  # a string threshold means "equals"
    ({"threshold": 1000}, []),  # no row qualifies: nothing to change
])
def test_mar_selects_rows_by_the_deciding_feature(params, rows):
    spec = {"type": "nan", "fields": ["income"], "mechanism": "mar", "depends_on": "age", **params}
    out, ledger = run(spec, V1_ROWS, V1Codec())
    if not rows:
        assert out is None and ledger == ("nan:income:noop",)
        return
    assert nan_rows(out) == rows
    before, after = decode_both("v1-rows", out)
    assert changed_columns(before, after) == {"income"}


def test_mnar_selects_rows_by_their_own_value():
    out, _ = run({"type": "null", "fields": ["income"], "mechanism": "mnar", "threshold": 2500}, V1_ROWS, V1Codec())
    assert nan_rows(out) == [2, 3]
    out, _ = run({"type": "null", "fields": ["income"], "mechanism": "mnar", "side": "below"}, V1_ROWS, V1Codec())
    assert nan_rows(out) == [0, 1]


def test_mar_with_fraction_takes_a_share_of_the_eligible_rows():
    spec = {"type": "nan", "fields": ["income"], "mechanism": "mar", "depends_on": "age", "threshold": 35,
            "fraction": 0.5}
    seen = set()
    for seq in range(40):
        out, _ = run(spec, V1_ROWS, V1Codec(), seq=seq)
        rows = nan_rows(out)
        assert len(rows) == 2 and set(rows) <= {1, 2, 3}  # round(0.5 * 3) of the rows with age >= 35
        seen.update(rows)
    assert seen == {1, 2, 3}


def test_mcar_fraction_spreads_over_rows():
    hits = np.zeros(4)
    for seq in range(200):
        out, _ = run({"type": "nan", "fields": ["income"], "fraction": 0.25}, V1_ROWS, V1Codec(), seq=seq)
        hits[nan_rows(out)] += 1
    assert hits.sum() == 200 and hits.min() > 25  # one row per request, each about 50 times


# --- missing fields -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", TEXT_LAYOUTS)
def test_missing_field_drops_the_input_or_key(layout):
    body, codec, _, _, text = LAYOUTS[layout]
    out, ledger = run({"type": "missing_field", "fields": [text]}, body, codec)
    assert ledger == (f"missing_field:{text}",)
    assert f'"{text}"'.encode() not in out  # not null: absent
    if layout == "generic":  # its own selector no longer finds the key: the codec is strict about that
        assert json.loads(out)["meta"]["users"] == [{"keep": True}] * 4
        return
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {text} and text not in after.columns


def test_missing_field_in_each_layout():
    named = json.loads(run({"type": "missing_field", "fields": ["age"]}, V2_NAMED, V2Codec())[0])
    assert [i["name"] for i in named["inputs"]] == ["income", "city"] and named["id"] == "r1"
    tensor = json.loads(run({"type": "missing_field", "fields": ["#1"]}, V2_TENSOR, V2Codec())[0])
    assert tensor["inputs"][0]["shape"] == [4, 2] and tensor["inputs"][0]["data"][:2] == [0.5, 2.5]
    whole = json.loads(run({"type": "missing_field", "fields": ["x"]}, V2_TENSOR, V2Codec())[0])
    assert whole["inputs"] == []  # `x` stands for all its columns: the input is gone
    rows = json.loads(run({"type": "missing_field", "fields": ["income"]}, V1_ROWS, V1Codec())[0])
    assert all(set(r) == {"age", "city"} for r in rows["instances"])
    assert rows["signature_name"] == "serving_default"
    cols = json.loads(run({"type": "missing_field", "fields": ["age"]}, V1_COLUMNAR, V1Codec())[0])
    assert set(cols["inputs"]) == {"income", "city"}


def test_missing_field_by_json_path():
    out, ledger = run({"type": "missing_field", "fields": ["$.parameters", "$.inputs[0]"]}, V2_NAMED)
    payload = json.loads(out)
    assert "parameters" not in payload and [i["name"] for i in payload["inputs"]] == ["income", "city"]
    assert ledger == ("missing_field:$.parameters,$.inputs[0]",)
    out, _ = run({"type": "missing_field", "fields": ["$.meta.users[*].keep"]}, GENERIC)
    assert json.loads(out)["meta"]["users"] == [{"city": c} for c in CITIES]


def test_missing_field_under_mar_drops_the_field_when_a_row_qualifies():
    spec = {"type": "missing_field", "fields": ["income"], "mechanism": "mar", "depends_on": "age"}
    out, _ = run({**spec, "threshold": 55}, V1_ROWS, V1Codec())
    assert "income" not in V1Codec().decode_request(out).columns
    out, ledger = run({**spec, "threshold": 65}, V1_ROWS, V1Codec())
    assert out is None and ledger == ("missing_field:income:noop",)


# --- types and values -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_wrong_type_writes_a_string_where_a_number_was(layout):
    body, codec, _, col, _ = LAYOUTS[layout]
    out, _ = run({"type": "wrong_type", "fields": [col]}, body, codec)
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {col}
    assert after.columns[col].tolist() == [str(v) for v in before.columns[col].tolist()]
    assert b'"1000.5"' in out or b'"1.5"' in out


def test_wrong_type_float_where_an_int_is():
    out, _ = run({"type": "wrong_type", "to": "float"}, V1_ROWS, V1Codec())  # default: integer columns
    rows = json.loads(out)["instances"]
    assert [r["age"] for r in rows] == [30.0, 40.0, 50.0, 60.0] and all(type(r["age"]) is float for r in rows)
    assert b"30.0" in out
    assert [r["income"] for r in rows] == INCOMES and [r["city"] for r in rows] == CITIES
    out, _ = run({"type": "wrong_type", "to": "bool", "fields": ["age"], "fraction": 0.5}, V2_NAMED, V2Codec())
    data = json.loads(out)["inputs"][0]["data"]
    assert sum(v is True for v in data) == 2 and all(v is True or v in AGES for v in data)


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_out_of_range_scales_or_sets(layout):
    body, codec, _, col, _ = LAYOUTS[layout]
    out, _ = run({"type": "out_of_range", "fields": [col], "factor": 1000}, body, codec)
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {col}
    np.testing.assert_allclose(after.columns[col], before.columns[col] * 1000)
    out, _ = run({"type": "out_of_range", "fields": [col], "value": -1e9, "fraction": 0.5}, body, codec)
    assert sorted(codec.decode_request(out).columns[col].tolist()).count(-1e9) == 2


def test_out_of_range_keeps_integers_integral():
    out, _ = run({"type": "out_of_range", "fields": ["age"], "factor": 100}, V2_NAMED, V2Codec())
    assert json.loads(out)["inputs"][0]["data"] == [3000, 4000, 5000, 6000]


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_noise_is_relative_to_the_column(layout):
    body, codec, _, col, _ = LAYOUTS[layout]
    out, _ = run({"type": "noise", "fields": [col], "sigma": 0.1}, body, codec)
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {col}
    x, y = before.columns[col], after.columns[col]
    assert (x != y).all() and (np.abs(y - x) < 6 * 0.1 * x.std()).all()


def test_noise_on_integers_stays_integer():
    out, _ = run({"type": "noise", "fields": ["age"], "sigma": 0.5}, V1_ROWS, V1Codec())
    ages = [r["age"] for r in json.loads(out)["instances"]]
    assert all(type(a) is int for a in ages) and ages != AGES


def test_swap_fields():
    out, ledger = run({"type": "swap_fields", "fields": ["age", "income"]}, V1_ROWS, V1Codec())
    before, after = decode_both("v1-rows", out)
    assert changed_columns(before, after) == {"age", "income"} and ledger == ("swap_fields:age,income",)
    assert after.columns["age"].tolist() == INCOMES and after.columns["income"].tolist() == AGES
    out, _ = run({"type": "swap_fields", "fields": ["#0", "#2"], "fraction": 0.5}, V2_TENSOR, V2Codec())
    before, after = decode_both("v2-tensor", out)
    swapped = after.columns["x[0]"] != before.columns["x[0]"]
    assert swapped.sum() == 2 and changed_columns(before, after) == {"x[0]", "x[2]"}
    np.testing.assert_array_equal(after.columns["x[0]"][swapped], before.columns["x[2]"][swapped])
    # Without fields: two numeric columns at random, never the text column.
    out, _ = run({"type": "swap_fields"}, V2_NAMED, V2Codec())
    assert changed_columns(*decode_both("v2-named", out)) == {"age", "income"}


@pytest.mark.parametrize("layout", TEXT_LAYOUTS)
def test_category_shift(layout):
    body, codec, _, _, text = LAYOUTS[layout]
    out, _ = run({"type": "category_shift"}, body, codec)  # default: text columns, an unseen category
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {text} and set(after.columns[text]) == {UNSEEN}
    out, _ = run({"type": "category_shift", "fields": [text], "mapping": {"Oslo": "Bergen"}}, body, codec)
    assert codec.decode_request(out).columns[text].tolist() == ["Bergen", "Lima", "Rome", "Kyiv"]


def test_category_shift_on_integer_codes():
    out, _ = run({"type": "category_shift", "fields": ["age"]}, V2_NAMED, V2Codec())
    assert json.loads(out)["inputs"][0]["data"] == [61, 61, 61, 61]  # one past the largest code


@pytest.mark.parametrize("layout", TEXT_LAYOUTS)
def test_broken_chars_in_text_features(layout):
    body, codec, _, _, text = LAYOUTS[layout]
    out, _ = run({"type": "broken_chars"}, body, codec)
    before, after = decode_both(layout, out)
    assert changed_columns(before, after) == {text}
    for old, new in zip(CITIES, after.columns[text].tolist()):
        extra = [b for b in BROKEN if b in new and b not in old]
        assert len(new) == len(old) + len(extra[0]) and extra


def test_broken_chars_raw_makes_the_body_invalid_utf8():
    out, ledger = run({"type": "broken_chars", "raw": True}, V2_NAMED)
    assert ledger == ("broken_chars",) and len(out) > len(V2_NAMED)
    assert any(seq in out for seq in INVALID_UTF8)
    with pytest.raises(UnicodeDecodeError):
        out.decode("utf-8")
    json.loads(out.decode("latin-1"))  # still JSON structurally: only the encoding is broken


# --- shapes and sizes -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", NUMERIC_LAYOUTS)
def test_empty_tensor_empties_the_batch(layout):
    body, codec, *_ = LAYOUTS[layout]
    out, _ = run({"type": "empty_tensor"}, body, codec)
    after = codec.decode_request(out)
    assert after.n == 0
    if layout in ("v2-named", "v2-tensor", "v1-columnar"):  # an empty list of rows has no keys left
        assert after.names == codec.decode_request(body).names


def test_empty_tensor_in_v2_and_by_path():
    payload = json.loads(run({"type": "empty_tensor"}, V2_TENSOR, V2Codec())[0])
    assert payload["inputs"][0]["shape"] == [0, 3] and payload["inputs"][0]["data"] == []
    out, _ = run({"type": "empty_tensor", "fields": ["$.inputs[1].data"]}, V2_NAMED)
    payload = json.loads(out)
    assert payload["inputs"][1] == {"name": "income", "shape": [4, 1], "datatype": "FP32", "data": []}
    assert payload["inputs"][0]["data"] == AGES


def test_shape_mismatch_v2_tensor():
    payload = json.loads(run({"type": "shape_mismatch"}, V2_TENSOR)[0])
    item = payload["inputs"][0]
    assert item["shape"] == [4, 4] and item["data"][:4] == [0.5, 1.5, 2.5, 2.5] and len(item["data"]) == 16
    kept = json.loads(run({"type": "shape_mismatch", "delta": -1, "keep_shape": True}, V2_TENSOR)[0])["inputs"][0]
    assert kept["shape"] == [4, 3] and kept["data"][:2] == [0.5, 1.5] and len(kept["data"]) == 8
    named = json.loads(run({"type": "shape_mismatch", "fields": ["age"]}, V2_NAMED)[0])["inputs"]
    assert named[0]["shape"] == [4, 2] and named[0]["data"] == [30, 30, 40, 40, 50, 50, 60, 60]
    assert named[1]["data"] == INCOMES and named[2]["data"] == CITIES


def test_shape_mismatch_v1_rows_are_ragged():
    out, _ = run({"type": "shape_mismatch", "fraction": 0.5}, V1_LISTS)
    widths = [len(r) for r in json.loads(out)["instances"]]
    assert sorted(widths) == [3, 3, 4, 4]
    out, _ = run({"type": "shape_mismatch", "fields": ["$.instances[0]"], "delta": -2}, V1_LISTS)
    assert json.loads(out)["instances"] == [[0.5], *X[1:]]
    out, ledger = run({"type": "shape_mismatch"}, V1_ROWS)  # no list-valued features: nothing to do
    assert out is None and ledger == ("shape_mismatch:noop",)


@pytest.mark.parametrize("pad", ["field", "whitespace"])
def test_oversize(pad):
    out, _ = run({"type": "oversize", "size_bytes": 100_000, "pad": pad}, V2_NAMED, V2Codec())
    assert len(out) == 100_000
    payload = json.loads(out)
    assert (PAD_KEY in payload) == (pad == "field")
    assert changed_columns(*decode_both("v2-named", out)) == set()


@pytest.mark.parametrize("how", ["truncate", "unclosed", "trailing_comma", "single_quotes", "random"])
def test_malformed_json(how):
    out, ledger = run({"type": "malformed_json", "how": how}, V2_NAMED)
    assert ledger == ("malformed_json",) and out != V2_NAMED
    with pytest.raises(ValueError):
        json.loads(out)


# --- the registry and parameters ------------------------------------------------------------


@pytest.mark.parametrize("spec,message", [
    ({"type": "nan", "probability": 2}, "fault 'nan': probability must be within [0, 1], got 2"),
    ({"type": "nan", "sigma": 1}, "fault 'nan': unknown parameter 'sigma'"),
    ({"type": "chaos_monkey"}, "unknown fault type 'chaos_monkey'; known faults: abort, "),
    ({"fields": ["age"]}, "a fault needs a 'type'"),
    ({"type": "noise", "sigma": "big"}, "fault 'noise': sigma must be a number, got 'big'"),
    ({"type": "nan", "arms": ["incumbent"]}, "fault 'nan': arms may only hold candidate and baseline"),
    ({"type": "nan", "window": [10, 5]}, "fault 'nan': window must be [start, end) with 0 <= start < end"),
    ({"type": "nan", "fields": ["#x"]}, "fault 'nan': fields must write a column index as '#'"),
    ({"type": "nan", "fields": ["$.a"]}, "fault 'nan': fields select features by name or '#index'"),
    ({"type": "nan", "mechanism": "mar"}, "fault 'nan': depends_on must name the deciding feature"),
    ({"type": "nan", "mechanism": "often"}, "fault 'nan': mechanism must be one of mcar, mar, mnar"),
    ({"type": "nan", "fraction": 0}, "fault 'nan': fraction must be within (0, 1], got 0"),
    ({"type": "latency", "fields": ["age"]}, "fault 'latency': fields are not used"),
    ({"type": "latency", "ms": -1}, "fault 'latency': ms must be >= 0, got -1"),
    ({"type": "abort", "status": 99}, "fault 'abort': status must be within [100, 599], got 99"),
    ({"type": "truncate", "fraction": 1}, "fault 'truncate': fraction must be below 1"),
    ({"type": "swap_fields", "fields": ["a"]}, "fault 'swap_fields': fields must name exactly two columns"),
    ({"type": "shape_mismatch", "delta": 0}, "fault 'shape_mismatch': delta must not be 0"),
    ({"type": "empty_tensor", "fields": ["age"]}, "fault 'empty_tensor': fields must be JSON paths"),
    ({"type": "missing_field", "fields": ["age", "$.x"]}, "fault 'missing_field': fields must be all feature names"),
    ({"type": "oversize", "size_bytes": 1.5}, "fault 'oversize': size_bytes must be an integer, got 1.5"),
    ({"type": "malformed_json", "how": "badly"}, "fault 'malformed_json': how must be one of truncate"),
    ({"type": "nan", "kind": "transport"}, "fault 'nan': kind is 'payload'"),
])
def test_registry_errors_name_the_problem(spec, message):
    with pytest.raises(ValueError) as err:
        make_fault(spec)
    assert str(err.value).startswith(message), str(err.value)


def test_yaml_shapes_are_accepted_and_labels_derived():
    fault = make_fault({"type": "nan", "fields": "age", "arms": ["candidate"], "window": [0, 30], "probability": 1})
    assert fault.fields == ("age",) and fault.arms == ("candidate",) and fault.window == (0.0, 30.0)
    assert isinstance(fault.probability, float) and fault.ledger_label == "nan:age"
    assert make_fault({"type": "nan", "label": "bad-age"}).ledger_label == "bad-age"
    assert make_fault({"type": "latency", "ms": 200, "jitter_ms": 50}).ledger_label == "latency:200ms+-50ms"
    assert make_fault({"type": "abort", "status": 500}).ledger_label == "abort:500"
    assert make_fault({"type": "truncate", "bytes": 10}).ledger_label == "truncate:10B"
    assert make_fault({"type": "truncate"}).ledger_label == "truncate:50%"


def test_describe_round_trips_through_make_fault():
    specs = [{"type": name} for name in FAULTS if name not in ("swap_fields",)]
    specs += [{"type": "swap_fields", "fields": ["a", "b"]},
              {"type": "category_shift", "mapping": {"a": "b"}, "window": [1, 2]}]
    plan = FaultPlan([make_fault(s) for s in specs if make_fault(s).kind == "transport"], seed=1)
    payload = FaultPlan([make_fault(s) for s in specs if make_fault(s).kind == "payload"], seed=1)
    for p in (plan, payload):
        described = p.describe()
        json.dumps(described)  # plain JSON for the run directory
        rebuilt = [make_fault(entry) for entry in described]
        assert [f.ledger_label for f in rebuilt] == [f.ledger_label for f in p.faults]
        assert [f.params() | {"label": ""} for f in rebuilt] == [f.params() | {"label": ""} for f in p.faults]


# --- transport faults -----------------------------------------------------------------------


def test_transport_actions():
    latency = make_fault({"type": "latency", "ms": 100, "jitter_ms": 20})
    assert latency.action(0.5) == Action("delay", "latency:100ms+-20ms", delay_s=0.1)
    assert latency.delay_s(0.0) == pytest.approx(0.08) and latency.delay_s(0.999999) == pytest.approx(0.12)
    assert make_fault({"type": "latency", "ms": 5, "jitter_ms": 50}).delay_s(0.0) == 0.0  # never negative
    abort = make_fault({"type": "abort", "status": 429, "body": "slow down"}).action(0.3)
    assert (abort.kind, abort.status, abort.body, abort.terminal) == ("abort", 429, b"slow down", True)
    assert make_fault({"type": "reset", "after_ms": 250}).action(0.0).after_s == 0.25
    assert make_fault({"type": "hang"}).action(0.0).kind == "hang"
    throttle = make_fault({"type": "bandwidth", "bytes_per_s": 512}).action(0.0)
    assert (throttle.kind, throttle.bytes_per_s, throttle.terminal) == ("throttle", 512, False)
    half = make_fault({"type": "truncate"}).action(0.0)
    assert half.keep(1000) == 500 and half.keep(1) == 0
    assert make_fault({"type": "truncate", "bytes": 10}).action(0.0).keep(1000) == 10
    assert make_fault({"type": "truncate", "bytes": 5000}).action(0.0).keep(1000) == 999  # always cut


def test_docs_cover_every_fault_and_parameter():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "faults.md").read_text()
    sections = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^##)", docs + "\n##", flags=re.S | re.M))
    assert set(sections) == set(FAULTS)
    common = {"probability", "arms", "fields", "window", "label", "fraction", "mechanism", "depends_on",
              "quantile", "threshold", "side"}
    for name, cls in FAULTS.items():
        for param, default in cls.parameters().items():
            if param in common:
                continue
            assert f"`{param}`" in sections[name], f"docs/faults.md: {name} does not document {param}"


@pytest.mark.parametrize(("status", "code"), [(503, 14), (502, 14), (504, 14), (429, 14), (400, 13), (401, 16),
                                              (403, 7), (404, 12), (500, 2), (418, 2)])
def test_abort_over_grpc_maps_the_http_status_like_grpc_does(status, code):
    fault = make_fault({"type": "abort", "status": status})
    assert fault.action(0.0).grpc_status == code
    assert fault.ledger_label == f"abort:{status}"


def test_abort_with_an_explicit_grpc_status():
    fault = make_fault({"type": "abort", "grpc_status": 8.0})
    assert fault.action(0.0).grpc_status == 8
    assert fault.ledger_label == "abort:grpc8"
    assert make_fault({"type": "abort", **fault.params()}) == fault  # round-trips through the run directory's faults.json
    for bad in (0, 17, "UNAVAILABLE", 2.5):
        with pytest.raises(ValueError, match="grpc_status"):
            make_fault({"type": "abort", "grpc_status": bad})
