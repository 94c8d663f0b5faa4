"""Checks: agreement with scipy's reference functions on fixed data, known effects on synthetic
Evidence built directly with numpy, sample sufficiency, the registry, and the documented defaults."""

from __future__ import annotations

import ast
import math
import re
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness.checks import (
    CHECKS,
    DEFAULT_CHECKS,
    Errors,
    LabelAgreement,
    Latency,
    ScoreDifference,
    ScoreKS,
    ScorePSI,
    checks_from_config,
    default_checks,
    run_checks,
)
from harness.checks import stats
from harness.evidence import ArmColumns, Evidence, Pairs
from harness.verdict import FAIL, INCONCLUSIVE, PASS

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Synthetic evidence


def _arm(n: int, latency: np.ndarray, error=None, status=200, present=True) -> ArmColumns:
    err = np.full(n, None, dtype=object)
    st = np.full(n, status, dtype=np.int64)
    lat = np.asarray(latency, dtype=np.float64).copy()
    if error is not None:
        err[:] = error
        st[:] = -1
        if error == "shed":
            lat[:] = np.nan
    return ArmColumns(
        present=np.full(n, present, dtype=bool),
        status=st,
        latency_s=lat,
        error=err,
        decoded=np.full(n, error is None and 200 <= status < 300, dtype=bool),
    )


def make_evidence(
    n: int,
    *,
    flip: float = 0.0,
    score_shift: float = 0.0,
    score_noise: float = 0.0,
    latency_factor: float = 1.0,
    latency_noise: float = 0.0,
    candidate_error: str | None = None,
    baseline: bool = False,
    seed: int = 0,
) -> Evidence:
    """n exchanges, one binary prediction each. The candidate flips exactly round(flip * n)
    labels (its score mirrored), shifts and jitters scores, and is latency_factor times slower."""
    rng = np.random.default_rng(seed)
    inc_lat = rng.lognormal(math.log(0.05), 0.4, n)
    cand_lat = inc_lat * latency_factor
    if latency_noise:
        cand_lat = cand_lat * rng.lognormal(0.0, latency_noise, n)
    arms = {
        "incumbent": _arm(n, inc_lat),
        "candidate": _arm(n, cand_lat, error=candidate_error),
    }
    s_inc = rng.random(n)
    l_inc = (s_inc > 0.5).astype(np.int64)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=int(round(flip * n)), replace=False)] = True
    s_cand = s_inc + score_shift
    if score_noise:
        s_cand = s_cand + rng.normal(0, score_noise, n)
    s_cand = np.where(flipped, 1 - s_cand, s_cand)
    l_cand = np.where(flipped, 1 - l_inc, l_inc)
    ok = np.flatnonzero(arms["candidate"].decoded)
    pairs = {"candidate": Pairs(ok, l_inc[ok], l_cand[ok], s_inc[ok], s_cand[ok])}
    if baseline:
        arms["baseline"] = _arm(n, inc_lat * rng.lognormal(0, 0.02, n))
        idx = np.arange(n)
        pairs["baseline"] = Pairs(idx, l_inc, l_inc.copy(), s_inc, s_inc + rng.normal(0, 1e-4, n))
    return Evidence(started_at=np.arange(n, dtype=np.float64), arms=arms, pairs=pairs)


def _pairs_evidence(label_inc, label_oth, score_inc=None, score_oth=None, task="classification") -> Evidence:
    """Evidence carrying only the given paired predictions (one per exchange)."""
    li, lo = np.asarray(label_inc, dtype=np.int64), np.asarray(label_oth, dtype=np.int64)
    n = len(li)
    si = np.zeros(n) if score_inc is None else np.asarray(score_inc, dtype=float)
    so = np.zeros(n) if score_oth is None else np.asarray(score_oth, dtype=float)
    lat = np.full(n, 0.01)
    arms = {"incumbent": _arm(n, lat), "candidate": _arm(n, lat)}
    return Evidence(
        started_at=np.arange(n, dtype=float),
        arms=arms,
        pairs={"candidate": Pairs(np.arange(n), li, lo, si, so)},
        task=task,
    )


# ---------------------------------------------------------------------------------------------
# Agreement with scipy on fixed data


@pytest.mark.parametrize("x,n,conf", [(0, 50, 0.95), (3, 50, 0.95), (31, 1000, 0.9), (620, 20000, 0.99), (50, 50, 0.95)])
def test_clopper_pearson_matches_scipy(x, n, conf):
    ref = sps.binomtest(x, n).proportion_ci(confidence_level=conf, method="exact")
    lo, hi = stats.clopper_pearson(x, n, conf)
    assert lo == pytest.approx(ref.low, abs=1e-10)
    assert hi == pytest.approx(ref.high, abs=1e-10)


def test_label_agreement_matches_scipy_on_fixed_binary_labels():
    rng = np.random.default_rng(7)
    inc = rng.integers(0, 2, 1000)
    oth = inc.copy()
    oth[:23] = 1 - oth[:23]  # 23 flips in some direction mix
    oth[500:507] = 1 - oth[500:507]  # 7 more
    r = LabelAgreement().evaluate(_pairs_evidence(inc, oth))
    flips = int((inc != oth).sum())
    assert flips == 30 and r.n == 1000 and r.effect == pytest.approx(0.03)
    ci = sps.binomtest(flips, 1000).proportion_ci(method="exact")
    assert (r.ci_low, r.ci_high) == (pytest.approx(ci.low, abs=1e-10), pytest.approx(ci.high, abs=1e-10))
    b = int(((inc == 0) & (oth == 1)).sum())
    c = int(((inc == 1) & (oth == 0)).sum())
    assert r.p_value == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)
    assert r.statistic == min(b, c)
    matrix = r.details["confusion"]["matrix"]
    assert matrix == [[int(((inc == i) & (oth == j)).sum()) for j in (0, 1)] for i in (0, 1)]
    # 3% flips, interval [2.03%, 4.26%] is above the 1% margin: fail.
    assert r.status == FAIL and r.ci_low > 0.01
    assert "3.00%" in r.message and "margin 1.00%" in r.message and r.message.endswith("fail")


def test_label_agreement_multiclass_uses_bowker_symmetry_test():
    # incumbent x candidate table [[50, 6, 0], [2, 40, 3], [0, 3, 30]]
    table = np.array([[50, 6, 0], [2, 40, 3], [0, 3, 30]])
    inc, oth = [], []
    for i in range(3):
        for j in range(3):
            inc += [i] * table[i, j]
            oth += [j] * table[i, j]
    r = LabelAgreement(min_n=10).evaluate(_pairs_evidence(inc, oth))
    # Bowker: (6-2)^2/8 + (3-3)^2/6 (pair 0-2 has no discordant pairs) -> 2.0 on 2 df.
    assert r.statistic == pytest.approx(2.0)
    assert r.p_value == pytest.approx(sps.chi2.sf(2.0, 2))
    assert r.details["confusion"]["matrix"] == table.tolist()
    assert r.effect == pytest.approx(14 / 134)


def test_score_difference_matches_scipy_wilcoxon_and_isclose():
    rng = np.random.default_rng(3)
    s_inc = rng.random(2000)
    s_oth = s_inc + rng.normal(0.002, 0.006, 2000)
    s_oth[:10] = s_inc[:10]  # exact zeros are dropped by Wilcoxon's default zero_method
    r = ScoreDifference().evaluate(_pairs_evidence(np.zeros(2000), np.zeros(2000), s_inc, s_oth))
    d = s_oth - s_inc
    ref = sps.wilcoxon(d[d != 0])
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)
    outside = int((~np.isclose(s_oth, s_inc, rtol=0.01, atol=0.01)).sum())
    assert r.details["outside_tolerance"] == outside
    ci = sps.binomtest(outside, 2000).proportion_ci(method="exact")
    assert r.ci_low == pytest.approx(ci.low) and r.ci_high == pytest.approx(ci.high)
    assert r.details["max_abs_diff"] == pytest.approx(np.abs(d).max())
    assert r.details["p99_abs_diff"] == pytest.approx(np.quantile(np.abs(d), 0.99))


def test_score_difference_nan_on_one_side_is_a_difference():
    s = np.linspace(0, 1, 400)
    o = s.copy()
    o[:20] = np.nan  # 5% NaN from the candidate
    r = ScoreDifference().evaluate(_pairs_evidence(np.zeros(400), np.zeros(400), s, o))
    assert r.details["outside_tolerance"] == 20 and r.details["nan_other"] == 20
    assert r.status == FAIL


@pytest.mark.parametrize("n", [300, 20_000])  # exact and asymptotic p-value regimes of ks_2samp
def test_score_ks_matches_scipy_ks_2samp(n):
    rng = np.random.default_rng(5)
    a = rng.beta(2, 5, n)
    b = rng.beta(2.2, 5, n)
    r = ScoreKS().evaluate(_pairs_evidence(np.zeros(n), np.zeros(n), a, b))
    ref = sps.ks_2samp(a, b)
    assert r.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert r.p_value == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
    eps = 2 * math.sqrt(math.log(4 / 0.05) / (2 * n))
    assert r.ci_low == pytest.approx(max(0.0, ref.statistic - eps))
    assert r.ci_high == pytest.approx(ref.statistic + eps)


def test_score_psi_value_and_deterministic_bootstrap():
    rng = np.random.default_rng(11)
    a = rng.random(5000)
    b = np.clip(a + 0.05, 0, 1)
    r = ScorePSI().evaluate(_pairs_evidence(np.zeros(5000), np.zeros(5000), a, b))
    # Independent computation: histogram on the incumbent's deciles.
    edges = np.quantile(a, np.linspace(0, 1, 11))
    edges[0], edges[-1] = -np.inf, np.inf
    e = np.histogram(a, edges)[0] / 5000
    o = np.histogram(b, edges)[0] / 5000
    e, o = np.maximum(e, 1e-4), np.maximum(o, 1e-4)
    assert r.effect == pytest.approx(float(((o - e) * np.log(o / e)).sum()), rel=1e-9)
    assert r.ci_low <= r.effect <= r.ci_high
    again = ScorePSI().evaluate(_pairs_evidence(np.zeros(5000), np.zeros(5000), a, b))
    assert (again.ci_low, again.ci_high) == (r.ci_low, r.ci_high)
    other_seed = ScorePSI(seed=1).evaluate(_pairs_evidence(np.zeros(5000), np.zeros(5000), a, b))
    assert other_seed.ci_low != r.ci_low


def test_newcombe_paired_interval_covers_at_nominal_rate():
    rng = np.random.default_rng(2)
    n, probs = 400, [0.005, 0.025, 0.01, 0.96]  # both, only candidate, only incumbent, neither
    truth = probs[1] - probs[2]
    hits = 0
    for cells in rng.multinomial(n, probs, size=1000):
        _, lo, hi = stats.newcombe_paired(*cells)
        hits += lo <= truth <= hi
    assert 0.93 <= hits / 1000 <= 0.99


# ---------------------------------------------------------------------------------------------
# Known effects


def test_three_percent_flips_with_one_percent_margin_fails():
    r = LabelAgreement(margin=0.01).evaluate(make_evidence(20_000, flip=0.03))
    assert r.status == FAIL and r.effect == pytest.approx(0.03)
    assert r.ci_low > 0.01 and r.required_n is None
    assert re.search(r"flips 3\.00% of labels .*95% CI \[2\.\d\d%, 3\.\d\d%\].*margin 1\.00%: fail$", r.message)


def test_identical_candidate_passes_every_default_check():
    results = run_checks(make_evidence(5000))
    assert {r.name: r.status for r in results} == {name: PASS for name in CHECKS}
    lat = next(r for r in results if r.name == "latency")
    assert lat.effect == pytest.approx(1.0) and lat.ci_low == pytest.approx(1.0)


def test_fifty_requests_are_inconclusive_with_a_required_n():
    r = LabelAgreement().evaluate(make_evidence(50))
    assert r.status == INCONCLUSIVE and r.n == 50
    # 0 flips: the upper Clopper-Pearson bound drops to 1% at n = 368 (1 - 0.025**(1/n) <= 0.01).
    assert r.required_n == 368
    assert stats.clopper_pearson(0, 368)[1] <= 0.01 < stats.clopper_pearson(0, 367)[1]
    assert "need about 368 paired predictions; have 50" in r.message


def test_required_n_from_the_interval_when_above_min_n():
    ev = make_evidence(1000, flip=0.006)  # 6 flips in 1000: [0.22%, 1.30%] straddles 1%
    r = LabelAgreement().evaluate(ev)
    assert r.status == INCONCLUSIVE and r.required_n > 1000
    m = r.required_n
    assert stats.clopper_pearson(0.006 * m, m)[1] <= 0.01 < stats.clopper_pearson(0.006 * (m - 2), m - 2)[1]
    bigger = LabelAgreement().evaluate(make_evidence(int(m * 1.3), flip=0.006))
    assert bigger.status == PASS


def test_required_n_is_also_given_in_requests():
    ev = make_evidence(400)
    cand = ev.arms["candidate"]
    err = cand.error.copy()
    err[::2] = "shed"  # half the copies shed: half the requests give a pair
    decoded = cand.decoded.copy()
    decoded[::2] = False
    arms = dict(ev.arms, candidate=ArmColumns(cand.present, cand.status, cand.latency_s, err, decoded))
    keep = np.flatnonzero(decoded)
    p = ev.pairs["candidate"]
    pairs = {"candidate": Pairs(keep, p.label_incumbent[keep], p.label_other[keep], p.score_incumbent[keep], p.score_other[keep])}
    r = LabelAgreement().evaluate(Evidence(ev.started_at, arms, pairs))
    assert r.n == 200 and r.required_n == 368
    assert r.details["required_exchanges"] == 736
    assert r.message.endswith("need about 368 paired predictions; have 200 (about 736 requests in all)")


def test_min_n_makes_a_decided_interval_inconclusive():
    ev = make_evidence(150, flip=0.2)
    assert LabelAgreement().evaluate(ev).status == INCONCLUSIVE
    r = LabelAgreement(min_n=100).evaluate(ev)
    assert r.status == FAIL


def test_candidate_three_times_slower_fails_latency():
    r = Latency().evaluate(make_evidence(5000, latency_factor=3.0, latency_noise=0.05))
    assert r.status == FAIL
    assert r.effect == pytest.approx(3.0, rel=0.05) and r.ci_low > 1.1
    assert r.threshold == pytest.approx(1.1)
    assert re.search(r"p99 latency \d+ ms vs incumbent \d+(\.\d)? ms: ratio 3\.\d\dx", r.message)
    assert set(r.details["quantiles"]) == {"p50", "p95", "p99"}


def test_latency_ratio_and_bootstrap_sanity():
    ev = make_evidence(10_000, latency_factor=1.05, latency_noise=0.1, seed=4)
    full = Latency().evaluate(ev)  # resample_size 10,000: a plain paired bootstrap
    sub = Latency(resample_size=2500).evaluate(ev)  # m-out-of-n: 2,500 of 10,000, rescaled
    both = ev.arms["incumbent"].latency_s, ev.arms["candidate"].latency_s
    assert full.effect == pytest.approx(np.quantile(both[1], 0.99) / np.quantile(both[0], 0.99))
    assert full.ci_low < full.effect < full.ci_high
    # the true p99 ratio of a 1.05x scaled, 10%-jittered candidate is about 1.05-1.09
    assert full.ci_low < 1.1 and full.ci_high > 1.04
    width_full, width_sub = full.ci_high - full.ci_low, sub.ci_high - sub.ci_low
    assert 0.7 < width_sub / width_full < 1.4
    assert Latency(resample_size=2500).evaluate(ev).ci_low == sub.ci_low  # seeded: deterministic
    assert Latency(resample_size=2500, seed=9).evaluate(ev).ci_low != sub.ci_low


def test_latency_counts_timeouts_at_the_timeout():
    ev = make_evidence(5000)
    cand = ev.arms["candidate"]
    err = cand.error.copy()
    lat = cand.latency_s.copy()
    err[:300] = "timeout"  # 6% hang until the 2 s timeout
    lat[:300] = 2.0
    arms = dict(ev.arms, candidate=ArmColumns(cand.present, cand.status, lat, err, cand.decoded))
    r = Latency().evaluate(Evidence(ev.started_at, arms, ev.pairs))
    assert r.status == FAIL and r.details["quantiles"]["p99"]["other_s"] == pytest.approx(2.0)
    assert r.details["timeouts_counted_at_timeout"]["other"] == 300


def test_dead_candidate_fails_errors_and_pair_checks_say_why():
    ev = make_evidence(5000, candidate_error="connect")
    r = Errors().evaluate(ev)
    assert r.status == FAIL and r.effect == pytest.approx(1.0)
    assert r.details["errors_by_kind"]["other"] == {"connect": 5000}
    assert "error rate 100.00% (connect 5,000) vs incumbent 0.00%" in r.message
    labels = LabelAgreement().evaluate(ev)
    assert labels.status == INCONCLUSIVE and labels.n == 0 and labels.required_n is None
    assert "5,000 failed (connect 5,000)" in labels.message


def test_shed_only_is_inconclusive_not_a_failure():
    ev = make_evidence(5000, candidate_error="shed")
    for r in run_checks(ev):
        assert r.status == INCONCLUSIVE, r
        assert "shed" in r.message
    r = Errors().evaluate(ev)
    assert r.message == "no candidate copy was sent: all 5,000 were shed (in-flight budget full): inconclusive"


def test_errors_exclude_shed_count_5xx_and_not_4xx():
    ev = make_evidence(4000)
    cand, inc = ev.arms["candidate"], ev.arms["incumbent"]
    err, status = cand.error.copy(), cand.status.copy()
    err[:400] = "shed"
    status[400:440] = 503  # 40 server errors: 1.11% of the 3,600 sent
    status[440:540] = 404  # 100 client errors: not errors
    err[540:550] = "timeout"
    inc_status = inc.status.copy()
    inc_status[1000:1004] = 500
    arms = {
        "incumbent": ArmColumns(inc.present, inc_status, inc.latency_s, inc.error, inc.decoded),
        "candidate": ArmColumns(cand.present, status, cand.latency_s, err, cand.decoded),
    }
    r = Errors().evaluate(Evidence(ev.started_at, arms, ev.pairs))
    assert r.n == 3600 and r.details["excluded"] == {"shed": 400, "internal": 0}
    assert r.details["errors_by_kind"]["other"] == {"5xx": 40, "timeout": 10}
    assert r.details["client_errors_4xx"]["other"] == 100
    assert r.effect == pytest.approx((50 - 4) / 3600)
    assert r.p_value == pytest.approx(sps.binomtest(50, 54, 0.5).pvalue)
    assert r.status == FAIL  # +1.28 pp, interval above +0.5 pp
    assert "400 shed excluded" in r.message


def test_grpc_codes_are_classified():
    ev = make_evidence(1000)
    cand = ev.arms["candidate"]
    status = np.zeros(1000, dtype=np.int64)  # gRPC OK
    status[:30] = 14  # UNAVAILABLE: a server error
    status[30:60] = 3  # INVALID_ARGUMENT: a client error
    arms = dict(ev.arms, candidate=ArmColumns(cand.present, status, cand.latency_s, cand.error, cand.decoded))
    r = Errors().evaluate(Evidence(ev.started_at, arms, ev.pairs))
    assert r.details["errors_by_kind"]["other"] == {"5xx": 30}
    assert r.details["client_errors_4xx"]["other"] == 30


def test_score_shift_is_detected_by_ks_and_psi():
    ev = make_evidence(5000, score_shift=0.1)
    ks, psi = ScoreKS().evaluate(ev), ScorePSI().evaluate(ev)
    assert ks.status == FAIL and ks.effect == pytest.approx(0.1, abs=0.02)
    assert psi.status == FAIL and psi.ci_low > 0.1
    same = make_evidence(5000, score_noise=0.001)
    assert ScoreKS().evaluate(same).status == PASS
    assert ScorePSI().evaluate(same).status == PASS


def test_noise_floor_from_the_baseline_arm():
    ev = make_evidence(2000, flip=0.02, baseline=True)
    r = LabelAgreement().evaluate(ev)
    floor = r.details["noise_floor"]
    assert floor["arm"] == "baseline" and floor["effect"] == 0.0 and floor["n"] == 2000
    lat = Latency().evaluate(ev)
    assert lat.details["noise_floor"]["effect"] == pytest.approx(1.0, abs=0.05)


def test_label_agreement_does_not_apply_to_regression():
    ev = _pairs_evidence(-np.ones(300), -np.ones(300), np.arange(300.0), np.arange(300.0), task="regression")
    r = LabelAgreement().evaluate(ev)
    assert r.status == INCONCLUSIVE and r.critical is False and r.details["applicable"] is False


def test_every_message_is_one_line_with_numbers():
    for ev in (make_evidence(50), make_evidence(3000, flip=0.02, latency_factor=1.5), make_evidence(300, candidate_error="shed")):
        for r in run_checks(ev):
            assert "\n" not in r.message and re.search(r"\d", r.message)
            assert r.message.endswith(("pass", "fail")) or "inconclusive" in r.message
            assert r.to_json()["name"] == r.name


# ---------------------------------------------------------------------------------------------
# Registry, configuration, documentation


def test_registry_and_defaults():
    assert set(CHECKS) == {"label_agreement", "score_difference", "score_ks", "score_psi", "latency", "errors"}
    assert [c.name for c in default_checks()] == list(DEFAULT_CHECKS)
    assert set(DEFAULT_CHECKS) == set(CHECKS)
    check = LabelAgreement()
    with pytest.raises(FrozenInstanceError):
        check.margin = 0.5  # type: ignore[misc]


def test_checks_from_config_builds_and_validates():
    only = checks_from_config(
        {"label_agreement": {"margin": 0.02}, "latency": {"quantile": 0.95, "margin": 1}, "errors": None},
        defaults=False,
    )
    assert [c.name for c in only] == ["label_agreement", "latency", "errors"]
    assert only[0].margin == 0.02 and only[1].margin == 1.0 and isinstance(only[1].margin, float)
    # By default the mapping adjusts the default set: nothing is dropped unless asked.
    adjusted = checks_from_config({"latency": {"margin": 0.2}, "score_psi": False})
    assert [c.name for c in adjusted] == [n for n in DEFAULT_CHECKS if n != "score_psi"]
    assert next(c for c in adjusted if c.name == "latency") == Latency(margin=0.2)
    assert checks_from_config({}) == default_checks()
    with pytest.raises(ValueError, match="unknown check 'flips'.*label_agreement"):
        checks_from_config({"flips": {}})
    with pytest.raises(ValueError, match="check 'latency': unknown parameter 'quantil'.*quantile"):
        checks_from_config({"latency": {"quantil": 0.9}})
    with pytest.raises(ValueError, match="check 'errors': parameter 'margin' must be a number"):
        checks_from_config({"errors": {"margin": "1%"}})
    with pytest.raises(ValueError, match="check 'label_agreement': parameter 'margin' must be in"):
        checks_from_config({"label_agreement": {"margin": 2}})
    with pytest.raises(ValueError, match="parameter 'critical' must be true or false"):
        checks_from_config({"score_psi": {"critical": "yes"}})


def _documented_defaults() -> dict[str, dict[str, object]]:
    text = (REPO / "docs" / "checks.md").read_text()
    out: dict[str, dict[str, object]] = {}
    current = None
    for line in text.splitlines():
        heading = re.match(r"^### `(\w+)`$", line)
        if heading:
            current = heading.group(1)
            out[current] = {}
            continue
        row = re.match(r"^\| `(\w+)` \| `([^`]+)` \|", line)
        if row and current:
            out[current][row.group(1)] = ast.literal_eval(row.group(2))
    return out


def test_documented_defaults_match_the_dataclasses():
    documented = _documented_defaults()
    assert set(documented) == set(CHECKS)
    for name, cls in CHECKS.items():
        assert documented[name] == cls.parameters(), name
