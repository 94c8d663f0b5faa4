"""`phases` and `sweep`: the scenario's timeline, and its expansion into the phases as run.

A sweep repeats the phase of one fault or toxic once per level of one parameter; `ExpandedPhase`
is a phase after that expansion, with labels and fault windows resolved for the runner.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field, field_validator, model_validator

from .base import _NAME, MAX_PHASE_DURATION_S, MAX_SWEEP_VALUES, _Model
from .errors import At
from .faults import FaultSpec
from .load_shapes import ConstantLoad, CustomLoad, Load, RampLoad, SpikeLoad, StepLoad
from .toxics import TOXIC_ALIASES, TOXIC_INTEGERS, Toxic


def format_value(value: float) -> str:
    """A sweep level as it appears in labels and phase names: 0.05, 1, 2000."""
    return f"{value:g}"


def base_label(label: str) -> str:
    """The label a contract is keyed by: `nan@0.05` -> `nan`."""
    return label.split("@", 1)[0]


class Phase(_Model):
    """A stretch of the timeline with its faults (or none)."""

    name: str = Field(pattern=_NAME, description="Unique phase name.")
    description: str = Field("", description="What happens in this phase.")
    duration_s: int = Field(ge=1, le=MAX_PHASE_DURATION_S, description="Length, whole seconds.")
    load: Load | None = Field(
        None, description="This phase's own load, replacing the run's during the phase; its times count from the phase's start."
    )
    faults: list[FaultSpec] = Field(default_factory=list, description="Faults on the requests in this phase.")
    toxics: list[Toxic] = Field(default_factory=list, description="Toxics on the toxic proxy during this phase.")
    steady_state: bool = Field(
        False,
        description="A steady-state phase (no faults): judged by `steady_state_checks`, before and after the faults.",
    )

    @model_validator(mode="after")
    def _steady(self) -> Phase:
        if self.steady_state and (self.faults or self.toxics):
            raise At("steady_state", "a steady-state phase has no faults or toxics; put them in a phase of their own")
        return self

    @property
    def faulted(self) -> bool:
        return bool(self.faults or self.toxics)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every fault and toxic label in this phase, as written (before sweep expansion)."""
        return tuple(f.name for f in self.faults) + tuple(t.label for t in self.toxics)


class Sweep(_Model):
    """Repeat a fault's phase once per value of one of its parameters (a dose-response curve)."""

    fault: str = Field(pattern=_NAME, description="Label of the swept fault or toxic.")
    parameter: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The parameter varied: a fault parameter (e.g. probability), or a toxic attribute or toxicity.",
    )
    values: list[float] = Field(min_length=1, max_length=MAX_SWEEP_VALUES, description="The levels, in the order run.")
    phase_duration_s: int | None = Field(
        None, ge=1, le=MAX_PHASE_DURATION_S, description="Length of each level's phase; default the swept phase's duration."
    )

    @field_validator("values")
    @classmethod
    def _distinct(cls, values: list[float]) -> list[float]:
        seen: set[str] = set()
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise At(f"[{i}]", f"must be finite (got {value})")
            if format_value(value) in seen:
                raise At(f"[{i}]", f"{format_value(value)} is listed twice")
            seen.add(format_value(value))
        return values


@dataclass(frozen=True)
class ExpandedPhase:
    """A phase as the runner runs it: sweep expanded, labels and fault windows resolved."""

    index: int
    name: str  # unique; `<phase>@<level>` for a sweep level
    source: str  # the phase's name in the scenario file
    start_s: float  # from the start of the run (the start of the load)
    duration_s: int
    load: ConstantLoad | RampLoad | StepLoad | SpikeLoad | CustomLoad | None  # the phase's own load, if any
    # Specs for harness.faults.make_fault: `label` filled in (`<label>@<level>` in a sweep level),
    # `window` in seconds since the run started (the phase, or the fault's window within it).
    faults: tuple[dict, ...]
    # Toxics with `name` filled in (the base label: toxic names cannot hold '@'); `.toxiproxy()`.
    toxics: tuple[Toxic, ...]
    steady_state: bool
    sweep_value: float | None = None  # the level of the swept parameter in this phase

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def faulted(self) -> bool:
        return bool(self.faults or self.toxics)

    def toxic_label(self, toxic: Toxic) -> str:
        """The label a toxic goes by in this phase: `<name>@<level>` in a sweep level."""
        return toxic.label if self.sweep_value is None else f"{toxic.label}@{format_value(self.sweep_value)}"

    @property
    def labels(self) -> tuple[str, ...]:
        """Every fault and toxic label in this phase, as the reports name them."""
        return tuple(f["label"] for f in self.faults) + tuple(self.toxic_label(t) for t in self.toxics)


def _expand(phase: Phase, sweep: Sweep | None) -> Iterator[tuple]:
    """(name, duration, fault specs, toxics, level) for each phase run from `phase`."""
    toxics = tuple(t.model_copy(update={"name": t.label}) for t in phase.toxics)
    if sweep is None or sweep.fault not in phase.labels:
        yield phase.name, phase.duration_s, tuple(f.spec() for f in phase.faults), toxics, None
        return
    parameter = sweep_parameter(phase, sweep)
    for value in sweep.values:
        level = format_value(value)
        faults = []
        for fault in phase.faults:
            spec = fault.spec()
            if fault.name == sweep.fault:
                spec[parameter] = value
            spec["label"] = f"{fault.name}@{level}"
            faults.append(spec)
        swept = []
        for toxic in toxics:
            if toxic.label == sweep.fault:
                if parameter == "toxicity":
                    toxic = toxic.model_copy(update={"toxicity": value})
                else:
                    attributes = {**toxic.attributes, parameter: int(value) if parameter in TOXIC_INTEGERS else value}
                    toxic = toxic.model_copy(update={"attributes": attributes})
            swept.append(toxic)
        yield f"{phase.name}@{level}", sweep.phase_duration_s or phase.duration_s, tuple(faults), tuple(swept), value


def sweep_parameter(phase: Phase, sweep: Sweep) -> str:
    """The swept parameter's canonical name (a toxic attribute's alias becomes its name)."""
    for toxic in phase.toxics:
        if toxic.label == sweep.fault:
            return TOXIC_ALIASES[toxic.type].get(sweep.parameter, sweep.parameter)
    return sweep.parameter


def _run_window(spec: dict, start: float, duration: float) -> dict:
    """The fault's window in seconds since the run started: the phase, or its part of it."""
    window = spec.get("window")
    if window is None:
        begin, end = 0.0, float(duration)
    else:
        begin, end = float(window[0]), min(float(window[1]), float(duration))
    return {**spec, "window": [start + begin, start + end]}
