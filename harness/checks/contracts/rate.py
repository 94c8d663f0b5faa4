"""The rate contracts judged in parts on every exchange while the fault was on:
no_worse_than_incumbent (the arm paired against the incumbent or the baseline: error rate,
latency quantile ratio, label flip rate) and production_unaffected (the incumbent against its
own steady state, unpaired: error rate, latency quantile ratio). Any part failing fails the
contract; every judged part must pass for it to pass."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from harness.evidence import ArmColumns, Evidence, Pairs
from harness.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult

from .. import stats
from ..base import BASELINE, INCUMBENT, _arm_has_data, count_kinds, errors_of, none_mask, server_error
from ..errors import _failed
from ..latency import _bootstrap_log_ratio, _interval, _scale, _usable
from .intervals import (
    at_least_min_n,
    bootstrap_unpaired_log_ratio,
    newcombe_independent,
    part_status,
    percentile_interval,
)
from .outcomes import outcomes, sent, statuses
from .slicing import fault_window, faulted, never_fired
from .timeline import Timeline
from .words import pct, quantile_name

if TYPE_CHECKING:
    from .check import ContractCheck


# ---------------------------------------------------------------------------------------------
# no_worse_than_incumbent


def judge_no_worse(check: ContractCheck, evidence: Evidence, timeline: Timeline) -> CheckResult:
    p = check.params
    what = check._what(timeline)
    against = p.get("against", INCUMBENT)
    if against == check.arm:
        against = INCUMBENT
    who_ref = "incumbent (baseline)" if against == BASELINE else "incumbent"
    _, fired, excluded, why = faulted(evidence, check.key, check.arm, timeline)
    cols = evidence.arms.get(check.arm)
    ref = evidence.arms.get(against)
    base = {"against": against, "excluded": excluded, "fired": fired}
    if not _arm_has_data(evidence, check.arm):
        return check._inconclusive(what, f"no {check.arm} copies in this run", required_n=check.min_n, details=base)
    if never_fired(evidence, check.key, timeline, fired):
        return check._not_applicable(why or f"the fault never reached the {check.arm}", timeline, base)
    if not _arm_has_data(evidence, against):
        return check._inconclusive(what, f"no {against} copies in this run, the incumbent side is unknown",
                                   details=base)
    window = fault_window(evidence, check.key, timeline)
    judged = window & sent(cols) & sent(ref)
    n = int(judged.sum())
    parts: dict[str, dict] = {}
    arms_json: dict[str, dict] = {}

    fail_a = _failed(cols, errors_of(cols)) & judged
    fail_r = _failed(ref, errors_of(ref)) & judged
    for arm_name, failed_mask, c in ((check.arm, fail_a, cols), (against, fail_r, ref)):
        v = int(failed_mask.sum())
        lo, hi = stats.clopper_pearson(v, n, check.confidence)
        arms_json[arm_name] = {"n": n, "violations": v, "rate": v / n if n else None, "ci_low": lo, "ci_high": hi,
                               "outcomes": outcomes(c, judged), "statuses": statuses(c, judged),
                               "errors": count_kinds(errors_of(c), judged)}
    if p.get("error_rate_margin") is not None:
        parts["error_rate"] = _error_part(check, fail_a, fail_r, n, float(p["error_rate_margin"]))
    if p.get("latency_ratio") is not None:
        parts["latency"] = _latency_part(check, cols, ref, judged, float(p["latency_ratio"]), float(p["quantile"]))
    if p.get("flip_margin") is not None:
        parts["flips"] = _flip_part(check, evidence, against, judged, float(p["flip_margin"]))

    status, required_n, lead = _combine(parts)
    if status == INCONCLUSIVE and required_n is None and n < check.min_n:
        required_n = check.min_n
    rate_a, rate_r = arms_json[check.arm]["rate"], arms_json[against]["rate"]
    head = (f"{what}: {check.arm} error rate {pct(rate_a)} vs {who_ref} {pct(rate_r)} on {n:,} requests "
            f"while the fault was on")
    if status == FAIL:
        tail = f"fail ({_broken(parts)})"
    elif status == INCONCLUSIVE:
        tail = "inconclusive" + (f", need about {required_n:,} requests; have {n:,}" if required_n else "")
    else:
        tail = "pass"
    message = f"{head}; " + "; ".join(v["text"] for v in parts.values()) + f" — contract {check.contract}: {tail}"
    details = {**base, "arms": arms_json, "parts": parts, "window_exchanges": int(window.sum())}
    return _parts_result(check, status, message, parts.get(lead, {}) if lead else {}, n, required_n, details)


def _error_part(check: ContractCheck, fail_a: np.ndarray, fail_r: np.ndarray, n: int, margin: float) -> dict:
    both = int((fail_a & fail_r).sum())
    only_a = int((fail_a & ~fail_r).sum())
    only_r = int((fail_r & ~fail_a).sum())
    cells = (both, only_a, only_r, n - both - only_a - only_r)
    if n == 0:
        return {"status": INCONCLUSIVE, "n": 0, "bound": margin, "estimate": None, "text": "error rate: no exchange"}
    diff, lo, hi = stats.newcombe_paired(*cells, check.confidence)
    status = part_status(n, check.min_n, diff, lo, hi, margin, 0.0)
    req = None
    if status == INCONCLUSIVE:
        est = stats.solve_required_n(lambda m: stats.newcombe_paired(*(c * m / n for c in cells), check.confidence)[1:],
                                     diff, margin, n)
        req = at_least_min_n(est, n, check.min_n)
    text = (f"error rate difference {stats.fmt_pp(diff)}, {stats.fmt_ci(lo, hi, stats.fmt_pp, check.confidence)}, "
            f"margin {stats.fmt_pp(margin)}: {status}")
    return {"status": status, "n": n, "estimate": diff, "ci_low": lo, "ci_high": hi, "bound": margin,
            "paired": {"both_failed": both, "only_arm_failed": only_a, "only_reference_failed": only_r},
            "required_n": req, "text": text}


def _latency_part(check: ContractCheck, cols: ArmColumns, ref: ArmColumns, judged: np.ndarray, bound: float,
                  q: float) -> dict:
    ok_a, to_a = _usable(cols)
    ok_r, to_r = _usable(ref)
    both = judged & (ok_a | to_a) & (ok_r | to_r)
    n = int(both.sum())
    if n == 0:
        return {"status": INCONCLUSIVE, "n": 0, "bound": bound, "estimate": None, "required_n": check.min_n,
                "text": f"{quantile_name(q)} latency: no exchange both arms answered"}
    la = np.asarray(cols.latency_s, dtype=np.float64)[both]
    lr = np.asarray(ref.latency_s, dtype=np.float64)[both]
    qa, qr = float(np.quantile(la, q)), float(np.quantile(lr, q))
    ratio = qa / qr if qr > 0 else math.nan
    boot = _bootstrap_log_ratio(lr, la, (q,), check.n_resamples, 10_000, check.seed)
    lo, hi = _interval(ratio, boot[0], 1 - check.confidence, _scale(n, 10_000))
    status = part_status(n, check.min_n, ratio, lo, hi, bound, 1.0)
    req = _ratio_need(check, status, n, ratio, lo, hi, bound)
    text = _ratio_text(check, q, qa, qr, ratio, lo, hi, bound, status)
    return {"status": status, "n": n, "estimate": ratio, "ci_low": lo, "ci_high": hi, "bound": bound,
            "arm_s": qa, "reference_s": qr, "required_n": req, "text": text}


def _flip_part(check: ContractCheck, evidence: Evidence, against: str, judged: np.ndarray, margin: float) -> dict:
    if evidence.task == "regression":
        return {"status": None, "n": 0, "bound": margin,
                "text": "flip rate: not judged (regression outputs have no labels)"}
    a, b = paired_labels(evidence, check.arm, against, judged)
    keep = (a >= 0) & (b >= 0)
    a, b = a[keep], b[keep]
    n = len(a)
    if n == 0:
        return {"status": INCONCLUSIVE, "n": 0, "bound": margin, "estimate": None, "required_n": check.min_n,
                "text": "flip rate: no paired labelled predictions"}
    flips = int((a != b).sum())
    rate = flips / n
    lo, hi = stats.clopper_pearson(flips, n, check.confidence)
    status = part_status(n, check.min_n, rate, lo, hi, margin, 0.0)
    req = None
    if status == INCONCLUSIVE:
        req = at_least_min_n(check._cp_required(rate, margin, n), n, check.min_n)
    text = (f"flip rate {pct(rate)} ({flips:,} of {n:,} predictions), "
            f"{stats.fmt_ci(lo, hi, pct, check.confidence)}, margin {pct(margin)}: {status}")
    return {"status": status, "n": n, "estimate": rate, "ci_low": lo, "ci_high": hi, "bound": margin,
            "flips": flips, "required_n": req, "text": text}


def paired_labels(evidence: Evidence, arm: str, against: str, judged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of `arm` and `against` on the same input rows of the judged exchanges."""
    empty = np.zeros(0, dtype=np.int64)
    pa = evidence.pairs.get(arm)
    if pa is None or pa.n == 0:
        return empty, empty
    if against == INCUMBENT:
        rows = judged[pa.exchange]
        return np.asarray(pa.label_other)[rows], np.asarray(pa.label_incumbent)[rows]
    pb = evidence.pairs.get(against)
    if pb is None or pb.n == 0:
        return empty, empty
    ka, kb = _row_keys(pa), _row_keys(pb)
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    rows = judged[pa.exchange[ia]]
    return np.asarray(pa.label_other)[ia][rows], np.asarray(pb.label_other)[ib][rows]


def _row_keys(p: Pairs) -> np.ndarray:
    """(exchange, row within the exchange) as one int64 per prediction row."""
    ex = np.asarray(p.exchange, dtype=np.int64)
    order = np.argsort(ex, kind="stable")
    sorted_ex = ex[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_ex)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ex)]))
    rank = np.empty(len(ex), dtype=np.int64)
    rank[order] = np.arange(len(ex)) - run_start
    return ex * (1 << 20) + rank


# ---------------------------------------------------------------------------------------------
# production_unaffected


def judge_production(check: ContractCheck, evidence: Evidence, timeline: Timeline,
                     steady_mask: np.ndarray | None) -> CheckResult:
    p = check.params
    what = check._what(timeline)
    inc = evidence.arms.get(INCUMBENT)
    steady = steady_mask if steady_mask is not None else timeline.steady_mask(evidence.started_at)
    window = fault_window(evidence, check.key, timeline)
    if not _arm_has_data(evidence, INCUMBENT):
        return check._inconclusive(what, "no incumbent exchanges")
    if not window.any():
        if never_fired(evidence, check.key, timeline, 0):
            return check._not_applicable("the fault never fired", timeline)
        return check._inconclusive(what, "no exchange while the fault was on", required_n=check.min_n)
    if steady is None or not np.any(steady):
        return check._inconclusive(what, "no steady-state exchanges to compare with",
                                   details={"window_exchanges": int(window.sum())})
    steady = np.asarray(steady, dtype=bool)
    present = np.asarray(inc.present, dtype=bool)
    x_mask = window & present & ~steady
    s_mask = steady & present
    err = errors_of(inc)
    status_col = np.asarray(inc.status)
    # Every error kind counts here, shed and internal too (errors._failed leaves those out): this
    # compares what the incumbent's clients got, not what the arm did.
    failed = ~none_mask(err) | server_error(status_col) | (status_col < 0)
    nx, ns = int(x_mask.sum()), int(s_mask.sum())
    fx, fs = int((failed & x_mask).sum()), int((failed & s_mask).sum())
    margin = float(p["error_rate_margin"])
    parts: dict[str, dict] = {}
    diff, lo, hi = newcombe_independent(fx, nx, fs, ns, check.confidence)
    st = part_status(min(nx, ns), check.min_n, diff, lo, hi, margin, 0.0)
    req = None
    if st == INCONCLUSIVE and nx > 0 and ns > 0:
        est = stats.solve_required_n(
            lambda m: newcombe_independent(fx * m / nx, m, fs * m / nx, ns * m / nx, check.confidence)[1:],
            diff, margin, nx)
        req = at_least_min_n(est, nx, check.min_n)
    elif st == INCONCLUSIVE:
        req = check.min_n
    parts["error_rate"] = {
        "status": st, "estimate": diff, "ci_low": lo, "ci_high": hi, "bound": margin, "required_n": req,
        "window": {"n": nx, "failed": fx}, "steady": {"n": ns, "failed": fs},
        "text": (f"incumbent error rate {pct(fx / nx if nx else None)} of {nx:,} requests while the fault was on "
                 f"vs {pct(fs / ns if ns else None)} of {ns:,} in steady state ({stats.fmt_pp(diff)}, "
                 f"{stats.fmt_ci(lo, hi, stats.fmt_pp, check.confidence)}, margin {stats.fmt_pp(margin)}): {st}"),
    }
    q, bound = float(p["quantile"]), float(p["latency_ratio"])
    ok, to = _usable(inc)
    lat = np.asarray(inc.latency_s, dtype=np.float64)
    lx, ls = lat[x_mask & (ok | to)], lat[s_mask & (ok | to)]
    if len(lx) and len(ls):
        qx, qs = float(np.quantile(lx, q)), float(np.quantile(ls, q))
        ratio = qx / qs if qs > 0 else math.nan
        boot = bootstrap_unpaired_log_ratio(ls, lx, q, check.n_resamples, check.seed)
        rlo, rhi = percentile_interval(ratio, boot, check.confidence)
        st = part_status(min(len(lx), len(ls)), check.min_n, ratio, rlo, rhi, bound, 1.0)
        parts["latency"] = {
            "status": st, "estimate": ratio, "ci_low": rlo, "ci_high": rhi, "bound": bound,
            "required_n": _ratio_need(check, st, len(lx), ratio, rlo, rhi, bound),
            "window_s": qx, "steady_s": qs,
            "text": _ratio_text(check, q, qx, qs, ratio, rlo, rhi, bound, st),
        }
    else:
        parts["latency"] = {"status": INCONCLUSIVE, "bound": bound, "required_n": check.min_n,
                            "text": f"{quantile_name(q)} latency: no incumbent latencies to compare"}
    status, required_n, lead = _combine(parts)
    tail = f"fail ({_broken(parts)})" if status == FAIL else status
    message = f"{what}: " + "; ".join(v["text"] for v in parts.values()) + f" — contract {check.contract}: {tail}"
    v_rate = fx / nx if nx else None
    c_lo, c_hi = stats.clopper_pearson(fx, nx, check.confidence)
    details = {"parts": parts, "window_exchanges": nx, "steady_exchanges": ns,
               "arms": {INCUMBENT: {"n": nx, "violations": fx, "rate": v_rate, "ci_low": c_lo, "ci_high": c_hi,
                                    "status": status, "steady_rate": fs / ns if ns else None,
                                    "statuses": statuses(inc, x_mask), "errors": count_kinds(err, x_mask)}}}
    return _parts_result(check, status, message, parts[lead], nx, required_n, details)


# ---------------------------------------------------------------------------------------------
# Shared by both: a quantile-ratio part, and the parts into one result


def _ratio_need(check: ContractCheck, status: str, n: int, ratio: float, lo: float, hi: float,
                bound: float) -> int | None:
    """The sample size an inconclusive latency ratio asks for (normal approximation on logs)."""
    if status != INCONCLUSIVE:
        return None
    est = stats.required_n_normal(n, ratio, lo, hi, bound, log=True) if math.isfinite(lo) else None
    return at_least_min_n(est, n, check.min_n)


def _ratio_text(check: ContractCheck, q: float, a_s: float, b_s: float, ratio: float, lo: float, hi: float,
                bound: float, status: str) -> str:
    return (f"{quantile_name(q)} latency {stats.fmt_ms(a_s)} vs {stats.fmt_ms(b_s)}: ratio {stats.fmt_ratio(ratio)}, "
            f"{stats.fmt_ci(lo, hi, stats.fmt_ratio, check.confidence)}, bound {stats.fmt_ratio(bound)}: {status}")


def _combine(parts: dict[str, dict]) -> tuple[str, int | None, str | None]:
    """(status, required_n, lead) of a contract judged in parts. Parts with no status (not
    judged, like flips on a regression) do not count; none judged is inconclusive. A failure
    fails the contract; all passing passes it. required_n: the largest need among the
    inconclusive parts (None if none has one). lead: the part whose numbers the result
    carries, the first failing one, else the first judged one."""
    judged = {k: v for k, v in parts.items() if v["status"] is not None}
    found = [v["status"] for v in judged.values()]
    if not judged:
        status = INCONCLUSIVE
    elif FAIL in found:
        status = FAIL
    elif all(s == PASS for s in found):
        status = PASS
    else:
        status = INCONCLUSIVE
    required_n = None
    if status == INCONCLUSIVE:
        needs = [v.get("required_n") for v in judged.values() if v["status"] == INCONCLUSIVE]
        known = [x for x in needs if x is not None]
        required_n = max(known) if known else None
    lead = next((k for k, v in judged.items() if v["status"] == FAIL), next(iter(judged), None))
    return status, required_n, lead


def _broken(parts: dict[str, dict]) -> str:
    """The failing parts in words: 'error rate, latency'."""
    return ", ".join(k.replace("_", " ") for k, v in parts.items() if v["status"] == FAIL)


def _parts_result(check: ContractCheck, status: str, message: str, led: dict, n: int, required_n: int | None,
                  details: dict) -> CheckResult:
    """The result of a contract judged in parts, carrying the lead part's numbers."""
    if required_n is not None:
        details["required_exchanges"] = int(required_n)
    return check._result(status, message, statistic=led.get("estimate"), effect=led.get("estimate"),
                         ci_low=led.get("ci_low"), ci_high=led.get("ci_high"), n=n, threshold=led.get("bound"),
                         required_n=required_n, details=details)
