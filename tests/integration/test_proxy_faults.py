"""Fault plans executed by the real proxy: mirrored copies faulted, production untouched, a ledger kept."""

from __future__ import annotations

import json

import numpy as np

from harness.capture import CaptureReader
from tests.integration.conftest import infer_bodies, post


def _plan(tmp_path, faults, seed=5):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"seed": seed, "codec": "v2", "faults": faults}))
    return str(path)


def _drive(proxy, n):
    import http.client

    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=10)
    statuses = [post(conn, body, {"x-request-id": f"r{i}"}).status for i, body in enumerate(infer_bodies(n, seed=9))]
    proxy.stop()
    return statuses


def test_payload_faults_reach_candidate_and_baseline_only_and_are_in_the_ledger(start_demo, start_proxy, tmp_path):
    incumbent = start_demo("incumbent")
    baseline = start_demo("baseline")  # a second incumbent: the contract's reference
    fragile = start_demo("candidate", "--role", "candidate", "--variant", "identical", "--nan-behaviour", "crash")
    plan = _plan(tmp_path, [{"type": "nan", "fields": ["age"], "probability": 0.5, "label": "nan_age"}])
    proxy = start_proxy(incumbent.url, fragile.url, "--baseline", baseline.url, "--faults", plan)
    statuses = _drive(proxy, 200)
    assert statuses == [200] * 200  # production never sees a fault

    with CaptureReader(proxy.run_dir / "capture.db") as capture:
        exchanges = list(capture.exchanges())
    faulted = [e for e in exchanges if e.arms["candidate"].faults]
    assert 60 < len(faulted) < 140
    for e in exchanges:
        cand, base, inc = e.arms["candidate"], e.arms["baseline"], e.arms["incumbent"]
        assert inc.faults == () and inc.status == 200
        assert cand.faults == base.faults  # the same faulted request went to both
        if cand.faults:
            assert cand.faults == ("nan_age",)
            assert (cand.status, base.status) == (500, 400)  # fragile vs clean rejection
            assert b"age" in base.body
        else:
            assert (cand.status, base.status) == (200, 200)
    assert json.loads((proxy.run_dir / "faults.json").read_text())["faults"][0]["type"] == "nan"

    # Same seed and scenario, same plan: a second run faults the same requests.
    again = start_proxy(incumbent.url, fragile.url, "--baseline", baseline.url, "--faults", plan, run_dir=tmp_path / "again")
    _drive(again, 200)
    with CaptureReader(again.run_dir / "capture.db") as capture:
        assert {e.request_id for e in capture.exchanges() if e.arms["candidate"].faults} == {e.request_id for e in faulted}


def test_transport_faults_are_executed_on_the_copy(start_demo, start_proxy, tmp_path):
    incumbent = start_demo("incumbent")
    candidate = start_demo("candidate", "--role", "candidate")
    faults = [
        {"type": "abort", "status": 503, "probability": 0.2, "arms": ["candidate"], "label": "abort"},
        {"type": "reset", "probability": 0.2, "arms": ["candidate"], "label": "reset"},
        {"type": "latency", "ms": 150, "probability": 0.2, "arms": ["candidate"], "label": "slow"},
        {"type": "truncate", "fraction": 0.5, "probability": 0.2, "arms": ["candidate"], "label": "cut"},
        {"type": "hang", "probability": 0.1, "arms": ["candidate"], "label": "hang"},
    ]
    proxy = start_proxy(incumbent.url, candidate.url, "--faults", _plan(tmp_path, faults), "--shadow-timeout", "1")
    assert _drive(proxy, 150) == [200] * 150
    with CaptureReader(proxy.run_dir / "capture.db") as capture:
        exchanges = list(capture.exchanges())
    by_terminal = {}
    for e in exchanges:
        cand = e.arms["candidate"]
        terminal = [f for f in cand.faults if f in ("abort", "reset", "cut", "hang")]
        assert len(terminal) <= 1  # at most one terminal action per copy
        by_terminal.setdefault(terminal[0] if terminal else None, []).append(cand)
        if "slow" in cand.faults and not terminal:
            assert cand.latency_s >= 0.145  # the delay is network time: it counts (ms-grained timers)
    assert {c.status for c in by_terminal["abort"]} == {503}
    assert {c.error for c in by_terminal["reset"]} == {"reset"}
    assert {c.error for c in by_terminal["hang"]} == {"timeout"}
    # A request cut in half: the demo server never gets a whole body; it answers nothing
    # usable (the half-closed connection ends, or the copy times out), never a 200.
    assert all(c.status != 200 for c in by_terminal["cut"])
    assert np.mean([c.status == 200 for c in by_terminal[None]]) == 1.0
