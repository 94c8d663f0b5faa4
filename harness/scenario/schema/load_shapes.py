"""`load`: how fast requests are sent, as a Locust load shape (constant, ramp, step, spike or your own).

Each shape knows its rate over time and its peak, and turns itself into the dict
`harness.load.shapes` takes. Whether a shape fits its phase or the run is a rule across fields
(`rules.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, ValidationInfo, field_validator, model_validator

from .base import (
    _SHAPE_CLASS,
    DEFAULT_RATE,
    MAX_RATE,
    MAX_TOTAL_DURATION_S,
    MAX_USERS,
    USER_RATE,
    _Model,
    _tagged,
    scenario_path,
)
from .errors import At

LOAD_SHAPES = ("constant", "ramp", "step", "spike", "custom")

_Rate = Annotated[float, Field(ge=0, le=MAX_RATE)]
_Seconds = Annotated[float, Field(gt=0, le=MAX_TOTAL_DURATION_S)]


class _LoadBase(_Model):
    users: int | None = Field(
        None,
        ge=1,
        le=MAX_USERS,
        description="Locust users (concurrent senders) the rate is spread over. Default: enough that none "
        f"sends more than {USER_RATE:g} requests/s (at least 5). A user waits for each answer, so U users "
        "sustain at most U / latency requests/s: raise it for slow targets.",
    )
    spawn_rate: float | None = Field(
        None, gt=0, le=MAX_USERS, description="Users started per second; null: all at once. Top-level load only."
    )
    timeout_s: float | None = Field(
        None, gt=0, le=300, description="Per-request network timeout of the load generator, s (default 10). Top-level load only."
    )

    def rate_at(self, t: float) -> float | None:
        """Requests/s `t` seconds into this load; None for a custom shape."""
        raise NotImplementedError

    def max_rate(self) -> float | None:
        """The highest rate this load asks for; None for a custom shape without a bound."""
        raise NotImplementedError

    def effective_users(self) -> int:
        """`users`, or the default derived from the peak rate."""
        if self.users is not None:
            return self.users
        peak = self.max_rate()
        return max(5, math.ceil(peak / USER_RATE)) if peak else 5

    def to_shape(self) -> dict:
        """This load as a `harness.load.shapes` dict (`type` for `shape`; users filled in)."""
        out = {"type": self.shape, **self.model_dump(exclude={"shape", "spawn_rate", "timeout_s"}, exclude_none=True, by_alias=True)}
        out["users"] = self.effective_users()
        return out


def _sends_something(load: _LoadBase, first: str, second: str) -> None:
    """Refuse a shape whose two rates are both 0 (the error points at the second one)."""
    if getattr(load, first) == 0 and getattr(load, second) == 0:
        raise At(second, f"{first} and {second} are both 0: the load would send nothing")


class ConstantLoad(_LoadBase):
    """A constant rate: `rate` requests/s over all users, or `users` each sending `per_user_rate`."""

    shape: Literal["constant"] = Field("constant", description="constant (the default).")
    rate: float | None = Field(
        None, gt=0, le=MAX_RATE, description=f"Requests/s over all users. Neither rate nor users: {DEFAULT_RATE:g}."
    )
    per_user_rate: float | None = Field(
        None, gt=0, le=MAX_RATE, description="With `users` and no `rate`: requests/s of each user."
    )

    @model_validator(mode="after")
    def _rate_or_users(self) -> ConstantLoad:
        if self.rate is not None and self.per_user_rate is not None:
            raise At("per_user_rate", "give rate (over all users) or users and per_user_rate, not both")
        if self.rate is None and self.users is None:
            self.rate = DEFAULT_RATE
        elif self.rate is None and self.per_user_rate is None:
            raise At("per_user_rate", "with users and no rate, give per_user_rate (requests/s of each user)")
        if self.rate is None and self.users * self.per_user_rate > MAX_RATE:
            raise At("per_user_rate", f"users x per_user_rate is {self.users * self.per_user_rate:g} requests/s; the bound is {MAX_RATE:g}")
        return self

    def rate_at(self, t: float) -> float:
        return self.rate if self.rate is not None else self.users * self.per_user_rate

    def max_rate(self) -> float:
        return self.rate_at(0.0)


class RampLoad(_LoadBase):
    """A linear ramp from `from_rate` to `to_rate` over `over_s` seconds, then `to_rate`."""

    shape: Literal["ramp"] = Field(description="ramp")
    from_rate: _Rate = Field(description="Requests/s at the start.")
    to_rate: _Rate = Field(description="Requests/s at the end of the ramp, and after it.")
    over_s: _Seconds = Field(description="Length of the ramp, s.")

    @model_validator(mode="after")
    def _sends(self) -> RampLoad:
        _sends_something(self, "from_rate", "to_rate")
        return self

    def rate_at(self, t: float) -> float:
        if t >= self.over_s:
            return self.to_rate
        return self.from_rate + (self.to_rate - self.from_rate) * max(t, 0.0) / self.over_s

    def max_rate(self) -> float:
        return max(self.from_rate, self.to_rate)


class Step(_Model):
    rate: _Rate = Field(description="Requests/s during this step.")
    duration_s: _Seconds = Field(description="Length of this step, s.")


class StepLoad(_LoadBase):
    """Rates held for given durations, one after another; the last one holds to the end."""

    shape: Literal["step"] = Field(description="step")
    steps: list[Step] = Field(min_length=1, max_length=1000, description="The steps, in order.")

    @model_validator(mode="after")
    def _sends(self) -> StepLoad:
        if all(step.rate == 0 for step in self.steps):
            raise At("steps", "every step has rate 0: the load would send nothing")
        return self

    def rate_at(self, t: float) -> float:
        elapsed = 0.0
        for step in self.steps:
            elapsed += step.duration_s
            if t < elapsed:
                return step.rate
        return self.steps[-1].rate

    def max_rate(self) -> float:
        return max(step.rate for step in self.steps)

    @property
    def span_s(self) -> float:
        return sum(step.duration_s for step in self.steps)


class SpikeLoad(_LoadBase):
    """`base_rate`, with `peak_rate` from `at_s` for `for_s` seconds."""

    shape: Literal["spike"] = Field(description="spike")
    base_rate: _Rate = Field(description="Requests/s outside the spike.")
    peak_rate: _Rate = Field(description="Requests/s during the spike.")
    at_s: float = Field(ge=0, le=MAX_TOTAL_DURATION_S, description="Start of the spike, s.")
    for_s: _Seconds = Field(description="Length of the spike, s.")

    @model_validator(mode="after")
    def _sends(self) -> SpikeLoad:
        _sends_something(self, "base_rate", "peak_rate")
        return self

    def rate_at(self, t: float) -> float:
        return self.peak_rate if self.at_s <= t < self.at_s + self.for_s else self.base_rate

    def max_rate(self) -> float:
        return max(self.base_rate, self.peak_rate)


class CustomLoad(_LoadBase):
    """A Locust LoadTestShape of your own: its tick() sets the users over time. It runs over the
    whole timeline, so it is the top-level load of a scenario whose phases have no `load`."""

    shape: Literal["custom"] = Field(description="custom")
    class_: str = Field(
        alias="class",
        pattern=_SHAPE_CLASS,
        description="The locust.LoadTestShape subclass as 'module:Class', imported inside the Locust process.",
    )
    pythonpath: str | None = Field(
        None, description="A directory added to the Locust process's import path; relative to the scenario file."
    )
    per_user_rate: float = Field(gt=0, le=MAX_RATE, description="Requests/s each user sends.")
    max_users: int = Field(
        ge=1, le=MAX_USERS, description="The most users tick() may ask for: the bound on this load (the runner enforces it)."
    )

    @field_validator("pythonpath")
    @classmethod
    def _directory(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path, _ = scenario_path(value, info)
        if not path.is_dir():
            raise ValueError(f"no such directory: {path}")
        return str(path.resolve())

    @model_validator(mode="after")
    def _bounded(self) -> CustomLoad:
        if self.users is not None:
            raise At("users", "a custom shape's tick() sets the users; bound them with max_users")
        if self.per_user_rate * self.max_users > MAX_RATE:
            raise At("per_user_rate", f"per_user_rate x max_users may reach {self.per_user_rate * self.max_users:g} requests/s; the bound is {MAX_RATE:g}")
        return self

    def rate_at(self, t: float) -> None:
        return None

    def max_rate(self) -> float:
        return self.per_user_rate * self.max_users

    def effective_users(self) -> int:
        return self.max_users

    def to_shape(self) -> dict:
        out = {"type": "custom", "class": self.class_, "per_user_rate": self.per_user_rate}
        if self.pythonpath is not None:
            out["pythonpath"] = self.pythonpath
        return out


def _load_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        shape = value.get("shape", "constant")
    elif isinstance(value, _LoadBase):
        shape = value.shape
    else:
        return None
    return f"~{shape}" if shape in LOAD_SHAPES else None


Load = Annotated[
    Union[
        _tagged("~constant", ConstantLoad),
        _tagged("~ramp", RampLoad),
        _tagged("~step", StepLoad),
        _tagged("~spike", SpikeLoad),
        _tagged("~custom", CustomLoad),
    ],
    Discriminator(
        _load_tag,
        custom_error_type="load_shape",
        custom_error_message=f"expected a mapping whose `shape` is one of {', '.join(LOAD_SHAPES)}",
    ),
]
