"""`shadowline analyze` as a user runs it: verdicts, exit codes, reports, bad captures."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from harness.capture import CaptureWriter
from harness.records import ArmOutcome, Exchange
from harness.synthetic import write_synthetic_capture


def analyze(run_dir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "analyze", str(run_dir), *args], capture_output=True, text=True, timeout=120
    )


def _run(tmp_path, name, n, **kwargs):
    run_dir = tmp_path / name
    run_dir.mkdir()
    write_synthetic_capture(run_dir / "capture.db", n, **kwargs)
    return run_dir


def test_identical_candidate_is_go_with_all_four_reports(tmp_path):
    run_dir = _run(tmp_path, "identical", 5000, variant="identical")
    result = analyze(run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("GO")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "GO"
    assert {c["status"] for c in report["checks"]} == {"pass"}
    assert json.loads((run_dir / "codec.json").read_text())["name"] == "v2"  # detected and recorded
    suite = ET.parse(run_dir / "junit.xml").getroot()
    assert len(list(suite.iter("testcase"))) == len(report["checks"])
    html = (run_dir / "report.html").read_text()
    assert "GO" in html and html.count("<svg") >= 5
    assert "GO" in (run_dir / "report.md").read_text()


def test_a_candidate_flipping_three_percent_is_no_go(tmp_path):
    run_dir = _run(tmp_path, "subtle", 20_000, variant="subtle")
    result = analyze(run_dir)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "NO_GO"
    failing = [c for c in report["checks"] if c["status"] == "fail"]
    assert "label_agreement" in {c["name"] for c in failing}
    assert any("flips" in reason for reason in report["reasons"])


def test_fifty_requests_are_inconclusive_and_say_how_many_would_decide(tmp_path):
    run_dir = _run(tmp_path, "small", 50, variant="identical")
    result = analyze(run_dir)
    assert result.returncode == 3, result.stdout + result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "INCONCLUSIVE"
    assert report["required_n"] and report["required_n"] > 50


def test_margin_override_from_the_command_line_and_a_policy_file(tmp_path):
    run_dir = _run(tmp_path, "subtle", 20_000, variant="subtle")
    assert analyze(run_dir, "--set", "label_agreement.margin=0.10").returncode == 1  # other checks still fail
    [labels] = [c for c in json.loads((run_dir / "report.json").read_text())["checks"] if c["name"] == "label_agreement"]
    assert (labels["threshold"], labels["status"]) == (0.10, "pass")
    policy = tmp_path / "policy.yaml"
    policy.write_text("checks:\n  label_agreement:\n    margin: 0.001\n")
    assert analyze(run_dir, "--policy", str(policy)).returncode == 1
    bad = analyze(run_dir, "--set", "label_agreement.no_such_param=1")
    assert bad.returncode == 2 and "no_such_param" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("case", ["missing dir", "empty", "not sqlite", "truncated"])
def test_bad_captures_are_exit_2_with_a_message_naming_the_file(tmp_path, case):
    run_dir = tmp_path / "bad"
    if case != "missing dir":
        run_dir.mkdir()
    capture = run_dir / "capture.db"
    if case == "empty":
        CaptureWriter(capture).close()
    elif case == "not sqlite":
        capture.write_bytes(b"this is not a database" * 100)
    elif case == "truncated":
        write_synthetic_capture(capture, 2000)
        data = capture.read_bytes()
        capture.write_bytes(data[: len(data) // 3])
    result = analyze(run_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(run_dir) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_undecodable_candidate_bodies_are_an_outcome_not_a_crash(tmp_path):
    run_dir = tmp_path / "garbled"
    run_dir.mkdir()
    write_synthetic_capture(run_dir / "capture.db", 3000, variant="identical")
    with sqlite3.connect(run_dir / "capture.db") as db:  # the candidate answered 200 with garbage
        db.execute("UPDATE exchanges SET candidate_body = x'7b2274727563' WHERE seq % 2 = 0")
    result = analyze(run_dir)
    assert result.returncode in (1, 3), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] in ("NO_GO", "INCONCLUSIVE")


def test_undetectable_traffic_is_exit_2_suggesting_a_codec(tmp_path):
    run_dir = tmp_path / "odd"
    run_dir.mkdir()
    with CaptureWriter(run_dir / "capture.db") as writer:
        for i in range(300):
            arms = {arm: ArmOutcome(200, 0.01, b'{"weird": %d}' % i) for arm in ("incumbent", "candidate")}
            writer.write(Exchange(f"r{i}", 1.7e9 + i, "POST", "/score", b'{"x": 1}', arms))
    result = analyze(run_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--codec" in result.stderr


def test_the_same_exchanges_over_grpc_are_judged_exactly_as_over_http(tmp_path):
    """Identical rows, models and seed, captured as the HTTP proxy and as the gRPC proxy record
    them: the codec differs (detected); every check's outcome and n are the same, its statistic,
    interval and p-value too up to the JSON text's 9 significant digits (gRPC carries the FP32
    scores exactly)."""
    reports = {}
    for protocol in ("http", "grpc"):
        run_dir = _run(tmp_path, protocol, 3000, timeout_rate=0.01, protocol=protocol)
        result = analyze(run_dir)
        assert result.returncode == 1, result.stdout + result.stderr  # the subtle candidate: NO-GO
        reports[protocol] = json.loads((run_dir / "report.json").read_text())
    assert reports["http"]["codec"] == "v2" and reports["grpc"]["codec"] == "v2grpc"

    def outcomes(report):
        return [(c["name"], c["status"], c["n"]) for c in report["checks"]]

    def numbers(report):
        return [[c[k] for k in ("statistic", "ci_low", "ci_high", "p_value") if c[k] is not None] for c in report["checks"]]

    assert reports["grpc"]["verdict"] == reports["http"]["verdict"]
    assert outcomes(reports["grpc"]) == outcomes(reports["http"])
    for grpc_values, http_values in zip(numbers(reports["grpc"]), numbers(reports["http"])):
        assert grpc_values == pytest.approx(http_values, rel=1e-3)
    assert reports["grpc"]["paired"] == reports["http"]["paired"] and reports["grpc"]["paired"]["candidate"] > 0
