"""Contracts per fault and the dose-response curve, on synthetic Evidence built with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.checks.contracts import (
    CONTRACT_NAMES,
    ContractCheck,
    Timeline,
    build_contract_checks,
    contract_checks,
    describe_fault,
    dose_response,
    label_matches,
    split_entry,
)
from harness.evidence import ArmColumns, Evidence, Pairs
from harness.policy import decide
from harness.scenario.schema import CONTRACTS, ExpandedPhase
from harness.verdict import FAIL, INCONCLUSIVE, NO_GO, PASS

T0 = 1.7e9
NAN_AGE = {"type": "nan", "label": "nan_age", "fields": ["age"]}


def ledger(entries) -> np.ndarray:
    out = np.empty(len(entries), dtype=object)
    out[:] = [tuple(e) for e in entries]
    return out


def arm(n, status=200, *, faults=None, latency=0.01, error=None, decoded=None, finite=None, present=True) -> ArmColumns:
    st = np.broadcast_to(np.asarray(status, dtype=np.int64), (n,)).copy()
    err = np.full(n, None, dtype=object)
    if error is not None:
        err[:] = np.broadcast_to(np.asarray(error, dtype=object), (n,))
    st[np.not_equal(err, None) & (err != "protocol")] = -1
    lat = np.broadcast_to(np.asarray(latency, dtype=np.float64), (n,)).copy()
    dec = ((st >= 200) & (st < 300) & np.equal(err, None)) if decoded is None else np.asarray(decoded, bool)
    fin = dec.copy() if finite is None else np.asarray(finite, bool)
    return ArmColumns(
        present=np.full(n, present, dtype=bool), status=st, latency_s=lat, error=err, decoded=dec,
        faults=ledger(faults if faults is not None else [()] * n), finite=fin,
    )


def evidence(n, candidate: ArmColumns, baseline: ArmColumns | None = None, *, incumbent: ArmColumns | None = None,
             pairs=None, t=None) -> Evidence:
    arms = {"incumbent": incumbent or arm(n), "candidate": candidate}
    if baseline is not None:
        arms["baseline"] = baseline
    started = T0 + (np.arange(n, dtype=np.float64) * 0.01 if t is None else np.asarray(t, dtype=np.float64))
    return Evidence(started_at=started, arms=arms, pairs=pairs or {}, codec="oip-v2")


def nan_run(n=412, cand_status=500, base_status=400, **kw) -> Evidence:
    faults = [("nan_age",)] * n
    return evidence(n, arm(n, cand_status, faults=faults, **kw), arm(n, base_status, faults=faults))


SPECS = Timeline(specs={"nan_age": NAN_AGE})


# ---------------------------------------------------------------------------------------------
# The side-by-side contract on one fault


def test_fragile_candidate_against_robust_baseline_is_a_critical_fail_with_a_side_by_side_message():
    result = ContractCheck("nan_age", "clean_4xx").evaluate(nan_run(), timeline=SPECS)
    assert result.name == "contract:nan_age:clean_4xx"
    assert result.status == FAIL and result.critical
    assert result.message.startswith(
        "NaN in `age` (nan_age): candidate 500 on 100.0% of 412 requests, incumbent (baseline) 400 on 100.0% "
        "— contract clean_4xx: fail"
    )
    assert "the incumbent meets it" in result.message
    assert result.n == 412 and result.statistic == 412 and result.effect == 1.0 and result.threshold == 0.0
    arms = result.details["arms"]
    assert arms["candidate"]["statuses"] == {"500": 412} and arms["baseline"]["statuses"] == {"400": 412}
    assert arms["candidate"]["violations"] == 412 and arms["baseline"]["violations"] == 0
    assert arms["baseline"]["status"] == PASS and result.details["reference_status"] == PASS
    assert decide([result]).decision == NO_GO


def test_robust_candidate_passes():
    result = ContractCheck("nan_age", "clean_4xx", {"require_message": False}).evaluate(nan_run(cand_status=400))
    assert result.status == PASS and result.critical
    assert "no violation in 412" in result.message and result.ci_high < 0.01
    assert "not checked" not in result.message


def test_message_requirement_is_said_to_be_unchecked_without_bodies():
    result = ContractCheck("nan_age", "clean_4xx").evaluate(nan_run(cand_status=400))
    assert result.status == PASS and "error message was not checked" in result.message
    assert result.details["arms"]["candidate"]["message_checked"] is False


def test_both_arms_breaking_the_contract_is_a_non_critical_fail():
    result = ContractCheck("nan_age", "no_5xx").evaluate(nan_run(cand_status=500, base_status=503))
    assert result.status == FAIL and not result.critical
    assert "the incumbent breaks this contract too" in result.message
    assert decide([result]).decision != NO_GO


def test_without_a_baseline_the_incumbent_side_is_unknown_and_the_candidate_is_judged_alone():
    n = 100
    ev = evidence(n, arm(n, 500, faults=[("nan_age",)] * n))
    result = ContractCheck("nan_age", "no_5xx").evaluate(ev)
    assert result.status == FAIL and result.critical
    assert "incumbent side unknown (no baseline copies in this run)" in result.message
    assert "judged alone" in result.message


def test_too_few_faulted_requests_is_inconclusive_but_a_counterexample_still_breaks():
    n = 200
    faults = [("nan_age",) if i < 5 else () for i in range(n)]
    ok = evidence(n, arm(n, 400, faults=faults), arm(n, 400, faults=faults))
    result = ContractCheck("nan_age", "no_5xx").evaluate(ok)
    assert result.status == INCONCLUSIVE and result.critical and result.required_n == 20 and result.n == 5
    assert "need about 20; have 5" in result.message
    assert result.details["required_exchanges"] >= 20
    bad = evidence(n, arm(n, 500, faults=faults), arm(n, 400, faults=faults))
    assert ContractCheck("nan_age", "no_5xx").evaluate(bad).status == FAIL


def test_a_tolerance_turns_the_counterexample_rule_into_a_rate_rule():
    n = 1000
    status = np.where(np.arange(n) < 3, 500, 400)  # 0.3% violations
    ev = evidence(n, arm(n, status, faults=[("nan_age",)] * n))
    assert ContractCheck("nan_age", "no_5xx").evaluate(ev).status == FAIL
    loose = ContractCheck("nan_age", "no_5xx", {"tolerance": 0.05}).evaluate(ev)
    assert loose.status == PASS and loose.threshold == 0.05
    tight = ContractCheck("nan_age", "no_5xx", tolerance=0.003).evaluate(ev)
    assert tight.status == INCONCLUSIVE  # 0.3% on the tolerance: no n decides


def test_undecodable_and_noop_entries_are_excluded_and_counted():
    n = 412
    faults = [("nan_age:undecodable",) if i < 100 else ("nan_age:noop",) if i < 110 else ("nan_age",) for i in range(n)]
    status = np.where(np.arange(n) < 110, 200, 400)  # where the NaN was not applied the model answered 200
    ev = evidence(n, arm(n, status, faults=faults), arm(n, status, faults=faults))
    result = ContractCheck("nan_age", "clean_4xx", {"require_message": False}).evaluate(ev)
    assert result.status == PASS and result.n == 302
    assert result.details["arms"]["candidate"]["excluded"] == {"undecodable": 100, "noop": 10}
    assert "110 more where the fault was not applied: 100 undecodable, 10 noop" in result.message
    never = evidence(n, arm(n, 200, faults=[("nan_age:undecodable",)] * n))
    result = ContractCheck("nan_age", "clean_4xx").evaluate(never)
    assert result.status == INCONCLUSIVE and result.critical
    assert "never applied" in result.message and "412 undecodable" in result.message


def test_shed_copies_are_left_out():
    n = 100
    error = np.where(np.arange(n) < 30, "shed", None)
    ev = evidence(n, arm(n, 400, faults=[("nan_age",)] * n, error=error))
    result = ContractCheck("nan_age", "clean_4xx", {"require_message": False}).evaluate(ev)
    assert result.status == PASS and result.n == 70 and result.details["arms"]["candidate"]["excluded"]["shed"] == 30


def test_a_fault_that_never_fired_is_not_applicable():
    n = 100
    ev = evidence(n, arm(n, 200, faults=[("other",)] * n))
    result = ContractCheck("nan_age", "clean_4xx").evaluate(ev)
    assert result.status == INCONCLUSIVE and not result.critical and result.details["applicable"] is False
    assert "not applicable" in result.message
    assert decide([result]).decision != NO_GO


# ---------------------------------------------------------------------------------------------
# Each contract


def test_within_latency_fails_a_slow_candidate_and_needs_enough_requests_to_pass():
    n = 400
    rng = np.random.default_rng(1)
    faults = [("slow",)] * n
    slow = evidence(n, arm(n, 200, faults=faults, latency=rng.uniform(0.25, 0.35, n)),
                    arm(n, 200, faults=faults, latency=rng.uniform(0.01, 0.02, n)))
    result = ContractCheck("slow", "within_latency", {"ms": 200}).evaluate(slow)
    assert result.status == FAIL and result.critical and "p99" in result.message
    assert result.details["arms"]["candidate"]["quantile_s"] > 0.25
    fast = evidence(n, arm(n, 200, faults=faults, latency=rng.uniform(0.01, 0.05, n)))
    assert ContractCheck("slow", "within_latency", {"ms": 200}).evaluate(fast).status == PASS
    few = evidence(100, arm(100, 200, faults=faults[:100], latency=0.01))
    result = ContractCheck("slow", "within_latency", {"ms": 200}).evaluate(few)
    assert result.status == INCONCLUSIVE and 300 < result.required_n < 400  # a p99 needs ~368 to bound
    one_slow = evidence(100, arm(100, 200, faults=faults[:100], latency=np.r_[0.5, np.full(99, 0.01)]))
    assert ContractCheck("slow", "within_latency", {"ms": 200, "quantile": 1}).evaluate(one_slow).status == FAIL
    assert ContractCheck("slow", "within_latency", {"ms": 600, "quantile": 1}).evaluate(one_slow).status == PASS


def test_within_latency_counts_timeouts_at_the_time_the_proxy_gave_up():
    n = 400
    error = np.where(np.arange(n) % 10 == 0, "timeout", None)
    ev = evidence(n, arm(n, 200, faults=[("slow",)] * n, error=error, latency=np.where(error == "timeout", 5.0, 0.01)))
    result = ContractCheck("slow", "within_latency", {"ms": 200}).evaluate(ev)
    assert result.status == FAIL and result.details["arms"]["candidate"]["timeouts"] == 40


def test_no_hang_breaks_on_timeouts_and_on_answers_beyond_within_s():
    n = 200
    faults = [("hang",)] * n
    error = np.where(np.arange(n) % 10 == 0, "timeout", None)
    ev = evidence(n, arm(n, 200, faults=faults, error=error, latency=5.0), arm(n, 200, faults=faults))
    result = ContractCheck("hang", "no_hang").evaluate(ev)
    assert result.status == FAIL and result.critical and result.statistic == 20
    assert "timeout on 10.0%" in result.message
    slowish = evidence(n, arm(n, 200, faults=faults, latency=np.where(np.arange(n) < 2, 2.0, 0.01)))
    assert ContractCheck("hang", "no_hang").evaluate(slowish).status == PASS
    assert ContractCheck("hang", "no_hang", {"within_s": 1.0}).evaluate(slowish).status == FAIL


def test_finite_prediction_breaks_on_non_finite_or_undecodable_2xx():
    n = 100
    faults = [("inf_x",)] * n
    finite = np.arange(n) >= 7  # 7 answers carry NaN/Inf outputs
    ev = evidence(n, arm(n, 200, faults=faults, finite=finite), arm(n, 200, faults=faults))
    result = ContractCheck("inf_x", "finite_prediction").evaluate(ev)
    assert result.status == FAIL and result.critical and result.statistic == 7
    assert "200 non-finite on 7.0%" in result.message
    undecodable = evidence(n, arm(n, 200, faults=faults, error="protocol", decoded=np.zeros(n, bool)))
    result = ContractCheck("inf_x", "finite_prediction").evaluate(undecodable)
    assert result.status == FAIL and "200 undecodable" in result.message
    refused = evidence(n, arm(n, 400, faults=faults))
    assert ContractCheck("inf_x", "finite_prediction").evaluate(refused).status == PASS
    assert ContractCheck("inf_x", "finite_prediction", {"require_2xx": True}).evaluate(refused).status == FAIL


def test_no_crash_reads_every_exchange_from_the_first_faulted_one_on():
    n = 300
    idx = np.arange(n)
    faults = [("poison",) if i in (100, 101) else () for i in range(n)]
    # a refused connection before the fault does not count; after it (unfaulted requests too) it does
    early = evidence(n, arm(n, 200, faults=faults, error=np.where(idx == 10, "connect", None)))
    assert ContractCheck("poison", "no_crash").evaluate(early).status == PASS
    dead = evidence(n, arm(n, 200, faults=faults, error=np.where(idx > 101, "connect", None)),
                    arm(n, 200, faults=faults))
    result = ContractCheck("poison", "no_crash").evaluate(dead)
    assert result.status == FAIL and result.critical and result.n == 200 and result.statistic == 198
    assert "exchanges from the fault on" in result.message
    dead_alive = ContractCheck("poison", "no_crash").evaluate(
        evidence(n, arm(n, 200, faults=faults)), timeline=Timeline(alive={"candidate": False}))
    assert dead_alive.status == FAIL and "not alive at the end" in dead_alive.message


def test_no_crash_ignores_the_resets_a_reset_fault_injected():
    n = 100
    faults = [("reset",) if i % 2 else () for i in range(n)]
    error = np.where(np.arange(n) % 2 == 1, "reset", None)
    ev = evidence(n, arm(n, 200, faults=faults, error=error))
    result = ContractCheck("reset", "no_crash").evaluate(ev)
    assert result.status == PASS and result.details["arms"]["candidate"]["excluded"]["injected_reset"] == 50


def _labelled_pairs(n, flip_every=0, rows=1):
    idx = np.repeat(np.arange(n, dtype=np.int64), rows)
    inc = (idx % 2).astype(np.int64)
    other = inc.copy()
    if flip_every:
        other[::flip_every] = 1 - other[::flip_every]
    score = np.full(len(idx), 0.7)
    return Pairs(idx, inc, other, score, score)


def test_no_worse_than_incumbent_judges_errors_latency_and_flips():
    n = 1000
    rng = np.random.default_rng(3)
    faults = [("swap",)] * n
    base_lat = rng.lognormal(math.log(0.02), 0.2, n)
    same = evidence(n, arm(n, 200, faults=faults, latency=base_lat), arm(n, 200, faults=faults, latency=base_lat),
                    pairs={"candidate": _labelled_pairs(n), "baseline": _labelled_pairs(n)})
    params = {"against": "baseline"}
    ok = ContractCheck("swap", "no_worse_than_incumbent", params).evaluate(same)
    assert ok.status == PASS, ok.message
    assert set(ok.details["parts"]) == {"error_rate", "latency", "flips"}

    errors = evidence(n, arm(n, np.where(np.arange(n) % 10 == 0, 500, 200), faults=faults, latency=base_lat),
                      arm(n, 200, faults=faults, latency=base_lat),
                      pairs={"candidate": _labelled_pairs(n), "baseline": _labelled_pairs(n)})
    result = ContractCheck("swap", "no_worse_than_incumbent", params).evaluate(errors)
    assert result.status == FAIL and result.critical and result.details["parts"]["error_rate"]["status"] == FAIL
    assert "candidate error rate 10.0% vs incumbent (baseline) 0.0%" in result.message
    assert "fail (error rate)" in result.message

    slow = evidence(n, arm(n, 200, faults=faults, latency=base_lat * 2), arm(n, 200, faults=faults, latency=base_lat),
                    pairs={"candidate": _labelled_pairs(n), "baseline": _labelled_pairs(n)})
    result = ContractCheck("swap", "no_worse_than_incumbent", params).evaluate(slow)
    assert result.status == FAIL and result.details["parts"]["latency"]["status"] == FAIL
    assert result.effect == pytest.approx(2.0) and result.threshold == 1.2

    # multi-row requests: the candidate's and the baseline's rows are matched per input row
    flips = evidence(n, arm(n, 200, faults=faults, latency=base_lat), arm(n, 200, faults=faults, latency=base_lat),
                     pairs={"candidate": _labelled_pairs(n, flip_every=10, rows=2),
                            "baseline": _labelled_pairs(n, rows=2)})
    result = ContractCheck("swap", "no_worse_than_incumbent", params).evaluate(flips)
    assert result.status == FAIL and result.details["parts"]["flips"]["status"] == FAIL
    assert result.details["parts"]["flips"]["n"] == 2 * n and result.effect == pytest.approx(0.1)
    # against the incumbent arm (its answers without the fault): the candidate's own pairs
    result = ContractCheck("swap", "no_worse_than_incumbent", {"latency_ratio": None}).evaluate(flips)
    assert result.status == FAIL and result.details["against"] == "incumbent"
    assert "latency" not in result.details["parts"]


def test_no_worse_than_incumbent_without_the_reference_is_inconclusive():
    n = 300
    ev = evidence(n, arm(n, 200, faults=[("swap",)] * n))
    result = ContractCheck("swap", "no_worse_than_incumbent", {"against": "baseline"}).evaluate(ev)
    assert result.status == INCONCLUSIVE and "incumbent side is unknown" in result.message


def test_production_unaffected_compares_the_incumbent_with_the_steady_state():
    n = 2000
    idx = np.arange(n)
    faults = [("hang",) if i >= 1000 else () for i in range(n)]
    steady = idx < 1000
    calm = evidence(n, arm(n, 200, faults=faults), incumbent=arm(n, 200, latency=0.01))
    result = ContractCheck("hang", "production_unaffected").evaluate(calm, steady_mask=steady)
    assert result.name == "contract:hang:production_unaffected" and result.status == PASS, result.message
    hurt = evidence(n, arm(n, 200, faults=faults),
                    incumbent=arm(n, np.where((idx >= 1000) & (idx % 20 == 0), 503, 200),
                                  latency=np.where(idx >= 1000, 0.03, 0.01)))
    result = ContractCheck("hang", "production_unaffected").evaluate(hurt, steady_mask=steady)
    assert result.status == FAIL and result.critical
    assert result.details["parts"]["error_rate"]["status"] == FAIL and result.details["parts"]["latency"]["status"] == FAIL
    assert "while the fault was on vs" in result.message
    result = ContractCheck("hang", "production_unaffected").evaluate(calm)
    assert result.status == INCONCLUSIVE and "no steady-state exchanges" in result.message


# ---------------------------------------------------------------------------------------------
# Keys, time lines, building from a scenario


def test_ledger_labels_and_keys():
    assert split_entry("nan_age:undecodable") == ("nan_age", "undecodable")
    assert split_entry("nan@0.05:noop") == ("nan@0.05", "noop")
    assert split_entry("latency:100ms") == ("latency:100ms", "applied")
    assert label_matches("nan:age", "nan") and label_matches("nan@0.05", "nan")
    assert not label_matches("nan_age", "nan") and not label_matches("nan@0.05", "nan@0.5")
    assert describe_fault("nan_age", NAN_AGE) == "NaN in `age`"
    assert describe_fault("nan:age") == "NaN in `age`"
    assert describe_fault("latency", {"type": "latency", "ms": 200}) == "latency 200 ms"
    assert describe_fault("custom") == ""


def test_star_key_gives_one_check_per_label_and_an_explicit_key_wins():
    n = 100
    faults = [("nan_age",) if i % 2 else ("hang",) for i in range(n)]
    ev = evidence(n, arm(n, 400, faults=faults), arm(n, 400, faults=faults))
    results = contract_checks({"*": ["no_5xx", "no_hang"], "nan_age": [{"no_5xx": {"tolerance": 0.5}}]}, ev)
    names = [r.name for r in results]
    assert sorted(names) == ["contract:hang:no_5xx", "contract:hang:no_hang", "contract:nan_age:no_5xx",
                             "contract:nan_age:no_hang"]
    by_name = dict(zip(names, results))
    assert by_name["contract:nan_age:no_5xx"].threshold == 0.5 and by_name["contract:hang:no_5xx"].threshold == 0.0
    assert all(r.status == PASS for r in results)


def test_contract_arms_and_scenario_items():
    n = 100
    faults = [("nan",)] * n
    ev = evidence(n, arm(n, 500, faults=faults), arm(n, 400, faults=faults))
    from harness.scenario.schema import Contract

    items = [Contract("nan", "clean_4xx", CONTRACTS["clean_4xx"](arms=["candidate", "baseline"], require_message=False))]
    checks = build_contract_checks(items, ev)
    assert [c.name for c in checks] == ["contract:nan:clean_4xx", "contract:nan:clean_4xx[baseline]"]
    results = [c.evaluate(ev) for c in checks]
    assert [r.status for r in results] == [FAIL, PASS]
    assert "incumbent side unknown" not in results[1].message  # the baseline is the incumbent model
    with pytest.raises(ValueError, match="unknown contract"):
        ContractCheck("nan", "no_explosions")
    with pytest.raises(ValueError, match="within_latency"):
        ContractCheck("nan", "within_latency", {"quantile": 0.9})  # ms is required
    assert set(CONTRACT_NAMES) == set(CONTRACTS)


def _phase(index, name, start, duration, faults=(), steady=False, value=None):
    return ExpandedPhase(index=index, name=name, source=name.split("@")[0], start_s=start, duration_s=duration,
                         load=None, faults=tuple(faults), toxics=(), steady_state=steady, sweep_value=value)


def sweep_run(levels=(0, 0.01, 0.05, 0.2, 0.5), per=800, seed=0):
    """A steady phase, then one phase per NaN probability level: the candidate answers 500 to
    each faulted request, the baseline 400; 100 requests/s."""
    rng = np.random.default_rng(seed)
    phases = [_phase(0, "steady", 0, per // 100, steady=True)]
    t, faults = list(np.arange(per) * 0.01), [()] * per
    for k, value in enumerate(levels):
        start = (k + 1) * per // 100
        label = f"nan@{value:g}"
        phases.append(_phase(k + 1, f"dose@{value:g}", start, per // 100, value=value,
                             faults=[{"type": "nan", "label": label, "fields": ["age"], "probability": value,
                                      "window": [start, start + per // 100]}]))
        t += list(start + np.arange(per) * 0.01)
        faults += [(label,) if rng.random() < value else () for _ in range(per)]
    n = len(t)
    hit = np.array([bool(f) for f in faults])
    lat = rng.lognormal(math.log(0.01), 0.2, n)
    ev = evidence(n, arm(n, np.where(hit, 500, 200), faults=faults, latency=lat),
                  arm(n, np.where(hit, 400, 200), faults=faults, latency=lat), t=t)
    return ev, Timeline.from_phases(phases, T0), [(f"nan@{v:g}", v) for v in levels]


CONTRACTS_ON_NAN = {"nan": [
    {"clean_4xx": {"require_message": False}},
    {"no_worse_than_incumbent": {"against": "baseline", "error_rate_margin": 0.02, "latency_ratio": None,
                                 "flip_margin": None}},
    "no_hang",
    "production_unaffected",
]}


def test_timeline_from_phases_judges_each_sweep_level_on_its_own():
    ev, timeline, _ = sweep_run()
    assert timeline.window_mask(ev.started_at, "nan@0.05").sum() == 800
    assert timeline.window_mask(ev.started_at, "phase:dose").sum() == 4000
    assert timeline.steady_mask(ev.started_at).sum() == 800
    results = {r.name: r for r in contract_checks(CONTRACTS_ON_NAN, ev, timeline=timeline)}
    assert "contract:nan@0:clean_4xx" in results and "contract:nan@0.5:no_hang" in results
    level0 = results["contract:nan@0:clean_4xx"]
    assert level0.details["applicable"] is False and not level0.critical
    assert results["contract:nan@0.05:clean_4xx"].status == FAIL
    assert results["contract:nan@0.05:clean_4xx"].message.startswith("NaN in `age` (nan@0.05): candidate 500 on 100.0%")
    assert results["contract:nan@0.2:no_worse_than_incumbent"].status == FAIL
    assert results["contract:nan@0.2:no_worse_than_incumbent"].details["window_exchanges"] == 800
    assert results["contract:nan@0.5:production_unaffected"].status == PASS


def test_dose_response_names_the_first_break_per_arm():
    ev, timeline, levels = sweep_run()
    dr = dose_response(ev, CONTRACTS_ON_NAN, levels, timeline=timeline, parameter="probability")
    assert dr["fault"] == "nan" and dr["reference"] == "baseline"
    assert [lv["label"] for lv in dr["levels"]] == [label for label, _ in levels]
    by_name = {c["name"]: c for c in dr["contracts"]}
    clean = by_name["clean_4xx"]
    assert clean["first_break"] == {"candidate": {"label": "nan@0.01", "value": 0.01}, "baseline": None}
    assert clean["holds_up_to"]["baseline"] == 0.5
    assert clean["points"][0]["arms"]["candidate"]["status"] == "n/a"  # level 0: the fault never fired
    assert clean["points"][3]["arms"]["candidate"]["rate"] == 1.0
    assert clean["summary"] == ("the candidate first breaks `clean_4xx` at probability 0.01; "
                                "the incumbent (baseline) holds up to 0.5")
    worse = by_name["no_worse_than_incumbent"]
    assert worse["first_break"]["candidate"]["value"] == 0.05  # at 0.01 the +1% excess does not exceed the 2% margin
    assert worse["points"][4]["arms"]["baseline"]["rate"] == 0.0 and worse["points"][4]["arms"]["candidate"]["rate"] > 0.4
    assert by_name["production_unaffected"]["arms"] == ["incumbent"]
    assert by_name["production_unaffected"]["first_break"] == {"incumbent": None}
    metrics = dr["levels"][2]["metrics"]
    assert metrics["candidate"]["exchanges"] == 800 and metrics["baseline"]["client_error_rate"] > 0


@pytest.mark.parametrize("levels", [[], [("nan@0.05", 0.05)], [("nan@0", 0.0)]])
def test_dose_response_degenerate_inputs(levels):
    ev, timeline, _ = sweep_run(levels=(0.05,), per=200)
    dr = dose_response(ev, CONTRACTS_ON_NAN, levels, timeline=timeline, parameter="probability")
    assert len(dr["levels"]) == len(levels) and dr["summary"]
    if levels:
        assert all(len(c["points"]) == len(levels) for c in dr["contracts"])
    empty = dose_response(evidence(0, arm(0), arm(0)), CONTRACTS_ON_NAN, levels)
    assert [lv["label"] for lv in empty["levels"]] == [label for label, _ in levels]
    assert empty["reference"] is None  # a baseline that took no part: the incumbent side is unknown
    for c in empty["contracts"]:
        assert all(a["n"] == 0 for pt in c["points"] for a in pt["arms"].values())
        assert all(fb is None for fb in c["first_break"].values())
    no_contracts = dose_response(ev, {"other": ["no_5xx"]}, levels)
    assert no_contracts["contracts"] == []
