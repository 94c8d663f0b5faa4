"""Dose-response: a swept fault's contracts judged at each level, per arm, with the first level
where each contract breaks and the highest level up to which it holds, plus each level's plain
metrics (error rate, 4xx share, latency, flip rate). The reports plot and tabulate the result."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.evidence import Evidence
from harness.verdict import FAIL, PASS

from ..base import BASELINE, CANDIDATE, INCUMBENT, _arm_has_data, errors_of
from ..errors import _failed
from ..latency import _usable
from .build import contract_items
from .check import ContractCheck
from .ledger import base_label
from .outcomes import clean_refusal, sent
from .rate import paired_labels
from .registry import MEASURES, params_dict
from .slicing import fault_window, faulted
from .timeline import Timeline


def dose_response(evidence: Evidence, contracts: Any, sweep_labels: Sequence[tuple[str, float]], *,
                  arm: str = CANDIDATE, reference: str | None = BASELINE, timeline: Timeline | None = None,
                  steady_mask: np.ndarray | None = None, parameter: str | None = None, fault: str | None = None,
                  min_n: int = 20, confidence: float = 0.95, seed: int = 0) -> dict:
    """Per sweep level (`[("nan@0.05", 0.05), ...]`) and arm, each contract's violation rate with
    its interval and n, and per arm the first level (lowest value) where the contract breaks.

    Contracts are those under the swept fault's base label (or `*`). The reference is the
    baseline (the incumbent model under the same fault); for no_worse_than_incumbent the
    reference curve is the compared arm's error rate, for production_unaffected the incumbent's.
    JSON-ready (numbers may be None).
    """
    timeline = timeline or Timeline()
    levels = [(str(label), float(value)) for label, value in sweep_labels]
    fault = fault or (base_label(levels[0][0]) if levels else "")
    ref_ok = reference is not None and _arm_has_data(evidence, reference)
    ref_arm = reference if ref_ok else None
    word = parameter or "level"

    chosen: dict[str, tuple[str, str, dict]] = {}
    for explicit in (True, False):
        for key, name, params in contract_items(contracts):
            wanted = key == fault if explicit else key == "*"
            if wanted and name not in chosen:
                chosen[name] = (key, name, params_dict(name, params))

    level_rows = []
    for label, value in levels:
        level_rows.append({"label": label, "value": value,
                           "metrics": _level_metrics(evidence, label, timeline, [arm] + ([ref_arm] if ref_arm else []),
                                                     confidence)})

    out_contracts = []
    for name, (key, _, params) in chosen.items():
        if name == "production_unaffected":
            arms = [INCUMBENT]
        elif name == "no_worse_than_incumbent":
            against = params.get("against", INCUMBENT)
            arms = [arm, against] if _arm_has_data(evidence, against) else [arm]
        else:
            arms = [arm] + ([ref_arm] if ref_arm else [])
        points = []
        for label, value in levels:
            points.append({"label": label, "value": value,
                           "arms": _points(evidence, label, name, params, arms, timeline, steady_mask, min_n,
                                           confidence, seed)})
        first_break: dict[str, dict | None] = {}
        holds_up_to: dict[str, float | None] = {}
        for a in arms:
            judged = [(pt["value"], pt["label"], pt["arms"][a]["status"]) for pt in points]
            broken = sorted((v, lab) for v, lab, s in judged if s == FAIL)
            first_break[a] = {"label": broken[0][1], "value": broken[0][0]} if broken else None
            limit = broken[0][0] if broken else math.inf
            held = [v for v, _, s in judged if s == PASS and v < limit]
            holds_up_to[a] = max(held) if held else None
        out_contracts.append({
            "name": name,
            "key": key,
            "measure": MEASURES[name],
            "arms": arms,
            "points": points,
            "first_break": first_break,
            "holds_up_to": holds_up_to,
            "summary": _dose_summary(name, arms, first_break, holds_up_to, word, arm, ref_arm),
        })
    summary = [c["summary"] for c in out_contracts]
    if not levels:
        summary = ["no sweep levels: nothing to plot"]
    elif not out_contracts:
        summary = [f"no contract on {fault!r}: nothing judged per level"]
    return {
        "fault": fault,
        "parameter": parameter,
        "arm": arm,
        "reference": ref_arm,
        "levels": level_rows,
        "contracts": out_contracts,
        "summary": summary,
    }


def _points(evidence, label, name, params, arms, timeline, steady_mask, min_n, confidence, seed) -> dict:
    """Each arm's point at one level: status ('n/a' when not applicable, None when the arm is
    only the compared side), n, violations, rate and interval, and the check's message."""
    out: dict[str, dict] = {}
    for a in arms:
        if name == "no_worse_than_incumbent" and a != arms[0]:
            continue  # the compared arm's error rate comes with the judged arm's result
        res = ContractCheck(key=label, contract=name, params=params, arm=a, reference=None, min_n=min_n,
                            confidence=confidence, seed=seed).evaluate(evidence, timeline=timeline,
                                                                         steady_mask=steady_mask)
        applicable = res.details.get("applicable", True) is not False
        sides = res.details.get("arms") or {}
        for b in arms if name == "no_worse_than_incumbent" else [a]:
            side = sides.get(b) or {}
            n = int(side.get("n", 0) or 0)
            out[b] = {
                "status": (res.status if applicable else "n/a") if b == a else None,
                "n": n,
                "violations": int(side.get("violations", 0) or 0),
                "rate": side.get("rate") if n else None,
                "ci_low": side.get("ci_low") if n else None,
                "ci_high": side.get("ci_high") if n else None,
            }
            if b == a:
                out[b]["message"] = res.message
    return {a: out.get(a, {"status": None, "n": 0, "violations": 0, "rate": None, "ci_low": None, "ci_high": None})
            for a in arms}


def _who(a: str) -> str:
    if a == BASELINE:
        return "the incumbent (baseline)"
    return f"the {a}"


def _dose_summary(name, arms, first_break, holds_up_to, word, arm, ref_arm) -> str:
    """One line per contract: where each arm first breaks it, or up to which level it holds."""
    parts = []
    for a in arms:
        if name == "no_worse_than_incumbent" and a != arms[0]:
            continue
        who = _who(a)
        fb = first_break.get(a)
        if fb is not None:
            text = f"{who} first breaks `{name}` at {word} {fb['value']:g}"
            if a == arms[0]:
                parts.append(text)
            else:
                parts.append(f"{who} first breaks it at {fb['value']:g}")
        else:
            up = holds_up_to.get(a)
            if up is not None:
                parts.append(f"{who} holds `{name}` up to {word} {up:g}" if a == arms[0] else f"{who} holds up to {up:g}")
            else:
                parts.append(f"{who}: no level decided `{name}`" if a == arms[0] else f"{who}: no level decided")
    if name not in ("no_worse_than_incumbent", "production_unaffected") and ref_arm is None and arm in arms:
        parts.append("the incumbent side is unknown (no baseline)")
    return "; ".join(parts)


def _level_metrics(evidence: Evidence, label: str, timeline: Timeline, arms: list[str], confidence: float) -> dict:
    """Per arm over the level's window: exchanges, faulted, error rate (transport errors and
    5xx), 4xx share, latency p50 and p99, and the flip rate against the incumbent."""
    window = fault_window(evidence, label, timeline)
    out: dict[str, dict] = {}
    for a in arms:
        cols = evidence.arms.get(a)
        if cols is None:
            continue
        err = errors_of(cols)
        judged = window & sent(cols)
        n = int(judged.sum())
        hit, _, _, _ = faulted(evidence, label, a, timeline)
        row: dict[str, Any] = {"exchanges": n, "faulted": int(hit.sum())}
        if n:
            status = np.asarray(cols.status)
            row["error_rate"] = float((_failed(cols, err) & judged).sum() / n)
            row["client_error_rate"] = float((judged & clean_refusal(err, status)).sum() / n)
            ok, to = _usable(cols)
            lat = np.asarray(cols.latency_s, dtype=np.float64)[judged & (ok | to)]
            if len(lat):
                row["p50_s"], row["p99_s"] = (float(v) for v in np.quantile(lat, [0.5, 0.99]))
            labels = paired_labels(evidence, a, INCUMBENT, judged) if a != INCUMBENT else (np.zeros(0), np.zeros(0))
            keep = (labels[0] >= 0) & (labels[1] >= 0)
            if keep.any():
                row["flip_rate"] = float(np.mean(labels[0][keep] != labels[1][keep]))
        out[a] = row
    return out
