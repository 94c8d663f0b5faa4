"""`shadowline run` end to end: a short chaos run against the demo servers, judged on its contracts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCENARIO = """
name: nan-contract-{behaviour}
seed: 4
targets:
  incumbent: demo
  candidate:
    demo: {{variant: identical, nan_behaviour: {behaviour}}}
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
  nan: [clean_4xx, no_5xx, no_crash]
checks:
  score_ks: {{threshold: 0.1}}
  latency: {{min_n: 100, quantile: 0.95, margin: 0.5}}
  errors: {{min_n: 100, margin: 0.03}}
steady_state_checks:
  errors: {{min_n: 50, margin: 0.05}}
  latency: {{min_n: 50, quantile: 0.95, margin: 0.5}}
"""


def _run(tmp_path, behaviour: str) -> tuple[subprocess.CompletedProcess, dict]:
    scenario = tmp_path / f"{behaviour}.yaml"
    scenario.write_text(SCENARIO.format(behaviour=behaviour))
    run_dir = tmp_path / f"run-{behaviour}"
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", str(scenario), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = json.loads((run_dir / "report.json").read_text()) if (run_dir / "report.json").exists() else {}
    return result, report


@pytest.mark.slow
def test_a_candidate_that_crashes_on_nan_is_no_go_by_the_nan_contract(tmp_path):
    result, report = _run(tmp_path, "crash")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    failed = {c["name"] for c in report["checks"] if c["status"] == "fail" and c["critical"]}
    assert any("nan" in name and "clean_4xx" in name for name in failed), failed
    assert any("clean_4xx" in reason for reason in report["reasons"])
    # Production was never touched: every client request got the incumbent's 200.
    assert report["counts"]["incumbent"]["errors"] == {}


@pytest.mark.slow
def test_a_candidate_that_rejects_nan_cleanly_is_go(tmp_path):
    result, report = _run(tmp_path, "reject")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    contracts = [c for c in report["checks"] if "clean_4xx" in c["name"]]
    assert contracts and all(c["status"] == "pass" for c in contracts)
