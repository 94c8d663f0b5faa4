"""Fault labels and the fault ledger: how a ledger entry names a fault and its state, which
labels a contract key covers, and which exchanges an arm's ledger says a fault reached.

A ledger entry is a label (`nan_age`, a derived `nan:age`, a sweep level `nan@0.05`) with an
optional `:<state>` suffix when the fault fired but was not applied (docs/faults.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.evidence import ArmColumns, Evidence

# Ledger suffixes of a payload fault that fired but was not applied (docs/faults.md).
NOT_APPLIED = ("undecodable", "noop", "unrepresentable", "error")


def split_entry(entry: str) -> tuple[str, str]:
    """A ledger entry -> (label, state): state is `applied` or a NOT_APPLIED suffix."""
    for state in NOT_APPLIED:
        if entry.endswith(":" + state):
            return entry[: -len(state) - 1], state
    return entry, "applied"


def label_matches(label: str, key: str) -> bool:
    """A ledger label is covered by a contract key: the same label, a derived label of it
    (`nan` covers `nan:age`), or one of its sweep levels (`nan` covers `nan@0.05`)."""
    return label == key or label.startswith(key + ":") or ("@" not in key and label.startswith(key + "@"))


def base_label(label: str) -> str:
    return label.split("@", 1)[0]


def fault_type(label: str, spec: Mapping[str, Any] | None = None) -> str:
    if spec and spec.get("type"):
        return str(spec["type"])
    return base_label(label).partition(":")[0]


# Ledgers repeat a handful of distinct tuples over many exchanges, and every contract reads the
# same arrays: code them once per array and match labels against the distinct tuples only.
_LEDGER_CACHE: dict[int, tuple[np.ndarray, np.ndarray, list[tuple[str, ...]]]] = {}


def _ledger_codes(faults: np.ndarray) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Each exchange's ledger tuple as a code into the list of distinct tuples (cached per array)."""
    hit = _LEDGER_CACHE.get(id(faults))
    if hit is not None and hit[0] is faults:
        return hit[1], hit[2]
    lookup: dict[tuple[str, ...], int] = {}
    codes = np.empty(len(faults), dtype=np.int64)
    for i, entries in enumerate(faults):
        key = tuple(entries) if entries else ()
        code = lookup.get(key)
        if code is None:
            code = lookup[key] = len(lookup)
        codes[i] = code
    if len(_LEDGER_CACHE) >= 16:
        _LEDGER_CACHE.clear()
    distinct = list(lookup)
    _LEDGER_CACHE[id(faults)] = (faults, codes, distinct)
    return codes, distinct


def ledger_states(cols: ArmColumns | None, key: str, n: int) -> dict[str, np.ndarray]:
    """Masks over exchanges: `applied` (the arm's ledger has the key applied) and one per
    NOT_APPLIED state (the key fired but every matching entry says it was not applied)."""
    out = {state: np.zeros(n, dtype=bool) for state in ("applied",) + NOT_APPLIED}
    if cols is None or cols.faults is None:
        return out
    codes, distinct = _ledger_codes(cols.faults)
    by_state: dict[str, list[int]] = {state: [] for state in out}
    for code, entries in enumerate(distinct):
        states = [s for label, s in map(split_entry, entries) if label_matches(label, key)]
        if states:
            by_state["applied" if "applied" in states else states[0]].append(code)
    for state, wanted in by_state.items():
        if wanted:
            out[state] = np.isin(codes, wanted)
    return out


def injected_resets(cols: ArmColumns, n: int, specs: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    """Exchanges whose copy got an injected `reset` fault (its reset is not a crash); `specs`:
    label -> fault spec, for labels whose type is not in the label itself."""
    out = np.zeros(n, dtype=bool)
    if cols.faults is None:
        return out
    codes, distinct = _ledger_codes(cols.faults)
    wanted = []
    for code, entries in enumerate(distinct):
        for entry in entries:
            label, state = split_entry(entry)
            if state == "applied" and fault_type(label, specs.get(label)) == "reset":
                wanted.append(code)
                break
    if wanted:
        out = np.isin(codes, wanted)
    return out


def ledger_labels(evidence: Evidence) -> list[str]:
    """Every label in any arm's ledger (suffixes stripped), in order of first appearance."""
    seen: dict[str, None] = {}
    for cols in evidence.arms.values():
        if cols.faults is None:
            continue
        _, distinct = _ledger_codes(cols.faults)
        for entries in distinct:
            for entry in entries:
                seen.setdefault(split_entry(entry)[0], None)
    return list(seen)


def has_ledger(evidence: Evidence) -> bool:
    return any(cols.faults is not None for cols in evidence.arms.values())
