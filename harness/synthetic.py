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


def write_synthetic_capture(
    path: Path,
    n: int,
    *,
    variant: str = "subtle",
    seed: int = 0,
    latency_ratio: float = 1.0,
    timeout_rate: float = 0.0,
    rate: float = 8300.0,
) -> float:
    """Write `n` exchanges (incumbent + candidate) to a new capture; returns seconds taken.

    Latencies: incumbent ~ gamma around 9 ms; candidate = incumbent x `latency_ratio` with 5%
    noise. A `timeout_rate` fraction of candidate copies time out.
    """
    from proxies.demo_server import infer_request_body

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    incumbent, candidate = DemoModel("incumbent"), DemoModel("candidate", variant)
    with CaptureWriter(path, batch_size=5000) as writer:
        writer.set_meta("synthetic", {"n": n, "variant": variant, "seed": seed})
        for start in range(0, n, _BLOCK):
            rows = synthetic_rows(min(_BLOCK, n - start), rng)
            incumbent_bodies = v2_response_bodies(*incumbent.predict(rows))
            candidate_bodies = v2_response_bodies(*candidate.predict(rows))
            incumbent_latency = rng.gamma(9.0, 0.001, len(rows))
            candidate_latency = incumbent_latency * latency_ratio * rng.normal(1.0, 0.05, len(rows))
            timeouts = rng.random(len(rows)) < timeout_rate
            for i in range(len(rows)):
                seq = start + i
                if timeouts[i]:
                    other = ArmOutcome(latency_s=5.0, error="timeout")
                else:
                    other = ArmOutcome(200, float(candidate_latency[i]), candidate_bodies[i])
                writer.write(
                    Exchange(
                        request_id=f"r{seq}",
                        started_at=1.7e9 + seq / rate,
                        method="POST",
                        route="/v2/models/demo/infer",
                        request_body=infer_request_body(rows[i : i + 1]),
                        arms={"incumbent": ArmOutcome(200, float(incumbent_latency[i]), incumbent_bodies[i]), "candidate": other},
                    )
                )
            while writer.pending > 200_000:  # keep memory flat while the writer thread catches up
                time.sleep(0.05)
    return time.perf_counter() - started
