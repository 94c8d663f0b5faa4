"""A fault in a phase: the parameters every fault has are typed here; `harness.faults.make_fault`
checks the rest, per fault type, so the registry of faults stays the one place that knows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_serializer, model_validator

from .base import _NAME, SHADOW_ARMS, _Model
from .errors import At, join_path, named_parameter

# Faults the gRPC shadow proxy cannot execute, and why (checked when protocol is grpc).
GRPC_UNSUPPORTED_FAULTS = {
    "bandwidth": "it throttles the bytes of one HTTP/1.1 connection; gRPC multiplexes calls on one "
    "HTTP/2 connection and grpcio frames each message itself",
    "truncate": "it cuts the body under its Content-Length on one HTTP/1.1 connection; grpcio frames "
    "each message itself",
    "malformed_json": "it breaks JSON text; gRPC requests are protobuf messages",
    "oversize": "it pads JSON text; gRPC requests are protobuf messages",
}
# Where make_fault's messages name the parameter at fault ("fault 'nan': probability must be ...",
# "fault 'nan': unknown parameter 'p'; ..."), so the error's path can end at it.
_FAULT_PARAMETER = (r"^fault '[^']*': ([A-Za-z_][A-Za-z0-9_]*) ", r"parameter '([A-Za-z_][A-Za-z0-9_]*)'")


def fault_types() -> tuple[str, ...]:
    """The fault types of `harness.faults` (imported lazily: it pulls in numpy and the codecs)."""
    from harness.faults import FAULTS

    return tuple(FAULTS)


class FaultSpec(_Model):
    """One fault, as `harness.faults.make_fault` takes it. The common parameters are typed here;
    the rest (per fault type) are checked by make_fault."""

    # the one model open to unknown keys: a fault type's own parameters pass through to make_fault
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="The fault type (see docs/scenarios.md).")
    label: str | None = Field(
        None,
        pattern=_NAME,
        description="Unique name of this fault in the scenario (contracts and reports use it). Default: its type.",
    )
    probability: float | None = Field(None, ge=0, le=1, description="Chance that a request gets this fault.")
    arms: list[Literal[SHADOW_ARMS]] | None = Field(  # type: ignore[valid-type]
        None,
        min_length=1,
        description="Mirrored copies that get the fault: candidate, baseline (default both). Never the "
        "incumbent: its answer goes to the client.",
    )
    fields: list[str] | None = Field(
        None, min_length=1, description="Features the fault touches (payload faults): names, '#index' or JSON paths '$...'."
    )
    window: list[float] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="[start, end) in seconds from the start of the phase; default the whole phase.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        known = fault_types()
        if value not in known:
            raise ValueError(f"unknown fault type {value!r}; known types: {', '.join(sorted(known))}")
        return value

    @model_validator(mode="after")
    def _make(self) -> FaultSpec:
        check_fault(self.spec())
        return self

    @property
    def name(self) -> str:
        """The label: `label`, or the type."""
        return self.label or self.type

    def spec(self) -> dict:
        """The mapping for `make_fault`, with the label filled in (a common parameter given as
        null means its default)."""
        spec = {key: value for key, value in self.model_dump().items() if value is not None or key in (self.model_extra or {})}
        spec["label"] = self.name
        return spec

    @model_serializer(mode="wrap")
    def _as_written(self, handler: Any) -> dict:
        data = handler(self)  # the fields given (typed or not), not the unset common ones
        return {key: value for key, value in data.items() if key in self.model_fields_set or key in (self.model_extra or {})}



def check_fault(spec: dict, path: str = "") -> None:
    """Validate a fault spec with `harness.faults.make_fault`; At naming the parameter if it can."""
    from harness.faults import make_fault

    try:
        make_fault(dict(spec))
    except (ValueError, TypeError) as exc:
        where, message = named_parameter(str(exc), spec, _FAULT_PARAMETER, f"fault {spec.get('type')!r}: ")
        raise At(join_path(path, where), message) from None
