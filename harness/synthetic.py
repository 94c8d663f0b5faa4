"""Synthetic captures: demo-model exchanges written as the proxy writes them, for tests and benchmarks.

The incumbent and candidate are the real demo models on seeded synthetic rows, so label
flips, score shifts and latency differences are the models' own, not scripted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from harness.capture import CaptureWriter
from harness.demo_model import DemoModel, synthetic_rows
from harness.records import ArmOutcome, Exchange

_BLOCK = 50_000


def v2_response_bodies(labels: np.ndarray, probabilities: np.ndarray) -> list[bytes]:
    """Open Inference Protocol v2 response bodies, one row each, as the demo server shapes them."""
    return [
        b'{"model_name":"demo","outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[%d]},'
        b'{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[%.9g,%.9g]}]}' % (label, p[0], p[1])
        for label, p in zip(labels.tolist(), probabilities.tolist())
    ]


def v2grpc_response_bodies(labels: np.ndarray, probabilities: np.ndarray) -> list[bytes]:
    """The same responses as serialized v2 gRPC ModelInferResponse messages (typed contents), as
    the demo server over gRPC shapes them."""
    from harness.codecs.v2grpc import messages, tensor_to_contents

    pb = messages()
    bodies = []
    for label, p in zip(labels.tolist(), probabilities.tolist()):
        response = pb.ModelInferResponse(model_name="demo")
        tensor_to_contents("INT64", np.array([label]), response.outputs.add(name="label", datatype="INT64", shape=[1]).contents)
        out = response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 2])
        tensor_to_contents("FP32", np.array(p, dtype=np.float32), out.contents)
        bodies.append(response.SerializeToString())
    return bodies


def write_synthetic_capture(
    path: Path,
    n: int,
    *,
    variant: str = "subtle",
    seed: int = 0,
    latency_ratio: float = 1.0,
    timeout_rate: float = 0.0,
    rate: float = 8300.0,
    protocol: str = "http",
) -> float:
    """Write `n` exchanges (incumbent + candidate) to a new capture; returns seconds taken.

    Latencies: incumbent ~ gamma around 9 ms; candidate = incumbent x `latency_ratio` with 5%
    noise. A `timeout_rate` fraction of candidate copies time out. `protocol="grpc"`: the same
    exchanges as the gRPC proxy records them (v2 ModelInfer messages, status 0 for OK).
    """
    from proxies.demo_server import infer_request_body

    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
    if protocol == "grpc":
        import json

        from harness.codecs.grpc_v2 import method_path
        from harness.load.calls import grpc_infer_message
        from harness.records import GRPC_METHOD

        method, route, ok, encode = GRPC_METHOD, method_path("ModelInfer"), 0, v2grpc_response_bodies

        def request_body(row: np.ndarray) -> bytes:
            return grpc_infer_message(json.loads(infer_request_body(row)), "demo")
    else:
        method, route, ok, encode, request_body = "POST", "/v2/models/demo/infer", 200, v2_response_bodies, infer_request_body

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    incumbent, candidate = DemoModel("incumbent"), DemoModel("candidate", variant)
    with CaptureWriter(path, batch_size=5000) as writer:
        writer.set_meta("synthetic", {"n": n, "variant": variant, "seed": seed, "protocol": protocol})
        for start in range(0, n, _BLOCK):
            rows = synthetic_rows(min(_BLOCK, n - start), rng)
            incumbent_bodies = encode(*incumbent.predict(rows))
            candidate_bodies = encode(*candidate.predict(rows))
            incumbent_latency = rng.gamma(9.0, 0.001, len(rows))
            candidate_latency = incumbent_latency * latency_ratio * rng.normal(1.0, 0.05, len(rows))
            timeouts = rng.random(len(rows)) < timeout_rate
            for i in range(len(rows)):
                seq = start + i
                if timeouts[i]:
                    other = ArmOutcome(latency_s=5.0, error="timeout")
                else:
                    other = ArmOutcome(ok, float(candidate_latency[i]), candidate_bodies[i])
                writer.write(
                    Exchange(
                        request_id=f"r{seq}",
                        started_at=1.7e9 + seq / rate,
                        method=method,
                        route=route,
                        request_body=request_body(rows[i : i + 1]),
                        arms={"incumbent": ArmOutcome(ok, float(incumbent_latency[i]), incumbent_bodies[i]), "candidate": other},
                    )
                )
            while writer.pending > 200_000:  # keep memory flat while the writer thread catches up
                time.sleep(0.05)
    return time.perf_counter() - started
