"""The demo v2 REST app, called directly: no sockets."""

import asyncio
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from harness.demo_model import FEATURES, DemoModel, synthetic_rows
from proxies.demo_server import DemoApp, DemoKnobs, infer_request_body, parse_infer_response
from proxies.http1 import Request

INFER = b"/v2/models/demo/infer"


def call(app: DemoApp, method: bytes, target: bytes, body: bytes | dict = b""):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    return asyncio.run(app(Request(method, target, body=body)))


def infer(app: DemoApp, body: bytes | dict, target: bytes = INFER):
    return call(app, b"POST", target, body)


def error_of(response) -> str:
    payload = json.loads(response.body)
    assert set(payload) == {"error"}
    return payload["error"]


def named_inputs(rows, **overrides):
    """Named layout as a dict, so tests can break one input at a time."""
    inputs = [
        {"name": f, "shape": [len(rows)], "datatype": "FP32", "data": rows[:, i].tolist()}
        for i, f in enumerate(FEATURES)
    ]
    for item in inputs:
        item.update(overrides.get(item["name"], {}))
    return {"inputs": inputs}


ROWS = synthetic_rows(5, 11)


# --- routes ---------------------------------------------------------------------------------


def test_server_metadata_and_health():
    app = DemoApp()
    meta = call(app, b"GET", b"/v2")
    assert meta.status == 200 and meta.header(b"content-type") == b"application/json"
    assert json.loads(meta.body)["name"] == "shadowline-demo"
    assert "extensions" in json.loads(meta.body)
    assert json.loads(call(app, b"GET", b"/v2/health/live").body) == {"live": True}
    assert json.loads(call(app, b"GET", b"/v2/health/ready").body) == {"ready": True}


def test_model_metadata_lists_inputs_and_outputs():
    app = DemoApp(DemoKnobs(role="candidate"))
    meta = json.loads(call(app, b"GET", b"/v2/models/demo").body)
    assert meta["name"] == "demo" and meta["versions"] == ["2"]
    assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
    assert all(i["datatype"] == "FP32" and i["shape"] == [-1] for i in meta["inputs"])
    assert meta["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ]
    versioned = call(app, b"GET", b"/v2/models/demo/versions/2")
    assert json.loads(versioned.body) == meta


def test_model_ready_plain_and_versioned():
    app = DemoApp()
    for target in (b"/v2/models/demo/ready", b"/v2/models/demo/versions/1/ready", b"/v2/models/demo/ready?x=1"):
        response = call(app, b"GET", target)
        assert response.status == 200 and json.loads(response.body) == {"name": "demo", "ready": True}


def test_head_is_routed_like_get():
    app = DemoApp()
    for target in (b"/v2", b"/v2/health/ready", b"/v2/models/demo"):
        assert call(app, b"HEAD", target).body == call(app, b"GET", target).body
    assert call(app, b"HEAD", b"/v2/models/nope").status == 404


@pytest.mark.parametrize(
    "target, message",
    [
        (b"/v2/models/other", "unknown model 'other'"),
        (b"/v2/models/other/infer", "unknown model 'other'"),
        (b"/v2/models/demo/versions/9/ready", "no version '9'"),
        (b"/v2/models/demo/versions/9/infer", "no version '9'"),
        (b"/v2/models/demo/explain", "no route /v2/models/demo/explain"),
        (b"/v1/models/demo:predict", "no route"),
        (b"/", "no route"),
    ],
)
def test_unknown_model_version_or_route_is_404(target, message):
    response = call(DemoApp(), b"POST" if target.endswith(b"infer") else b"GET", target, b"{}")
    assert response.status == 404
    assert message in error_of(response)


@pytest.mark.parametrize(
    "method, target, allowed",
    [
        (b"GET", INFER, b"POST"),
        (b"HEAD", b"/v2/models/demo/versions/1/infer", b"POST"),
        (b"POST", b"/v2/health/live", b"GET, HEAD"),
        (b"DELETE", b"/v2/models/demo", b"GET, HEAD"),
        (b"PUT", b"/v2", b"GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(method, target, allowed):
    response = call(DemoApp(), method, target)
    assert response.status == 405
    assert response.header(b"allow") == allowed
    assert method.decode() in error_of(response)


# --- inference ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["named", "tensor"])
def test_infer_both_layouts_match_the_model(layout):
    app = DemoApp(DemoKnobs(role="candidate", variant="broken"))
    response = infer(app, infer_request_body(ROWS, layout))
    assert response.status == 200 and response.header(b"content-type") == b"application/json"
    payload = json.loads(response.body)
    assert payload["model_name"] == "demo" and payload["model_version"] == "2"
    assert "id" not in payload
    label, probabilities = payload["outputs"]
    assert label["name"] == "label" and label["datatype"] == "INT64" and label["shape"] == [5]
    assert probabilities["name"] == "probabilities" and probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [5, 2] and len(probabilities["data"]) == 10  # flat, row-major
    labels, probs = parse_infer_response(response.body)
    expected_labels, expected_probs = DemoModel("candidate", "broken").predict(ROWS)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(probs, expected_probs)  # FP32 values survive JSON exactly


def test_nested_data_and_column_shapes_give_the_same_answer():
    app = DemoApp()
    flat = infer(app, infer_request_body(ROWS, "tensor")).body
    nested_tensor = {"inputs": [{"name": "features", "shape": [5, 6], "datatype": "FP64", "data": ROWS.tolist()}]}
    assert infer(app, nested_tensor).body == flat
    columns = named_inputs(ROWS)
    for item in columns["inputs"]:
        item["shape"] = [5, 1]
        item["data"] = [[v] for v in item["data"]]
    assert infer(app, columns).body == flat
    flat_columns = named_inputs(ROWS, age={"shape": [5, 1]})  # [N, 1] with flat data
    assert infer(app, flat_columns).body == flat


def test_integer_datatypes_and_input_order_do_not_matter():
    app = DemoApp()
    ages = [int(v) for v in ROWS[:, 0]]
    body = named_inputs(ROWS, age={"datatype": "INT64", "data": ages}, num_products={"datatype": "INT32"})
    body["inputs"].reverse()
    assert infer(app, body).body == infer(app, infer_request_body(ROWS)).body


def test_id_is_echoed_and_versioned_route_infers():
    app = DemoApp()
    response = infer(app, infer_request_body(ROWS, request_id="req-42"), b"/v2/models/demo/versions/1/infer")
    assert response.status == 200
    assert json.loads(response.body)["id"] == "req-42"


def test_requested_outputs_and_unknown_parameters():
    app = DemoApp()
    body = named_inputs(ROWS)
    body["outputs"] = [{"name": "probabilities"}]
    body["parameters"] = {"content_type": "np", "whatever": 1}
    outputs = json.loads(infer(app, body).body)["outputs"]
    assert [o["name"] for o in outputs] == ["probabilities"]
    body["outputs"] = [{"name": "logits"}]
    response = infer(app, body)
    assert response.status == 400 and "logits" in error_of(response)


def bad(**overrides):
    return named_inputs(ROWS, **overrides)


def without(name):
    body = named_inputs(ROWS)
    body["inputs"] = [i for i in body["inputs"] if i["name"] != name]
    return body


def tensor(shape, data):
    return {"name": "features", "shape": shape, "datatype": "FP32", "data": data}


def with_extra(item):
    body = named_inputs(ROWS)
    body["inputs"].append(item)
    return body


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        ({"inputs": []}, "no 'inputs'"),
        ({"id": "x"}, "no 'inputs'"),
        (without("tenure_months"), "missing input 'tenure_months'"),
        (with_extra({"name": "zipcode", "shape": [5], "datatype": "FP32", "data": [1] * 5}), "unknown input 'zipcode'"),
        (with_extra({"name": "age", "shape": [5], "datatype": "FP32", "data": [1] * 5}), "input 'age' is given twice"),
        (with_extra({"shape": [5], "datatype": "FP32", "data": [1] * 5}), "'name'"),
        (bad(income={"shape": [4]}), "input 'income' declares shape [4]"),
        (bad(income={"shape": [5, 2]}), "input 'income' declares shape [5, 2]"),
        (bad(income={"shape": "5"}), "input 'income' has invalid shape"),
        (bad(balance={"shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}), "'balance' must have shape [N] or [N, 1]"),
        (bad(balance={"shape": [3], "data": [1, 2, 3]}), "input 'balance' has 3 rows"),
        (bad(credit_score={"datatype": "BYTES"}), "input 'credit_score' has datatype 'BYTES'"),
        (bad(credit_score={"datatype": None}), "input 'credit_score' has datatype None"),
        (bad(age={"data": ["a", "b", "c", "d", "e"]}), "input 'age' holds non-numeric data"),
        (bad(age={"data": ["1", 2, 3, 4, 5]}), "input 'age' holds non-numeric data"),
        (bad(age={"data": [1, 2, {"x": 1}, 4, 5]}), "input 'age' holds non-numeric data"),
        (bad(age={"data": [True, False, True, True, True]}), "input 'age' holds non-numeric data"),
        (bad(age={"data": [None, True, 1, 2, 3]}), "input 'age' holds non-numeric data"),
        (bad(age={"data": [2**1100, 1, 2, 3, 4]}), "input 'age' holds a number out of range"),
        (bad(age={"shape": [5, 1], "data": [[1], [2, 3], [4], [5]]}), "input 'age' has ragged nested data"),
        (bad(age={"data": "1,2,3"}), "input 'age' has no 'data' list"),
        (bad(age={"datatype": "INT64", "data": [1.5, 2, 3, 4, 5]}), "'age' is INT64 but holds non-integer values"),
        (bad(**{f: {"shape": [0], "data": []} for f in FEATURES}), "input 'age' has no rows"),
        (with_extra(tensor([5, 6], ROWS.tolist())), "input 'age' cannot be sent alongside"),
        ({"inputs": [tensor([5, 6], ROWS.tolist())] * 2}, "input 'features' is given twice"),
        ({"inputs": [tensor([5, 4], ROWS[:, :4].tolist())]}, "input 'features' must have shape [N, 6]"),
        ({"inputs": [tensor([5, 6], [1.0] * 29)]}, "input 'features' declares shape [5, 6] (30 values) but holds 29"),
        ({"inputs": [tensor([0, 6], [])]}, "input 'features' has no rows"),
        ({"id": 7, **named_inputs(ROWS)}, "'id' must be a string"),
    ],
)
def test_bad_requests_are_400_naming_the_problem(body, message):
    response = infer(DemoApp(), body)
    assert response.status == 400
    assert message in error_of(response)


# --- NaN, Inf and null ----------------------------------------------------------------------


def with_token(token: str, feature: str = "income", row: int = 2) -> bytes:
    """A named-layout body with a raw JSON token (NaN, Infinity, null) in one cell."""
    data = [str(float(v)) for v in ROWS[:, FEATURES.index(feature)]]
    data[row] = token
    body = named_inputs(ROWS)
    for item in body["inputs"]:
        if item["name"] == feature:
            item["data"] = "@@"
    return json.dumps(body).encode().replace(b'"@@"', ("[" + ",".join(data) + "]").encode())


@pytest.mark.parametrize(
    "token, kind", [("NaN", "NaN or null"), ("null", "NaN or null"), ("Infinity", "Inf"), ("-Infinity", "Inf")]
)
def test_non_finite_input_rejected_cleanly_naming_the_input(token, kind):
    response = infer(DemoApp(), with_token(token, "income", 2))
    assert response.status == 400
    assert error_of(response) == f"input 'income' holds {kind} at row 2; this model needs finite numbers"


def test_non_finite_in_the_tensor_layout_names_the_feature():
    rows = ROWS.copy()
    rows[3, FEATURES.index("balance")] = np.nan
    response = infer(DemoApp(), infer_request_body(rows, "tensor"))
    assert response.status == 400 and "input 'balance' holds NaN or null at row 3" in error_of(response)


@pytest.mark.parametrize("token", ["NaN", "null", "Infinity"])
def test_non_finite_input_crashes_a_careless_server(token):
    response = infer(DemoApp(DemoKnobs(nan_behaviour="crash")), with_token(token, "age", 0))
    assert response.status == 500
    assert "NaN" in error_of(response) and "age" not in error_of(response)


# --- knobs ----------------------------------------------------------------------------------


def statuses(app: DemoApp, n: int) -> list[int]:
    body = infer_request_body(ROWS[:1])

    async def run():
        return [(await app(Request(b"POST", INFER, body=body))).status for _ in range(n)]

    return asyncio.run(run())


def test_error_rate_is_honoured_and_reproducible_from_the_seed():
    knobs = DemoKnobs(error_rate=0.3, seed=5)
    first, second = statuses(DemoApp(knobs), 2000), statuses(DemoApp(knobs), 2000)
    assert first == second
    assert set(first) == {200, 500}
    assert 0.26 <= first.count(500) / 2000 <= 0.34
    assert statuses(DemoApp(DemoKnobs(error_rate=0.3, seed=6)), 2000) != first


def test_injected_error_body_is_a_protocol_error():
    response = infer(DemoApp(DemoKnobs(error_rate=1.0)), infer_request_body(ROWS))
    assert response.status == 500 and "injected error" in error_of(response)


def test_knobs_leave_health_and_metadata_alone():
    app = DemoApp(DemoKnobs(error_rate=1.0, hang_rate=0.0, latency_ms=500))
    started = time.perf_counter()
    assert call(app, b"GET", b"/v2/health/ready").status == 200
    assert time.perf_counter() - started < 0.1
    assert app.inference_count == 0


def test_hang_never_answers():
    app = DemoApp(DemoKnobs(hang_rate=1.0))
    body = infer_request_body(ROWS)

    async def run():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(app(Request(b"POST", INFER, body=body)), 0.2)

    asyncio.run(run())


def test_hang_rate_is_honoured():
    app = DemoApp(DemoKnobs(hang_rate=0.25, error_rate=0.25, seed=3))
    body = infer_request_body(ROWS[:1])

    async def run():
        tasks = [asyncio.create_task(app(Request(b"POST", INFER, body=body))) for _ in range(2000)]
        await asyncio.sleep(0.05)
        done = [t for t in tasks if t.done()]
        for t in tasks:
            t.cancel()
        return len(tasks) - len(done), [t.result().status for t in done]

    hung, answered = asyncio.run(run())
    assert 0.21 <= hung / 2000 <= 0.29
    assert 0.21 <= answered.count(500) / 2000 <= 0.29
    assert answered.count(200) + answered.count(500) == len(answered)


def test_latency_adds_at_least_the_fixed_delay_plus_jitter():
    app = DemoApp(DemoKnobs(latency_ms=40, jitter_ms=20, seed=1))
    body = infer_request_body(ROWS)

    async def timed():
        started = time.perf_counter()
        response = await app(Request(b"POST", INFER, body=body))
        return response.status, time.perf_counter() - started

    async def run():  # concurrently: sleeps must not block the loop
        return await asyncio.gather(*(timed() for _ in range(20)))

    started = time.perf_counter()
    results = asyncio.run(run())
    assert all(status == 200 and elapsed >= 0.040 for status, elapsed in results)
    assert max(elapsed for _, elapsed in results) > 0.045  # jitter drew something
    assert time.perf_counter() - started < 0.5  # twenty requests overlapped


def test_crash_after_serves_that_many_then_exits(monkeypatch):
    class Crashed(Exception):
        pass

    def crash(self):
        raise Crashed

    monkeypatch.setattr(DemoApp, "_crash", crash)
    app = DemoApp(DemoKnobs(crash_after=2))
    assert call(app, b"GET", b"/v2/health/live").status == 200  # not counted
    assert statuses(app, 2) == [200, 200]
    with pytest.raises(Crashed):
        statuses(app, 1)


def test_crash_after_really_exits_the_process():
    script = (
        "import asyncio\n"
        "from proxies.demo_server import DemoApp, DemoKnobs\n"
        "from proxies.http1 import Request\n"
        "app = DemoApp(DemoKnobs(crash_after=1))\n"
        "async def main():\n"
        "    for _ in range(3):\n"
        "        r = await app(Request(b'POST', b'/v2/models/demo/infer', body=b'{}'))\n"
        "        print(r.status, flush=True)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stdout.split() == ["400"]
    assert "crash_after=1" in done.stderr


@pytest.mark.parametrize(
    "knobs, field",
    [
        ({"role": "baseline"}, "role"),
        ({"variant": "sneaky"}, "variant"),
        ({"nan_behaviour": "ignore"}, "nan_behaviour"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"hang_rate": -0.1}, "hang_rate"),
        ({"error_rate": 0.6, "hang_rate": 0.6}, "error_rate \\+ hang_rate"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"crash_after": -1}, "crash_after"),
    ],
)
def test_bad_knobs_are_named(knobs, field):
    with pytest.raises(ValueError, match=field):
        DemoKnobs(**knobs)


def test_version_defaults_by_role():
    assert DemoKnobs().version == "1"
    assert DemoKnobs(role="candidate").version == "2"
    assert DemoKnobs(role="candidate", version="2025-06").version == "2025-06"


# --- client helpers -------------------------------------------------------------------------


def test_request_body_helpers():
    named = json.loads(infer_request_body(ROWS, request_id="r1"))
    assert named["id"] == "r1" and [i["name"] for i in named["inputs"]] == list(FEATURES)
    assert named["inputs"][0] == {"name": "age", "shape": [5], "datatype": "FP32", "data": ROWS[:, 0].tolist()}
    body = json.loads(infer_request_body(ROWS, "tensor"))
    assert "id" not in body
    assert body["inputs"] == [tensor([5, 6], ROWS.ravel().tolist())]
    with pytest.raises(ValueError, match="layout"):
        infer_request_body(ROWS, "columns")
    with pytest.raises(ValueError, match="shape"):
        infer_request_body(ROWS[:, :3])


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"error": "boom"}', "not an infer response"),
        (b'{"outputs": 5}', "not an infer response"),
        (b'{"model_name": "demo", "outp', "Unterminated string|Expecting"),  # truncated
        (b'{"outputs": [{"name": "label", "data": [1]}]}', "probabilities"),
        (b'{"outputs": [{"name": "label", "data": [1]}, {"name": "probabilities"}]}', "probabilities"),
        (b'{"outputs": [{"name": "label", "data": ["x"]}, {"name": "probabilities", "data": [0.5, 0.5]}]}', "malformed"),
        (b'{"outputs": [{"name": "label", "data": [1, 0]}, {"name": "probabilities", "data": [0.5, 0.5]}]}', "2 labels"),
    ],
)
def test_parse_infer_response_raises_value_error_on_anything_else(body, message):
    with pytest.raises(ValueError, match=message):
        parse_infer_response(body)
