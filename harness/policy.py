"""Policy: check results -> a Verdict (GO / NO_GO / INCONCLUSIVE) with its reasons in plain words.

- NO_GO when any critical check fails.
- GO when every critical (required) check passes, and there is at least one.
- INCONCLUSIVE otherwise, with `required_n` = the largest sample size the inconclusive critical
  checks asked for, in requests (exchanges): each check converts its own unit (paired predictions,
  paired exchanges) at the run's rate, `details["required_exchanges"]`.

Non-critical checks never decide: their failures and inconclusive results are listed as warnings.
Checks that do not apply to the evidence (details["applicable"] is False) are listed last.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.verdict import FAIL, GO, INCONCLUSIVE, NO_GO, PASS, UNDECIDED, CheckResult, Verdict


def decide(results: Iterable[CheckResult]) -> Verdict:
    results = list(results)
    applicable = [r for r in results if r.details.get("applicable", True) is not False]
    skipped = [r for r in results if r.details.get("applicable", True) is False]
    required = [r for r in applicable if r.critical]
    optional = [r for r in applicable if not r.critical]

    failed = [r for r in required if r.status == FAIL]
    undecided = [r for r in required if r.status not in (PASS, FAIL)]
    passed = [r for r in required if r.status == PASS]
    warnings = [r for r in optional if r.status != PASS]

    reasons: list[str] = [_line(r) for r in failed]
    reasons += [_line(r) for r in undecided]
    reasons += [f"warning (not required): {_line(r)}" for r in warnings if r.status == FAIL]
    reasons += [f"warning (not required): {_line(r)}" for r in warnings if r.status != FAIL]

    required_n = None
    if failed:
        decision = NO_GO
    elif not required:
        decision = UNDECIDED
        reasons.insert(0, "no required (critical) check was run: nothing to base a GO on")
    elif undecided:
        decision = UNDECIDED
        wanted = [_required_exchanges(r) for r in undecided if r.required_n is not None]
        required_n = max(wanted) if wanted else None
    else:
        decision = GO
        reasons += [_line(r) for r in passed]
        reasons += [_line(r) for r in optional if r.status == PASS]
    reasons += [f"skipped: {_line(r)}" for r in skipped]
    return Verdict(decision=decision, reasons=reasons, checks=results, required_n=required_n)


def _required_exchanges(r: CheckResult) -> int:
    """A check's need in requests (exchanges); its own unit when it did not convert it."""
    return int(r.details.get("required_exchanges", r.required_n))


def _line(r: CheckResult) -> str:
    return f"{r.name}: {r.message}"


__all__ = ["decide", "GO", "NO_GO", "UNDECIDED", "INCONCLUSIVE"]
