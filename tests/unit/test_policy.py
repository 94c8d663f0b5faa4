"""Policy: verdicts from check results, on hand-made results and on synthetic runs end to end."""

from __future__ import annotations

from harness.checks import run_checks
from harness.policy import decide
from harness.verdict import FAIL, GO, INCONCLUSIVE, NO_GO, PASS, UNDECIDED, CheckResult
from tests.unit.test_checks import make_evidence


def result(name: str, status: str, critical: bool = True, required_n: int | None = None, **kw) -> CheckResult:
    return CheckResult(
        name=name, status=status, message=f"{name} said {status}", critical=critical, required_n=required_n, **kw
    )


# ---------------------------------------------------------------------------------------------
# Rules


def test_all_required_pass_is_go_with_a_line_per_check():
    v = decide([result("a", PASS), result("b", PASS)])
    assert v.decision == GO and v.required_n is None
    assert v.reasons == ["a: a said pass", "b: b said pass"]


def test_required_n_is_counted_in_requests_when_the_check_converted_it():
    a = result("a", INCONCLUSIVE, required_n=500, details={"required_exchanges": 1000})
    b = result("b", INCONCLUSIVE, required_n=800)
    assert decide([a, b]).required_n == 1000


def test_a_critical_failure_is_no_go_and_comes_first():
    v = decide([result("a", PASS), result("b", INCONCLUSIVE, required_n=900), result("c", FAIL)])
    assert v.decision == NO_GO
    assert v.reasons == ["c: c said fail", "b: b said inconclusive"]
    assert v.required_n is None


def test_inconclusive_takes_the_largest_required_n():
    v = decide(
        [
            result("a", PASS),
            result("b", INCONCLUSIVE, required_n=900),
            result("c", INCONCLUSIVE, required_n=4200),
            result("d", INCONCLUSIVE),  # no data: no estimate
            result("e", INCONCLUSIVE, critical=False, required_n=10**6),  # not required
        ]
    )
    assert v.decision == UNDECIDED and v.required_n == 4200
    assert v.reasons[:3] == ["b: b said inconclusive", "c: c said inconclusive", "d: d said inconclusive"]
    assert v.reasons[3] == "warning (not required): e: e said inconclusive"


def test_non_critical_failure_is_a_warning_not_no_go():
    v = decide([result("a", PASS), result("psi", FAIL, critical=False)])
    assert v.decision == GO
    assert v.reasons[0] == "warning (not required): psi: psi said fail"
    assert "a: a said pass" in v.reasons


def test_no_required_check_is_never_go():
    v = decide([result("psi", PASS, critical=False)])
    assert v.decision == UNDECIDED
    assert "no required" in v.reasons[0]
    assert decide([]).decision == UNDECIDED


def test_checks_that_do_not_apply_are_skipped():
    na = CheckResult(name="labels", status=INCONCLUSIVE, message="not applicable: regression", critical=False,
                     details={"applicable": False})
    v = decide([result("a", PASS), na])
    assert v.decision == GO
    assert v.reasons[-1] == "skipped: labels: not applicable: regression"
    assert v.checks[-1] is na


# ---------------------------------------------------------------------------------------------
# Synthetic runs through every default check


def test_three_percent_flips_with_one_percent_margin_is_no_go():
    v = decide(run_checks(make_evidence(20_000, flip=0.03)))
    assert v.decision == NO_GO
    assert v.reasons[0].startswith("label_agreement: candidate flips 3.00% of labels")
    assert v.reasons[0].endswith("margin 1.00%: fail")


def test_identical_candidate_on_5000_is_go():
    v = decide(run_checks(make_evidence(5000)))
    assert v.decision == GO, v.reasons
    assert len(v.reasons) == 6 and all(line.endswith("pass") for line in v.reasons)


def test_fifty_requests_are_inconclusive_with_the_sample_size_that_would_decide():
    v = decide(run_checks(make_evidence(50)))
    assert v.decision == UNDECIDED
    assert v.required_n is not None and v.required_n > 50
    wanted = [r.details["required_exchanges"] for r in v.checks if r.critical and r.status == INCONCLUSIVE]
    assert v.required_n == max(wanted) == 3506  # score_ks: DKW band of +-0.05 around D = 0
    assert all("inconclusive" in line for line in v.reasons)


def test_candidate_three_times_slower_is_no_go_on_latency():
    v = decide(run_checks(make_evidence(5000, latency_factor=3.0)))
    assert v.decision == NO_GO
    assert [line.split(":")[0] for line in v.reasons] == ["latency"]


def test_dead_candidate_is_no_go_by_the_errors_check():
    v = decide(run_checks(make_evidence(5000, candidate_error="connect")))
    assert v.decision == NO_GO
    assert v.reasons[0].startswith("errors: candidate error rate 100.00% (connect 5,000)")
    failed = [r.name for r in v.checks if r.status == FAIL]
    assert failed == ["errors"]


def test_shed_only_is_inconclusive_not_no_go():
    v = decide(run_checks(make_evidence(5000, candidate_error="shed")))
    assert v.decision == UNDECIDED
    assert not any(r.status == FAIL for r in v.checks)
    assert any("all 5,000 were shed" in line for line in v.reasons)
