"""The Open Inference Protocol v2 gRPC codec: every datatype typed and raw, roles, layouts, errors."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.codecs import DecodeError, Features
from harness.codecs.v2grpc import (
    CONTENTS_FIELDS,
    DATATYPES,
    V2GrpcCodec,
    fit_values,
    tensor_from_contents,
    tensor_from_raw,
    tensor_to_contents,
    tensor_to_raw,
)
from harness.codecs.grpc_v2 import pb

ROOT = Path(__file__).resolve().parents[2]

SAMPLES = {
    "BOOL": np.array([True, False, True, True]),
    "UINT8": np.array([0, 1, 200, 255], dtype=np.uint8),
    "UINT16": np.array([0, 1, 60000, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 1, 2**32 - 1, 7], dtype=np.uint32),
    "UINT64": np.array([0, 1, 2**64 - 1, 7], dtype=np.uint64),
    "INT8": np.array([-128, -1, 0, 127], dtype=np.int8),
    "INT16": np.array([-32768, -1, 0, 32767], dtype=np.int16),
    "INT32": np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int32),
    "INT64": np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64),
    "FP16": np.array([0.5, -1.25, 65504.0, np.inf], dtype=np.float16),
    "BF16": np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32),  # exactly representable in bfloat16
    "FP32": np.array([0.1, -1e30, np.nan, 3.5], dtype=np.float32),
    "FP64": np.array([0.1, -1e300, np.inf, 2.0**-1070], dtype=np.float64),
    "BYTES": np.array([b"", b"abc", "h\u00e9".encode(), b"\x00\xff" * 100], dtype=object),
}


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object or b.dtype == object:
        return a.tolist() == b.tolist()
    return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def test_samples_cover_every_datatype():
    assert set(SAMPLES) == set(DATATYPES)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_raw_round_trip_every_datatype(datatype):
    values = SAMPLES[datatype]
    raw = tensor_to_raw(datatype, values)
    if datatype != "BYTES":
        assert len(raw) == 4 * {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
                                "UINT32": 4, "INT32": 4, "FP32": 4}.get(datatype, 8)
    back = tensor_from_raw(datatype, [2, 2], raw, "t")
    assert same(back, values.astype(back.dtype) if datatype != "BYTES" else values)


def test_raw_is_little_endian_and_bytes_length_prefixed():
    assert tensor_to_raw("INT32", np.array([1, -2])) == struct.pack("<ii", 1, -2)
    assert tensor_to_raw("FP64", np.array([1.5])) == struct.pack("<d", 1.5)
    assert tensor_to_raw("BYTES", np.array([b"ab", b""], dtype=object)) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert tensor_to_raw("BF16", np.array([1.0])) == b"\x80\x3f"
    assert tensor_from_raw("BOOL", [3], b"\x00\x01\x02", "t").tolist() == [False, True, True]


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d in CONTENTS_FIELDS])
def test_typed_round_trip_every_datatype(datatype):
    values = SAMPLES[datatype]
    contents = pb.InferTensorContents()
    tensor_to_contents(datatype, values, contents)
    assert len(getattr(contents, CONTENTS_FIELDS[datatype])) == 4
    wire = pb.InferTensorContents.FromString(contents.SerializeToString())
    back = tensor_from_contents(datatype, [4], wire, "t")
    assert back.dtype == values.dtype
    assert same(back, values)


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_floats_have_no_typed_form(datatype):
    with pytest.raises(DecodeError, match="must be sent raw"):
        tensor_from_contents(datatype, [0], pb.InferTensorContents(), "t")


def test_tensor_errors():
    contents = pb.InferTensorContents(fp32_contents=[1.0, 2.0])
    with pytest.raises(DecodeError, match=r"declares shape \[3\] \(3 values\) but holds 2"):
        tensor_from_contents("FP32", [3], contents, "t")
    with pytest.raises(DecodeError, match="is INT64 but holds fp32_contents"):
        tensor_from_contents("INT64", [2], contents, "t")
    with pytest.raises(DecodeError, match="unknown datatype 'FLOAT'"):
        tensor_from_contents("FLOAT", [2], contents, "t")
    with pytest.raises(DecodeError, match="beyond its range"):
        tensor_from_contents("INT8", [1], pb.InferTensorContents(int_contents=[300]), "t")
    with pytest.raises(DecodeError, match="raw contents have 7 bytes"):
        tensor_from_raw("FP32", [2], b"\x00" * 7, "t")
    with pytest.raises(DecodeError, match="claims 9 bytes"):
        tensor_from_raw("BYTES", [1], b"\x09\x00\x00\x00abc", "t")
    with pytest.raises(DecodeError, match="beyond its 1 elements"):
        tensor_from_raw("BYTES", [1], b"\x01\x00\x00\x00ab", "t")
    with pytest.raises(DecodeError, match="invalid shape"):
        tensor_from_raw("FP32", [-1], b"", "t")


# ---------------------------------------------------------------------------------------------
# Responses


def response(outputs: list[tuple[str, str, list[int], np.ndarray]], raw: bool = False) -> bytes:
    message = pb.ModelInferResponse(model_name="demo", id="r1")
    for name, datatype, shape, values in outputs:
        out = message.outputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            message.raw_output_contents.append(tensor_to_raw(datatype, np.asarray(values)))
        else:
            tensor_to_contents(datatype, np.asarray(values), out.contents)
    return message.SerializeToString()


DEMO_OUTPUTS = [("label", "INT64", [3], [0, 1, 1]),
                ("probabilities", "FP32", [3, 2], [0.75, 0.25, 0.5, 0.5, 0.125, 0.875])]


@pytest.mark.parametrize("raw", [False, True])
def test_demo_response_label_and_probabilities(raw):
    p = V2GrpcCodec().decode_response(response(DEMO_OUTPUTS, raw))
    assert p.n == 3
    assert p.labels.tolist() == [0, 1, 1] and p.labels.dtype == np.int64
    assert p.probabilities.tolist() == [[0.75, 0.25], [0.5, 0.5], [0.125, 0.875]]
    assert p.values is None


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"])
def test_every_integer_datatype_is_a_label(datatype, raw):
    values = np.array([1, 0, 1])
    p = V2GrpcCodec().decode_response(response([("out", datatype, [3, 1], values)], raw))
    assert p.labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize(("datatype", "raw"), [("FP16", True), ("BF16", True), ("FP32", False), ("FP32", True),
                                               ("FP64", False), ("FP64", True)])  # half floats: raw only
def test_every_float_datatype_is_probabilities_or_score(datatype, raw):
    probs = np.array([0.25, 0.75, 0.5, 0.5])
    body = response([("p", datatype, [2, 2], probs), ("s", datatype, [2], [1.5, -2.0])], raw)
    p = V2GrpcCodec().decode_response(body)
    assert p.probabilities.tolist() == [[0.25, 0.75], [0.5, 0.5]]
    assert p.values.tolist() == [1.5, -2.0]


def test_named_outputs_and_role_rules_follow_the_rest_codec():
    outputs = [("a", "INT64", [2], [0, 1]), ("b", "INT64", [2], [1, 1]), ("names", "BYTES", [2], [b"x", b"y"])]
    with pytest.raises(DecodeError, match="several v2 outputs could be the label .*label_output="):
        V2GrpcCodec().decode_response(response(outputs))
    assert V2GrpcCodec(label_output="b").decode_response(response(outputs)).labels.tolist() == [1, 1]
    conventional = [("label", "INT32", [2], [0, 1]), ("other", "INT32", [2], [1, 1])]
    assert V2GrpcCodec().decode_response(response(conventional, raw=True)).labels.tolist() == [0, 1]
    with pytest.raises(DecodeError, match="no v2 output named 'nope'"):
        V2GrpcCodec(label_output="nope").decode_response(response(outputs))
    with pytest.raises(DecodeError, match="no v2 output is a prediction"):
        V2GrpcCodec().decode_response(response([("names", "BYTES", [2], [b"x", b"y"])]))


def test_single_probability_column_and_shapes():
    body = response([("probabilities", "FP64", [2, 1], [0.25, 1.0])])
    assert V2GrpcCodec().decode_response(body).values.tolist() == [0.25, 1.0]  # one float per row: a score
    p = V2GrpcCodec(probabilities_output="probabilities").decode_response(body)
    assert p.probabilities.tolist() == [[0.75, 0.25], [0.0, 1.0]]
    with pytest.raises(DecodeError, match="disagree on the batch size"):
        V2GrpcCodec().decode_response(response([("label", "INT64", [3], [0, 1, 1]), ("p", "FP32", [2, 2], [0.5] * 4)]))
    with pytest.raises(DecodeError, match="declares shape"):
        bad = pb.ModelInferResponse.FromString(response(DEMO_OUTPUTS))
        bad.outputs[0].shape[0] = 4
        V2GrpcCodec().decode_response(bad.SerializeToString())


def test_response_errors():
    codec = V2GrpcCodec()
    with pytest.raises(DecodeError, match="empty body"):
        codec.decode_response(b"")
    with pytest.raises(DecodeError, match="not a serialized ModelInferResponse"):
        codec.decode_response(b"\xff\xff\xff")
    with pytest.raises(DecodeError, match="no outputs"):
        codec.decode_response(pb.ModelInferResponse(id="x").SerializeToString())
    mixed = pb.ModelInferResponse.FromString(response(DEMO_OUTPUTS, raw=True))
    mixed.outputs[0].contents.int64_contents.extend([0, 1, 1])
    with pytest.raises(DecodeError, match="typed contents next to raw"):
        codec.decode_response(mixed.SerializeToString())
    short = pb.ModelInferResponse.FromString(response(DEMO_OUTPUTS, raw=True))
    del short.raw_output_contents[1]
    with pytest.raises(DecodeError, match="raw_output_contents has 1 entries for 2 tensors"):
        codec.decode_response(short.SerializeToString())
    with pytest.raises(DecodeError, match="beyond int64"):
        codec.decode_response(response([("label", "UINT64", [1], np.array([2**64 - 1], dtype=np.uint64))]))


def test_batch_records_errors_and_keeps_rows():
    bodies = [response(DEMO_OUTPUTS), b"", response(DEMO_OUTPUTS, raw=True), None]
    batch = V2GrpcCodec().decode_responses(bodies)
    assert batch.decoded.tolist() == [True, False, True, False]
    assert batch.rows.tolist() == [3, 0, 3, 0]
    assert set(batch.errors) == {1, 3}
    assert batch.prediction(2).labels.tolist() == [0, 1, 1]


# ---------------------------------------------------------------------------------------------
# Requests


def request(inputs, raw: bool = False, **fields) -> bytes:
    message = pb.ModelInferRequest(model_name="demo", id="q", **fields)
    message.outputs.add(name="label")
    message.parameters["priority"].int64_param = 3
    for name, datatype, shape, values in inputs:
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        if raw:
            message.raw_input_contents.append(tensor_to_raw(datatype, np.asarray(values)))
        else:
            tensor_to_contents(datatype, np.asarray(values), tensor.contents)
    return message.SerializeToString()


NAMED = [("age", "FP32", [3], [30.0, 41.0, 55.5]), ("products", "INT64", [3, 1], [1, 2, 3]),
         ("city", "BYTES", [3], [b"a", b"b", b"c"])]
TENSOR = [("features", "FP64", [2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]


@pytest.mark.parametrize("raw", [False, True])
def test_decode_request_named_inputs(raw):
    f = V2GrpcCodec().decode_request(request(NAMED, raw))
    assert f.n == 3 and f.names == ["age", "products", "city"]
    assert f.columns["age"].tolist() == [30.0, 41.0, 55.5] and f.columns["age"].dtype == np.float64
    assert f.columns["products"].dtype == np.int64
    assert f.columns["city"].tolist() == [b"a", b"b", b"c"]


@pytest.mark.parametrize("raw", [False, True])
def test_decode_request_tensor_layout(raw):
    f = V2GrpcCodec().decode_request(request(TENSOR, raw))
    assert f.names == ["features[0]", "features[1]", "features[2]"]
    assert f.columns["features[1]"].tolist() == [2.0, 5.0]
    named = V2GrpcCodec(feature_names=["x", "y", "z"]).decode_request(request(TENSOR, raw))
    assert named.columns["z"].tolist() == [3.0, 6.0]


def test_request_errors():
    with pytest.raises(DecodeError, match="no inputs"):
        V2GrpcCodec().decode_request(pb.ModelInferRequest(model_name="demo").SerializeToString())
    with pytest.raises(DecodeError, match="expected \\[n\\] or \\[n, k\\]"):
        V2GrpcCodec().decode_request(request([("img", "FP32", [1, 2, 2], [0.0] * 4)]))
    with pytest.raises(DecodeError, match="feature_names has 2 names"):
        V2GrpcCodec(feature_names=["x", "y"]).decode_request(request(TENSOR))
    with pytest.raises(DecodeError, match="not a serialized ModelInferRequest"):
        V2GrpcCodec().decode_request(b"\x0a\xff")


@pytest.mark.parametrize("raw", [False, True])
@pytest.mark.parametrize("inputs", [NAMED, TENSOR], ids=["named", "tensor"])
def test_encode_decode_round_trip_keeps_layout(inputs, raw):
    codec = V2GrpcCodec()
    template = request(inputs, raw)
    features = codec.decode_request(template)
    body = codec.encode_request(features, template)
    assert body == template  # unchanged features: byte for byte the same request
    again = codec.decode_request(body)
    for name in features.names:
        assert same(again.columns[name], features.columns[name])


@pytest.mark.parametrize("raw", [False, True])
def test_encode_applies_payload_faults(raw):
    codec = V2GrpcCodec()
    template = request(NAMED + [("n", "INT32", [3], [1, 2, 3])], raw)
    f = codec.decode_request(template)
    cols = dict(f.columns)
    cols["age"] = np.array([np.nan, 1.0, np.inf])  # NaN and Inf fault
    cols["products"] = np.array([1.5, 2.0, 3.0])  # non-integral value in an INT64 input
    cols["n"] = np.array(["x", None, 3], dtype=object)  # wrong type
    del cols["city"]  # missing field
    cols["extra"] = np.array([7, 8, 9])
    body = codec.encode_request(Features(cols, 3), template)
    message = pb.ModelInferRequest.FromString(body)
    assert [(t.name, t.datatype, list(t.shape)) for t in message.inputs] == [
        ("age", "FP32", [3]), ("products", "FP64", [3, 1]), ("n", "BYTES", [3]), ("extra", "INT64", [3])]
    assert bool(message.raw_input_contents) == raw
    assert message.id == "q" and message.outputs[0].name == "label" and message.parameters["priority"].int64_param == 3
    back = codec.decode_request(body)
    assert np.isnan(back.columns["age"][0]) and np.isinf(back.columns["age"][2])
    assert back.columns["products"].tolist() == [1.5, 2.0, 3.0]
    assert back.columns["n"].tolist() == [b"x", b"None", b"3"]
    assert back.columns["extra"].tolist() == [7, 8, 9]


def test_encode_tensor_narrows_when_a_column_is_missing():
    codec = V2GrpcCodec()
    template = request(TENSOR, raw=True)
    f = codec.decode_request(template)
    cols = {k: v for k, v in f.columns.items() if k != "features[1]"}
    message = pb.ModelInferRequest.FromString(codec.encode_request(Features(cols, 2), template))
    assert list(message.inputs[0].shape) == [2, 2]
    assert np.frombuffer(message.raw_input_contents[0], "<f8").tolist() == [1.0, 3.0, 4.0, 6.0]


def test_fit_values():
    assert fit_values("INT32", np.array([1.0, 2.0]))[0] == "INT32"
    assert fit_values("INT32", np.array([1.0, np.nan]))[0] == "FP64"
    assert fit_values("INT8", np.array([1, 300]))[0] == "INT64"
    assert fit_values("BOOL", np.array([0, 1]))[0] == "BOOL"
    assert fit_values("BOOL", np.array([0, 2]))[0] == "INT64"
    assert fit_values("FP32", np.array([1, None], dtype=object))[0] == "FP32"
    assert fit_values("FP32", np.array(["a"], dtype=object))[0] == "BYTES"


def test_spec_has_the_rest_codec_options():
    codec = V2GrpcCodec(label_output="label", feature_names=["a"])
    spec = codec.spec()
    assert spec == {"name": "v2grpc", "label_output": "label", "feature_names": ["a"]}
    spec.pop("name")
    assert V2GrpcCodec(**spec).options() == codec.options()


def test_checked_in_gencode_matches_the_proto(tmp_path):
    """The generated module is what the documented command makes from the checked-in .proto."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a development tool) not installed")
    target = tmp_path / "harness" / "codecs" / "grpc_v2"
    target.mkdir(parents=True)
    shutil.copy(ROOT / "harness/codecs/grpc_v2/grpc_predict_v2.proto", target)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
                    "harness/codecs/grpc_v2/grpc_predict_v2.proto"], cwd=tmp_path, check=True)

    def descriptor_line(text: str) -> str:
        return next(line for line in text.splitlines() if "AddSerializedFile" in line)

    made = (target / "grpc_predict_v2_pb2.py").read_text()
    checked_in = (ROOT / "harness/codecs/grpc_v2/grpc_predict_v2_pb2.py").read_text()
    assert descriptor_line(made) == descriptor_line(checked_in)


def test_wire_names_and_numbers():
    fields = {f.name: f.number for f in pb.InferTensorContents.DESCRIPTOR.fields}
    assert fields == {"bool_contents": 1, "int_contents": 2, "int64_contents": 3, "uint_contents": 4,
                      "uint64_contents": 5, "fp32_contents": 6, "fp64_contents": 7, "bytes_contents": 8}
    req = {f.name: f.number for f in pb.ModelInferRequest.DESCRIPTOR.fields}
    assert req == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4, "inputs": 5, "outputs": 6,
                   "raw_input_contents": 7}
    resp = {f.name: f.number for f in pb.ModelInferResponse.DESCRIPTOR.fields}
    assert resp["raw_output_contents"] == 6 and resp["outputs"] == 5
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert [m.name for m in service.methods] == ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                                 "ModelMetadata", "ModelInfer"]
