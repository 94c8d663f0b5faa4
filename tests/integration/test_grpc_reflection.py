"""The `grpc` codec built from a live server's reflection: a real grpc.aio server on loopback that
serves `fraud.Scorer` (generic handler over bytes, messages built from a descriptor set) and
offers reflection; the codec decodes the bytes really exchanged with it, offline too.

The reflection fetch is synchronous (grpc's blocking API), so the tests call it through
`asyncio.to_thread` while the server runs on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket

import grpc
import pytest
from grpc_reflection.v1alpha import reflection

from harness.capture import CaptureWriter
from harness.cli import main
from harness.codecs import get_codec
from harness.codecs.descriptor_set import build_pool, parse_descriptor_set
from harness.codecs.reflection import ReflectionError, ReflectionUnavailable, codec_from_reflection, fetch_descriptor_set
from harness.records import ArmOutcome, Exchange
from tests.unit.test_codec_descriptor import METHOD, SELECT, compile_descriptor_set, fraud_codec, score_request

pytestmark = pytest.mark.timeout(60)


class Scorer(grpc.GenericRpcHandler):
    """fraud.Scorer/Score: label 1 when amount > 250, score amount / 500, one prediction per row."""

    def __init__(self, codec):
        self.codec = codec

    def service(self, details):
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        if method != METHOD:
            return None
        codec = self.codec

        async def score(request: bytes, context) -> bytes:
            message = codec.request_type.FromString(request)
            reply = codec.response_type()
            for row in message.rows:
                reply.predictions.add(label=int(row.amount > 250), score=row.amount / 500)
            return reply.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(score)


async def start_server(codec, descriptor_set, *, with_reflection: bool = True) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([Scorer(codec)])
    if with_reflection:  # served from the set's own pool: the server has no generated code either
        pool = build_pool(parse_descriptor_set(descriptor_set.read_bytes(), "test"), "test")
        reflection.enable_server_reflection(["fraud.Scorer", reflection.SERVICE_NAME], server, pool=pool)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def exchange(target: str, bodies: list[bytes]) -> list[bytes]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)  # raw bytes both ways, as the proxy forwards them
        return [await call(body, timeout=5) for body in bodies]


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory):
    return compile_descriptor_set(tmp_path_factory.mktemp("proto"))


@pytest.fixture(scope="module")
def local_codec(descriptor_set):
    return fraud_codec(descriptor_set)


def test_codec_from_reflection_decodes_real_exchanges_and_works_offline_from_the_saved_set(
        tmp_path, descriptor_set, local_codec):
    requests = [score_request(local_codec, n=1 + i % 3, seed=i).SerializeToString() for i in range(5)]

    async def scenario():
        server, target = await start_server(local_codec, descriptor_set)
        try:
            responses = await exchange(target, requests)
            saved = tmp_path / "run" / "grpc-descriptors.pb"
            saved.parent.mkdir()
            codec = await asyncio.to_thread(codec_from_reflection, target, "fraud.Scorer.Score", SELECT, save_to=saved)
            in_memory = await asyncio.to_thread(codec_from_reflection, target, METHOD, SELECT)
        finally:
            await server.stop(None)
        return responses, codec, in_memory, saved

    responses, codec, in_memory, saved = asyncio.run(scenario())
    for request, response in zip(requests, responses):
        features = codec.decode_request(request)
        assert features.columns.keys() == local_codec.decode_request(request).columns.keys()
        prediction = codec.decode_response(response)
        assert prediction.labels.tolist() == (features.columns["amount"] > 250).astype(int).tolist()
        assert prediction.n == features.n
        assert in_memory.decode_response(response).labels.tolist() == prediction.labels.tolist()
        assert codec.request_type.FromString(codec.encode_request(features, request)) == codec.request_type.FromString(request)
    # The fetched set holds the service's file and its import (google/protobuf/timestamp.proto).
    names = [f.name for f in parse_descriptor_set(saved.read_bytes(), str(saved)).file]
    assert names == ["google/protobuf/timestamp.proto", "fraud.proto"]
    assert codec.spec()["descriptor_set"] == str(saved)
    assert in_memory.spec()["descriptor_set"] == saved.read_bytes()
    # The server is gone: the saved set rebuilds the codec.
    offline = get_codec(**codec.spec())
    assert offline.decode_response(responses[0]).labels.tolist() == codec.decode_response(responses[0]).labels.tolist()


def test_reflection_errors_say_what_the_server_has(descriptor_set, local_codec):
    async def scenario():
        server, target = await start_server(local_codec, descriptor_set)
        bare, bare_target = await start_server(local_codec, descriptor_set, with_reflection=False)
        try:
            with pytest.raises(ReflectionError, match=r"^reflection 127\.0\.0\.1:\d+: the server has no service "
                                                      r"fraud\.Nope; it offers fraud\.Scorer, grpc\.reflection"):
                await asyncio.to_thread(fetch_descriptor_set, target, "fraud.Nope", timeout=5)
            with pytest.raises(ReflectionError, match="offers no gRPC server reflection .*--descriptor-set FILE"):
                await asyncio.to_thread(fetch_descriptor_set, bare_target, "fraud.Scorer", timeout=5)
            with pytest.raises(ValueError, match=r"no method /fraud\.Scorer/Nope; it has /fraud\.Scorer/Score"):
                await asyncio.to_thread(codec_from_reflection, target, "/fraud.Scorer/Nope", SELECT)
        finally:
            await server.stop(None)
            await bare.stop(None)

    asyncio.run(scenario())
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ReflectionUnavailable, match=r"UNAVAILABLE"):
        fetch_descriptor_set(closed, "fraud.Scorer", timeout=2)


def test_analyze_with_reflection_records_the_descriptors_in_the_run(tmp_path, descriptor_set, local_codec, capsys):
    requests = [score_request(local_codec, n=1, seed=i).SerializeToString() for i in range(40)]
    run_dir = tmp_path / "run"

    async def scenario() -> int:
        server, target = await start_server(local_codec, descriptor_set)
        try:
            responses = await exchange(target, requests)
            with CaptureWriter(run_dir / "capture.db") as writer:
                for i, (request, response) in enumerate(zip(requests, responses)):
                    writer.write(Exchange(
                        request_id=f"r{i}", started_at=1.7e9 + i, method="GRPC", route=METHOD, request_body=request,
                        arms={"incumbent": ArmOutcome(0, 0.003, response), "candidate": ArmOutcome(0, 0.003, response)}))
            return await asyncio.to_thread(main, ["analyze", str(run_dir), "--reflection", target,
                                                  "--grpc-method", METHOD, "--select", SELECT])
        finally:
            await server.stop(None)

    run_dir.mkdir()
    code = asyncio.run(scenario())
    out = capsys.readouterr()
    assert code == 3 and out.out.startswith("INCONCLUSIVE"), out.out + out.err  # 40 exchanges: too few to decide
    assert json.loads((run_dir / "report.json").read_text())["verdict"] == "INCONCLUSIVE"
    record = json.loads((run_dir / "codec.json").read_text())
    assert record["name"] == "grpc" and record["options"]["descriptor_set"] == str((run_dir / "grpc-descriptors.pb").resolve())
    # Unreachable reflection server: the run failed (exit 4), one line.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert main(["analyze", str(run_dir), "--reflection", closed, "--grpc-method", METHOD, "--select", SELECT]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"shadowline: run failed: --reflection: reflection {closed}: UNAVAILABLE") and err.count("\n") == 1
