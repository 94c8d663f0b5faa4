"""Scenarios: a YAML file of targets, traffic, load, fault phases, contracts and checks.

    from harness.scenario import load_scenario, scenario_json_schema
    scenario = load_scenario("scenarios/nan-storm.yaml")     # ScenarioError names file and field
    for phase in scenario.expanded_phases():                  # sweep expanded, labels resolved
        ...

Format, contracts and the shipped library: docs/scenarios.md.
"""

from __future__ import annotations

from .load import ScenarioError, load_scenario, scenario_from_data, scenario_json_schema
from .schema import (
    CONTRACTS,
    fault_types,
    LOAD_SHAPES,
    MAX_TOTAL_DURATION_S,
    TOXIC_ATTRIBUTES,
    Contract,
    DemoTarget,
    ExpandedPhase,
    FaultSpec,
    Phase,
    Scenario,
    Sweep,
    Targets,
    Toxic,
    Traffic,
    base_label,
)

__all__ = [
    "CONTRACTS",
    "fault_types",
    "LOAD_SHAPES",
    "MAX_TOTAL_DURATION_S",
    "TOXIC_ATTRIBUTES",
    "Contract",
    "DemoTarget",
    "ExpandedPhase",
    "FaultSpec",
    "Phase",
    "Scenario",
    "ScenarioError",
    "Sweep",
    "Targets",
    "Toxic",
    "Traffic",
    "base_label",
    "load_scenario",
    "scenario_from_data",
    "scenario_json_schema",
]
