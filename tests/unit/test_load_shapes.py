"""Load shapes, pacing and traffic sources: pure, no Locust, no sockets."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections import Counter

import numpy as np
import pytest

from harness.capture import CaptureWriter
from harness.demo_model import FEATURES, synthetic_rows
from harness.load import LoadSpec, driver, sources
from harness.load.shapes import Pacer, Schedule, rate_at, resolve_shape, total_duration, users_at
from harness.records import ArmOutcome, Exchange

URL = "http://127.0.0.1:9"


def resolved(shape: dict, *, rate: float = 50, users: int = 5, duration_s: float = 10) -> dict:
    return resolve_shape(shape, rate=rate, users=users, duration_s=duration_s)


# -- shapes: rate, users, duration ------------------------------------------------------


def test_constant_rate_and_constant_users():
    s = resolved({"type": "constant", "rate": 20})
    assert s["duration_s"] == 10 and s["users"] == 5
    assert rate_at(s, 0) == rate_at(s, 9.999) == 20
    assert rate_at(s, 10) == rate_at(s, -0.001) == 0  # [0, duration) only
    assert users_at(s, 0) == users_at(s, 9.9) == 5 and users_at(s, 10) == 0

    # {users}: that many users, each at the spec's rate / users (here 50 / 5 = 10 req/s).
    u = resolved({"type": "constant", "users": 3, "duration_s": 4})
    assert u["per_user_rate"] == 10 and u["users"] == 3
    assert rate_at(u, 2) == 30 and users_at(u, 2) == 3 and total_duration(u) == 4
    assert rate_at(resolved({"type": "constant", "users": 3, "per_user_rate": 2}), 1) == 6


def test_ramp_boundaries():
    s = resolved({"type": "ramp", "from_rate": 10, "to_rate": 50, "over_s": 4})
    assert total_duration(s) == 4 and s["duration_s"] == 4  # a ramp ends at over_s by default
    assert rate_at(s, 0) == 10
    assert rate_at(s, 1) == pytest.approx(20)
    assert rate_at(s, 2) == pytest.approx(30)
    assert rate_at(s, 4 - 1e-9) == pytest.approx(50)
    assert rate_at(s, 4) == 0
    # A longer duration_s holds to_rate; a ramp down works the same way.
    held = resolved({"type": "ramp", "from_rate": 10, "to_rate": 50, "over_s": 4, "duration_s": 6})
    assert rate_at(held, 4) == rate_at(held, 5.9) == 50 and rate_at(held, 6) == 0
    down = resolved({"type": "ramp", "from_rate": 40, "to_rate": 0, "over_s": 2})
    assert rate_at(down, 1) == pytest.approx(20) and Schedule(down).total == pytest.approx(40)


def test_step_boundaries():
    s = resolved({"type": "step", "steps": [{"rate": 10, "duration_s": 2}, {"rate": 0, "duration_s": 1},
                                            {"rate": 40, "duration_s": 1.5}]})
    assert total_duration(s) == 4.5
    assert rate_at(s, 0) == rate_at(s, 1.999) == 10
    assert rate_at(s, 2) == rate_at(s, 2.999) == 0
    assert rate_at(s, 3) == rate_at(s, 4.499) == 40
    assert rate_at(s, 4.5) == 0
    assert Schedule(s).total == pytest.approx(20 + 0 + 60)
    held = resolved({"type": "step", "steps": [{"rate": 10, "duration_s": 2}], "duration_s": 3})
    assert rate_at(held, 2.5) == 10 and rate_at(held, 3) == 0


def test_spike_boundaries():
    s = resolved({"type": "spike", "base_rate": 10, "peak_rate": 100, "at_s": 3, "for_s": 2}, duration_s=8)
    assert total_duration(s) == 8  # the spec's duration_s
    assert rate_at(s, 0) == rate_at(s, 2.999) == 10
    assert rate_at(s, 3) == rate_at(s, 4.999) == 100
    assert rate_at(s, 5) == rate_at(s, 7.999) == 10
    assert rate_at(s, 8) == 0
    assert Schedule(s).total == pytest.approx(10 * 6 + 100 * 2)


def test_custom_shape_has_no_rate_here_and_is_capped_by_duration():
    s = resolved({"type": "custom", "class": "my_pkg.shapes:Wave"}, duration_s=7)
    assert s == {"type": "custom", "class": "my_pkg.shapes:Wave", "per_user_rate": 10.0, "duration_s": 7.0}
    with pytest.raises(ValueError, match="custom"):
        rate_at(s, 1)
    with pytest.raises(ValueError, match="custom"):
        users_at(s, 1)


def test_schedule_count_and_due_time_are_inverse():
    for shape in [
        {"type": "ramp", "from_rate": 0, "to_rate": 60, "over_s": 3, "duration_s": 4},
        {"type": "ramp", "from_rate": 80, "to_rate": 5, "over_s": 2},
        {"type": "step", "steps": [{"rate": 7, "duration_s": 1}, {"rate": 0, "duration_s": 1}, {"rate": 30, "duration_s": 1}]},
        {"type": "spike", "base_rate": 3, "peak_rate": 90, "at_s": 1, "for_s": 0.5, "duration_s": 2},
    ]:
        sc = Schedule(resolved(shape))
        assert sc.count_at(sc.duration_s) == pytest.approx(sc.total)
        for t in np.linspace(0, sc.duration_s, 41)[1:-1]:
            if sc.rate_at(t) > 0:
                assert sc.due_time(sc.count_at(t)) == pytest.approx(t, abs=1e-9), (shape, t)
        assert sc.due_time(0) == 0 and sc.due_time(sc.total) == math.inf
        ks = np.linspace(0.01, sc.total - 0.01, 50)
        assert all(a <= b for a, b in zip(map(sc.due_time, ks), map(sc.due_time, ks[1:])))


def _simulate(shape: dict, users: int, latency=lambda t: 0.0) -> tuple[list[float], int]:
    """Send times of a pool of users following Pacer; a request sent at t takes latency(t)."""
    sc = Schedule(shape)
    times, skipped = [], 0
    for i in range(users):
        p = Pacer(sc, i, users)
        p.start(0.0)
        t = 0.0
        while p.due < math.inf:
            t = max(t, p.due)
            times.append(t)
            t += latency(t)
            p.sent(t)
        skipped += p.skipped
    return sorted(times), skipped


@pytest.mark.parametrize("shape", [
    {"type": "ramp", "from_rate": 10, "to_rate": 90, "over_s": 4},
    {"type": "step", "steps": [{"rate": 20, "duration_s": 2}, {"rate": 80, "duration_s": 2}, {"rate": 5, "duration_s": 1}]},
    {"type": "spike", "base_rate": 20, "peak_rate": 200, "at_s": 1, "for_s": 1, "duration_s": 3},
])
def test_paced_users_send_the_shapes_count_every_second(shape):
    s = resolved(shape, users=7)
    times, skipped = _simulate(s, 7)
    assert skipped == 0
    per_second = Counter(int(t) for t in times)
    sc = Schedule(s)
    for sec in range(math.ceil(sc.duration_s)):
        assert per_second[sec] == round(sc.count_at(sec + 1) - sc.count_at(sec)), (sec, per_second)
    assert times[-1] < sc.duration_s and len(times) == round(sc.total)


def test_pacing_matches_the_old_phasing_for_a_constant_rate():
    # Constant 50 req/s over 5 users: user i sends at (i + 1/2)/50 s, then every 5/50 s.
    sc = Schedule({"type": "constant", "rate": 50})  # the locustfile's schedule without a shape
    p = Pacer(sc, 2, 5)
    p.start(0.0)
    assert p.due == pytest.approx(0.05)
    p.sent(0.052)
    assert p.due == pytest.approx(0.15)


def test_a_user_that_falls_behind_skips_slots_instead_of_bursting():
    # 40 req/s over 2 users (one every 50 ms each); responses take 200 ms for the first second.
    s = resolved({"type": "constant", "rate": 40, "duration_s": 2}, users=2)
    times, skipped = _simulate(s, 2, latency=lambda t: 0.2 if t < 1 else 0.0)
    assert skipped > 0
    slow = [t for t in times if t < 1]
    assert 8 <= len(slow) <= 12  # each user manages 5/s while responses are slow
    # Once responses are fast again the users rejoin the schedule: no burst to catch up.
    assert len([t for t in times if 1 <= t < 1.1]) <= 6
    assert len([t for t in times if t >= 1]) == pytest.approx(40, abs=2)
    # A user joining late (spawned at 1 s) starts at its next slot, not at slot 0.
    p = Pacer(Schedule(s), 1, 2)
    p.start(1.0)
    assert 1.0 <= p.due < 1.05 and p.slot % 2 == 1


def test_shape_validation_names_the_field():
    cases = [
        ([("type", "constant")], "shape must be a mapping"),
        ({"type": "sawtooth"}, r"shape.type must be one of constant, ramp, step, spike, custom"),
        ({"type": "constant"}, "constant shape needs rate"),
        ({"type": "constant", "rate": 0}, r"shape.rate must be > 0"),
        ({"type": "constant", "rate": 5, "rte": 5}, r"unknown key\(s\) 'rte'"),
        ({"type": "ramp", "from_rate": 1, "over_s": 2}, r"shape.to_rate is required"),
        ({"type": "ramp", "from_rate": 1, "to_rate": 2, "over_s": 0}, r"shape.over_s must be > 0"),
        ({"type": "ramp", "from_rate": 0, "to_rate": 0, "over_s": 2}, "send nothing"),
        ({"type": "ramp", "from_rate": 1, "to_rate": 2, "over_s": 5, "duration_s": 3}, r"duration_s .* over_s"),
        ({"type": "step", "steps": []}, r"shape.steps must be a non-empty list"),
        ({"type": "step", "steps": [{"rate": 1, "duration_s": 1}, {"rate": -1, "duration_s": 1}]}, r"shape.steps\[1\].rate must be >= 0"),
        ({"type": "step", "steps": [{"rate": 1}]}, r"shape.steps\[0\] must have exactly the keys rate and duration_s"),
        ({"type": "step", "steps": [{"rate": 1, "duration_s": float("inf")}]}, r"shape.steps\[0\].duration_s must be a finite number"),
        ({"type": "spike", "base_rate": 1, "peak_rate": 5, "at_s": 1}, r"shape.for_s is required"),
        ({"type": "spike", "base_rate": 1, "peak_rate": 5, "at_s": 8, "for_s": 1, "duration_s": 5}, "must cover the spike"),
        ({"type": "custom", "class": "not a class"}, r"shape.class must be 'module.path:ClassName'"),
        ({"type": "custom", "class": "m:C", "pythonpath": "/no/such/dir"}, r"shape.pythonpath must be an existing directory"),
        ({"type": "constant", "rate": 5, "users": 0}, r"shape.users must be a whole number >= 1"),
        ({"type": "constant", "rate": True}, r"shape.rate must be a finite number"),
    ]
    for shape, message in cases:
        with pytest.raises(ValueError, match=message):
            LoadSpec(URL, shape=shape)
    # A spike past the spec's duration_s, with no duration_s of its own, fails up front too.
    with pytest.raises(ValueError, match=r"spike ends at at_s \+ for_s = 12"):
        LoadSpec(URL, duration_s=10, shape={"type": "spike", "base_rate": 1, "peak_rate": 5, "at_s": 10, "for_s": 2})


# -- the driver hands shapes and sources to Locust ---------------------------------------


def test_without_shape_or_source_the_command_and_environment_are_unchanged(monkeypatch, tmp_path):
    monkeypatch.setenv("SHADOWLINE_LOAD_SHAPE", '{"type": "constant", "rate": 1}')  # stray: must not leak
    spec = LoadSpec(URL, rate=40, duration_s=3, users=4)
    assert spec.shape is None and spec.source is None and spec.run_time_s == 3
    cmd = driver._command(spec, tmp_path)
    assert cmd[cmd.index("-u") + 1] == "4" and cmd[cmd.index("--run-time") + 1] == "3s"
    env = driver._child_env(spec)
    assert "SHADOWLINE_LOAD_SHAPE" not in env and "SHADOWLINE_LOAD_SOURCE" not in env
    assert env["SHADOWLINE_LOAD_RATE"] == "40.0" and env["SHADOWLINE_LOAD_USERS"] == "4"


def test_a_shape_and_source_reach_locust_as_json(tmp_path, monkeypatch):
    (tmp_path / "reqs.jsonl").write_text('{"inputs": []}\n')
    monkeypatch.chdir(tmp_path)
    shape = {"type": "step", "steps": [{"rate": 5, "duration_s": 2}, {"rate": 9, "duration_s": 1}]}
    spec = LoadSpec(URL, users=3, shape=shape, source={"type": "file", "path": "reqs.jsonl"})
    shape["steps"].clear()  # the spec kept its own checked copy
    assert spec.run_time_s == 3
    cmd = driver._command(spec, tmp_path)
    assert "--run-time" not in cmd and "-u" not in cmd  # the LoadTestShape drives the run
    env = driver._child_env(spec)
    assert json.loads(env["SHADOWLINE_LOAD_SHAPE"]) == {
        "type": "step", "steps": [{"rate": 5.0, "duration_s": 2.0}, {"rate": 9.0, "duration_s": 1.0}],
        "users": 3, "duration_s": 3.0,
    }
    assert env["SHADOWLINE_LOAD_SPAWN_RATE"] == "3.0"
    # The path is absolute: Locust runs in the output directory, not here.
    assert json.loads(env["SHADOWLINE_LOAD_SOURCE"]) == {
        "type": "file", "path": str(tmp_path / "reqs.jsonl"), "format": "jsonl",
    }


def test_shapes_and_sources_do_not_import_locust():
    assert "locust" not in sys.modules and "gevent" not in sys.modules


# -- synthetic source ----------------------------------------------------------------------

SCHEMA = [
    {"name": "age", "type": "int", "min": 18, "max": 90},
    {"name": "income", "type": "float", "mean": 50_000, "std": 20_000, "min": 0, "missing": 0.1},
    {"name": "score", "type": "float", "min": -1, "max": 1},
    {"name": "visits", "type": "int", "mean": 3, "std": 2, "min": 0},
    {"name": "plan", "type": "category", "categories": ["free", "pro", "team"], "weights": [6, 3, 1], "missing": 0.25},
    {"name": "ratio", "type": "float", "min": 0, "max": 1, "datatype": "FP64"},
]


def test_synthetic_rows_are_reproducible_from_the_seed():
    features = sources.validate_features(SCHEMA)
    a = sources.synthetic_request(features, np.random.default_rng([3, 0, 1]), "r1", 5)
    b = sources.synthetic_request(features, np.random.default_rng([3, 0, 1]), "r1", 5)
    c = sources.synthetic_request(features, np.random.default_rng([3, 0, 2]), "r1", 5)
    assert json.dumps(a) == json.dumps(b) != json.dumps(c)


def test_synthetic_rows_respect_ranges_categories_and_missing_rate():
    features = sources.validate_features(SCHEMA)
    n = 20_000
    cols = sources.synthetic_columns(features, n, np.random.default_rng(0))
    assert set(cols) == {f["name"] for f in SCHEMA} and all(len(v) == n for v in cols.values())

    age = cols["age"]
    assert all(isinstance(v, int) and 18 <= v <= 90 for v in age)
    assert min(age) == 18 and max(age) == 90  # both ends included

    income = [v for v in cols["income"] if v is not None]
    assert abs(1 - len(income) / n - 0.1) < 0.015
    assert min(income) >= 0 and abs(np.mean(income) - 50_000) < 1_000 and abs(np.std(income) - 20_000) < 1_000

    score = np.array(cols["score"])
    assert score.min() >= -1 and score.max() <= 1 and abs(score.mean()) < 0.03
    # FP32 values go out as the shortest text of their float32: short, and read back exactly.
    assert all(float(str(np.float32(v))) == v and len(repr(v)) <= 15 for v in cols["score"][:100])

    assert all(isinstance(v, int) and v >= 0 for v in cols["visits"])

    plan = [v for v in cols["plan"] if v is not None]
    assert abs(1 - len(plan) / n - 0.25) < 0.015
    freq = Counter(plan)
    assert set(freq) == {"free", "pro", "team"}
    assert freq["free"] / len(plan) == pytest.approx(0.6, abs=0.02)
    assert freq["team"] / len(plan) == pytest.approx(0.1, abs=0.02)

    assert all(0 <= v <= 1 for v in cols["ratio"])


def test_synthetic_request_is_v2_with_one_input_per_feature():
    features = sources.validate_features(SCHEMA)
    req = sources.synthetic_request(features, np.random.default_rng(1), "load-1", 4)
    assert req["id"] == "load-1"
    assert [i["name"] for i in req["inputs"]] == [f["name"] for f in SCHEMA]
    types = {i["name"]: i["datatype"] for i in req["inputs"]}
    assert types == {"age": "INT64", "income": "FP32", "score": "FP32", "visits": "INT64", "plan": "BYTES", "ratio": "FP64"}
    assert all(i["shape"] == [4] and len(i["data"]) == 4 for i in req["inputs"])
    # Missing values are JSON null.
    many = sources.synthetic_request(features, np.random.default_rng(1), "x", 200)
    plan = next(i for i in many["inputs"] if i["name"] == "plan")
    assert None in plan["data"] and "null" in json.dumps(many)


def test_default_source_is_the_demo_rows():
    assert LoadSpec(URL, source={"type": "synthetic"}).source == {"type": "synthetic"}
    req = sources.demo_request(np.random.default_rng([7, 0, 0]), "load-7-w0-u0-0", 2)
    assert [i["name"] for i in req["inputs"]] == list(FEATURES)
    assert all(i["datatype"] == "FP32" and i["shape"] == [2] for i in req["inputs"])


def test_tensor_layout_is_one_rows_by_features_input():
    from proxies.demo_server import infer_request_body

    # The demo rows in the demo server's tensor layout.
    req = sources.demo_request(np.random.default_rng(5), "t1", 3, layout="tensor")
    rows = synthetic_rows(3, np.random.default_rng(5))
    assert req == json.loads(infer_request_body(rows, "tensor", "t1"))
    # A schema: rows in order, nulls kept, FP32 unless a feature is FP64.
    features = sources.validate_features([
        {"name": "a", "type": "int", "min": 0, "max": 9},
        {"name": "b", "type": "float", "min": 0, "max": 1, "missing": 0.5},
    ])
    cols = sources.synthetic_columns(features, 4, np.random.default_rng(2))
    (tensor,) = sources.v2_request(features, cols, "t2", layout="tensor")["inputs"]
    assert tensor["name"] == "features" and tensor["shape"] == [4, 2] and tensor["datatype"] == "FP32"
    assert tensor["data"] == [v for r in range(4) for v in (cols["a"][r], cols["b"][r])]
    spec = LoadSpec(URL, source={"type": "synthetic", "layout": "tensor", "features": SCHEMA[:4]})
    assert spec.source["layout"] == "tensor"
    with pytest.raises(ValueError, match=r"source.features\[4\] \(plan\): the tensor layout takes numeric features only"):
        LoadSpec(URL, source={"type": "synthetic", "layout": "tensor", "features": SCHEMA})
    with pytest.raises(ValueError, match=r"source.layout must be one of named, tensor"):
        LoadSpec(URL, source={"type": "synthetic", "layout": "columns"})


def test_feature_schema_validation_names_the_field():
    cases = [
        ([], r"source.features must be a non-empty list"),
        ([{"name": "a", "type": "float"}], r"source.features\[0\] \(a\): a float feature needs min and max"),
        ([{"name": "a", "type": "flaot", "min": 0, "max": 1}], r"source.features\[0\] \(a\).type must be one of"),
        ([{"name": "a", "type": "float", "min": 2, "max": 1}], r"\(a\): min \(2\) is above max \(1\)"),
        ([{"name": "a", "type": "float", "mean": 0}], r"\(a\): give mean and std together"),
        ([{"name": "a", "type": "int", "min": 0.2, "max": 0.8}], "no whole number"),
        ([{"name": "a", "type": "float", "min": 0, "max": 1, "missing": 1.5}], r"\(a\).missing must be a rate in \[0, 1\]"),
        ([{"name": "c", "type": "category", "categories": []}], r"\(c\).categories must be a non-empty list of strings"),
        ([{"name": "c", "type": "category", "categories": ["x"], "min": 0}], "takes categories"),
        ([{"name": "c", "type": "category", "categories": ["x", "y"], "weights": [1]}], r"\(c\).weights must be a list of 2"),
        ([{"name": "c", "type": "category", "categories": ["x"], "datatype": "FP32"}], r"\(c\).datatype must be one of BYTES"),
        ([{"name": "a", "type": "float", "min": 0, "max": 1}, {"name": "a", "type": "int", "min": 0, "max": 1}], r"source.features\[1\].name 'a' is used twice"),
        ([{"name": "a", "type": "float", "min": 0, "max": 1, "stdev": 1}], r"unknown key\(s\) 'stdev'"),
    ]
    for features, message in cases:
        with pytest.raises(ValueError, match=message):
            LoadSpec(URL, source={"type": "synthetic", "features": features})
    with pytest.raises(ValueError, match=r"source.type must be one of synthetic, file"):
        LoadSpec(URL, source={"type": "kafka"})


# -- file source ---------------------------------------------------------------------------


def test_jsonl_records_keep_bodies_paths_and_headers(tmp_path):
    raw0 = '{"id": "a",  "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.50]}]}'
    lines = [
        raw0,
        "",  # blank lines are skipped
        json.dumps({"body": "plain text", "path": "/v1/models/m:predict", "method": "put",
                    "headers": {"X-Tenant": "t1", "Host": "elsewhere", "Content-Length": "3", "x-request-id": "old"}}),
        json.dumps({"body": {"instances": [[1, 2]]}, "path": "http://other.example:81/v2/x?y=1"}),
        '[1, 2]',
    ]
    path = tmp_path / "reqs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    source = sources.validate_source({"type": "file", "path": str(path)})
    assert source["format"] == "jsonl"
    recs = sources.load_records(source)
    assert [r.body for r in recs] == [raw0.encode(), b"plain text", b'{"instances":[[1,2]]}', b"[1, 2]"]
    assert [r.path for r in recs] == [None, "/v1/models/m:predict", "/v2/x?y=1", None]  # never another host
    assert [r.method for r in recs] == ["POST", "PUT", "POST", "POST"]
    assert recs[1].headers == {"X-Tenant": "t1"}  # connection headers and the old request id dropped
    assert len(sources.load_records({**source, "limit": 2})) == 2


def test_jsonl_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"inputs": []}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON request"):
        LoadSpec(URL, source={"type": "file", "path": str(bad)})
    rel = tmp_path / "rel.jsonl"
    rel.write_text(json.dumps({"body": "x", "path": "v2/models"}) + "\n")
    with pytest.raises(ValueError, match=r"rel.jsonl:1: path 'v2/models' must start with '/'"):
        LoadSpec(URL, source={"type": "file", "path": str(rel)})
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_text(json.dumps({"body": "x", "headers": {"x-a": "1\r\nevil: 2"}}) + "\n")
    with pytest.raises(ValueError, match="not a valid header line"):
        LoadSpec(URL, source={"type": "file", "path": str(crlf)})
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no requests"):
        LoadSpec(URL, source={"type": "file", "path": str(tmp_path / "empty.jsonl")})
    with pytest.raises(ValueError, match=r"source.path: .*missing.jsonl is not a file"):
        LoadSpec(URL, source={"type": "file", "path": str(tmp_path / "missing.jsonl")})
    with pytest.raises(ValueError, match=r"source.format must be one of jsonl, capture"):
        LoadSpec(URL, source={"type": "file", "path": str(bad), "format": "csv"})


def test_capture_records_are_read_in_order_read_only(tmp_path):
    db = tmp_path / "capture.db"
    bodies = [b'{"inputs": [%d]}' % i for i in range(5)]
    routes = ["/v2/models/demo/infer", "/v2/models/other/infer?x=1", "", "/v2/models/demo/infer", "/v2/health/ready"]
    with CaptureWriter(db) as writer:
        for i, (body, route) in enumerate(zip(bodies, routes)):
            method = "GET" if "health" in route else "POST"
            writer.write(Exchange(f"r{i}", 1.7e9 + i, method, route, body, {"incumbent": ArmOutcome(200, 0.01, b"{}")}))
    before = db.read_bytes()
    spec = LoadSpec(URL, source={"type": "file", "path": str(db)})
    assert spec.source["format"] == "capture"  # sniffed from SQLite's header
    recs = sources.load_records(spec.source)
    assert [r.body for r in recs] == bodies
    assert [r.path for r in recs] == ["/v2/models/demo/infer", "/v2/models/other/infer?x=1", None,
                                      "/v2/models/demo/infer", "/v2/health/ready"]
    assert [r.method for r in recs] == ["POST"] * 4 + ["GET"]
    assert db.read_bytes() == before
    assert len(sources.load_records({**spec.source, "limit": 3})) == 3

    not_capture = tmp_path / "other.db"
    sqlite3.connect(not_capture).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(ValueError, match="not a Shadowline capture"):
        LoadSpec(URL, source={"type": "file", "path": str(not_capture)})


def test_user_slices_are_disjoint_deterministic_and_cover_the_file():
    recs = [sources.RecordedRequest(b"%d" % i) for i in range(10)]
    slices = [sources.user_slice(recs, i, 3) for i in range(3)]
    assert [[r.body for r in s] for s in slices] == [
        [b"0", b"3", b"6", b"9"], [b"1", b"4", b"7"], [b"2", b"5", b"8"],
    ]
    assert sorted(r.body for s in slices for r in s) == sorted(r.body for r in recs)
    # Fewer records than users: users share, but each still gets something.
    assert [sources.user_slice(recs[:2], i, 5)[0].body for i in range(5)] == [b"0", b"1", b"0", b"1", b"0"]
