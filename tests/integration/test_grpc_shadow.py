"""A gRPC shadow run end to end, from the CLI: demo servers over gRPC, the gRPC proxy, the judge."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc

from harness.capture import CaptureReader
from harness.demo_model import synthetic_rows
from harness.procs import shadowline_command, spawn
from proxies.demo_grpc import infer_request_message
from harness.codecs.grpc_v2 import method_path


def test_grpc_shadow_run_is_captured_and_judged(children, tmp_path):
    logs = tmp_path / "logs"

    def start(name, *args, **kw):
        child = spawn(name, shadowline_command(*args), logs / f"{name}.log", **kw)
        children.append(child)
        return child

    incumbent = start("incumbent", "serve-demo", "--grpc", "--port", "0")
    candidate = start("candidate", "serve-demo", "--grpc", "--role", "candidate", "--variant", "identical", "--port", "0")
    run_dir = tmp_path / "run"
    proxy = start(
        "proxy", "proxy", "grpc", "--listen", "127.0.0.1:0", "--incumbent", f"{incumbent.host}:{incumbent.port}",
        "--candidate", f"{candidate.host}:{candidate.port}", "--run-dir", str(run_dir),
    )
    rows = synthetic_rows(600, 5)
    direct_channel = grpc.insecure_channel(f"{incumbent.host}:{incumbent.port}")
    proxy_channel = grpc.insecure_channel(f"{proxy.host}:{proxy.port}")
    infer_direct = direct_channel.unary_unary(method_path("ModelInfer"))
    infer_proxy = proxy_channel.unary_unary(method_path("ModelInfer"))
    for i in range(0, 600, 4):
        request = infer_request_message(rows[i : i + 4])
        assert infer_proxy(request, timeout=5) == infer_direct(request, timeout=5)  # byte-identical answers
    direct_channel.close()
    proxy_channel.close()
    assert proxy.stop() == 0

    with CaptureReader(run_dir / "capture.db") as capture:
        summary = capture.summary()
    assert summary["incumbent"]["statuses"] == {0: 150} and summary["candidate"]["statuses"] == {0: 150}

    # 600 paired predictions are too few for GO, but they decode and pair: INCONCLUSIVE, not an error.
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "analyze", str(run_dir), "--codec", "v2grpc"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["codec"] == "v2grpc"
    [labels] = [c for c in report["checks"] if c["name"] == "label_agreement"]
    assert labels["n"] == 600 and labels["effect"] == 0.0
