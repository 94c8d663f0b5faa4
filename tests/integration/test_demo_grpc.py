"""The demo model over v2 gRPC: real grpc.aio servers (child processes on 127.0.0.1, port 0)
and a real grpc client."""

from __future__ import annotations

import asyncio
import sys
import time

import grpc
import numpy as np
import pytest

from harness.codecs.v2grpc import V2GrpcCodec, tensor_to_contents
from harness.demo_model import FEATURES, synthetic_rows
from harness.procs import spawn
from proxies.demo_grpc import infer_request_message, parse_infer_response
from proxies.demo_server import DemoApp, DemoKnobs, infer_request_body
from proxies.demo_server import parse_infer_response as parse_rest_response
from harness.codecs.grpc_v2 import MESSAGES, method_path, pb
from proxies.http1 import Request

SERVERS = {
    "incumbent": [],
    "candidate": ["--role", "candidate", "--variant", "broken"],
    "nan_crash": ["--nan-behaviour", "crash"],
    "hang": ["--hang-rate", "1"],
    "error": ["--error-rate", "1"],
}


def start(name: str, args: list[str], log_dir):
    argv = [sys.executable, "-m", "proxies.demo_grpc", "--listen", "127.0.0.1:0", *args]
    return spawn(name, argv, log_dir / f"{name}.log")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("demo-grpc-logs")
    started = {}
    try:
        for name, args in SERVERS.items():
            started[name] = start(name, args, log_dir)
        channels = {name: grpc.insecure_channel(f"127.0.0.1:{child.port}") for name, child in started.items()}
        yield channels
        for channel in channels.values():
            channel.close()
    finally:
        for child in started.values():
            child.stop()


def call(channel: grpc.Channel, method: str, request, timeout: float = 5.0):
    request_cls, response_cls = MESSAGES[method]
    stub = channel.unary_unary(method_path(method), request_serializer=request_cls.SerializeToString,
                               response_deserializer=response_cls.FromString)
    return stub(request, timeout=timeout)


def infer(channel: grpc.Channel, body: bytes, timeout: float = 5.0) -> bytes:
    return channel.unary_unary(method_path("ModelInfer"))(body, timeout=timeout)


def rest_labels(rows: np.ndarray, **knobs) -> np.ndarray:
    app = DemoApp(DemoKnobs(**knobs))
    response = asyncio.run(app(Request(b"POST", b"/v2/models/demo/infer", body=infer_request_body(rows))))
    assert response.status == 200
    return parse_rest_response(response.body)[0]


def test_health_and_metadata(servers):
    channel = servers["incumbent"]
    assert call(channel, "ServerLive", pb.ServerLiveRequest()).live is True
    assert call(channel, "ServerReady", pb.ServerReadyRequest()).ready is True
    assert call(channel, "ModelReady", pb.ModelReadyRequest(name="demo")).ready is True
    assert call(channel, "ModelReady", pb.ModelReadyRequest(name="demo", version="1")).ready is True
    assert call(channel, "ServerMetadata", pb.ServerMetadataRequest()).name == "shadowline-demo"
    meta = call(channel, "ModelMetadata", pb.ModelMetadataRequest(name="demo"))
    assert list(meta.versions) == ["1"]
    assert [i.name for i in meta.inputs] == list(FEATURES)
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 2])]
    assert list(call(servers["candidate"], "ModelMetadata", pb.ModelMetadataRequest(name="demo")).versions) == ["2"]
    for request in (pb.ModelReadyRequest(name="other"), pb.ModelReadyRequest(name="demo", version="9")):
        with pytest.raises(grpc.RpcError) as info:
            call(channel, "ModelReady", request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    # The knobs apply to inference only: health keeps telling the truth.
    assert call(servers["hang"], "ServerReady", pb.ServerReadyRequest(), timeout=2).ready is True
    assert call(servers["error"], "ServerLive", pb.ServerLiveRequest()).live is True


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("layout", ["named", "tensor"])
@pytest.mark.parametrize("arm", ["incumbent", "candidate"])
def test_infer_matches_the_rest_demo(servers, arm, layout, raw):
    rows = synthetic_rows(64, seed=3)
    body = infer(servers[arm], infer_request_message(rows, layout, raw, request_id="abc"))
    response = pb.ModelInferResponse.FromString(body)
    assert response.id == "abc" and response.model_name == "demo"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("label", "INT64", [64]), ("probabilities", "FP32", [64, 2])]
    assert len(response.raw_output_contents) == (2 if raw else 0)  # answers in the form it was asked
    labels, probabilities = parse_infer_response(body)
    knobs = {"role": "candidate", "variant": "broken"} if arm == "candidate" else {}
    assert labels.tolist() == rest_labels(rows, **knobs).tolist()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    prediction = V2GrpcCodec().decode_response(body)  # the judge reads it too
    assert prediction.labels.tolist() == labels.tolist()


def test_incumbent_and_broken_candidate_disagree(servers):
    rows = synthetic_rows(400, seed=0)
    body = infer_request_message(rows)
    a = parse_infer_response(infer(servers["incumbent"], body))[0]
    b = parse_infer_response(infer(servers["candidate"], body))[0]
    assert 0.3 < np.mean(a != b) < 0.5  # the broken variant flips about 40% of labels


def test_raw_output_on_request_and_integer_inputs(servers):
    rows = synthetic_rows(5, seed=1)
    request = pb.ModelInferRequest.FromString(infer_request_message(rows, "tensor", datatype="INT64"))
    request.parameters["raw_output"].bool_param = True
    request.outputs.add(name="label")
    response = pb.ModelInferResponse.FromString(infer(servers["incumbent"], request.SerializeToString()))
    assert [o.name for o in response.outputs] == ["label"] and len(response.raw_output_contents) == 1
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == rest_labels(rows).tolist()


def invalid(channel, body: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        infer(channel, body)
    return info.value


def test_nan_is_rejected_naming_the_input(servers):
    rows = synthetic_rows(4, seed=2).astype(np.float64)
    rows[2, FEATURES.index("income")] = np.nan
    for raw in (False, True):
        error = invalid(servers["incumbent"], infer_request_message(rows, raw=raw))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "input 'income' holds NaN at row 2; this model needs finite numbers"
    rows[2, FEATURES.index("income")] = np.inf
    assert "holds Inf at row 2" in invalid(servers["incumbent"], infer_request_message(rows, "tensor")).details()


def test_nan_crash_is_an_opaque_internal_error(servers):
    rows = synthetic_rows(3, seed=2).astype(np.float64)
    rows[0, 0] = np.nan
    error = invalid(servers["nan_crash"], infer_request_message(rows))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "ValueError: Input X contains NaN or infinity."
    assert "age" not in error.details()
    ok = parse_infer_response(infer(servers["nan_crash"], infer_request_message(synthetic_rows(3))))[0]
    assert ok.tolist() == rest_labels(synthetic_rows(3)).tolist()  # the process survives


def test_bad_requests_are_invalid_argument(servers):
    channel = servers["incumbent"]
    rows = synthetic_rows(2)
    missing = pb.ModelInferRequest.FromString(infer_request_message(rows))
    del missing.inputs[3]
    assert "missing input 'num_products'" in invalid(channel, missing.SerializeToString()).details()
    wrong_type = pb.ModelInferRequest(model_name="demo")
    for name in FEATURES:
        tensor = wrong_type.inputs.add(name=name, datatype="BYTES", shape=[1])
        tensor_to_contents("BYTES", np.array([b"x"], dtype=object), tensor.contents)
    error = invalid(channel, wrong_type.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "input 'age' has datatype 'BYTES'" in error.details()
    short = pb.ModelInferRequest.FromString(infer_request_message(rows, "tensor", raw=True))
    short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
    assert "raw contents have" in invalid(channel, short.SerializeToString()).details()
    assert invalid(channel, b"\x0a\xff").code() == grpc.StatusCode.INVALID_ARGUMENT
    error = invalid(channel, infer_request_message(rows, model_name="other"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_error_rate_one_is_internal(servers):
    error = invalid(servers["error"], infer_request_message(synthetic_rows(1)))
    assert error.code() == grpc.StatusCode.INTERNAL and "injected error" in error.details()


def test_hang_runs_into_the_client_deadline(servers):
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        infer(servers["hang"], infer_request_message(synthetic_rows(1)), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < time.monotonic() - t0 < 2.0
    assert call(servers["hang"], "ServerLive", pb.ServerLiveRequest()).live is True  # still serving


def test_crash_after_exits_the_process(tmp_path):
    child = start("crash", ["--crash-after", "1"], tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{child.port}") as channel:
            infer(channel, infer_request_message(synthetic_rows(1)))  # the one it serves
            with pytest.raises(grpc.RpcError) as info:
                infer(channel, infer_request_message(synthetic_rows(1)), timeout=3)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert child.process.wait(5) == 1
        assert "crash_after=1 reached" in (tmp_path / "crash.log").read_text()
    finally:
        child.stop()


def test_sigterm_stops_cleanly(tmp_path):
    child = start("stop", [], tmp_path)
    with grpc.insecure_channel(f"127.0.0.1:{child.port}") as channel:
        assert call(channel, "ServerLive", pb.ServerLiveRequest()).live is True
    assert child.stop() == 0


def test_the_demo_server_offers_reflection_of_its_service(servers):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    database = ProtoReflectionDescriptorDatabase(servers["incumbent"])
    assert "inference.GRPCInferenceService" in database.get_services()
    file = database.FindFileContainingSymbol("inference.GRPCInferenceService")
    service = next(s for s in file.service if s.name == "GRPCInferenceService")
    assert [m.name for m in service.method] == ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                "ModelMetadata", "ModelInfer"]
