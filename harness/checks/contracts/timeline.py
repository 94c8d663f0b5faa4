"""The time line of a run: which exchanges started while a fault, a toxic or a phase was on.

Toxics and phases leave no per-request ledger, so their faulted exchanges are every exchange in
their window; fault windows also bound no_crash, no_worse_than_incumbent and
production_unaffected, which read every exchange while the fault was on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ledger import label_matches


def _within(started_at: np.ndarray, intervals: Iterable[tuple[float, float]]) -> np.ndarray:
    """Exchanges that started in any of the [start, end) intervals."""
    t = np.asarray(started_at, dtype=np.float64)
    mask = np.zeros(len(t), dtype=bool)
    for a, b in intervals:
        mask |= (t >= a) & (t < b)
    return mask


@dataclass(frozen=True)
class Timeline:
    """When each fault, toxic and phase was on, in the evidence's clock (unix seconds).

    `windows`: key (a fault or toxic label as in the ledger, `phase:<name>`) -> [start, end)
    intervals; `phase_ends`: key -> end of the phase it belongs to (no_crash reads to there);
    `ledgerless`: keys with no per-request ledger (toxics, phases), whose faulted exchanges are
    every exchange in the window; `steady`: the steady-state phases; `specs`: label -> fault spec
    (for descriptions and fault types); `alive`: arm -> its liveness probe answered at the end.
    """

    windows: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    phase_ends: Mapping[str, float] = field(default_factory=dict)
    ledgerless: frozenset[str] = frozenset()
    steady: tuple[tuple[float, float], ...] = ()
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alive: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_phases(cls, phases: Iterable[Any], run_start: float, *, alive: Mapping[str, bool] | None = None) -> Timeline:
        """From `Scenario.expanded_phases()` and the unix time the load started (phase and
        fault windows are in seconds since then)."""
        windows: dict[str, list[tuple[float, float]]] = {}
        ends: dict[str, float] = {}
        ledgerless: set[str] = set()
        steady: list[tuple[float, float]] = []
        specs: dict[str, dict] = {}

        def add(key: str, window: tuple[float, float], phase_end: float) -> None:
            # The end is the phase's, not the window's: no_crash reads on after a fault stops.
            windows.setdefault(key, []).append(window)
            ends[key] = max(ends.get(key, phase_end), phase_end)

        for p in phases:
            t0, t1 = run_start + float(p.start_s), run_start + float(p.start_s) + float(p.duration_s)
            key = f"phase:{p.name}"
            add(key, (t0, t1), t1)
            ledgerless.add(key)
            for spec in p.faults:
                label = spec.get("label") or spec.get("type", "")
                w = spec.get("window") or (p.start_s, p.start_s + p.duration_s)
                add(label, (run_start + float(w[0]), run_start + float(w[1])), t1)
                specs[label] = dict(spec)
            for toxic in p.toxics:
                label = p.toxic_label(toxic)
                add(label, (t0, t1), t1)
                ledgerless.add(label)
                specs[label] = {"type": toxic.type, "toxic": True, **dict(toxic.attributes)}
            if p.steady_state:
                steady.append((t0, t1))
        return cls(
            windows={k: tuple(v) for k, v in windows.items()},
            phase_ends=ends,
            ledgerless=frozenset(ledgerless),
            steady=tuple(steady),
            specs=specs,
            alive=dict(alive or {}),
        )

    def matching(self, key: str) -> list[str]:
        """Window keys covered by `key` (a base label covers its sweep levels)."""
        return [k for k in self.windows if label_matches(k, key)]

    def window_mask(self, started_at: np.ndarray, key: str) -> np.ndarray | None:
        keys = self.matching(key)
        if not keys:
            return None
        return _within(started_at, (w for k in keys for w in self.windows[k]))

    def span(self, key: str) -> tuple[float, float] | None:
        """(start of the window, end of its phase) for `key`."""
        keys = self.matching(key)
        if not keys:
            return None
        start = min(a for k in keys for a, _ in self.windows[k])
        end = max(max(self.phase_ends.get(k, b) for _, b in self.windows[k]) for k in keys)
        return start, end

    def is_ledgerless(self, key: str) -> bool:
        return key.startswith("phase:") or any(label_matches(k, key) for k in self.ledgerless)

    def steady_mask(self, started_at: np.ndarray) -> np.ndarray | None:
        if not self.steady:
            return None
        return _within(started_at, self.steady)

    def labels(self) -> list[str]:
        """Fault and toxic labels with a window (not phases)."""
        return [k for k in self.windows if not k.startswith("phase:")]

    def spec_for(self, key: str) -> Mapping[str, Any] | None:
        if key in self.specs:
            return self.specs[key]
        for k in self.matching(key):
            if k in self.specs:
                return self.specs[k]
        return None
