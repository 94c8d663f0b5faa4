"""The speed paths of `analyze` give what the plain paths give: the fault ledger read with the
spans, figures drawn in a forked child, the error masks of the checks, and a whole judgement
with and without the parallel parts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import pairing
from harness.capture import CaptureReader, CaptureWriter
from harness.checks.base import kind_mask
from harness.codecs import get_codec
from harness.pairing import build_evidence
from harness.records import ArmOutcome, Exchange
from harness.synthetic import write_synthetic_capture
from reports import plots
from reports.html import figures

OK = (b'{"outputs":[{"name":"label","shape":[1],"datatype":"INT64","data":[1]},'
      b'{"name":"probabilities","shape":[1,2],"datatype":"FP32","data":[0.2,0.8]}]}')


def _faulted_capture(path, n: int, *, share: float, plan: bool, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    with CaptureWriter(path) as writer:
        if plan:
            writer.set_meta("faults", {"seed": seed, "faults": [{"type": "nan"}]})
        for i in range(n):
            candidate = ("nan", f"latency:{i % 3}") if rng.random() < share else ()
            incumbent = ("reset",) if rng.random() < share / 4 else ()
            arms = {"incumbent": ArmOutcome(200, 0.01, OK, faults=incumbent),
                    "candidate": ArmOutcome(200, 0.02, OK, faults=candidate)}
            if i % 9 == 0:
                arms["baseline"] = ArmOutcome(200, 0.01, OK, faults=candidate)
            writer.write(Exchange(f"r{i}", 1.0 + i, "POST", "/", b"{}", arms))


@pytest.mark.parametrize("share,plan", [(0.0, False), (0.0, True), (0.01, True), (0.3, False)])
@pytest.mark.parametrize("workers,codec", [(0, "v2"), (2, "v2"), (2, None)])
def test_fault_ledger_read_with_the_spans_is_the_readers(tmp_path, monkeypatch, share, plan, workers, codec):
    path = tmp_path / "capture.db"
    _faulted_capture(path, 2500, share=share, plan=plan)
    monkeypatch.setattr(pairing, "_SPAN", 700)
    with CaptureReader(path) as reader:
        evidence = build_evidence(reader, get_codec(codec) if codec else None, workers=workers)
        seq = reader.columns()["seq"]
        assert set(evidence.arms) == {"incumbent", "candidate", "baseline"}
        for arm, cols in evidence.arms.items():
            expected = reader.fault_ledger(arm, seq)
            if expected is None:
                assert cols.faults is None, arm
            else:
                assert cols.faults is not None and cols.faults.dtype == object
                assert cols.faults.tolist() == expected.tolist(), arm


def test_judge_read_reports_the_faulted_rows_of_a_span(tmp_path):
    path = tmp_path / "capture.db"
    _faulted_capture(path, 300, share=0.2, plan=False)
    with CaptureReader(path) as reader:
        plain = reader.judge_read(("incumbent", "candidate"), after=100, upto=200)
        assert not any(k.endswith("_faulted") for k in plain)
        data = reader.judge_read(("incumbent", "candidate"), after=100, upto=200, faults=True)
        for arm in ("incumbent", "candidate"):
            ledger = reader.fault_ledger(arm, data["seq"])
            where, labels = data[f"{arm}_faulted"]
            assert where.tolist() == [i for i, f in enumerate(ledger.tolist()) if f]
            assert labels == [f for f in ledger.tolist() if f]


def test_kind_mask_matches_the_elementwise_comparison():
    err = np.array([None, "timeout", None, "shed", "timeout", "", "x"], dtype=object)
    for kind in ("timeout", "shed", "", "none", "x"):
        assert kind_mask(err, kind).tolist() == [e == kind for e in err.tolist()]
    assert kind_mask(np.array(["timeout", "reset"]), "timeout").tolist() == [True, False]
    assert kind_mask(np.empty(0, dtype=object), "timeout").tolist() == []


@pytest.fixture(scope="module")
def synthetic_evidence(tmp_path_factory):
    path = tmp_path_factory.mktemp("speed") / "capture.db"
    write_synthetic_capture(path, 3000, timeout_rate=0.01)
    with CaptureReader(path) as reader:
        return build_evidence(reader, get_codec("v2"))


def test_figures_drawn_in_a_child_are_the_ones_drawn_here(synthetic_evidence):
    here = figures(synthetic_evidence)
    job = plots.PlotJob(synthetic_evidence, fork=True)
    forked = job.result()
    assert forked == here
    assert [p["key"] for p in forked["plots"]] == ["latency", "scatter", "difference", "confusion", "errors"]


def test_a_plot_job_whose_child_fails_draws_here(synthetic_evidence, monkeypatch):
    monkeypatch.setattr(plots, "_draw_in_child", lambda conn, evidence, arm: conn.close())
    job = plots.PlotJob(synthetic_evidence, fork=True)
    assert job.result() == figures(synthetic_evidence)
    job.close()  # nothing left to stop


def test_warm_up_changes_no_figure(synthetic_evidence):
    before = figures(synthetic_evidence)
    plots.warm_up()
    assert figures(synthetic_evidence) == before


def test_judgement_is_the_same_with_and_without_the_parallel_paths(tmp_path, monkeypatch, request):
    import gc

    from harness.judge import judge

    request.addfinalizer(gc.unfreeze)  # the parallel path freezes what is loaded (see judge)
    runs = {}
    for name, parallel in (("serial", False), ("parallel", True)):
        run_dir = tmp_path / name / "run"  # the same run id in both
        run_dir.mkdir(parents=True)
        write_synthetic_capture(run_dir / "capture.db", 4000, timeout_rate=0.01)
        with monkeypatch.context() as m:
            # parallel: evidence workers and the plot child from 0 exchanges; serial: neither
            m.setattr(pairing, "PARALLEL_MIN", 0 if parallel else 10**9)
            m.setattr(plots, "PARALLEL_MIN", 0 if parallel else 10**9)
            judgement = judge(run_dir, codec="v2")
        runs[name] = {kind: path.read_text() for kind, path in judgement.paths.items()}
    assert json.loads(runs["serial"]["json"]) == json.loads(runs["parallel"]["json"])
    assert runs["serial"] == runs["parallel"]
