"""The descriptor-set codec (`grpc`): a non-v2 service compiled with grpc_tools.protoc at test
time, real messages through decode / encode, payload faults, the type rules, the errors.

`FRAUD_PROTO`, `compile_descriptor_set` and `fraud_codec` are shared with the reflection
integration test and the CLI test.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.codecs import CODECS, DecodeError, DescriptorCodec, Features, get_codec
from harness.faults import FaultPlan, make_fault

FRAUD_PROTO = """
syntax = "proto3";
package fraud;
import "google/protobuf/timestamp.proto";

message Location { double lat = 1; double lon = 2; }
message Transaction {
  float amount = 1;
  int32 merchant_category = 2;
  string country = 3;
  bool card_present = 4;
  repeated double embedding = 5;
  optional int64 account_age_days = 6;
  map<string, float> extra = 7;
  Location location = 8;
  repeated Location history = 9;
  repeated int32 codes = 10;
  bytes note = 11;
}
message ScoreRequest {
  string model = 1;
  repeated Transaction rows = 2;
  google.protobuf.Timestamp sent_at = 3;
}
message Prediction { int32 label = 1; float score = 2; repeated float probabilities = 3; }
message ScoreResponse { repeated Prediction predictions = 1; string model_version = 2; }
service Scorer {
  rpc Score(ScoreRequest) returns (ScoreResponse);
  rpc ScoreOne(Transaction) returns (Prediction);
  rpc Watch(ScoreRequest) returns (stream ScoreResponse);
}
"""
METHOD = "/fraud.Scorer/Score"
SELECT = "features=rows,label=predictions[*].label,score=predictions[*].score"


def compile_descriptor_set(directory: Path, *, include_imports: bool = True, name: str = "fraud") -> Path:
    """`FRAUD_PROTO` compiled by grpc_tools.protoc into `directory/<name>.pb`."""
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (a test extra) not installed")
    from grpc_tools import protoc

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "fraud.proto").write_text(FRAUD_PROTO)
    out = directory / f"{name}.pb"
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    argv = ["protoc", f"-I{directory}", f"-I{well_known}", f"--descriptor_set_out={out}", str(directory / "fraud.proto")]
    if include_imports:
        argv.insert(1, "--include_imports")
    assert protoc.main(argv) == 0
    return out


def fraud_codec(path: Path, method: str = METHOD, select: str = SELECT) -> DescriptorCodec:
    return get_codec("grpc", descriptor_set=str(path), method=method, select=select)


def score_request(codec: DescriptorCodec, n: int = 3, seed: int = 0):
    """A ScoreRequest of `n` rows (every kind of field set somewhere)."""
    rng = np.random.default_rng(seed)
    request = codec.request_type(model="m1")
    request.sent_at.seconds = 1_700_000_000
    for i in range(n):
        row = request.rows.add(amount=float(np.float32(rng.uniform(1, 500))), merchant_category=int(rng.integers(1, 9)),
                               country=["FR", "DE", "US"][i % 3], card_present=bool(i % 2), embedding=[0.5, -1.5 + i],
                               codes=[i, 7], note=b"n%d" % i)
        if i:
            row.account_age_days = 30 * i
        row.extra["velocity"] = 0.25 * i
        row.location.lat, row.location.lon = 48.5, 2.25
        row.history.add(lat=1.0)
    return request


def score_response(codec: DescriptorCodec, labels, scores):
    return codec.response_type(predictions=[{"label": int(a), "score": float(s)} for a, s in zip(labels, scores)])


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory) -> Path:
    return compile_descriptor_set(tmp_path_factory.mktemp("proto"))


@pytest.fixture(scope="module")
def codec(descriptor_set) -> DescriptorCodec:
    return fraud_codec(descriptor_set)


# --- building it ------------------------------------------------------------------------------


def test_registry_builds_it_from_a_descriptor_set_and_spec_rebuilds_it(descriptor_set, codec):
    assert CODECS["grpc"] is DescriptorCodec
    assert codec.method == METHOD
    assert codec.request_type.DESCRIPTOR.full_name == "fraud.ScoreRequest"
    assert codec.spec() == {"name": "grpc", "descriptor_set": str(descriptor_set), "method": METHOD, "select": SELECT}
    again = get_codec(**codec.spec())
    body = score_response(codec, [1, 0], [0.9, 0.1]).SerializeToString()
    assert again.decode_response(body).labels.tolist() == [1, 0]
    # The dotted form of the method name, and a spec as a mapping.
    dotted = get_codec("grpc", descriptor_set=str(descriptor_set), method="fraud.Scorer.Score",
                       select={"label": "predictions[*].label"})
    assert dotted.method == METHOD


def test_it_pickles_for_the_judges_worker_processes(codec):
    copy = pickle.loads(pickle.dumps(codec))
    body = score_response(codec, [1, 1, 0], [0.7, 0.8, 0.2]).SerializeToString()
    assert copy.decode_response(body).labels.tolist() == [1, 1, 0]
    assert copy.spec() == codec.spec()


def test_from_bytes_names_its_source_in_errors(descriptor_set):
    data = descriptor_set.read_bytes()
    codec = DescriptorCodec.from_bytes(data, method=METHOD, select=SELECT, source="reflection 1.2.3.4:5")
    assert codec.options()["descriptor_set"] == data
    with pytest.raises(ValueError, match=r"^descriptor set reflection 1\.2\.3\.4:5: no method /fraud\.Scorer/Nope"):
        DescriptorCodec.from_bytes(data, method="/fraud.Scorer/Nope", select=SELECT, source="reflection 1.2.3.4:5")


# --- requests: features -----------------------------------------------------------------------


def test_rows_become_named_columns(codec):
    features = codec.decode_request(score_request(codec).SerializeToString())
    assert features.n == 3
    assert features.names == [
        "amount", "merchant_category", "country", "card_present", "embedding[0]", "embedding[1]",
        "account_age_days", "extra.velocity", "location.lat", "location.lon", "codes[0]", "codes[1]", "note",
    ]  # history (repeated messages) is not a feature; account_age_days first appears in row 1
    cols = features.columns
    assert cols["amount"].dtype == np.float64 and cols["merchant_category"].dtype == np.int64
    assert cols["country"].tolist() == ["FR", "DE", "US"]
    assert cols["card_present"].tolist() == [0, 1, 0]  # bools as 0/1: a numeric column
    assert cols["embedding[1]"].tolist() == [-1.5, -0.5, 0.5]
    assert np.isnan(cols["account_age_days"][0]) and cols["account_age_days"][1:].tolist() == [30, 60]  # unset: NaN
    assert cols["extra.velocity"].tolist() == [0.0, 0.25, 0.5]
    assert cols["note"].tolist() == [b"n0", b"n1", b"n2"]


def test_encode_of_decoded_features_gives_the_same_message(codec):
    request = score_request(codec, n=4, seed=3)
    body = request.SerializeToString()
    out = codec.encode_request(codec.decode_request(body), body)
    assert codec.request_type.FromString(out) == request  # model, sent_at, history, presence: all kept


def test_a_single_message_row_and_scalar_outputs(descriptor_set):
    one = fraud_codec(descriptor_set, "/fraud.Scorer/ScoreOne", "features=$,label=label,score=score,probs=probabilities")
    body = one.request_type(amount=12.5, merchant_category=3, country="FR").SerializeToString()
    features = one.decode_request(body)
    assert features.n == 1 and features.columns["amount"].tolist() == [12.5]
    assert "codes[0]" not in features.columns  # an empty repeated field: no columns
    faulted = Features({**features.columns, "amount": np.array([np.inf])}, 1)
    assert math.isinf(one.request_type.FromString(one.encode_request(faulted, body)).amount)
    emptied = one.request_type.FromString(one.encode_request(Features({}, 0), body))
    assert (emptied.amount, emptied.country) == (0.0, "")  # a batch of 0 rows: every feature field unset
    with pytest.raises(DecodeError, match="holds one row, the features have 2"):
        one.encode_request(Features({"amount": np.array([1.0, 2.0])}, 2), body)
    prediction = one.decode_response(one.response_type(label=2, score=0.5, probabilities=[0.1, 0.2, 0.7]).SerializeToString())
    assert prediction.labels.tolist() == [2] and prediction.values.tolist() == [0.5]
    assert prediction.probabilities.shape == (1, 3)


def test_feature_columns_by_path(descriptor_set):
    codec = fraud_codec(descriptor_set, select="feature.amount=rows[*].amount,feature.velocity=rows[*].extra['velocity'],"
                                               "feature.emb=rows[0].embedding,label=predictions[*].label")
    body = score_request(codec, n=2).SerializeToString()
    features = codec.decode_request(body)
    assert features.names == ["amount", "velocity", "emb"]
    assert features.columns["velocity"].tolist() == [0.0, 0.25] and features.columns["emb"].tolist() == [0.5, -1.5]
    cols = {"amount": np.array([1.0, 2.0]), "velocity": np.array([np.nan, None], dtype=object), "emb": np.array([7.0, 8.0])}
    out = codec.request_type.FromString(codec.encode_request(Features(cols, 2), body))
    assert [r.amount for r in out.rows] == [1.0, 2.0] and list(out.rows[0].embedding) == [7.0, 8.0]
    assert math.isnan(out.rows[0].extra["velocity"]) and "velocity" not in out.rows[1].extra  # None: the key goes
    single = fraud_codec(descriptor_set, select="feature.model=model,label=predictions[*].label")
    assert single.decode_request(body).columns["model"].tolist() == ["m1"]
    with pytest.raises(DecodeError, match="a single field holds one value, the features have 2 rows"):
        single.encode_request(Features({"model": np.array(["a", "b"], dtype=object)}, 2), body)


def test_rows_are_added_and_removed_to_match_the_features(codec):
    request = score_request(codec, n=2)
    body = request.SerializeToString()
    features = codec.decode_request(body)
    grown = Features({name: np.concatenate([col, col[-1:]]) for name, col in features.columns.items()}, 3)
    out = codec.request_type.FromString(codec.encode_request(grown, body))
    assert len(out.rows) == 3 and out.rows[2] == out.rows[1]
    empty = codec.request_type.FromString(codec.encode_request(Features({k: v[:0] for k, v in features.columns.items()}, 0), body))
    assert len(empty.rows) == 0 and empty.model == "m1"


# --- payload faults through the real fault plan ----------------------------------------------


def apply(codec, spec: dict, body: bytes) -> tuple[bytes | None, tuple]:
    plan = FaultPlan([make_fault({"probability": 1.0, **spec})], seed=1, codec=codec)
    decision = plan.decide(0)
    return plan.apply_payload(decision, body), decision.labels


def test_nan_fault_nan_in_float_fields_unset_in_integer_fields(codec):
    body = score_request(codec).SerializeToString()
    out, labels = apply(codec, {"type": "nan", "fields": ["amount", "merchant_category", "account_age_days"]}, body)
    assert labels == ("nan:amount,merchant_category,account_age_days",)  # applied
    rows = codec.request_type.FromString(out).rows
    assert all(math.isnan(r.amount) for r in rows)
    assert all(r.merchant_category == 0 for r in rows)  # NaN has no int32 form: the field is left unset
    assert not any(r.HasField("account_age_days") for r in rows)  # a field with presence: not set


def test_missing_field_fault_clears_the_field_in_every_row(codec):
    body = score_request(codec).SerializeToString()
    out, labels = apply(codec, {"type": "missing_field", "fields": ["country", "embedding", "extra.velocity"]}, body)
    assert labels == ("missing_field:country,embedding,extra.velocity",)
    rows = codec.request_type.FromString(out).rows
    assert [r.country for r in rows] == ["", "", ""]
    assert all(len(r.embedding) == 0 and len(r.extra) == 0 for r in rows)
    assert [r.merchant_category for r in rows] == [r.merchant_category for r in codec.request_type.FromString(body).rows]


def test_wrong_type_string_into_a_number_field_is_not_applied(codec):
    body = score_request(codec).SerializeToString()
    out, labels = apply(codec, {"type": "wrong_type", "to": "string", "fields": ["amount"]}, body)
    assert out is None and labels == ("wrong_type:amount:unrepresentable",)  # the request went out without it
    features = codec.decode_request(body)
    as_text = features.columns["amount"].astype(str).astype(object)
    with pytest.raises(DecodeError, match=r"field path 'rows\[0\]\.amount': '[\d.]+' \(str\) does not fit float field "
                                          r"fraud\.Transaction\.amount"):
        codec.encode_request(Features({**features.columns, "amount": as_text}, features.n), body)
    # A string into a string field, and a number into a string field (its text), are fine.
    out, labels = apply(codec, {"type": "wrong_type", "to": "float", "fields": ["merchant_category"]}, body)
    assert labels == ("wrong_type:merchant_category",)
    assert out is None or codec.request_type.FromString(out) == codec.request_type.FromString(body)  # 3.0 is 3


def test_type_rules_for_written_values(codec):
    body = score_request(codec, n=2).SerializeToString()
    features = codec.decode_request(body)
    cols = dict(features.columns)
    cols["merchant_category"] = np.array([2.6, 1e12], dtype=object)  # rounded; saturated at int32's end
    cols["amount"] = np.array([1e300, -np.inf])  # beyond float32: Inf
    cols["country"] = np.array(["F\ud800R", 42], dtype=object)  # a lone surrogate: U+FFFD; a number: its text
    cols["card_present"] = np.array([2.0, 0.0])  # non-zero is true
    cols["note"] = np.array(["\ud800", None], dtype=object)  # text into bytes: UTF-8 (surrogate kept); None: unset
    cols["embedding[1]"] = np.array([None, 1.0], dtype=object)  # a hole in a double list: NaN
    rows = codec.request_type.FromString(codec.encode_request(Features(cols, 2), body)).rows
    assert [r.merchant_category for r in rows] == [3, 2**31 - 1]
    assert [r.amount for r in rows] == [math.inf, -math.inf]
    assert [r.country for r in rows] == ["F\ufffdR", "42"]
    assert [r.card_present for r in rows] == [True, False]
    assert [r.note for r in rows] == [b"\xed\xa0\x80", b""]
    assert math.isnan(rows[0].embedding[1]) and rows[1].embedding[1] == 1.0
    cols["codes[0]"] = np.array([np.nan, 1.0])  # a hole in an int32 list cannot be written
    with pytest.raises(DecodeError, match=r"field path 'rows\[0\]\.codes\[0\]': a repeated int32 field cannot hold a missing"):
        codec.encode_request(Features(cols, 2), body)


def test_a_column_with_no_field_is_an_error(codec):
    body = score_request(codec, n=1).SerializeToString()
    features = codec.decode_request(body)
    with pytest.raises(DecodeError, match="feature 'nope' has no field in fraud.ScoreRequest"):
        codec.encode_request(Features({**features.columns, "nope": np.array([1])}, 1), body)


# --- responses ---------------------------------------------------------------------------------


def test_responses_decode_in_a_batch_with_bad_bodies_recorded(codec):
    good = score_response(codec, [1, 0, 1], [0.75, 0.25, 0.5]).SerializeToString()
    batch = codec.decode_responses([good, b"\xff\xff\xff", None, b""])
    assert batch.decoded.tolist() == [True, False, False, True]
    assert batch.prediction(0).labels.tolist() == [1, 0, 1] and batch.prediction(0).values.tolist() == [0.75, 0.25, 0.5]
    assert "not a serialized fraud.ScoreResponse" in batch.errors[1] and batch.errors[2] == "no body"
    assert batch.prediction(3).n == 0  # an empty body is a message with no predictions


def test_probabilities_by_row_and_argmax_label(descriptor_set):
    codec = fraud_codec(descriptor_set, select="probabilities=predictions[*].probabilities")
    body = codec.response_type(predictions=[{"probabilities": [0.2, 0.8]}, {"probabilities": [0.9, 0.1]}]).SerializeToString()
    prediction = codec.decode_response(body)
    assert prediction.n == 2 and np.allclose(prediction.probabilities, [[0.2, 0.8], [0.9, 0.1]])


def test_unset_message_on_an_output_path_does_not_decode(tmp_path):
    # A response whose output sits in a nested message: when that message is not set, there is no
    # prediction (never a silent label 0).
    from harness.codecs.descriptor_set import descriptor_set_from_files
    from google.protobuf import descriptor_pb2

    f = descriptor_pb2.FileDescriptorProto(name="n.proto", package="n", syntax="proto3")
    inner = f.message_type.add(name="Result")
    inner.field.add(name="label", number=1, type=5, label=1)
    outer = f.message_type.add(name="Reply")
    outer.field.add(name="result", number=1, type=11, type_name=".n.Result", label=1)
    f.service.add(name="S").method.add(name="M", input_type=".n.Reply", output_type=".n.Reply")
    data = descriptor_set_from_files([f], "test")
    codec = DescriptorCodec.from_bytes(data, method="/n.S/M", select="label=result.label", source="test")
    with pytest.raises(DecodeError, match="field path 'result.label': result is not set"):
        codec.decode_response(b"")
    assert codec.decode_response(codec.response_type(result={"label": 0}).SerializeToString()).labels.tolist() == [0]


# --- errors: one line, naming the file, the method or the field path ----------------------------


def test_error_messages(descriptor_set, tmp_path):
    def error(**kw) -> str:
        options = {"descriptor_set": str(descriptor_set), "method": METHOD, "select": SELECT, **kw}
        with pytest.raises(ValueError) as info:
            get_codec("grpc", **options)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert error(descriptor_set=str(tmp_path / "nope.pb")) == f"descriptor set {tmp_path / 'nope.pb'}: No such file or directory"
    text = tmp_path / "fraud.proto"
    text.write_text(FRAUD_PROTO)
    assert f"descriptor set {text}: not a serialized FileDescriptorSet" in error(descriptor_set=str(text))
    assert "protoc --include_imports --descriptor_set_out=FILE" in error(descriptor_set=str(text))
    assert error(method="/fraud.Scorer/Nope") == (
        f"descriptor set {descriptor_set}: no method /fraud.Scorer/Nope; "
        "it has /fraud.Scorer/Score, /fraud.Scorer/ScoreOne, /fraud.Scorer/Watch")
    assert "method /fraud.Scorer/Watch streams" in error(method="/fraud.Scorer/Watch")
    assert "expected /package.Service/Method" in error(method="Score")
    assert error(select="features=rows[*].amout") == (
        "field path 'rows[*].amout': message fraud.Transaction has no field 'amout'; it has amount, merchant_category, "
        "country, card_present, embedding, account_age_days, extra, location, history, codes, note")
    assert "label= needs numbers; fraud.ScoreResponse.model_version is string" in error(select="label=model_version")
    assert "rows is a repeated field; use rows[*] or rows[N] before .amount" in error(select="feature.a=rows.amount")
    assert "features= selects a table" in error(select="features=model")
    assert "unknown role 'lable'" in error(select="lable=x")
    unimported = compile_descriptor_set(tmp_path / "bare", include_imports=False)
    assert error(descriptor_set=str(unimported)) == (
        f"descriptor set {unimported}: fraud.proto imports google/protobuf/timestamp.proto, which the set does not hold; "
        "make it with protoc --include_imports --descriptor_set_out=FILE")
