"""Reports: report.json (and its schema), report.md, junit.xml and report.html, built from
synthetic verdicts and evidence (plain numpy, no capture needed)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import jsonschema
import numpy as np
import pytest

from harness.evidence import ArmColumns, Evidence, Pairs
from harness.verdict import FAIL, GO, INCONCLUSIVE, NO_GO, PASS, UNDECIDED, CheckResult, Verdict
from reports import REPORT_FILES, SCHEMA_PATH, ReportSchemaError, build_report, validate_report, write_reports
from reports import plots
from reports.html import render_html
from reports.junit import render_junit
from reports.markdown import render_markdown



# ----------------------------------------------------------------------------------------
# Synthetic evidence


def make_arm(rng, n, *, present=True, median_ms=12.0, sigma=0.35, error_rate=0.0,
             burst=None, status_5xx=0.0, t=None) -> ArmColumns:
    present_mask = np.full(n, bool(present))
    latency = rng.lognormal(math.log(median_ms / 1000), sigma, n)
    error = np.full(n, None, dtype=object)
    status = np.full(n, 200, dtype=np.int64)
    if error_rate:
        error[rng.random(n) < error_rate] = "reset"
    if burst is not None and t is not None:  # timeouts between two fractions of the run
        lo, hi = np.quantile(t, burst)
        error[(t >= lo) & (t <= hi) & (rng.random(n) < 0.3)] = "timeout"
    if status_5xx:
        status[(rng.random(n) < status_5xx) & np.equal(error, None)] = 503
    failed = np.not_equal(error, None)
    status[failed] = -1
    latency[error == "reset"] = np.nan
    latency[error == "timeout"] = 1.0
    if not present:
        latency[:] = np.nan
        status[:] = -1
    decoded = present_mask & ~failed & (status == 200)
    return ArmColumns(present=present_mask, status=status, latency_s=latency, error=error, decoded=decoded)


def make_pairs(rng, inc: ArmColumns, other: ArmColumns, *, shift=0.0, noise=0.01, n_classes=2) -> Pairs:
    idx = np.flatnonzero(inc.decoded & other.decoded).astype(np.int64)
    m = len(idx)
    if n_classes == 2:
        si = rng.beta(2, 2, m)
        so = np.clip(si + shift + rng.normal(0, noise, m), 0, 1)
        return Pairs(idx, (si > 0.5).astype(np.int64), (so > 0.5).astype(np.int64), si, so)
    li = rng.integers(0, n_classes, m)
    lo = np.where(rng.random(m) < noise * 5, rng.integers(0, n_classes, m), li)
    si = rng.uniform(0.3, 1, m)
    so = np.clip(si + rng.normal(0, noise, m), 0, 1)
    return Pairs(idx, li, lo, si, so)


def make_evidence(n=2000, *, seed=1, duration=120.0, baseline=False, broken=False, task="classification",
                  n_classes=2) -> Evidence:
    rng = np.random.default_rng(seed)
    t = 1.7e9 + np.sort(rng.uniform(0, duration, n))
    inc = make_arm(rng, n, error_rate=0.001)
    cand = make_arm(rng, n, median_ms=16.0 if broken else 12.5, sigma=0.5 if broken else 0.35,
                    error_rate=0.002, burst=(0.4, 0.5) if broken else None, status_5xx=0.01 if broken else 0, t=t)
    arms = {"incumbent": inc, "candidate": cand}
    pairs = {"candidate": make_pairs(rng, inc, cand, shift=0.04 if broken else 0.0,
                                     noise=0.08 if broken else 0.01, n_classes=n_classes)}
    if baseline:
        base = make_arm(rng, n, error_rate=0.001)
        arms["baseline"] = base
        pairs["baseline"] = make_pairs(rng, inc, base, noise=0.005, n_classes=n_classes)
    else:
        arms["baseline"] = make_arm(rng, n, present=False)
    if task == "regression":
        pairs = {k: Pairs(p.exchange, np.full(p.n, -1), np.full(p.n, -1), p.score_incumbent * 100,
                          p.score_other * 100) for k, p in pairs.items()}
    return Evidence(started_at=t, arms=arms, pairs=pairs, task=task, codec="oip-v2",
                    notes=["12 candidate bodies not decodable"] if broken else [])


def empty_evidence() -> Evidence:
    none = np.array([], dtype=object)
    arm = ArmColumns(np.zeros(0, bool), np.zeros(0, np.int64), np.zeros(0), none, np.zeros(0, bool))
    return Evidence(started_at=np.zeros(0), arms={"incumbent": arm, "candidate": arm}, pairs={}, codec="")


def all_errors_evidence(n=300) -> Evidence:
    """Every candidate copy timed out or was shed: no pairs, no candidate latencies."""
    rng = np.random.default_rng(3)
    t = 1.7e9 + np.arange(n) * 0.1
    inc = make_arm(rng, n)
    error = np.where(np.arange(n) % 2 == 0, "timeout", "shed").astype(object)
    cand = ArmColumns(np.ones(n, bool), np.full(n, -1, np.int64), np.full(n, np.nan), error, np.zeros(n, bool))
    return Evidence(started_at=t, arms={"incumbent": inc, "candidate": cand}, pairs={}, codec="oip-v2")


def counts_of(evidence: Evidence) -> dict:
    """The shape CaptureReader.summary() gives: int status keys included."""
    out = {}
    for arm, c in evidence.arms.items():
        present = c.present
        errors: dict[str, int] = {}
        for e in c.error[present]:
            if e is not None:
                errors[e] = errors.get(e, 0) + 1
        codes, n = np.unique(c.status[present & (c.status >= 0)], return_counts=True)
        out[arm] = {
            "present": int(present.sum()),
            "ok": int(np.sum(present & np.equal(c.error, None) & (c.status >= 0))),
            "errors": dict(sorted(errors.items())),
            "statuses": {int(k): int(v) for k, v in zip(codes, n)},
        }
    return out


RUN = {"id": "20240101-120000-abc123", "seed": 7, "start": "2024-01-01T12:00:00+00:00", "duration_s": 120.0,
       "versions": {"python": "3.11.9", "shadowline": "0.1.0", "numpy": "2.0.0"},
       "command": ["shadowline", "analyze", "runs/x"]}

CHECKS = {
    "label_agreement": dict(test="Clopper-Pearson exact interval", statistic=0.012, effect=0.012, ci_low=0.009,
                            ci_high=0.016, p_value=0.0004, n=1990, threshold=0.01),
    "latency_p99": dict(test="bootstrap ratio of p99", statistic=1.31, effect=1.31, ci_low=1.2, ci_high=1.45,
                        p_value=None, n=1990, threshold=1.2, details={"p99_ms": {"incumbent": 21.0, "candidate": 27.5}}),
    "error_rate": dict(test="Newcombe difference of proportions", statistic=2.1, effect=0.004, ci_low=-0.001,
                       ci_high=0.009, p_value=0.03, n=2000, threshold=0.005),
    "score_shift": dict(test="Wilcoxon signed-rank", statistic=float("nan"), effect=0.0012, ci_low=float("-inf"),
                        ci_high=0.003, p_value=0.4, n=1990, threshold=0.02, critical=False),
}


def make_verdict(decision: str) -> Verdict:
    status_of = {
        GO: dict.fromkeys(CHECKS, PASS),
        NO_GO: {"label_agreement": FAIL, "latency_p99": FAIL, "error_rate": INCONCLUSIVE, "score_shift": PASS},
        UNDECIDED: {"label_agreement": INCONCLUSIVE, "latency_p99": PASS, "error_rate": INCONCLUSIVE,
                    "score_shift": PASS},
    }[decision]
    results = []
    for name, params in CHECKS.items():
        status = status_of[name]
        results.append(CheckResult(
            name=name, status=status,
            message=f"{name} measured <{status}> & compared with \"its\" threshold",  # characters to escape
            required_n=12000 if status == INCONCLUSIVE else None, **params))
    reasons = {
        GO: ["every required check passed"],
        NO_GO: ["label_agreement: 1.2% of labels changed (> 1%)", "latency_p99: p99 is 1.31x the incumbent's"],
        UNDECIDED: ["label_agreement: too few paired predictions to decide"],
    }[decision]
    return Verdict(decision, reasons, results, required_n=12000 if decision == UNDECIDED else None)


def report_for(decision: str, evidence: Evidence | None = None) -> tuple[dict, Evidence]:
    evidence = evidence or make_evidence(broken=decision == NO_GO, baseline=decision == GO)
    report = build_report(make_verdict(decision), evidence, run=RUN, counts=counts_of(evidence), faults=None)
    return report, evidence


# ----------------------------------------------------------------------------------------
# report.json


@pytest.mark.parametrize("decision", [GO, NO_GO, UNDECIDED])
def test_report_json_validates_and_round_trips(decision):
    report, evidence = report_for(decision)
    validate_report(report)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert report["schema_version"] == 1 and report["verdict"] == decision
    assert list(report)[:8] == ["schema_version", "verdict", "reasons", "required_n", "checks", "counts", "faults", "run"]
    assert report["faults"] == [] and report["run"]["id"] == RUN["id"] and report["codec"] == "oip-v2"
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    for check in report["checks"]:
        for key in ("name", "status", "critical", "statistic", "effect", "ci_low", "ci_high", "p_value", "n",
                    "threshold", "message", "test", "required_n", "details"):
            assert key in check
    assert report["counts"]["incumbent"]["statuses"]["200"] > 0  # int keys became strings
    assert report["exchanges"] == evidence.n_exchanges
    assert report["paired"]["candidate"] == evidence.pairs["candidate"].n
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_nan_and_infinity_become_null_and_numpy_values_become_python():
    report, _ = report_for(GO)
    shift = next(c for c in report["checks"] if c["name"] == "score_shift")
    assert shift["statistic"] is None and shift["ci_low"] is None and shift["ci_high"] == 0.003
    verdict = Verdict(GO, ["ok"], [CheckResult("x", PASS, "m", effect=np.float64("nan"), n=np.int64(5),
                                               details={"q": np.array([1.0, np.nan]), 3: np.float32(0.5)})])
    doc = build_report(verdict, make_evidence(50), run={"id": "r", "seed": None}, counts={})
    validate_report(doc)
    assert doc["checks"][0]["effect"] is None and doc["checks"][0]["n"] == 5 and type(doc["checks"][0]["n"]) is int
    assert doc["checks"][0]["details"] == {"q": [1.0, None], "3": 0.5}
    json.dumps(doc, allow_nan=False)


def test_validation_without_jsonschema_still_catches_a_broken_document(monkeypatch):
    report, _ = report_for(NO_GO)
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # as if the test extra were not installed
    validate_report(report)
    for mutate in (lambda d: d.update(verdict="MAYBE"), lambda d: d["checks"][0].pop("n"),
                   lambda d: d["checks"][1].update(status="ok"), lambda d: d.pop("counts")):
        doc = json.loads(json.dumps(report))
        mutate(doc)
        with pytest.raises(ReportSchemaError):
            validate_report(doc)


def test_schema_rejects_what_the_contract_forbids():
    report, _ = report_for(NO_GO)
    for mutate, field in [
        (lambda d: d.update(verdict="MAYBE"), "verdict"),
        (lambda d: d["checks"][0].update(status="ok"), "status"),
        (lambda d: d["checks"][0].update(p_value=1.5), "p_value"),
        (lambda d: d.pop("run"), "run"),
        (lambda d: d["counts"]["incumbent"].update(present=-1), "present"),
    ]:
        doc = json.loads(json.dumps(report))
        mutate(doc)
        with pytest.raises(ReportSchemaError):
            validate_report(doc)
    with pytest.raises(ValueError):
        build_report(Verdict("MAYBE", [], []), make_evidence(10), run={"id": "r"}, counts={})


# ----------------------------------------------------------------------------------------
# report.md


@pytest.mark.parametrize(("decision", "word"), [(GO, "GO"), (NO_GO, "NO-GO"), (UNDECIDED, "INCONCLUSIVE")])
def test_markdown_has_verdict_reasons_checks_and_counts(decision, word):
    report, _ = report_for(decision)
    md = render_markdown(report)
    assert md.startswith(f"## Shadowline verdict: {word}\n")
    for reason in report["reasons"]:
        assert f"- {reason.replace('>', '&gt;')}" in md
    assert "<fail>" not in md and "<pass>" not in md  # free text cannot open HTML tags in a PR
    for name in CHECKS:
        assert re.search(rf"^\| `{name}`", md, re.M), name
    assert "| incumbent |" in md and "| candidate |" in md and "| baseline |" not in md or decision == GO
    assert "[0.009, 0.016]" in md  # effect with its interval
    if decision == UNDECIDED:
        assert "About 12,000 exchanges" in md
    if decision == NO_GO:
        assert "**FAIL**" in md
    assert not re.search(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]", md)  # no emoji
    # Table rows have the header's number of columns (pipes in text are escaped).
    header = next(line for line in md.splitlines() if line.startswith("| Check"))
    for line in md.splitlines():
        if line.startswith("| `"):
            assert len(re.findall(r"(?<!\\)\|", line)) == len(re.findall(r"\|", header))


# ----------------------------------------------------------------------------------------
# junit.xml


@pytest.mark.parametrize("decision", [GO, NO_GO, UNDECIDED])
def test_junit_has_one_testcase_per_check(decision):
    report, _ = report_for(decision)
    root = ET.fromstring(render_junit(report).encode())
    suite = root.find("testsuite")
    assert suite.get("name") == "shadowline"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == list(CHECKS)
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == decision and props["run_id"] == RUN["id"]
    for case, check in zip(cases, report["checks"]):
        failure, skipped = case.find("failure"), case.find("skipped")
        assert (failure is not None) == (check["status"] == FAIL)
        assert (skipped is not None) == (check["status"] == INCONCLUSIVE)
        if failure is not None:
            assert failure.get("message") == check["message"]  # escaped on the way out, intact on the way in
        if skipped is not None:
            assert "inconclusive" in skipped.get("message")
    assert int(suite.get("tests")) == len(CHECKS)
    assert int(suite.get("failures")) == sum(c["status"] == FAIL for c in report["checks"])
    assert int(suite.get("skipped")) == sum(c["status"] == INCONCLUSIVE for c in report["checks"])


def test_junit_survives_hostile_text():
    verdict = Verdict(NO_GO, ["bad -- <reason> \x01"], [
        CheckResult("a<b>&\"c\"", FAIL, "line1\nline2 ]]> \x00 -- end-"),
        CheckResult("d", INCONCLUSIVE, "-- weird --"),
    ])
    report = build_report(verdict, make_evidence(20), run={"id": "r&d"}, counts={})
    root = ET.fromstring(render_junit(report).encode())
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["a<b>&\"c\"", "d"]


# ----------------------------------------------------------------------------------------
# report.html


def _assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<link|<iframe|@import|url\((?!#)", page, re.I)
    assert not re.search(r"""\s(?:src|href)=["'](?!#|data:)""", page)


@pytest.mark.parametrize("decision", [GO, NO_GO, UNDECIDED])
def test_html_is_self_contained_with_verdict_checks_and_five_plots(decision):
    report, evidence = report_for(decision)
    page = render_html(report, evidence)
    _assert_self_contained(page)
    assert page.lstrip().lower().startswith("<!doctype html>")
    word = {GO: "GO", NO_GO: "NO-GO", UNDECIDED: "INCONCLUSIVE"}[decision]
    assert f'<div class="word">{word}</div>' in page
    assert page.index('class="word"') < page.index('class="checks"') < page.index('id="plot-latency"')
    for name in CHECKS:
        assert f'<span class="check-name">{name}</span>' in page
    assert page.count("<svg") == 5
    assert "&lt;fail&gt; &amp; compared" in page or "&lt;pass&gt; &amp; compared" in page  # autoescaped
    assert "<pass>" not in page and "<fail>" not in page
    assert RUN["id"] in page and "numpy" in page
    # Every SVG id is unique on the page (figures' ids are prefixed).
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_html_plots_real_figures_for_rich_evidence():
    report, evidence = report_for(NO_GO, make_evidence(3000, broken=True, baseline=True))
    page = render_html(report, evidence)
    assert page.count('class="plot placeholder"') == 0
    assert page.count('class="plot"') == 5


@pytest.mark.parametrize("evidence_factory", [
    empty_evidence,
    all_errors_evidence,
    lambda: make_evidence(400, task="regression"),
    lambda: make_evidence(1),
    lambda: make_evidence(30, duration=0.0),
    lambda: make_evidence(800, n_classes=30),
])
def test_degenerate_evidence_renders(evidence_factory, tmp_path):
    evidence = evidence_factory()
    report = build_report(make_verdict(UNDECIDED), evidence, run=RUN, counts=counts_of(evidence))
    paths = write_reports(tmp_path, report, evidence)
    assert set(paths) == set(REPORT_FILES)
    page = paths["html"].read_text()
    _assert_self_contained(page)
    assert page.count("<svg") == 5


def test_placeholders_say_why():
    ev = empty_evidence()
    for svg in (plots.latency_plot(ev), plots.score_scatter(ev), plots.difference_histogram(ev),
                plots.confusion_matrix(ev), plots.errors_over_time(ev)):
        assert 'class="plot placeholder"' in svg and "no " in svg
    assert "regression" in plots.confusion_matrix(make_evidence(100, task="regression"))
    errs = all_errors_evidence()
    assert "placeholder" in plots.score_scatter(errs)
    assert "placeholder" not in plots.errors_over_time(errs)
    assert "placeholder" not in plots.latency_plot(errs)  # the incumbent still has latencies


def test_plots_handle_constant_and_non_finite_data():
    ev = make_evidence(200)
    p = ev.pairs["candidate"]
    same = Pairs(p.exchange, p.label_incumbent, p.label_incumbent, p.score_incumbent, p.score_incumbent)
    const = Pairs(p.exchange, np.zeros(p.n, np.int64), np.zeros(p.n, np.int64), np.full(p.n, 0.7), np.full(p.n, 0.7))
    nan = Pairs(p.exchange, p.label_incumbent, p.label_other, np.full(p.n, np.nan), p.score_other)
    for pairs in (same, const):
        ev2 = Evidence(ev.started_at, ev.arms, {"candidate": pairs})
        for fn in (plots.score_scatter, plots.difference_histogram, plots.confusion_matrix):
            assert "placeholder" not in fn(ev2)
    ev3 = Evidence(ev.started_at, ev.arms, {"candidate": nan})
    assert "placeholder" in plots.score_scatter(ev3) and "placeholder" in plots.difference_histogram(ev3)
    assert "placeholder" not in plots.confusion_matrix(ev3)  # labels are still there
    flat = ArmColumns(ev.arms["incumbent"].present, ev.arms["incumbent"].status,
                      np.full(ev.n_exchanges, 0.01), ev.arms["incumbent"].error, ev.arms["incumbent"].decoded)
    assert "placeholder" not in plots.latency_plot(Evidence(ev.started_at, {"incumbent": flat}, {}))


def test_dense_scores_become_a_hexbin():
    ev = make_evidence(12_000)
    svg = plots.score_scatter(ev)
    assert "<image" in svg and "data:image/png;base64," in svg  # rasterized density, still inline


# ----------------------------------------------------------------------------------------
# Writing


def test_write_reports_writes_all_four_files_atomically(tmp_path):
    report, evidence = report_for(NO_GO)
    (tmp_path / "report.json").write_text("old")
    paths = write_reports(tmp_path, report, evidence)
    assert {k: p.name for k, p in paths.items()} == REPORT_FILES
    assert json.loads(paths["json"].read_text()) == report
    assert paths["md"].read_text().startswith("## Shadowline verdict: NO-GO")
    ET.parse(paths["junit"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPORT_FILES.values())  # no temp files left


def test_invalid_report_is_refused_before_anything_is_written(tmp_path):
    report, evidence = report_for(GO)
    report["verdict"] = "YES"
    with pytest.raises(ReportSchemaError, match="verdict"):
        write_reports(tmp_path, report, evidence)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------
# A person's look: the page rendered by a real browser (an extra; needs Chromium).


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the chromium package")
def test_html_renders_in_headless_chromium(tmp_path):
    report, evidence = report_for(NO_GO, make_evidence(5000, broken=True))
    page = tmp_path / "report.html"
    page.write_text(render_html(report, evidence))
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(dir=tmp_path)
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()],
        check=True, capture_output=True, timeout=90)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)


# ----------------------------------------------------------------------------------------
# Dose-response (a swept fault parameter)


def _dose_point(label, value, cand, base):
    def side(status, n, v):
        rate = v / n if n else None
        return {"status": status, "n": n, "violations": v, "rate": rate,
                "ci_low": None if not n else max(0.0, rate - 0.05), "ci_high": None if not n else min(1.0, rate + 0.05)}
    return {"label": label, "value": value, "arms": {"candidate": side(*cand), "baseline": side(*base)}}


def make_dose(levels=((0, ("n/a", 0, 0), ("n/a", 0, 0)), (0.01, ("fail", 8, 8), ("pass", 8, 0)),
                      (0.05, ("fail", 40, 40), ("pass", 40, 0)), (0.5, ("fail", 400, 400), ("pass", 400, 0))),
              with_contract=True) -> dict:
    points = [_dose_point(f"nan@{v:g}", v, c, b) for v, c, b in levels]
    broken = [p for p in points if p["arms"]["candidate"]["status"] == "fail"]
    contracts = [{
        "name": "clean_4xx", "key": "nan", "measure": "share of faulted requests not refused with a clean 4xx",
        "arms": ["candidate", "baseline"], "points": points,
        "first_break": {"candidate": {"label": broken[0]["label"], "value": broken[0]["value"]} if broken else None,
                        "baseline": None},
        "holds_up_to": {"candidate": None, "baseline": levels[-1][0] if levels else None},
        "summary": "the candidate first breaks `clean_4xx` at probability 0.01; the incumbent (baseline) holds up to 0.5",
    }] if with_contract else []
    return {"fault": "nan", "parameter": "probability", "arm": "candidate", "reference": "baseline",
            "levels": [{"label": f"nan@{v:g}", "value": v,
                        "metrics": {"candidate": {"exchanges": 800, "faulted": c[1]},
                                    "baseline": {"exchanges": 800, "faulted": b[1]}}} for v, c, b in levels],
            "contracts": contracts, "summary": [c["summary"] for c in contracts]}


def test_report_without_a_sweep_has_no_dose_response_section():
    report, evidence = report_for(GO)
    assert "dose_response" not in report
    assert "Dose-response" not in render_markdown(report) and 'id="dose-response"' not in render_html(report, evidence)


def test_dose_response_section_in_json_markdown_and_html(tmp_path):
    evidence = make_evidence(400)
    dose = make_dose()
    report = build_report(make_verdict(NO_GO), evidence, run=RUN, counts=counts_of(evidence), dose_response=dose)
    validate_report(report)
    assert report["dose_response"]["contracts"][0]["first_break"]["candidate"]["label"] == "nan@0.01"
    md = render_markdown(report)
    assert "### Dose-response: `nan` over probability" in md
    assert "- the candidate first breaks `clean_4xx` at probability 0.01; the incumbent (baseline) holds up to 0.5" in md
    assert "| `nan@0.05` | 0.05 |" in md and "candidate **FAIL** 100.0% of 40" in md and "baseline pass 0.0% of 40" in md
    assert "candidate n/a (no requests)" in md
    page = render_html(report, evidence)
    _assert_self_contained(page)
    assert 'id="dose-response"' in page and 'id="plot-dose-response"' in page
    assert "the candidate first breaks <code>clean_4xx</code> at probability 0.01" in page
    assert page.count("<svg") == 6 and 'aria-label="Dose-response' in page
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    write_reports(tmp_path, report, evidence)
    bad = json.loads(json.dumps(report))
    bad["dose_response"]["contracts"][0]["points"][1]["arms"]["candidate"]["status"] = "broken"
    with pytest.raises(ReportSchemaError):
        validate_report(bad)


@pytest.mark.parametrize("dose", [
    make_dose(levels=()),  # no sweep levels
    make_dose(levels=((0.05, ("fail", 40, 40), ("pass", 40, 0)),)),  # one level
    make_dose(levels=((0, ("n/a", 0, 0), ("n/a", 0, 0)), (0.1, ("inconclusive", 0, 0), ("inconclusive", 0, 0)))),  # nothing faulted
    make_dose(with_contract=False),  # no contract on the swept fault
    dict(make_dose(), reference=None),  # no baseline
])
def test_degenerate_dose_response_renders(dose, tmp_path):
    evidence = make_evidence(100)
    report = build_report(make_verdict(UNDECIDED), evidence, run=RUN, counts=counts_of(evidence), dose_response=dose)
    paths = write_reports(tmp_path, report, evidence)
    page = paths["html"].read_text()
    assert 'id="plot-dose-response"' in page and page.count("<svg") == 6
    assert "### Dose-response" in paths["md"].read_text()
    svg = plots.dose_response_plot(dose)
    if not dose["levels"] or not dose["contracts"] or not any(
            a["n"] for c in dose["contracts"] for p in c["points"] for a in p["arms"].values()):
        assert 'class="plot placeholder"' in svg
    else:
        assert 'class="plot"' in svg
    if dose.get("reference") is None:
        assert "incumbent model's side under the fault is unknown" in page


def test_dose_response_plot_from_the_contracts_module():
    from harness.checks.contracts import dose_response

    n = 1200
    t = np.arange(n) * 0.01
    level = np.repeat([0.0, 0.1, 0.5], 400)
    rng = np.random.default_rng(5)
    hit = rng.random(n) < level
    faults = np.empty(n, dtype=object)
    faults[:] = [(f"nan@{lv:g}",) if h else () for lv, h in zip(level, hit)]

    def arm(bad):
        status = np.where(hit, bad, 200).astype(np.int64)
        return ArmColumns(np.ones(n, bool), status, np.full(n, 0.01), np.full(n, None, dtype=object),
                          status == 200, faults, status == 200)

    evidence = Evidence(1.7e9 + t, {"incumbent": arm(200), "candidate": arm(500), "baseline": arm(400)}, {})
    dose = dose_response(evidence, {"nan": ["no_5xx"]}, [("nan@0", 0.0), ("nan@0.1", 0.1), ("nan@0.5", 0.5)],
                         parameter="probability")
    assert dose["contracts"][0]["first_break"]["candidate"]["label"] == "nan@0.1"
    svg = plots.dose_response_plot(dose)
    assert 'class="plot"' in svg and "placeholder" not in svg
    report = build_report(make_verdict(NO_GO), evidence, run=RUN, counts=counts_of(evidence), dose_response=dose)
    validate_report(report)
