"""Faults: small frozen dataclasses of parameters, registered by name, and the seeded plan
that decides which fire for each request. Semantics, parameters and defaults: docs/faults.md.

    from harness.faults import FaultPlan, make_fault
    plan = FaultPlan([make_fault({"type": "nan", "fields": ["age"], "probability": 0.1}),
                      make_fault({"type": "latency", "ms": 200, "arms": ["candidate"]})], seed=7, codec=codec)
    decision = plan.decide(seq, elapsed_s)         # pure in (seed, seq, fault): the same every run
    body = plan.apply_payload(decision, body)      # faulted body for decision.payload_arms, or None
    decision.actions_for("candidate")              # transport actions for the proxy to execute
    decision.faults_for("candidate")               # the ledger entry for that arm's copy
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import (
    FAULTS,
    MIRRORED_ARMS,
    Abort,
    Action,
    Bandwidth,
    Fault,
    Hang,
    Latency,
    PayloadFault,
    Reset,
    TransportFault,
    Truncate,
    register,
)
from .payload import (
    BrokenChars,
    CategoryShift,
    EmptyTensor,
    Inf,
    MalformedJson,
    MissingField,
    Nan,
    Noise,
    Null,
    OutOfRange,
    Oversize,
    ShapeMismatch,
    SwapFields,
    WrongType,
)
from .plan import Decision, FaultPlan


def make_fault(spec: Mapping) -> Fault:
    """A fault from `{"type": name, **params}`; ValueError names an unknown fault type, an
    unknown parameter, or a bad value. A `kind` key (as `FaultPlan.describe` writes) is
    accepted when it matches."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a fault must be a mapping with a 'type' and parameters, got {type(spec).__name__}")
    params = dict(spec)
    name = params.pop("type", None)
    if name is None:
        raise ValueError(f"a fault needs a 'type'; known faults: {', '.join(sorted(FAULTS))}")
    cls = FAULTS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown fault type {name!r}; known faults: {', '.join(sorted(FAULTS))}")
    kind = params.pop("kind", cls.kind)
    if kind != cls.kind:
        raise ValueError(f"fault {name!r}: kind is {cls.kind!r}, got {kind!r}")
    known = cls.parameters()
    for key in params:
        if key not in known:
            raise ValueError(f"fault {name!r}: unknown parameter {key!r}; parameters: {', '.join(known)}")
    return cls(**params)


__all__ = [
    "FAULTS", "MIRRORED_ARMS", "Abort", "Action", "Bandwidth", "BrokenChars", "CategoryShift", "Decision",
    "EmptyTensor", "Fault", "FaultPlan", "Hang", "Inf", "Latency", "MalformedJson", "MissingField", "Nan", "Noise",
    "Null", "OutOfRange", "Oversize", "PayloadFault", "Reset", "ShapeMismatch", "SwapFields", "TransportFault",
    "Truncate", "WrongType", "make_fault", "register",
]
