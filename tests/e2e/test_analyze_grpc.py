"""`shadowline analyze` on gRPC captures: v2 ModelInfer detected with no flags; any other service
through `--codec grpc --descriptor-set ... --grpc-method ... --select ...`; bad input is exit 2.

Captures are written with CaptureWriter as the gRPC proxy writes them (method GRPC, route the
method path, gRPC status 0, serialized messages), from real messages.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.capture import CaptureWriter
from harness.cli import main
from harness.records import ArmOutcome, Exchange
from tests.unit.test_codec_descriptor import METHOD, compile_descriptor_set, fraud_codec, score_request, score_response

N = 4000  # enough paired exchanges for a GO with the default checks
SELECT = "features=rows,label=predictions[*].label,score=predictions[*].score"


def write_fraud_capture(run_dir, codec, *, flip: float = 0.0, n: int = N, seed: int = 0) -> None:
    """One-row Score calls; the candidate flips `flip` of the incumbent's labels."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    with CaptureWriter(run_dir / "capture.db") as writer:
        for i in range(n):
            request = score_request(codec, n=1, seed=i)
            amount = request.rows[0].amount
            label, score = int(amount > 250), amount / 500
            other = 1 - label if rng.random() < flip else label
            writer.write(Exchange(
                request_id=f"r{i}", started_at=1.7e9 + i / 1000, method="GRPC", route=METHOD,
                request_body=request.SerializeToString(),
                arms={"incumbent": ArmOutcome(0, 0.004, score_response(codec, [label], [score]).SerializeToString()),
                      "candidate": ArmOutcome(0, 0.004, score_response(codec, [other], [score]).SerializeToString())},
            ))


def write_v2grpc_capture(run_dir, n: int = N) -> None:
    from harness.codecs.v2grpc import tensor_to_contents
    from harness.codecs.grpc_v2 import pb

    rng = np.random.default_rng(1)
    run_dir.mkdir(parents=True, exist_ok=True)
    with CaptureWriter(run_dir / "capture.db") as writer:
        for i in range(n):
            x = float(rng.normal())
            request = pb.ModelInferRequest(model_name="demo")
            tensor = request.inputs.add(name="x", datatype="FP64", shape=[1])
            tensor_to_contents("FP64", np.array([x]), tensor.contents)
            response = pb.ModelInferResponse(model_name="demo")
            out = response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
            p = 1 / (1 + np.exp(-x))
            tensor_to_contents("FP32", np.array([1 - p, p]), out.contents)
            body = response.SerializeToString()
            writer.write(Exchange(
                request_id=f"r{i}", started_at=1.7e9 + i / 1000, method="GRPC",
                route="/inference.GRPCInferenceService/ModelInfer", request_body=request.SerializeToString(),
                arms={"incumbent": ArmOutcome(0, 0.004, body), "candidate": ArmOutcome(0, 0.004, body)},
            ))


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory):
    return compile_descriptor_set(tmp_path_factory.mktemp("proto"))


@pytest.fixture(scope="module")
def codec(descriptor_set):
    return fraud_codec(descriptor_set)


def analyze(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["analyze", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_v2grpc_capture_is_detected_with_no_flags(tmp_path, capsys):
    run_dir = tmp_path / "v2grpc"
    write_v2grpc_capture(run_dir)
    code, out, err = analyze(capsys, run_dir)
    assert code == 0, out + err
    assert json.loads((run_dir / "codec.json").read_text()) == {"name": "v2grpc", "options": {}, "detected": True}
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "GO"


def test_grpc_codec_from_a_descriptor_set_judges_and_is_recorded_for_offline_reruns(tmp_path, descriptor_set, codec,
                                                                                   capsys):
    same, flipped = tmp_path / "same", tmp_path / "flipped"
    write_fraud_capture(same, codec)
    write_fraud_capture(flipped, codec, flip=0.1)
    code, out, err = analyze(capsys, same, "--descriptor-set", descriptor_set, "--grpc-method", "fraud.Scorer.Score",
                             "--select", SELECT)
    assert code == 0 and out.startswith("GO"), out + err
    code, out, err = analyze(capsys, flipped, "--codec", "grpc", "--descriptor-set", descriptor_set,
                             "--grpc-method", METHOD, "--select", SELECT)
    assert code == 1 and out.startswith("NO-GO"), out + err
    record = json.loads((flipped / "codec.json").read_text())
    saved = flipped / "grpc-descriptors.pb"
    assert record == {"name": "grpc", "detected": False,
                      "options": {"descriptor_set": str(saved.resolve()), "method": METHOD, "select": SELECT}}
    assert saved.read_bytes() == descriptor_set.read_bytes()
    # Later, without the user's file: the run's own copy and codec.json decide (a subprocess, as a user runs it).
    moved = descriptor_set.with_name("elsewhere.pb")
    descriptor_set.rename(moved)
    try:
        rerun = subprocess.run([sys.executable, "-m", "harness.cli", "analyze", str(flipped)],
                               capture_output=True, text=True, timeout=120)
    finally:
        moved.rename(descriptor_set)
    assert rerun.returncode == 1 and rerun.stdout.startswith("NO-GO"), rerun.stdout + rerun.stderr


def test_a_grpc_capture_of_another_service_asks_for_the_descriptor_set(tmp_path, codec, capsys):
    run_dir = tmp_path / "run"
    write_fraud_capture(run_dir, codec, n=50)
    code, _, err = analyze(capsys, run_dir)
    assert code == 2
    assert "--codec grpc --descriptor-set FILE --grpc-method /package.Service/Method" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing file", "not a set", "unknown method", "bad path", "no method",
                                  "both sources", "wrong codec", "bad reflection target"])
def test_bad_grpc_input_is_exit_2_with_one_line(tmp_path, descriptor_set, codec, capsys, case):
    run_dir = tmp_path / "run"
    write_fraud_capture(run_dir, codec, n=20)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("hello\n")
    base = ["--descriptor-set", descriptor_set, "--grpc-method", METHOD, "--select", SELECT]
    args, expected = {
        "missing file": (["--descriptor-set", tmp_path / "nope.pb", "--grpc-method", METHOD, "--select", SELECT],
                         f"descriptor set {tmp_path / 'nope.pb'}: No such file or directory"),
        "not a set": (["--descriptor-set", text_file, "--grpc-method", METHOD, "--select", SELECT],
                      f"descriptor set {text_file}: "),
        "unknown method": (["--descriptor-set", descriptor_set, "--grpc-method", "/fraud.Scorer/Nope", "--select", SELECT],
                           f"descriptor set {descriptor_set}: no method /fraud.Scorer/Nope; it has /fraud.Scorer/Score"),
        "bad path": (["--descriptor-set", descriptor_set, "--grpc-method", METHOD, "--select", "features=rows[*].amout"],
                     "field path 'rows[*].amout': message fraud.Transaction has no field 'amout'"),
        "no method": (["--descriptor-set", descriptor_set, "--select", SELECT],
                      "--codec grpc needs --grpc-method /package.Service/Method"),
        "both sources": ([*base, "--reflection", "127.0.0.1:1"], "--descriptor-set and --reflection: give one of them"),
        "wrong codec": ([*base, "--codec", "v2"], "--descriptor-set, --reflection and --grpc-method go with --codec grpc"),
        "bad reflection target": (["--reflection", "nowhere", "--grpc-method", METHOD, "--select", SELECT],
                                  "--reflection: reflection 'nowhere': expected HOST:PORT"),
    }[case]
    code, out, err = analyze(capsys, run_dir, *args)
    assert code == 2, out + err
    assert err.startswith(f"shadowline: error: {expected}"), err
    assert len(err.strip().splitlines()) == 1
    assert not (run_dir / "report.json").exists()
