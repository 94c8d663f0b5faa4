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
