"""A toxic in a phase: a fault of the toxic TCP proxy between a demo server and its feature store.

Attributes are read under their canonical names and checked here the way the proxy checks them,
so a scenario that validates never fails when the proxy is given its toxics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import _NAME, ARMS, _Model
from .errors import Problems

# Toxics of the toxic TCP proxy (proxies/toxics.py) and their attributes; Toxiproxy's unit-less
# names are aliases. harness does not import proxies, so a unit test keeps these tables equal.
TOXIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "latency": ("latency_ms", "jitter_ms"),  # hold each chunk latency +- jitter
    "bandwidth": ("rate_kbps",),  # KB/s (1 KB = 1000 bytes)
    "slow_close": ("delay_ms",),  # hold the close back
    "timeout": ("timeout_ms",),  # pass nothing; close after timeout (0: never)
    "reset_peer": ("timeout_ms",),  # on the first data, wait timeout, then TCP RST
    "slicer": ("average_size", "size_variation", "delay_us"),  # cut chunks into small writes
    "limit_data": ("bytes",),  # pass this many bytes, then close
}
TOXIC_ALIASES: dict[str, dict[str, str]] = {
    "latency": {"latency": "latency_ms", "jitter": "jitter_ms"},
    "bandwidth": {"rate": "rate_kbps"},
    "slow_close": {"delay": "delay_ms"},
    "timeout": {"timeout": "timeout_ms"},
    "reset_peer": {"timeout": "timeout_ms"},
    "slicer": {"delay": "delay_us"},
    "limit_data": {},
}
TOXIC_REQUIRED: dict[str, tuple[str, ...]] = {
    "latency": ("latency_ms",),
    "bandwidth": ("rate_kbps",),
    "slow_close": ("delay_ms",),
    "timeout": (),
    "reset_peer": (),
    "slicer": ("average_size",),
    "limit_data": ("bytes",),
}
TOXIC_INTEGERS = ("average_size", "size_variation", "delay_us", "bytes")
TOXIC_TYPES = tuple(TOXIC_ATTRIBUTES)


class Toxic(_Model):
    """A toxic for the toxic TCP proxy between a demo server and its feature store (Toxiproxy-style)."""

    name: str | None = Field(None, pattern=_NAME, description="Unique label in the scenario. Default: its type.")
    type: Literal[TOXIC_TYPES] = Field(description="latency, bandwidth, slow_close, timeout, reset_peer, slicer or limit_data.")  # type: ignore[valid-type]
    stream: Literal["upstream", "downstream"] = Field(
        "downstream", description="downstream: the feature store's answers; upstream: requests to it."
    )
    toxicity: float = Field(1.0, ge=0, le=1, description="Chance the toxic applies to a connection (drawn per connection).")
    attributes: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="latency {latency_ms (required), jitter_ms}; bandwidth {rate_kbps (KB/s, > 0)}; slow_close "
        "{delay_ms}; timeout {timeout_ms (0: never)}; reset_peer {timeout_ms}; slicer {average_size (bytes, "
        "required), size_variation (bytes), delay_us}; limit_data {bytes}. Toxiproxy's names (latency, jitter, "
        "rate, delay, timeout) are accepted and read as these.",
    )
    arms: list[Literal[ARMS]] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="Arms whose dependency gets the toxic. Default: every demo target with dependency: toxic."
    )

    @model_validator(mode="after")
    def _attributes(self) -> Toxic:
        self.attributes = canonical_toxic_attributes(self.type, self.attributes)
        return self

    @property
    def label(self) -> str:
        return self.name or self.type

    def toxiproxy(self) -> dict:
        """The toxic as the toxic proxy takes it: {name, type, stream, toxicity, attributes}."""
        return {
            "name": self.label,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }


def canonical_toxic_attributes(kind: str, attributes: Mapping[str, float]) -> dict[str, float]:
    """Attributes under their canonical names, checked like proxies.toxics; Problems otherwise."""
    known = TOXIC_ATTRIBUTES[kind]
    aliases = TOXIC_ALIASES[kind]
    out: dict[str, float] = {}
    problems = []
    for key, value in attributes.items():
        name = aliases.get(key, key)
        if name not in known:
            problems.append((f"attributes.{key}", f"a {kind} toxic has no attribute {key!r}; its attributes: {', '.join(known)}"))
        elif name in out:
            problems.append((f"attributes.{key}", f"{name} is given twice (as {name} and its alias)"))
        elif not math.isfinite(value):
            problems.append((f"attributes.{key}", f"must be finite (got {value})"))
        elif name in TOXIC_INTEGERS and value != int(value):
            problems.append((f"attributes.{key}", f"must be a whole number (got {value:g})"))
        else:
            out[name] = int(value) if name in TOXIC_INTEGERS else value
    for name in TOXIC_REQUIRED[kind]:
        if name not in out and not any(aliases.get(k) == name for k in attributes):
            problems.append(("attributes", f"a {kind} toxic needs {name}"))
    if kind == "bandwidth" and out.get("rate_kbps", 1) <= 0:
        problems.append(("attributes.rate_kbps", "must be > 0"))
    if kind == "slicer" and "average_size" in out:
        if out["average_size"] < 1:
            problems.append(("attributes.average_size", "must be >= 1"))
        elif out.get("size_variation", 0) >= out["average_size"]:
            problems.append(("attributes.size_variation", f"must be smaller than average_size ({out['average_size']})"))
    if problems:
        raise Problems(problems)
    return out
