"""The contracts by name: which exist, what each one's violation rate counts, the test each one
states in its result, and a contract's parameters validated by the scenario's contract models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXCHANGE_CONTRACTS = ("clean_4xx", "finite_prediction", "no_5xx", "no_hang", "no_crash")
RATE_CONTRACTS = ("within_latency", "no_worse_than_incumbent", "production_unaffected")
CONTRACT_NAMES = EXCHANGE_CONTRACTS + RATE_CONTRACTS

# What a contract's violation rate counts (the y axis of the dose-response curve).
MEASURES = {
    "clean_4xx": "share of faulted requests not refused with a clean 4xx",
    "finite_prediction": "share of faulted requests with a 2xx answer that is not decodable or not finite",
    "no_5xx": "share of faulted requests answered 5xx",
    "no_hang": "share of faulted requests that timed out (or answered later than within_s)",
    "no_crash": "share of exchanges from the fault on with a refused connection or a reset",
    "within_latency": "share of faulted requests slower than the bound",
    "no_worse_than_incumbent": "error rate (transport errors and 5xx) while the fault was on",
    "production_unaffected": "incumbent error rate while the fault was on",
}

TEST = {
    "exchange": "violations on the faulted exchanges: Clopper-Pearson exact interval of the violation rate "
    "vs the tolerance (one counterexample breaks a zero tolerance); side by side with the baseline",
    "within_latency": "quantile of latency on the faulted exchanges with a distribution-free order-statistic "
    "interval vs the bound (quantile 1: the maximum, exactly)",
    "no_worse_than_incumbent": "on the exchanges while the fault was on, paired against the reference arm: "
    "error-rate difference with Newcombe's hybrid score interval, latency quantile ratio with a paired "
    "bootstrap, label flip rate with a Clopper-Pearson interval",
    "production_unaffected": "the incumbent while the fault was on vs the steady-state phases (unpaired): "
    "error-rate difference with Newcombe's interval for independent proportions, latency quantile ratio "
    "with a bootstrap",
}


def params_dict(name: str, params: Any) -> dict:
    """A contract's parameters as a dict with the defaults filled in, validated by the
    scenario's contract model (ValueError naming the parameter)."""
    # On use, not at import: harness.scenario reaches back into harness.checks (scenario/load.py),
    # so importing it here lazily keeps the two packages' import order independent.
    from harness.scenario.schema import CONTRACTS

    if name not in CONTRACTS:
        raise ValueError(f"unknown contract {name!r}; contracts: {', '.join(CONTRACTS)}")
    if params is None:
        params = {}
    if hasattr(params, "model_dump"):
        params = params.model_dump()
    if not isinstance(params, Mapping):
        raise ValueError(f"contract {name!r}: parameters must be a mapping, got {type(params).__name__}")
    params = dict(params)
    # `tolerance` belongs to the check, not to the scenario's model: keep it out of validation.
    extra = {k: params.pop(k) for k in ("tolerance",) if k in params}
    try:
        model = CONTRACTS[name].model_validate(params, strict=False)
    except Exception as exc:  # pydantic.ValidationError: keep the message, not the type
        raise ValueError(f"contract {name!r}: {exc}") from None
    return {**model.model_dump(), **extra}
