"""The exchange contracts (clean_4xx, finite_prediction, no_5xx, no_hang, no_crash) and
within_latency: each arm's side counted on its own faulted exchanges (violations, or latencies
against the bound), judged on its own and told side by side with the reference arm's side."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as sps

from harness.evidence import ArmColumns, Evidence
from harness.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult

from .. import stats
from ..base import BASELINE, CANDIDATE, _arm_has_data, count_kinds, errors_of, kind_mask, server_error
from .intervals import at_least_min_n, quantile_ci
from .ledger import NOT_APPLIED, injected_resets
from .outcomes import answered, clean_refusal, outcomes, status_2xx, statuses
from .slicing import crash_window, fault_window, faulted, never_fired
from .timeline import Timeline
from .words import outcome_text, pct, quantile_name

if TYPE_CHECKING:
    from .check import ContractCheck


@dataclass
class _Side:
    """One side of a contract: what one arm did on its faulted exchanges."""

    arm: str
    n: int = 0  # judged exchanges
    violations: int = 0
    fired: int = 0  # exchanges where the fault reached this arm (applied or not)
    status: str | None = None  # PASS / FAIL / INCONCLUSIVE; None: nothing to judge
    required_n: int | None = None
    rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    outcomes: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    excluded: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    why: str = ""  # when n == 0: why

    def to_json(self) -> dict:
        out = {
            "status": self.status,
            "n": self.n,
            "violations": self.violations,
            "rate": self.rate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "fired": self.fired,
            "outcomes": self.outcomes,
            "statuses": self.statuses,
            "errors": self.errors,
            "excluded": {k: v for k, v in self.excluded.items() if v},
        }
        if self.required_n is not None:
            out["required_n"] = self.required_n
        if self.why:
            out["why"] = self.why
        out.update(self.extra)
        return out


def judge_exchange(check: ContractCheck, evidence: Evidence, timeline: Timeline) -> CheckResult:
    """An exchange contract or within_latency: the arm's side decides; a failure the reference
    (the incumbent model under the same fault) shares is not critical."""
    mine = _violations(check, evidence, check.arm, timeline)
    what = check._what(timeline)
    details: dict[str, Any] = {"arms": {check.arm: mine.to_json()}}
    if never_fired(evidence, check.key, timeline, mine.fired) and _arm_has_data(evidence, check.arm):
        return check._not_applicable(mine.why or f"the fault never reached the {check.arm}", timeline, details)

    ref: _Side | None = None
    ref_why = ""
    if check.reference is None:
        ref_why = "no reference arm"
    elif not _arm_has_data(evidence, check.reference):
        ref_why = f"no {check.reference} copies in this run"
    else:
        ref = _violations(check, evidence, check.reference, timeline)
        details["arms"][check.reference] = ref.to_json()
        if ref.n == 0:
            ref_why = ref.why or f"the {check.reference} got no faulted copy"
    ref_ok = ref is not None and ref.n > 0

    left = _side_text(check, mine, False) + (_excluded_text(mine) if mine.n else "")
    if ref_ok:
        head = f"{what}: {left}, {_side_text(check, ref, True, mine.n)}"
    elif check.reference is None and check.arm != CANDIDATE:
        head = f"{what}: {left}"  # the baseline or the incumbent judged on its own
    else:
        head = f"{what}: {left}, incumbent side unknown ({ref_why})"
    critical = check.critical
    if mine.n == 0:
        status = INCONCLUSIVE
        tail = "inconclusive, no faulted request to judge"
        required_n = check.min_n
    else:
        status, required_n = mine.status, mine.required_n
        tail = _tail(check, mine, ref if ref_ok else None)
        if status == FAIL and ref_ok and ref.status == FAIL:
            critical = False
    details["reference_status"] = ref.status if ref_ok else None
    if not ref_ok:
        details["reference_unknown"] = ref_why
    message = f"{head} — contract {check.contract}: {tail}"
    unchecked = mine.extra.get("message_checked") is False
    if check.contract == "clean_4xx" and check.params.get("require_message") and unchecked:
        message += "; the error message was not checked (no response bodies in the evidence)"
    if required_n is not None:
        details["required_exchanges"] = _in_exchanges(evidence, check.key, timeline, required_n, mine.n)
    threshold = check.tolerance
    effect, lo, hi = mine.rate, mine.ci_low, mine.ci_high
    if check.contract == "within_latency":
        threshold = 1 - float(check.params["quantile"])
    p_value = None
    if mine.n and threshold > 0:
        p_value = float(sps.binomtest(mine.violations, mine.n, threshold, alternative="greater").pvalue)
    return check._result(status, message, critical=critical, statistic=mine.violations, effect=effect,
                         ci_low=lo, ci_high=hi, p_value=p_value, n=mine.n, threshold=threshold,
                         required_n=required_n, details=details)


# ---------------------------------------------------------------------------------------------
# One arm's side


def _violations(check: ContractCheck, evidence: Evidence, arm: str, timeline: Timeline) -> _Side:
    side = _Side(arm)
    cols = evidence.arms.get(arm)
    mask, fired, excluded, why = faulted(evidence, check.key, arm, timeline)
    side.fired, side.excluded = fired, excluded
    if cols is None:
        side.why = why
        return side
    err = errors_of(cols)
    status = np.asarray(cols.status)
    p = check.params

    if check.contract == "no_crash":
        mask = crash_window(evidence, check.key, arm, timeline, mask)
    if not mask.any():
        side.why = why
        return side

    if check.contract == "clean_4xx":
        ok = clean_refusal(err, status)
        message = getattr(cols, "has_message", None)
        if p.get("require_message"):
            if message is not None:
                ok &= np.asarray(message, dtype=bool)
                side.extra["message_checked"] = True
            else:
                side.extra["message_checked"] = False
        bad = mask & ~ok
    elif check.contract == "finite_prediction":
        is2 = answered(cols) & status_2xx(status)
        decoded = np.asarray(cols.decoded, dtype=bool)
        good = decoded & (np.asarray(cols.finite, dtype=bool) if cols.finite is not None else True)
        bad = mask & is2 & ~good
        if p.get("require_2xx"):
            bad |= mask & ~is2
        side.extra["answered_2xx"] = int((mask & is2).sum())
        side.extra["finiteness_recorded"] = cols.finite is not None
    elif check.contract == "no_5xx":
        bad = mask & answered(cols) & server_error(status)
    elif check.contract == "no_hang":
        bad = mask & kind_mask(err, "timeout")
        within = p.get("within_s")
        if within is not None:
            lat = np.asarray(cols.latency_s, dtype=np.float64)
            with np.errstate(invalid="ignore"):
                bad |= mask & np.isfinite(lat) & (lat > within)
    elif check.contract == "no_crash":
        injected = injected_resets(cols, evidence.n_exchanges, timeline.specs)
        bad = mask & (kind_mask(err, "connect") | (kind_mask(err, "reset") & ~injected))
        side.excluded["injected_reset"] = int((mask & kind_mask(err, "reset") & injected).sum())
        mask = mask & ~(kind_mask(err, "reset") & injected)
        alive = timeline.alive.get(arm)
        side.extra["alive_at_end"] = alive
    elif check.contract == "within_latency":
        return _latency_side(check, side, cols, mask)
    else:  # pragma: no cover - guarded by params_dict
        raise ValueError(check.contract)

    n, v = int(mask.sum()), int(bad.sum())
    side.n, side.violations = n, v
    side.rate = v / n if n else None
    side.status, side.required_n, side.ci_low, side.ci_high = _decide_rate(check, v, n)
    if check.contract == "no_crash" and side.extra.get("alive_at_end") is False:
        side.status, side.required_n = FAIL, None
    side.outcomes = outcomes(cols, mask)
    side.statuses = statuses(cols, mask)
    side.errors = count_kinds(err, mask)
    side.extra["violation_outcomes"] = outcomes(cols, bad)
    return side


def _decide_rate(check: ContractCheck, v: int, n: int) -> tuple[str, int | None, float, float]:
    """Exchange-contract rule on v violations of n: (status, required_n, ci_low, ci_high)."""
    lo, hi = stats.clopper_pearson(v, n, check.confidence)
    if n == 0:
        return INCONCLUSIVE, check.min_n, lo, hi
    if v > 0 and lo > check.tolerance:
        return FAIL, None, lo, hi
    rate = v / n
    if n < check.min_n:
        need = check.min_n
        if v > 0 and rate > check.tolerance:
            need = max(need, check._cp_required(rate, check.tolerance, n) or 0)
        return INCONCLUSIVE, need, lo, hi
    if v == 0 or hi <= check.tolerance:
        return PASS, None, lo, hi
    est = check._cp_required(rate, check.tolerance, n)
    return INCONCLUSIVE, at_least_min_n(est, n, check.min_n), lo, hi


def _latency_side(check: ContractCheck, side: _Side, cols: ArmColumns, mask: np.ndarray) -> _Side:
    """within_latency: the quantile of the faulted latencies (timeouts at the time the proxy
    gave up) with its order-statistic interval against the bound."""
    err = errors_of(cols)
    lat = np.asarray(cols.latency_s, dtype=np.float64)
    usable = mask & np.isfinite(lat) & (answered(cols) | kind_mask(err, "timeout"))
    side.excluded["no_latency"] = int((mask & ~usable).sum())
    q, bound = float(check.params["quantile"]), float(check.params["ms"]) / 1000.0
    x = np.sort(lat[usable])
    n = len(x)
    side.n = n
    side.outcomes = outcomes(cols, usable)
    side.statuses = statuses(cols, usable)
    side.errors = count_kinds(err, usable)
    if n == 0:
        side.why = f"no faulted {side.arm} request has a latency"
        return side
    v = int((x > bound).sum())
    side.violations, side.rate = v, v / n
    side.ci_low, side.ci_high = stats.clopper_pearson(v, n, check.confidence)
    est = float(x[-1]) if q >= 1 else float(np.quantile(x, q))
    lo, hi = quantile_ci(x, q, check.confidence)
    side.extra.update({"quantile": q, "quantile_s": est, "quantile_ci_low_s": lo if math.isfinite(lo) else None,
                       "quantile_ci_high_s": hi if math.isfinite(hi) else None, "bound_s": bound,
                       "timeouts": int((usable & kind_mask(err, "timeout")).sum())})
    tol = 1 - q
    estimate = None
    if tol > 0 and side.rate != tol:
        estimate = check._cp_required(side.rate, tol, n)
    if q >= 1:  # the maximum, exactly: one request over the bound breaks it
        if v > 0:
            side.status = FAIL
        elif n < check.min_n:
            side.status, side.required_n = INCONCLUSIVE, check.min_n
        else:
            side.status = PASS
        return side
    if n < check.min_n:
        side.status, side.required_n = INCONCLUSIVE, at_least_min_n(estimate, n, check.min_n)
    elif lo > bound:
        side.status = FAIL
    elif math.isfinite(hi) and hi <= bound:
        side.status = PASS
    else:
        side.status = INCONCLUSIVE
        side.required_n = at_least_min_n(estimate, n, check.min_n)
    return side


# ---------------------------------------------------------------------------------------------
# The message


def _who(arm: str, as_reference: bool = False) -> str:
    if as_reference and arm == BASELINE:
        return "incumbent (baseline)"
    return arm


def _side_text(check: ContractCheck, side: _Side, as_reference: bool, n_arm: int | None = None) -> str:
    who = _who(side.arm, as_reference)
    if side.n == 0:
        return f"{who}: {side.why or 'nothing to judge'}"
    # The reference's count is left out when it is the same as the arm's, said just before.
    of = f" of {side.n:,} requests" if not as_reference or side.n != n_arm else ""
    if check.contract == "within_latency":
        e = side.extra
        q = e["quantile"]
        ci = ""
        if q < 1:
            lo, hi = e.get("quantile_ci_low_s"), e.get("quantile_ci_high_s")
            ci = f" ({check.confidence * 100:g}% CI [{stats.fmt_ms(lo) if lo is not None else '0'}, " \
                 f"{stats.fmt_ms(hi) if hi is not None else 'unbounded'}])"
        quantile = f"{quantile_name(q)} {stats.fmt_ms(e['quantile_s'])}{ci}{of}"
        return f"{who} {quantile}, {pct(side.rate)} slower than the bound"
    unit = " exchanges from the fault on" if check.contract == "no_crash" else ""
    if unit and of:
        of = f" of {side.n:,}{unit}"
    return f"{who} {outcome_text(side.outcomes, side.n)}{of}"


def _excluded_text(side: _Side) -> str:
    """' (100 more not applied: 100 undecodable)' for a side with exclusions."""
    skipped = {k: v for k, v in side.excluded.items() if v and k in NOT_APPLIED}
    other = {k: v for k, v in side.excluded.items() if v and k not in NOT_APPLIED}
    parts = []
    if skipped:
        parts.append(f"{sum(skipped.values()):,} more where the fault was not applied: "
                     + ", ".join(f"{v:,} {k}" for k, v in skipped.items()))
    if other:
        parts.append(", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in other.items()) + " left out")
    return f" ({'; '.join(parts)})" if parts else ""


def _tail(check: ContractCheck, mine: _Side, ref: _Side | None) -> str:
    ci = stats.fmt_ci(mine.ci_low, mine.ci_high, pct, check.confidence)
    ref_count = f"the incumbent on {ref.violations:,} of {ref.n:,}" if ref is not None else ""
    if mine.status == FAIL:
        if check.contract == "within_latency" and float(check.params["quantile"]) < 1:
            text = (f"fail, {mine.arm} {quantile_name(float(check.params['quantile']))} is above "
                    f"{check.params['ms']:g} ms")
        else:
            text = f"fail, {mine.arm} violates it on {mine.violations:,} of {mine.n:,} ({pct(mine.rate)}, {ci})"
        if check.contract == "no_crash" and mine.extra.get("alive_at_end") is False:
            text += f"; the {mine.arm} was not alive at the end"
        if ref is None:
            if check.arm != CANDIDATE:
                return text
            return text + "; the incumbent side is unknown, the candidate is judged alone"
        if ref.status == FAIL:
            return text + f", {ref_count}: the incumbent breaks this contract too (not critical)"
        return text + f", {ref_count}" + (": the incumbent meets it" if ref.status == PASS else "")
    if mine.status == PASS:
        if mine.violations == 0:
            text = f"pass, no violation in {mine.n:,} (upper bound {pct(mine.ci_high)})"
        else:
            text = f"pass, {mine.violations:,} violations ({pct(mine.rate)}, {ci}) within the tolerance"
        return text + (f"; {ref_count}" if ref is not None else "")
    need = f"need about {mine.required_n:,}; have {mine.n:,}" if mine.required_n else f"have {mine.n:,}"
    return f"inconclusive, {mine.violations:,} violations ({pct(mine.rate)}, {ci}): {need}"


def _in_exchanges(evidence: Evidence, key: str, timeline: Timeline, required_n: int, n: int) -> int:
    """A need in faulted requests as requests through the proxy, at the window's rate."""
    window = int(fault_window(evidence, key, timeline).sum())
    if n <= 0 or window <= 0:
        return int(required_n)
    return int(math.ceil(required_n * max(window / n, 1.0)))
