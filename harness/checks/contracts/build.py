"""The entry point the judge calls: a scenario's contracts (its `contract_items()`, tuples, a
`{key: [item, ...]}` mapping or ContractChecks) expanded to one ContractCheck per label,
contract and arm, and evaluated on the evidence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.evidence import Evidence
from harness.verdict import CheckResult

from ..base import BASELINE, CANDIDATE, INCUMBENT
from .check import ContractCheck
from .ledger import label_matches, ledger_labels
from .registry import params_dict
from .timeline import Timeline


def contract_items(contracts: Any) -> list[tuple[str, str, Any]]:
    """(key, name, params) from `Scenario.contract_items()`, tuples, or `{key: [item, ...]}`."""
    out: list[tuple[str, str, Any]] = []
    if isinstance(contracts, Mapping):
        for key, items in contracts.items():
            for item in items:
                if isinstance(item, str):
                    out.append((key, item, {}))
                elif isinstance(item, Mapping) and len(item) == 1:
                    (name, params), = item.items()
                    out.append((key, name, params or {}))
                else:
                    raise ValueError(
                        f"contracts[{key!r}]: expected a contract name or {{name: {{parameters}}}}, got {item!r}")
        return out
    for item in contracts:
        if isinstance(item, ContractCheck):
            out.append((item.key, item.contract, {**item.params, "tolerance": item.tolerance}))
            continue
        key, name, params = (item.key, item.name, item.params) if hasattr(item, "key") else item
        out.append((key, name, params))
    return out


def _expand_key(key: str, evidence: Evidence, timeline: Timeline) -> list[str]:
    """The labels a contract key stands for, each judged on its own: `*` -> every fault and
    toxic label; a base label -> each of its sweep levels; `phase:<name>` -> the phase (each
    level of a swept phase)."""
    seen = ledger_labels(evidence)
    known = list(dict.fromkeys(seen + timeline.labels()))
    if key == "*":
        return known
    if key.startswith("phase:"):
        levels = [k for k in timeline.windows if k.startswith("phase:") and k != key and label_matches(k, key)]
        return levels or [key]
    if "@" not in key:
        levels = [k for k in known if k.startswith(key + "@")]
        if levels:
            return list(dict.fromkeys(base_label_level(k, key) for k in levels))
    return [key]


def base_label_level(label: str, key: str) -> str:
    """`nan@0.05:age`-style oddities aside, a level label is `<key>@<level>`."""
    rest = label[len(key) + 1:]
    return f"{key}@{rest.split(':', 1)[0]}"


def build_contract_checks(contracts: Any, evidence: Evidence, *, arm: str = CANDIDATE, reference: str | None = BASELINE,
                          timeline: Timeline | None = None, min_n: int = 20, confidence: float = 0.95,
                          seed: int = 0) -> list[ContractCheck]:
    """One ContractCheck per (label, contract, arm): a contract's `arms` (default `[arm]`), a
    `*` key expanded to every fault and toxic label, a base label to each sweep level.
    A contract given under an explicit label wins over the same contract through `*`."""
    timeline = timeline or Timeline()
    items = contract_items(contracts)
    checks: dict[str, ContractCheck] = {}
    for explicit in (True, False):
        for key, name, params in items:
            if (key == "*") == explicit:
                continue
            pdict = params_dict(name, params)
            arms = [INCUMBENT] if name == "production_unaffected" else list(pdict.get("arms") or [arm])
            for label in _expand_key(key, evidence, timeline):
                for a in arms:
                    check = ContractCheck(key=label, contract=name, params=pdict, arm=a, reference=reference,
                                          min_n=min_n, confidence=confidence, seed=seed)
                    if check.name not in checks:
                        checks[check.name] = check
    return list(checks.values())


def contract_checks(contracts: Any, evidence: Evidence, *, arm: str = CANDIDATE, reference: str | None = BASELINE,
                    timeline: Timeline | None = None, steady_mask: np.ndarray | None = None, min_n: int = 20,
                    confidence: float = 0.95, seed: int = 0) -> list[CheckResult]:
    """Evaluate every contract (see build_contract_checks) on `evidence`."""
    timeline = timeline or Timeline()
    return [c.evaluate(evidence, timeline=timeline, steady_mask=steady_mask)
            for c in build_contract_checks(contracts, evidence, arm=arm, reference=reference, timeline=timeline,
                                           min_n=min_n, confidence=confidence, seed=seed)]
