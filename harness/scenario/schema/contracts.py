"""`contracts`: what is acceptable under a fault, one model per contract, keyed by name in `CONTRACTS`.

A scenario names a contract bare (when all its parameters have defaults) or as
`{name: {parameters}}`; `harness.checks.contracts` judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import Discriminator, Field, model_serializer, model_validator

from .base import SHADOW_ARMS, _Model, _tagged
from .errors import At


class _Contract(_Model):
    arms: list[Literal[SHADOW_ARMS + ("incumbent",)]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["candidate"], min_length=1, description="Arms held to the contract."
    )


class CleanClientError(_Contract):
    """Every faulted request is refused cleanly: a 4xx status with a message, never anything else."""

    require_message: bool = Field(True, description="The 4xx body must carry a non-empty error message.")


class FinitePrediction(_Contract):
    """Every 2xx answer to a faulted request decodes, and every output value in it is finite."""

    require_2xx: bool = Field(False, description="Also require that every faulted request is answered 2xx.")


class NoServerError(_Contract):
    """No faulted request is answered 5xx."""


class NoHang(_Contract):
    """No faulted request goes unanswered: no timeout, and every answer within `within_s`."""

    within_s: float | None = Field(
        None, gt=0, le=300, description="Bound, s. Default: proxy.shadow_timeout_s (incumbent_timeout_s for the incumbent)."
    )


class NoCrash(_Contract):
    """The arm's server survives: no connect or reset error from the fault on, alive at the end."""


class WithinLatency(_Contract):
    """The `quantile` of the arm's latency on faulted requests is at most `ms`."""

    ms: float = Field(gt=0, le=300_000, description="Latency bound, ms.")
    quantile: float = Field(0.99, gt=0, le=1, description="Latency quantile held to the bound (1 = every request).")


class NoWorseThanIncumbent(_Contract):
    """On the faulted requests, the arm is no worse than the incumbent model on the same requests."""

    against: Literal["incumbent", "baseline"] = Field(
        "incumbent",
        description="incumbent: the incumbent arm's answers (without the fault unless it targets the incumbent); "
        "baseline: the baseline arm (a copy of the incumbent that got the same fault).",
    )
    error_rate_margin: float | None = Field(0.01, ge=0, le=1, description="Largest excess error rate; null: not judged.")
    latency_ratio: float | None = Field(1.2, ge=1, le=1000, description="Largest latency quantile ratio; null: not judged.")
    flip_margin: float | None = Field(0.02, ge=0, le=1, description="Largest label flip rate; null: not judged.")
    quantile: float = Field(0.99, gt=0, le=1, description="Latency quantile compared.")

    @model_validator(mode="after")
    def _something(self) -> NoWorseThanIncumbent:
        if self.error_rate_margin is None and self.latency_ratio is None and self.flip_margin is None:
            raise ValueError("give at least one of error_rate_margin, latency_ratio, flip_margin")
        return self


class ProductionUnaffected(_Model):
    """While the fault is on, what clients get from the incumbent is as in the steady-state phases."""

    error_rate_margin: float = Field(0.0, ge=0, le=1, description="Largest excess error rate of the incumbent.")
    latency_ratio: float = Field(1.5, ge=1, le=1000, description="Largest ratio of the incumbent's latency quantile to steady state.")
    quantile: float = Field(0.99, gt=0, le=1, description="Latency quantile compared.")


CONTRACTS: dict[str, type[_Model]] = {
    "clean_4xx": CleanClientError,
    "finite_prediction": FinitePrediction,
    "no_5xx": NoServerError,
    "no_hang": NoHang,
    "no_crash": NoCrash,
    "within_latency": WithinLatency,
    "no_worse_than_incumbent": NoWorseThanIncumbent,
    "production_unaffected": ProductionUnaffected,
}
# Contracts whose parameters all have defaults: they may be written as a bare name.
BARE_CONTRACTS = tuple(
    name for name, cls in CONTRACTS.items() if all(not f.is_required() for f in cls.model_fields.values())
)


class ContractParams(_Model):
    """`{name: {parameters}}`: exactly one contract with its parameters (null: the defaults)."""

    clean_4xx: CleanClientError | None = Field(None, description=CleanClientError.__doc__)
    finite_prediction: FinitePrediction | None = Field(None, description=FinitePrediction.__doc__)
    no_5xx: NoServerError | None = Field(None, description=NoServerError.__doc__)
    no_hang: NoHang | None = Field(None, description=NoHang.__doc__)
    no_crash: NoCrash | None = Field(None, description=NoCrash.__doc__)
    within_latency: WithinLatency | None = Field(None, description=WithinLatency.__doc__)
    no_worse_than_incumbent: NoWorseThanIncumbent | None = Field(None, description=NoWorseThanIncumbent.__doc__)
    production_unaffected: ProductionUnaffected | None = Field(None, description=ProductionUnaffected.__doc__)

    @model_validator(mode="after")
    def _exactly_one(self) -> ContractParams:
        if len(self.model_fields_set) != 1:
            raise ValueError(f"one contract per item, as {{name: {{parameters}}}}; got {len(self.model_fields_set)}")
        (name,) = self.model_fields_set
        if getattr(self, name) is None:
            if name not in BARE_CONTRACTS:
                raise At(name, f"{name} needs its parameters")
            setattr(self, name, CONTRACTS[name]())
        return self

    def contract(self) -> tuple[str, _Model]:
        (name,) = self.model_fields_set
        return name, getattr(self, name)

    @model_serializer(mode="wrap")
    def _only_the_contract(self, handler: Any) -> dict:
        name, _ = self.contract()  # dumped as written: {name: {parameters}}
        return {name: handler(self)[name]}


def _contract_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "~name"
    if isinstance(value, (Mapping, ContractParams)):
        return "~params"
    return None


ContractItem = Annotated[
    Union[_tagged("~name", Literal[BARE_CONTRACTS]), _tagged("~params", ContractParams)],  # type: ignore[valid-type]
    Discriminator(
        _contract_tag,
        custom_error_type="contract",
        custom_error_message="expected a contract name or {name: {parameters}}",
    ),
]


class Contract(NamedTuple):
    """A contract item resolved: the key it was given under, its name and its parameters."""

    key: str  # a fault or toxic label, "phase:<name>" or "*"
    name: str
    params: _Model


def _resolve_contract(item: Any) -> tuple[str, _Model]:
    """A contract item as (name, parameters); a bare name gets the contract's defaults."""
    if isinstance(item, str):
        return item, CONTRACTS[item]()
    return item.contract()
