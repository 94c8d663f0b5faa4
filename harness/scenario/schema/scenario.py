"""The top-level `Scenario` model: its own fields, the run-wide proxy settings, and what the runner
and the judge read from a validated scenario (phases as run, the load shape, contracts, checks).

The rules across fields run in its after-validator; they live in `rules.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .base import _NAME, DEFAULT_RATE, MAX_PHASES, _Model
from .checks import check_checks
from .contracts import Contract, ContractItem, _resolve_contract
from .errors import Problems
from .load_shapes import ConstantLoad, Load
from .phases import ExpandedPhase, Phase, Sweep, _expand, _run_window, base_label
from .rules import _cross_problems
from .targets import Targets
from .traffic import Traffic

PROTOCOLS = ("http", "grpc")
CODECS = ("v2", "v1", "generic", "v2grpc")


class ProxySettings(_Model):
    """The shadow proxy the runner starts in front of the incumbent."""

    sample: float = Field(1.0, ge=0, le=1, description="Share of requests mirrored (seeded draw).")
    shadow_timeout_s: float = Field(5.0, gt=0, le=300, description="Seconds a mirrored copy may take.")
    incumbent_timeout_s: float = Field(30.0, gt=0, le=300, description="Seconds the incumbent may take before the client gets 504.")
    max_inflight: int = Field(512, ge=0, le=100_000, description="Mirrored requests in flight before copies are shed.")


class Scenario(_Model):
    """A shadow or chaos scenario: targets, traffic, load, phases of faults, contracts and checks."""

    model_config = ConfigDict(  # merged with _Model's: strict, unknown fields forbidden
        title="Shadowline scenario",
        json_schema_extra={"$comment": "docs/scenarios.md; check a file with `shadowline scenario validate FILE`"},
    )

    name: str = Field(pattern=_NAME, description="Scenario name (letters, digits, '.', '_', '-').")
    description: str = Field("", description="What the scenario proves.")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seed of the load, the sampling and every fault draw.")
    protocol: Literal[PROTOCOLS] = Field(  # type: ignore[valid-type]
        "http",
        description="http: requests are HTTP (v2 JSON to /v2/models/{model}/infer); grpc: Open Inference "
        "Protocol v2 over gRPC (inference.GRPCInferenceService/ModelInfer), codec v2grpc.",
    )
    codec: Literal[CODECS] | None = Field(  # type: ignore[valid-type]
        None,
        description="How requests and responses are read: v2, v1 or generic (HTTP), v2grpc (gRPC). null: "
        "detected over HTTP (the demo servers speak v2); v2grpc over gRPC.",
    )
    select: str | None = Field(
        None, description="Generic codec selectors, e.g. 'label=predictions[*].label,score=predictions[*].p'."
    )
    allow_remote_targets: bool = Field(
        False, description="Allow target URLs that are not loopback addresses (mirrored faults reach them)."
    )
    targets: Targets = Field(default_factory=Targets, description="The model servers.")
    traffic: Traffic = Field(default_factory=Traffic, description="Where the requests come from.")
    load: Load = Field(
        default_factory=ConstantLoad,
        description="The run's load (Locust, in its own process); its times count from the start of the run. "
        f"Default: constant {DEFAULT_RATE:g} requests/s.",
    )
    proxy: ProxySettings = Field(default_factory=ProxySettings, description="The shadow proxy's settings.")
    phases: list[Phase] = Field(min_length=1, max_length=MAX_PHASES, description="The timeline, in order.")
    sweep: Sweep | None = Field(None, description="Sweep one fault parameter over levels (dose-response).")
    contracts: dict[str, list[ContractItem]] = Field(
        default_factory=dict,
        description="What is acceptable under each fault: {key: [contract, ...]}; a key is a fault or toxic "
        "label, 'phase:<name>' (every exchange of that phase) or '*' (every fault and toxic).",
    )
    checks: dict[str, Any] = Field(
        default_factory=dict,
        description="The shadow checks, on the exchanges without a fault: {check: {parameter: value}} adjusting "
        "the default set; {check: false} leaves one out (docs/checks.md).",
    )
    steady_state_checks: dict[str, Any] = Field(
        default_factory=lambda: {"errors": {}, "latency": {}},
        description="Exactly these checks run on each steady-state phase: {check: {parameter: value}}.",
    )

    _source: Path | None = PrivateAttr(None)

    @field_validator("checks", "steady_state_checks")
    @classmethod
    def _checks(cls, config: dict[str, Any]) -> dict[str, Any]:
        return check_checks(config)

    @model_validator(mode="after")
    def _cross(self) -> Scenario:
        if "baseline" not in self.targets.model_fields_set and any(p.faulted for p in self.phases):
            self.targets.baseline = "incumbent"  # a chaos scenario's noise floor, unless `baseline: null`
        if self.protocol == "grpc" and self.codec is None:
            self.codec = "v2grpc"  # the only codec that reads gRPC messages; written out in the resolved form
        problems = list(_cross_problems(self))
        if problems:
            raise Problems(problems)
        return self

    # -- what the runner and the judge read ---------------------------------------------------

    @property
    def source(self) -> Path | None:
        """The file this scenario was loaded from, if any."""
        return self._source

    def fault_labels(self) -> list[str]:
        """Every fault and toxic label (before sweep expansion), in timeline order."""
        return [label for p in self.phases for label in p.labels]

    def expanded_phases(self) -> list[ExpandedPhase]:
        """The phases as run: the swept phase repeated once per level, labels `label@level`."""
        out: list[ExpandedPhase] = []
        start = 0.0
        for phase in self.phases:
            for name, duration, faults, toxics, value in _expand(phase, self.sweep):
                out.append(
                    ExpandedPhase(
                        index=len(out),
                        name=name,
                        source=phase.name,
                        start_s=start,
                        duration_s=duration,
                        load=phase.load,
                        faults=tuple(_run_window(spec, start, duration) for spec in faults),
                        toxics=toxics,
                        steady_state=phase.steady_state,
                        sweep_value=value,
                    )
                )
                start += duration
        return out

    @property
    def total_duration_s(self) -> int:
        """Seconds of load over all phases, after sweep expansion."""
        return sum(p.duration_s for p in self.expanded_phases())

    def rate_at(self, t: float) -> float | None:
        """Target requests/s `t` seconds into the run (a phase's own load wins); None for custom."""
        for phase in self.expanded_phases():
            if phase.start_s <= t < phase.end_s:
                if phase.load is not None:
                    return phase.load.rate_at(t - phase.start_s)
                break
        return self.load.rate_at(t)

    def users(self) -> int:
        """Locust users for the run: the most any of its loads needs."""
        loads = [self.load] + [p.load for p in self.phases if p.load is not None]
        return max(load.effective_users() for load in loads)

    def load_shape(self) -> dict:
        """The whole run's load as one `harness.load.shapes` dict (LoadSpec.shape).

        Without phase loads it is the scenario's `load` with `duration_s` = the run's length.
        With them, the timeline is a `step` shape, one step per second (ramps become staircases
        of one-second steps; equal neighbours are merged).
        """
        total = self.total_duration_s
        if not any(p.load is not None for p in self.phases):
            return {**self.load.to_shape(), "duration_s": float(total)}
        steps: list[dict] = []
        for second in range(total):
            rate = self.rate_at(second + 0.5)
            if steps and steps[-1]["rate"] == rate:
                steps[-1]["duration_s"] += 1.0
            else:
                steps.append({"rate": rate, "duration_s": 1.0})
        return {"type": "step", "steps": steps, "users": self.users(), "duration_s": float(total)}

    def contract_items(self) -> list[Contract]:
        """Every contract, resolved to (key, name, parameters)."""
        out = []
        for key, items in self.contracts.items():
            for item in items:
                name, params = _resolve_contract(item)
                out.append(Contract(key, name, params))
        return out

    def contracts_for(self, label: str) -> list[Contract]:
        """The contracts a fault or toxic label is held to (a sweep level's label counts as its base)."""
        base = base_label(label)
        return [c for c in self.contract_items() if c.key in (base, "*")]

    def contracts_for_phase(self, name: str) -> list[Contract]:
        """The contracts on a phase (`phase:<name>` keys; a sweep level counts as its source phase)."""
        return [c for c in self.contract_items() if c.key == f"phase:{base_label(name)}"]

    def check_objects(self) -> list:
        """`checks` as Check instances (the default set, adjusted)."""
        from harness.checks import checks_from_config

        return checks_from_config(self.checks)

    def steady_state_check_objects(self) -> list:
        """`steady_state_checks` as Check instances (exactly those named)."""
        from harness.checks import checks_from_config

        return checks_from_config(self.steady_state_checks, defaults=False)
