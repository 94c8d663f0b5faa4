"""`shadowline run` over gRPC: a short shadow run and a short chaos run reach the same verdicts
as the same scenarios over HTTP (the same candidate, rows, seed and faults).

Four short runs (about 80 s in all): each scenario once with `protocol: grpc` and once with
`protocol: http`, as subprocesses like tests/e2e/test_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SHADOW = """
name: shadow-{protocol}
seed: 1
protocol: {protocol}
targets:
  incumbent: demo
  candidate:
    demo: {{variant: identical}}
  baseline: incumbent
traffic:
  synthetic: {{rows_per_request: 8}}
load: {{rate: 60}}
phases:
  - {{name: shadow, duration_s: 6}}
checks:
  score_ks: {{threshold: 0.1}}
  latency: {{min_n: 100, quantile: 0.95, margin: 0.5}}
  errors: {{min_n: 100, margin: 0.03}}
"""

# The candidate answers NaN with an opaque failure (HTTP 500, gRPC INTERNAL): NO-GO by the
# clean_4xx contract over both protocols, while production is untouched.
CHAOS = """
name: nan-crash-{protocol}
seed: 4
protocol: {protocol}
targets:
  incumbent: demo
  candidate:
    demo: {{variant: identical, nan_behaviour: crash}}
  baseline: incumbent
traffic:
  synthetic: {{rows_per_request: 8}}
load: {{rate: 50}}
phases:
  - {{name: before, duration_s: 4, steady_state: true}}
  - name: storm
    duration_s: 6
    faults:
      - {{type: nan, label: nan, fields: [age], probability: 0.5}}
  - {{name: after, duration_s: 4, steady_state: true}}
contracts:
  nan: [clean_4xx, no_hang, no_crash]
checks:
  score_ks: {{threshold: 0.1}}
  latency: {{min_n: 100, quantile: 0.95, margin: 0.5}}
  errors: {{min_n: 100, margin: 0.03}}
steady_state_checks:
  errors: {{min_n: 50, margin: 0.05}}
  latency: {{min_n: 50, quantile: 0.95, margin: 0.5}}
"""


def _run(tmp_path, template: str, protocol: str) -> tuple[subprocess.CompletedProcess, dict]:
    scenario = tmp_path / f"{protocol}.yaml"
    scenario.write_text(template.format(protocol=protocol))
    run_dir = tmp_path / f"run-{protocol}"
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else {}
    return result, report


def _failed(report: dict) -> set[str]:
    return {c["name"] for c in report.get("checks", ()) if c["status"] == "fail" and c["critical"]}


@pytest.mark.slow
def test_a_shadow_run_over_grpc_is_judged_as_over_http(tmp_path):
    grpc, grpc_report = _run(tmp_path, SHADOW, "grpc")
    http, http_report = _run(tmp_path, SHADOW, "http")
    assert grpc.returncode == http.returncode == 0, grpc.stdout[-3000:] + grpc.stderr[-3000:]
    assert grpc_report["verdict"] == http_report["verdict"] == "GO"
    # Every request was answered by the incumbent and mirrored to both shadows, over gRPC too.
    counts = grpc_report["counts"]
    assert counts["incumbent"]["errors"] == {} and counts["candidate"]["errors"] == {}
    run = json.loads((tmp_path / "run-grpc" / "scenario.json").read_text())
    assert run["protocol"] == "grpc" and run["codec"] == "v2grpc"


@pytest.mark.slow
def test_a_chaos_run_over_grpc_is_judged_as_over_http(tmp_path):
    grpc, grpc_report = _run(tmp_path, CHAOS, "grpc")
    http, http_report = _run(tmp_path, CHAOS, "http")
    assert grpc.returncode == http.returncode == 1, grpc.stdout[-3000:] + grpc.stderr[-3000:]
    assert grpc_report["verdict"] == http_report["verdict"] == "NO_GO"
    for report in (grpc_report, http_report):
        assert any("nan" in name and "clean_4xx" in name for name in _failed(report)), _failed(report)
    # The same contracts break, and nothing else: the protocol changes the wire, not the judgement.
    assert _failed(grpc_report) == _failed(http_report)
    # Production was never touched: every client call got the incumbent's OK.
    assert grpc_report["counts"]["incumbent"]["errors"] == {}
