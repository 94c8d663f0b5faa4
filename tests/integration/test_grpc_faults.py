"""Fault plans on the gRPC shadow proxy: real grpc.aio demo model servers on loopback, the
proxy in-process, a real client; the ledger read back from a real capture file."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from harness.capture import CaptureWriter
from harness.codecs.v2grpc import V2GrpcCodec
from harness.demo_model import FEATURES, synthetic_rows
from harness.faults import FaultPlan
from proxies.demo_grpc import infer_request_message, start_demo_grpc
from proxies.demo_server import DemoKnobs
from proxies.grpc_proxy import GrpcProxySettings, GrpcShadowProxy, make_server
from harness.codecs.grpc_v2 import method_path

pytestmark = pytest.mark.timeout(60)

INFER = method_path("ModelInfer")
CODES = {code.value[0]: code for code in grpc.StatusCode}


class Recorder(grpc.GenericRpcHandler):
    """A candidate that keeps every request it receives and answers with the incumbent's bytes
    for the same request (so it looks like a model), via a channel to the incumbent."""

    def __init__(self, incumbent: str):
        self.incumbent = incumbent
        self.requests: list[bytes] = []

    def service(self, details):
        async def unary(request, context):
            self.requests.append(request)
            async with grpc.aio.insecure_channel(self.incumbent) as ch:
                return await ch.unary_unary(INFER)(request)

        return grpc.unary_unary_rpc_method_handler(unary)


async def start_recorder(incumbent: str):
    recorder = Recorder(incumbent)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([recorder])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, recorder, f"127.0.0.1:{port}"


async def start_demo(**knobs):
    server, port = await start_demo_grpc(DemoKnobs(**knobs), ("127.0.0.1", 0))
    return server, f"127.0.0.1:{port}"


def requests(n: int, seed: int = 1) -> list[bytes]:
    rows = synthetic_rows(n, seed)
    return [infer_request_message(rows[i:i + 1], request_id=str(i)) for i in range(n)]


async def run_through(settings: GrpcProxySettings, plan: FaultPlan, bodies: list[bytes], tmp_path: Path):
    """Send `bodies` through the proxy one by one; (client answers, capture rows)."""
    capture = CaptureWriter(tmp_path / "capture.db")
    proxy = GrpcShadowProxy(settings, sink=capture.write, plan=plan)
    server, port = make_server(proxy, ("127.0.0.1", 0))
    await server.start()
    answers = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        for body in bodies:
            answers.append(await ch.unary_unary(INFER)(body, timeout=10))
    await server.stop(1.0)
    await proxy.drain(5.0)
    capture.close()
    conn = sqlite3.connect(capture.path)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM exchanges ORDER BY seq")]
    finally:
        conn.close()
    return answers, rows


async def direct(target: str, bodies: list[bytes]) -> list[bytes]:
    async with grpc.aio.insecure_channel(target) as ch:
        return [await ch.unary_unary(INFER)(body, timeout=10) for body in bodies]


def faults_of(row: dict, arm: str) -> list[str]:
    return json.loads(row[f"{arm}_faults"] or "[]")


def test_payload_fault_reaches_the_candidate_through_the_codec_and_the_client_is_untouched(tmp_path):
    bodies = requests(12)
    plan = FaultPlan.from_specs([{"type": "nan", "fields": [FEATURES[0]], "probability": 0.5}], seed=7, codec=V2GrpcCodec())

    async def scenario():
        incumbent, incumbent_target = await start_demo()
        recorder_server, recorder, candidate_target = await start_recorder(incumbent_target)
        try:
            settings = GrpcProxySettings(incumbent=incumbent_target, candidate=candidate_target)
            answers, rows = await run_through(settings, plan, bodies, tmp_path)
            return answers, rows, recorder.requests, await direct(incumbent_target, bodies)
        finally:
            await recorder_server.stop(None)
            await incumbent.stop(None)

    answers, rows, received, expected = asyncio.run(scenario())
    assert answers == expected  # the client's answers are the incumbent's, unfaulted
    assert len(rows) == len(bodies) == len(received)
    codec = V2GrpcCodec()
    by_id = {codec.decode_request(r).columns[FEATURES[1]][0]: r for r in received}  # untouched column as key
    faulted = 0
    for body, row in zip(bodies, rows):
        sent = codec.decode_request(body)
        got = codec.decode_request(by_id[sent.columns[FEATURES[1]][0]])
        labels = faults_of(row, "candidate")
        if labels:
            faulted += 1
            assert labels == [f"nan:{FEATURES[0]}"]
            assert np.isnan(got.columns[FEATURES[0]]).all()
        else:
            assert got.columns[FEATURES[0]].tolist() == sent.columns[FEATURES[0]].tolist()
        for name in FEATURES[1:]:  # only the named field is faulted
            assert got.columns[name].tolist() == sent.columns[name].tolist()
        assert faults_of(row, "incumbent") == []
        assert row["request_body"] == body  # the capture keeps what the client sent
    assert 0 < faulted < len(bodies)  # probability 0.5, seed 7: some of each


def through_demos(plan: FaultPlan, bodies: list[bytes], tmp_path: Path, *, candidate: dict, baseline: bool = False,
                  **settings):
    """Demo servers over gRPC (incumbent, candidate with `candidate` knobs, optional baseline),
    `bodies` through the proxy with `plan`: (client answers, capture rows, the incumbent's
    answers called directly)."""

    async def scenario():
        servers = {"incumbent": await start_demo(), "candidate": await start_demo(**candidate)}
        if baseline:
            servers["baseline"] = await start_demo()
        try:
            targets = {arm: target for arm, (_, target) in servers.items()}
            answers, rows = await run_through(GrpcProxySettings(**targets, **settings), plan, bodies, tmp_path)
            return answers, rows, await direct(targets["incumbent"], bodies)
        finally:
            for server, _ in servers.values():
                await server.stop(None)

    return asyncio.run(scenario())


def test_demo_candidate_rejects_nan_with_invalid_argument_and_the_ledger_says_why(tmp_path):
    bodies = requests(6)
    plan = FaultPlan.from_specs([{"type": "nan", "fields": [FEATURES[2]]}], seed=0, codec=V2GrpcCodec())
    answers, rows, expected = through_demos(plan, bodies, tmp_path, candidate={"role": "candidate", "variant": "subtle"})
    assert answers == expected
    for row in rows:
        assert row["incumbent_status"] == 0
        assert CODES[row["candidate_status"]] == grpc.StatusCode.INVALID_ARGUMENT
        assert faults_of(row, "candidate") == [f"nan:{FEATURES[2]}"]


def test_latency_and_abort_on_grpc_copies(tmp_path):
    """A delay on the candidate's copies, an abort (HTTP 503 mapped to UNAVAILABLE) on the
    baseline's; the client gets every incumbent answer regardless."""
    specs = [
        {"type": "latency", "ms": 150, "arms": ["candidate"]},
        {"type": "abort", "status": 503, "arms": ["baseline"]},
    ]
    answers, rows, expected = through_demos(FaultPlan.from_specs(specs, seed=3), requests(8), tmp_path,
                                            candidate={}, baseline=True, shadow_timeout=2.0)
    assert answers == expected
    for row in rows:
        assert row["candidate_status"] == 0 and faults_of(row, "candidate") == ["latency:150ms"]
        assert row["candidate_latency_s"] >= 0.150  # the delay is part of the arm's latency
        assert CODES[row["baseline_status"]] == grpc.StatusCode.UNAVAILABLE
        assert faults_of(row, "baseline") == ["abort:503"]


@pytest.mark.parametrize(
    ("spec", "status", "error", "label"),
    [
        ({"type": "abort", "grpc_status": 8}, grpc.StatusCode.RESOURCE_EXHAUSTED, None, "abort:grpc8"),
        ({"type": "hang"}, None, "timeout", "hang"),
        ({"type": "reset", "after_ms": 20}, None, "reset", "reset:after20ms"),
    ],
)
def test_terminal_faults_give_the_arm_its_outcome(tmp_path, spec, status, error, label):
    plan = FaultPlan.from_specs([{**spec, "arms": ["candidate"]}], seed=0)
    answers, rows, expected = through_demos(plan, requests(3), tmp_path, candidate={"role": "candidate"},
                                            shadow_timeout=0.3)
    assert answers == expected
    for row in rows:
        assert row["incumbent_status"] == 0
        assert row["candidate_error"] == error
        assert (CODES[row["candidate_status"]] if row["candidate_status"] is not None else None) == status
        assert faults_of(row, "candidate") == [label]
        if error == "timeout":
            assert row["candidate_latency_s"] >= 0.3


def test_faults_the_grpc_proxy_cannot_execute_are_refused(tmp_path):
    plan = FaultPlan.from_specs([{"type": "bandwidth", "bytes_per_s": 1000}], seed=0)
    with pytest.raises(ValueError, match="'bandwidth' is not supported over gRPC"):
        GrpcShadowProxy(GrpcProxySettings(incumbent="127.0.0.1:1", candidate="127.0.0.1:2"), plan=plan)

    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("seed: 1\nfaults:\n  - {type: truncate, fraction: 0.5}\n")
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "proxy", "grpc", "--incumbent", "127.0.0.1:1",
         "--candidate", "127.0.0.1:2", "--listen", "127.0.0.1:0", "--run-dir", str(tmp_path / "run"),
         "--faults", str(plan_file)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "'truncate' is not supported over gRPC" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_payload_faults_on_any_service_through_a_descriptor_set_codec(tmp_path):
    """A plan file naming the `grpc` codec with its options (descriptor set, method, select),
    loaded as `proxy grpc --faults` loads it, faults a non-v2 service's requests."""
    from harness.cli import _load_fault_plan
    from tests.unit.test_codec_descriptor import METHOD, SELECT, compile_descriptor_set, fraud_codec, score_request

    descriptors = compile_descriptor_set(tmp_path / "proto")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({
        "seed": 5, "codec": "grpc",
        "codec_options": {"descriptor_set": str(descriptors), "method": METHOD, "select": SELECT},
        "faults": [{"type": "nan", "fields": ["amount"], "arms": ["candidate"]}],
    }))
    plan = _load_fault_plan(plan_file)
    codec = fraud_codec(descriptors)
    bodies = [score_request(codec, n=2, seed=i).SerializeToString() for i in range(4)]

    class Echo(grpc.GenericRpcHandler):  # the incumbent: an empty ScoreResponse to every call
        def service(self, details):
            async def unary(request, context):
                return b""
            return grpc.unary_unary_rpc_method_handler(unary)

    async def scenario():
        incumbent = grpc.aio.server()
        incumbent.add_generic_rpc_handlers([Echo()])
        incumbent_target = f"127.0.0.1:{incumbent.add_insecure_port('127.0.0.1:0')}"
        await incumbent.start()
        recorder_server, recorder, candidate_target = await start_recorder(incumbent_target)
        try:
            capture = CaptureWriter(tmp_path / "capture.db")
            proxy = GrpcShadowProxy(GrpcProxySettings(incumbent=incumbent_target, candidate=candidate_target),
                                    sink=capture.write, plan=plan)
            server, port = make_server(proxy, ("127.0.0.1", 0))
            await server.start()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                for body in bodies:
                    assert await ch.unary_unary(METHOD)(body, timeout=10) == b""
            await server.stop(1.0)
            await proxy.drain(5.0)
            capture.close()
            return recorder.requests
        finally:
            await recorder_server.stop(None)
            await incumbent.stop(None)

    received = asyncio.run(scenario())
    assert len(received) == len(bodies)
    for sent, got in zip(bodies, received):  # one call after another: in order
        before, after = codec.decode_request(sent), codec.decode_request(got)
        assert np.isnan(after.columns["amount"]).all() and not np.isnan(before.columns["amount"]).any()
        assert after.columns["merchant_category"].tolist() == before.columns["merchant_category"].tolist()
