"""The load over gRPC, without sockets: a user's calls carry the same rows as over HTTP (same
source, same seed), as ModelInfer messages; recorded gRPC calls replay byte for byte; the
driver takes grpc:// targets on loopback only and tells the Locust process the protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.capture import CaptureWriter
from harness.codecs import get_codec
from harness.load import LoadSpec, driver, loopback_host
from harness.load.calls import V2_GRPC_INFER, GrpcCall, HttpCall, UserStream, grpc_channel_target, grpc_infer_message
from harness.load.sources import RecordedRequest, check_replay_protocol, demo_request, validate_features, validate_source
from harness.records import ArmOutcome, Exchange

FEATURES = [
    {"name": "f32", "type": "float", "min": -1, "max": 1},
    {"name": "f64", "type": "float", "datatype": "FP64", "mean": 0, "std": 3},
    {"name": "i64", "type": "int", "min": 0, "max": 100},
    {"name": "i32", "type": "int", "datatype": "INT32", "min": -5, "max": 5},
    {"name": "city", "type": "category", "categories": ["oslo", "lima", "pune"]},
]


def _streams(**kw) -> tuple[UserStream, UserStream]:
    common = dict(seed=7, worker=1, user_index=2, pool=4, model="demo", rows=5) | kw
    return UserStream(protocol="http", **common), UserStream(protocol="grpc", **common)


def _same_features(http: HttpCall, grpc: GrpcCall) -> None:
    over_http = get_codec("v2").decode_request(http.body.encode())
    over_grpc = get_codec("v2grpc").decode_request(grpc.body)
    assert over_grpc.names == over_http.names
    for name in over_http.names:
        a, b = over_http.columns[name], over_grpc.columns[name]
        if a.dtype.kind == "f":  # FP32 goes as its shortest text over HTTP: the same float32 either way
            np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))
        else:
            assert [str(v.decode() if isinstance(v, bytes) else v) for v in b] == [str(v) for v in a]


@pytest.mark.parametrize("layout", ["named", "tensor"])
def test_the_demo_rows_are_the_same_over_http_and_grpc(layout):
    http, grpc = _streams(layout=layout)
    for _ in range(3):
        h, g = http.next(), grpc.next()
        _same_features(h, g)
        rid = json.loads(h.body)["id"]
        assert h.headers["x-request-id"] == rid
        assert g.metadata == (("x-request-id", rid),)


def test_a_feature_schema_is_the_same_over_http_and_grpc_datatypes_kept():
    http, grpc = _streams(features=validate_features(FEATURES))
    h, g = http.next(), grpc.next()
    _same_features(h, g)
    from harness.codecs.v2grpc import messages

    message = messages().ModelInferRequest.FromString(g.body)
    assert [t.datatype for t in message.inputs] == ["FP32", "FP64", "INT64", "INT32", "BYTES"]
    assert [list(t.shape) for t in message.inputs] == [[5]] * 5
    assert not message.raw_input_contents  # typed contents, as tritonclient sends by default


def test_a_grpc_call_is_a_model_infer_message_for_the_model():
    _, grpc = _streams(model="fraud-v3")
    call = grpc.next()
    assert call.method == V2_GRPC_INFER == "/inference.GRPCInferenceService/ModelInfer"
    assert call.name == "v2 grpc infer"
    from harness.codecs.v2grpc import messages

    message = messages().ModelInferRequest.FromString(call.body)
    assert message.model_name == "fraud-v3"
    assert message.id == "load-7-w1-u2-0"
    assert grpc.next().metadata == (("x-request-id", "load-7-w1-u2-1"),)


def test_the_http_stream_is_the_bodies_the_load_always_sent():
    http, _ = _streams()
    rng = np.random.default_rng([7, 1, 2])
    for k in range(2):
        call = http.next()
        assert call == HttpCall(
            "POST", "/v2/models/demo/infer", json.dumps(demo_request(rng, f"load-7-w1-u2-{k}", 5)),
            {"content-type": "application/json", "x-request-id": f"load-7-w1-u2-{k}"}, "v2 infer",
        )


def test_fp16_inputs_go_raw_since_typed_contents_have_no_fp16_field():
    payload = {"id": "x", "inputs": [
        {"name": "a", "shape": [2], "datatype": "FP16", "data": [0.5, 1.5]},
        {"name": "b", "shape": [2], "datatype": "FP32", "data": [2.0, 3.0]},
    ]}
    from harness.codecs.v2grpc import messages

    message = messages().ModelInferRequest.FromString(grpc_infer_message(payload, "demo"))
    assert len(message.raw_input_contents) == 2
    assert np.frombuffer(message.raw_input_contents[0], "<f2").tolist() == [0.5, 1.5]


def test_a_null_cannot_be_sent_over_grpc():
    payload = {"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0, None]}]}
    with pytest.raises(ValueError, match="input 'a' holds a null"):
        grpc_infer_message(payload, "demo")


def test_recorded_grpc_calls_replay_byte_for_byte_to_their_method(tmp_path):
    bodies = [grpc_infer_message(demo_request(np.random.default_rng(i), f"r{i}", 2), "demo") for i in range(3)]
    db = tmp_path / "capture.db"
    with CaptureWriter(db) as writer:
        for i, body in enumerate(bodies):
            writer.write(Exchange(f"r{i}", 1.7e9 + i, "GRPC", V2_GRPC_INFER, body, {"incumbent": ArmOutcome(0, 0.01, b"")}))
    source = validate_source({"type": "file", "path": str(db)})
    check_replay_protocol(source, "grpc")
    from harness.load.sources import load_records

    stream = UserStream(protocol="grpc", user_index=1, pool=2, records=load_records(source))
    calls = [stream.next() for _ in range(3)]
    assert [c.body for c in calls] == [bodies[1], bodies[1], bodies[1]]  # user 1 of 2: records 1, 3, ... cycled
    assert {c.method for c in calls} == {V2_GRPC_INFER} and calls[0].name == "replay"
    with pytest.raises(ValueError, match="holds gRPC calls .* replay it over gRPC"):
        check_replay_protocol(source, "http")


def test_json_lines_and_nulls_are_refused_over_grpc(tmp_path):
    lines = tmp_path / "requests.jsonl"
    lines.write_text(json.dumps({"inputs": []}) + "\n")
    source = validate_source({"type": "file", "path": str(lines)})
    check_replay_protocol(source, "http")
    with pytest.raises(ValueError, match=r"source\.path: .* holds HTTP requests; over gRPC only a capture"):
        check_replay_protocol(source, "grpc")
    synthetic = validate_source({"type": "synthetic", "features": [{"name": "x", "type": "float", "min": 0, "max": 1, "missing": 0.1}]})
    with pytest.raises(ValueError, match=r"source\.features\[0\] \(x\)\.missing: a v2 gRPC tensor cannot carry a null"):
        check_replay_protocol(synthetic, "grpc")
    with pytest.raises(ValueError, match="missing"):
        LoadSpec("grpc://127.0.0.1:9000", protocol="grpc", source=synthetic)


def test_grpc_targets_and_loopback():
    assert grpc_channel_target("grpc://127.0.0.1:9000") == grpc_channel_target("127.0.0.1:9000") == "127.0.0.1:9000"
    assert grpc_channel_target("[::1]:9000") == "[::1]:9000"
    for bad in ("http://127.0.0.1:9000", "grpc://127.0.0.1", "grpc://127.0.0.1:9000/x", "grpcs://127.0.0.1:9000"):
        with pytest.raises(ValueError):
            grpc_channel_target(bad)
    assert loopback_host("grpc://localhost:9000", "grpc") == "localhost"
    with pytest.raises(ValueError, match="not a loopback address"):
        loopback_host("10.0.0.1:9000", "grpc")
    with pytest.raises(ValueError, match="must be grpc://host:port"):
        LoadSpec("http://127.0.0.1:9000", protocol="grpc")
    with pytest.raises(ValueError, match="an http\\(s\\) URL"):
        LoadSpec("grpc://127.0.0.1:9000")
    with pytest.raises(ValueError, match="protocol must be one of http, grpc"):
        LoadSpec("http://127.0.0.1:9000", protocol="ftp")


def test_the_locust_process_is_told_the_protocol():
    spec = LoadSpec("grpc://127.0.0.1:9000", protocol="grpc", rate=20, duration_s=2)
    env = driver._child_env(spec)
    assert env["SHADOWLINE_LOAD_PROTOCOL"] == "grpc"
    assert driver._command(spec, driver.Path("/tmp"))[driver._command(spec, driver.Path("/tmp")).index("--host") + 1] == "grpc://127.0.0.1:9000"
    assert driver._child_env(LoadSpec("http://127.0.0.1:9000"))["SHADOWLINE_LOAD_PROTOCOL"] == "http"


def test_a_recorded_request_without_a_path_goes_to_model_infer():
    stream = UserStream(protocol="grpc", records=[RecordedRequest(b"\x0a\x04demo", None, "GRPC")])
    assert stream.next().method == V2_GRPC_INFER
