"""`shadowline demo` end to end: real servers, real proxy, real Locust, a real capture, the judge."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from harness.capture import CaptureReader


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_all_four_reports(tmp_path):
    run_dir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "demo", "--duration", "3", "--rate", "40", "--seed", "3", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # ~120 requests cannot show that anything is within its margin: INCONCLUSIVE, exit 3.
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    assert "INCONCLUSIVE" in result.stdout and "report.html" in result.stdout
    for name in ("report.json", "report.md", "report.html", "junit.xml", "codec.json", "run.json"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "INCONCLUSIVE" and report["required_n"] > 120
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 3
    answered = int(re.search(r"load: ([\d,]+) requests", result.stdout).group(1).replace(",", ""))
    with CaptureReader(run_dir / "capture.db") as capture:
        summary = capture.summary()
        assert answered > 0 and capture.count() >= answered  # every answered request is in the capture
    assert summary["incumbent"]["ok"] == summary["incumbent"]["present"] == summary["candidate"]["ok"]
    for name in ("incumbent", "candidate", "proxy"):
        assert (run_dir / "logs" / f"{name}.log").exists()


def _demo(run_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "demo", "--duration", "5", "--rate", "60", "--seed", "3",
         "--variant", "broken", "--run-dir", str(run_dir), *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.slow
def test_demo_over_grpc_reaches_the_verdict_it_reaches_over_http(tmp_path):
    over_http, over_grpc = _demo(tmp_path / "http"), _demo(tmp_path / "grpc", "--protocol", "grpc")
    assert over_grpc.returncode == over_http.returncode == 1, over_grpc.stdout[-2000:] + over_grpc.stderr[-2000:]
    reports = {name: json.loads((tmp_path / name / "report.json").read_text()) for name in ("http", "grpc")}
    assert reports["grpc"]["verdict"] == reports["http"]["verdict"] == "NO_GO"
    failed = {name: sorted(c["name"] for c in r["checks"] if c["status"] == "fail") for name, r in reports.items()}
    assert failed["grpc"] == failed["http"] and failed["grpc"]
    assert json.loads((tmp_path / "grpc" / "codec.json").read_text())["name"] == "v2grpc"
    assert json.loads((tmp_path / "grpc" / "run.json").read_text())["extra"]["demo"]["protocol"] == "grpc"
    with CaptureReader(tmp_path / "grpc" / "capture.db") as capture:
        assert json.loads(capture.meta()["proxy_settings"])["protocol"] == "grpc"
