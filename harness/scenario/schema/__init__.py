"""The scenario schema: pydantic v2 models of a scenario file (docs/scenarios.md).

Every model forbids unknown fields, so a typo is an error, and validates strictly (a string
is never read as a number). Cross-field rules (unique labels, contracts that name existing
faults, a sweep over an existing parameter, bounded durations) run once the fields are
valid. Fault specs are free-form mappings checked by `harness.faults.make_fault`; checks by
`harness.checks.checks_from_config`.

Errors raised from validators carry their own sub-path (`At`) or a list of problems
(`Problems`), so `harness.scenario.load` can print `file: field.path[2].name: what was
expected` for every problem.

One module per part of the file; this package re-exports their public names:

    errors       At, Problems, join_path: errors that carry a sub-path
    base         bounds, arm names, name patterns, the strict base model, tagged unions
    targets      targets: demo servers or URLs per arm
    traffic      traffic: synthetic rows or recorded requests
    load_shapes  load: constant, ramp, step, spike, custom
    faults       a phase's faults (checked by harness.faults)
    toxics       a phase's toxics (for the toxic TCP proxy)
    phases       phases, sweep, and their expansion into the phases as run
    contracts    contracts: what is acceptable under a fault
    checks       checks, steady_state_checks (checked by harness.checks)
    rules        the rules across fields
    scenario     the top-level Scenario
"""

from __future__ import annotations

from .base import (
    ARMS,
    DEFAULT_RATE,
    MAX_PHASE_DURATION_S,
    MAX_PHASES,
    MAX_RATE,
    MAX_ROWS_PER_REQUEST,
    MAX_SWEEP_VALUES,
    MAX_TOTAL_DURATION_S,
    MAX_USERS,
    PATTERNS,
    SHADOW_ARMS,
    TAGGED,
    USER_RATE,
)
from .contracts import (
    BARE_CONTRACTS,
    CONTRACTS,
    CleanClientError,
    Contract,
    ContractItem,
    ContractParams,
    FinitePrediction,
    NoCrash,
    NoHang,
    NoServerError,
    NoWorseThanIncumbent,
    ProductionUnaffected,
    WithinLatency,
)
from .errors import At, Problems, join_path
from .faults import GRPC_UNSUPPORTED_FAULTS, FaultSpec, check_fault, fault_types
from .load_shapes import LOAD_SHAPES, ConstantLoad, CustomLoad, Load, RampLoad, SpikeLoad, Step, StepLoad
from .phases import ExpandedPhase, Phase, Sweep, base_label, format_value, sweep_parameter
from .scenario import CODECS, PROTOCOLS, ProxySettings, Scenario
from .targets import BaselineTarget, DemoSpec, DemoTarget, Target, Targets, Url, is_loopback, target_scheme
from .toxics import (
    TOXIC_ALIASES,
    TOXIC_ATTRIBUTES,
    TOXIC_INTEGERS,
    TOXIC_REQUIRED,
    TOXIC_TYPES,
    Toxic,
    canonical_toxic_attributes,
)
from .traffic import DATATYPES, Feature, FileTraffic, SyntheticTraffic, Traffic

__all__ = [
    "ARMS",
    "At",
    "BARE_CONTRACTS",
    "BaselineTarget",
    "CODECS",
    "CONTRACTS",
    "CleanClientError",
    "ConstantLoad",
    "Contract",
    "ContractItem",
    "ContractParams",
    "CustomLoad",
    "DATATYPES",
    "DEFAULT_RATE",
    "DemoSpec",
    "DemoTarget",
    "ExpandedPhase",
    "FaultSpec",
    "Feature",
    "FileTraffic",
    "FinitePrediction",
    "GRPC_UNSUPPORTED_FAULTS",
    "LOAD_SHAPES",
    "Load",
    "MAX_PHASES",
    "MAX_PHASE_DURATION_S",
    "MAX_RATE",
    "MAX_ROWS_PER_REQUEST",
    "MAX_SWEEP_VALUES",
    "MAX_TOTAL_DURATION_S",
    "MAX_USERS",
    "NoCrash",
    "NoHang",
    "NoServerError",
    "NoWorseThanIncumbent",
    "PATTERNS",
    "PROTOCOLS",
    "Phase",
    "Problems",
    "ProductionUnaffected",
    "ProxySettings",
    "RampLoad",
    "SHADOW_ARMS",
    "Scenario",
    "SpikeLoad",
    "Step",
    "StepLoad",
    "Sweep",
    "SyntheticTraffic",
    "TAGGED",
    "TOXIC_ALIASES",
    "TOXIC_ATTRIBUTES",
    "TOXIC_INTEGERS",
    "TOXIC_REQUIRED",
    "TOXIC_TYPES",
    "Target",
    "Targets",
    "Toxic",
    "Traffic",
    "USER_RATE",
    "Url",
    "WithinLatency",
    "base_label",
    "canonical_toxic_attributes",
    "check_fault",
    "fault_types",
    "format_value",
    "is_loopback",
    "join_path",
    "sweep_parameter",
    "target_scheme",
]
