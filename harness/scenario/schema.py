"""The scenario schema: pydantic v2 models of a scenario file (docs/scenarios.md).

Every model forbids unknown fields, so a typo is an error, and validates strictly (a string
is never read as a number). Cross-field rules (unique labels, contracts that name existing
faults, a sweep over an existing parameter, bounded durations) run once the fields are
valid. Fault specs are free-form mappings checked by `harness.faults.make_fault`; checks by
`harness.checks.checks_from_config`.

Errors raised from validators carry their own sub-path (`At`) or a list of problems
(`Problems`), so `harness.scenario.load` can print `file: field.path[2].name: what was
expected` for every problem.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from harness.demo_model import FEATURES as DEMO_FEATURES
from harness.demo_model import VARIANTS

# ---------------------------------------------------------------------------------------------
# Bounds and vocabularies

MAX_TOTAL_DURATION_S = 3600  # a scenario (after sweep expansion) runs at most an hour
MAX_PHASE_DURATION_S = 3600
MAX_PHASES = 200  # after sweep expansion
MAX_RATE = 10_000.0  # requests/s, any load shape at any time
MAX_USERS = 1_000  # Locust users
MAX_ROWS_PER_REQUEST = 10_000
MAX_SWEEP_VALUES = 50
DEFAULT_RATE = 50.0  # requests/s when a constant load names neither rate nor users
USER_RATE = 20.0  # requests/s one Locust user is asked to send at most (default users)

ARMS = ("incumbent", "candidate", "baseline")
SHADOW_ARMS = ("candidate", "baseline")

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

LOAD_SHAPES = ("constant", "ramp", "step", "spike", "custom")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # scenario, phase and fault names
_FEATURE_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
_MODEL_NAME = r"^[A-Za-z0-9._-]+$"  # as in /v2/models/{model}/infer
_SHAPE_CLASS = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# http://host:port[/prefix] (protocol http); grpc://host:port or host:port (protocol grpc)
_URL_PATTERN = r"^(http://[^/?#@\s]+:[0-9]+(/[^?#\s]*)?|(grpc://)?[^/?#@\s:]+:[0-9]+/?|(grpc://)?\[[0-9A-Fa-f:.]+\]:[0-9]+/?)$"
PROTOCOLS = ("http", "grpc")
CODECS = ("v2", "v1", "generic", "v2grpc")
# Faults the gRPC shadow proxy cannot execute, and why (checked when protocol is grpc).
GRPC_UNSUPPORTED_FAULTS = {
    "bandwidth": "it throttles the bytes of one HTTP/1.1 connection; gRPC multiplexes calls on one "
    "HTTP/2 connection and grpcio frames each message itself",
    "truncate": "it cuts the body under its Content-Length on one HTTP/1.1 connection; grpcio frames "
    "each message itself",
    "malformed_json": "it breaks JSON text; gRPC requests are protobuf messages",
    "oversize": "it pads JSON text; gRPC requests are protobuf messages",
}
# What each pattern means, for error messages.
PATTERNS = {
    _NAME: "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    _FEATURE_NAME: "a letter or '_', then letters, digits, '_', '.' or '-'",
    _MODEL_NAME: "letters, digits, '.', '_' or '-'",
    _SHAPE_CLASS: "'module.path:ClassName'",
}


# ---------------------------------------------------------------------------------------------
# Errors with a location


class At(ValueError):
    """A validator's error about a part of its value: `path` is appended to the field's path."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class Problems(ValueError):
    """Several problems found at once, each `(path, message)` relative to the model validated."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))
        self.problems = problems


def join_path(*parts: str) -> str:
    """Join dotted paths; an index part (`[2]`) attaches without a dot."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = part if not out else out + (part if part.startswith("[") else "." + part)
    return out


# ---------------------------------------------------------------------------------------------
# Base


class _Model(BaseModel):
    # serialize_by_alias: a dump reads back as a scenario (`class`, not `class_`)
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False, serialize_by_alias=True)


# Union members are tagged `~name`: the tag shows up in pydantic's error locations, and
# `harness.scenario.load` drops such parts when it prints a field path.
TAGGED: dict[str, Any] = {}


def _tagged(tag: str, tp: Any) -> Any:
    TAGGED[tag] = tp
    return Annotated[tp, Tag(tag)]


# ---------------------------------------------------------------------------------------------
# Targets


def target_scheme(url: str) -> str:
    """`http` for an http:// URL, `grpc` for grpc://host:port or host:port (a gRPC target)."""
    return url.split("://", 1)[0] if "://" in url else "grpc"


def _split(url: str):
    return urlsplit(url if "://" in url else "grpc://" + url)


def _check_url(url: str) -> str:
    """http://host:port[/prefix], grpc://host:port or host:port; which one the scenario's
    protocol takes is a rule across fields (`_protocol_problems`)."""
    if target_scheme(url) == "grpc":
        return _check_grpc_target(url)
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"expected an http://host:port URL (or 'demo'), got {url!r}; over gRPC: host:port or grpc://host:port")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"expected http://host:port with at most a path, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of {url!r} is not a number from 1 to 65535") from None
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise ValueError(f"expected http://host:port with an explicit port, got {url!r}")
    return url


def _check_grpc_target(url: str) -> str:
    parts = _split(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"the port of {url!r} is not a number from 1 to 65535") from None
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise ValueError(f"a gRPC target is host:port or grpc://host:port, without a path, got {url!r}")
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise ValueError(f"expected host:port or grpc://host:port with an explicit port, got {url!r}")
    return url


def is_loopback(url: str) -> bool:
    """True when the URL's host is a literal loopback address or `localhost` (never resolved)."""
    host = _split(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


Url = Annotated[
    str,
    AfterValidator(_check_url),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _URL_PATTERN,
            "description": "a running model server: http://host:port (protocol http); host:port or grpc://host:port (grpc)",
        }
    ),
]


class DemoTarget(_Model):
    """A built-in demo model server that the runner starts (and stops) for this arm."""

    variant: Literal[VARIANTS] | None = Field(  # type: ignore[valid-type]
        None,
        description="Candidate weights: identical (the incumbent's), subtle (flips about 3% of labels) or "
        "broken (about 40%). Only for the candidate; default subtle.",
    )
    latency_ms: float = Field(8.0, ge=0, le=60_000, description="Latency added to every inference, ms (as `shadowline demo`).")
    jitter_ms: float = Field(2.0, ge=0, le=60_000, description="Plus a uniform 0..jitter_ms per inference, ms.")
    error_rate: float = Field(0.0, ge=0, le=1, description="Share of inferences answered 500.")
    hang_rate: float = Field(0.0, ge=0, le=1, description="Share of inferences never answered.")
    nan_behaviour: Literal["reject", "crash"] = Field(
        "reject", description="On NaN, Inf or null input: reject (a clean 400 naming the input) or crash (an opaque 500)."
    )
    crash_after: int | None = Field(
        None, ge=0, description="Serve this many inferences, then exit abruptly (a dead process). null: never."
    )
    dependency: Literal["toxic"] | None = Field(
        None,
        description="toxic: on every inference the server asks a TCP feature store, through the toxic proxy, "
        "so the phases' `toxics` reach it (a dependency timeout answers 504, a reset or refusal 502). null: none.",
    )
    dependency_timeout_ms: float = Field(
        200.0, gt=0, le=60_000, description="Time the server gives its dependency per inference, connect included, ms."
    )

    @model_validator(mode="after")
    def _rates(self) -> DemoTarget:
        if self.error_rate + self.hang_rate > 1:
            raise ValueError("error_rate + hang_rate must not exceed 1")
        return self


class DemoSpec(_Model):
    """`{demo: {...}}`: a demo server with these knobs."""

    demo: DemoTarget = Field(default_factory=DemoTarget, description="The demo server's knobs.")


def _target_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return {"demo": "~demo", "incumbent": "~same"}.get(value, "~url")
    if isinstance(value, (Mapping, DemoSpec)):
        return "~object"
    return None


_TARGET_ERROR = dict(
    custom_error_type="target",
    custom_error_message="expected 'demo', an http://host:port URL or a mapping {demo: {...}}",
)
Target = Annotated[
    Union[_tagged("~demo", Literal["demo"]), _tagged("~url", Url), _tagged("~object", DemoSpec)],
    Discriminator(_target_tag, **_TARGET_ERROR),
]
BaselineTarget = Annotated[
    Union[
        _tagged("~demo", Literal["demo"]),
        _tagged("~same", Literal["incumbent"]),
        _tagged("~url", Url),
        _tagged("~object", DemoSpec),
    ],
    Discriminator(_target_tag, **_TARGET_ERROR),
]


class Targets(_Model):
    """The model servers: the incumbent answers the client, the candidate and baseline get copies."""

    incumbent: Target = Field(
        "demo",
        description="'demo' (start the demo incumbent), {demo: {...}} or the URL of a running server "
        "(http://host:port; over gRPC host:port or grpc://host:port).",
    )
    candidate: Target = Field(
        "demo", description="'demo' (the demo candidate, variant subtle), {demo: {...}} or a URL."
    )
    baseline: BaselineTarget | None = Field(
        None,
        description="A second copy of the incumbent, the noise floor: 'incumbent' (another server like the "
        "incumbent: a second demo incumbent, or the same URL), 'demo', {demo: {...}} or a URL. Absent: "
        "'incumbent' in a scenario with faults or toxics, none otherwise; null: none.",
    )

    @model_validator(mode="after")
    def _variant_only_for_candidate(self) -> Targets:
        problems = []
        for arm in ("incumbent", "baseline"):
            value = getattr(self, arm)
            if isinstance(value, DemoSpec) and value.demo.variant is not None:
                problems.append((f"{arm}.demo.variant", "only the candidate has a variant; the incumbent and baseline serve the incumbent's weights"))
        if problems:
            raise Problems(problems)
        return self

    def arms(self) -> tuple[str, ...]:
        """The arms this scenario has, in order."""
        return tuple(arm for arm in ARMS if getattr(self, arm) is not None)

    def demo(self, arm: str) -> DemoTarget | None:
        """The knobs of the demo server to start for `arm`, or None when the arm is a URL (or absent)."""
        value = getattr(self, arm)
        if value == "incumbent":  # baseline: a copy of the incumbent
            return self.demo("incumbent")
        if value == "demo":
            return DemoTarget()
        if isinstance(value, DemoSpec):
            return value.demo
        return None

    def url(self, arm: str) -> str | None:
        """The URL of a running server for `arm`, or None when the runner starts a demo server."""
        value = getattr(self, arm)
        if value == "incumbent":
            return self.url("incumbent")
        if isinstance(value, str) and value != "demo":
            return value
        return None

    def demo_role(self, arm: str) -> str:
        """The demo server role for `arm`: the baseline serves the incumbent's weights."""
        return "candidate" if arm == "candidate" else "incumbent"

    def with_dependency(self) -> tuple[str, ...]:
        """Arms whose demo server reaches its feature store through the toxic proxy."""
        return tuple(arm for arm in self.arms() if (d := self.demo(arm)) is not None and d.dependency == "toxic")


# ---------------------------------------------------------------------------------------------
# Traffic


DATATYPES = {  # v2 tensor datatypes per feature type; the first is the default
    "float": ("FP32", "FP16", "FP64"),
    "int": ("INT64", "INT32", "INT16", "INT8", "UINT8", "UINT16", "UINT32", "UINT64"),
    "category": ("BYTES",),
}


class Feature(_Model):
    """One column of synthetic rows. Numbers: uniform on [min, max], or normal(mean, std) clipped to
    min and/or max when given (int: whole numbers). Categories: drawn with `weights` (default equal)."""

    name: str = Field(pattern=_FEATURE_NAME, description="Input name in the request.")
    type: Literal["float", "int", "category"] = Field("float", description="float, int or category.")
    datatype: str | None = Field(
        None,
        description="v2 tensor datatype: float FP32 (default), FP16, FP64; int INT64 (default), INT32, INT16, "
        "INT8, UINT8..UINT64; category BYTES.",
    )
    min: float | None = Field(None, description="Lower bound (numbers).")
    max: float | None = Field(None, description="Upper bound (numbers).")
    mean: float | None = Field(None, description="Mean of a normal distribution (numbers).")
    std: float | None = Field(None, ge=0, description="Standard deviation of a normal distribution (numbers).")
    categories: list[str] | None = Field(None, min_length=1, description="The values a category takes.")
    weights: list[float] | None = Field(None, min_length=1, description="Relative frequency of each category.")
    missing: float = Field(0.0, ge=0, le=1, description="Share of values that are missing (sent as null).")

    @model_validator(mode="after")
    def _distribution(self) -> Feature:
        problems = []
        if self.datatype is not None and self.datatype not in DATATYPES[self.type]:
            problems.append(("datatype", f"a {self.type} feature is sent as one of {', '.join(DATATYPES[self.type])} (got {self.datatype!r})"))
        if self.type == "category":
            for key in ("min", "max", "mean", "std"):
                if getattr(self, key) is not None:
                    problems.append((key, "a category feature takes `categories` (and `weights`), not numeric bounds"))
            if self.categories is None:
                problems.append(("categories", "a category feature needs its list of categories"))
            elif len(set(self.categories)) != len(self.categories):
                problems.append(("categories", "categories must be unique"))
            if self.weights is not None:
                if self.categories is not None and len(self.weights) != len(self.categories):
                    problems.append(("weights", f"one weight per category: {len(self.categories)} categories, {len(self.weights)} weights"))
                if any(not math.isfinite(w) or w < 0 for w in self.weights) or not sum(self.weights) > 0:
                    problems.append(("weights", "weights must be finite, >= 0 and not all 0"))
        else:
            for key in ("categories", "weights"):
                if getattr(self, key) is not None:
                    problems.append((key, f"a {self.type} feature takes min/max or mean/std, not {key}"))
            for key in ("min", "max", "mean", "std"):
                value = getattr(self, key)
                if value is not None and not math.isfinite(value):
                    problems.append((key, f"must be finite (got {value})"))
            if (self.mean is None) != (self.std is None):
                problems.append(("std" if self.std is None else "mean", "mean and std go together"))
            if self.mean is None and (self.min is None or self.max is None):
                problems.append(("", "give min and max (uniform), or mean and std (normal, optionally clipped by min/max)"))
            if self.min is not None and self.max is not None:
                if not self.min <= self.max:
                    problems.append(("max", f"max ({self.max:g}) must be >= min ({self.min:g})"))
                elif self.type == "int" and math.ceil(self.min) > math.floor(self.max):
                    problems.append(("max", f"no whole number between min ({self.min:g}) and max ({self.max:g})"))
        if problems:
            raise Problems(problems)
        return self


class SyntheticTraffic(_Model):
    """Requests built from seeded synthetic rows."""

    features: list[Feature] | None = Field(
        None,
        min_length=1,
        description="The feature schema. null: the demo model's features and distributions "
        "(harness.demo_model.synthetic_rows), which the demo servers expect.",
    )
    rows_per_request: int = Field(1, ge=1, le=MAX_ROWS_PER_REQUEST, description="Rows in each request (a batch).")
    layout: Literal["named", "tensor"] = Field(
        "named",
        description="named: one input per feature, shape [rows]; tensor: a single [rows, features] input "
        "named 'features' (numeric features only).",
    )

    @model_validator(mode="after")
    def _features(self) -> SyntheticTraffic:
        problems = []
        if self.features is not None:
            seen: set[str] = set()
            for i, feature in enumerate(self.features):
                if feature.name in seen:
                    problems.append((f"features[{i}].name", f"feature {feature.name!r} is listed twice"))
                seen.add(feature.name)
                if self.layout == "tensor" and feature.type == "category":
                    problems.append((f"features[{i}].type", "the tensor layout takes numeric features only; use layout: named"))
        if problems:
            raise Problems(problems)
        return self

    def feature_names(self) -> tuple[str, ...]:
        return DEMO_FEATURES if self.features is None else tuple(f.name for f in self.features)


class FileTraffic(_Model):
    """Recorded requests replayed as the load, in recorded order, cycled while the load lasts."""

    path: str = Field(
        min_length=1,
        description="JSON lines (a request body, or {body, path, method, headers}, per line) or a Shadowline "
        "capture.db; relative to the scenario file. The loaded scenario holds the absolute path.",
    )
    format: Literal["jsonl", "capture"] | None = Field(
        None, description="jsonl or capture; null: a file with SQLite's header is a capture, anything else JSON lines."
    )
    limit: int | None = Field(None, ge=1, description="Replay only the first N requests.")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(base or ".") / path
        if not path.is_file():
            raise ValueError(f"no such file: {path}" + ("" if base is None else f" (relative paths start at {base})"))
        return str(path.resolve())


class Traffic(_Model):
    """Where requests come from: synthetic rows (the default) or a file of recorded requests."""

    model: str = Field("demo", pattern=_MODEL_NAME, description="Model name in /v2/models/{model}/infer.")
    synthetic: SyntheticTraffic | None = Field(None, description="Synthetic rows; the default when `file` is absent.")
    file: FileTraffic | None = Field(None, description="Recorded requests instead of synthetic rows.")

    @model_validator(mode="after")
    def _one_source(self) -> Traffic:
        if self.synthetic is not None and self.file is not None:
            raise ValueError("give either `synthetic` or `file`, not both")
        if self.file is None and self.synthetic is None:
            self.synthetic = SyntheticTraffic()
        return self

    def feature_names(self) -> tuple[str, ...] | None:
        """The request's feature names when known (synthetic traffic), else None."""
        return self.synthetic.feature_names() if self.synthetic is not None else None

    @property
    def rows_per_request(self) -> int:
        return self.synthetic.rows_per_request if self.synthetic is not None else 1

    def source(self) -> dict:
        """This traffic as a `harness.load.sources` dict (LoadSpec.source)."""
        if self.file is not None:
            return {"type": "file", **self.file.model_dump(exclude_none=True)}
        out: dict[str, Any] = {"type": "synthetic"}
        if self.synthetic.features is not None:
            out["features"] = [f.model_dump(exclude_none=True) for f in self.synthetic.features]
        return out


# ---------------------------------------------------------------------------------------------
# Load

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
        if self.from_rate == 0 and self.to_rate == 0:
            raise At("to_rate", "from_rate and to_rate are both 0: the load would send nothing")
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
        if self.base_rate == 0 and self.peak_rate == 0:
            raise At("peak_rate", "base_rate and peak_rate are both 0: the load would send nothing")
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
        base = (info.context or {}).get("base_dir")
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(base or ".") / path
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


# ---------------------------------------------------------------------------------------------
# Faults and toxics


def fault_types() -> tuple[str, ...]:
    """The fault types of `harness.faults` (imported lazily: it pulls in numpy and the codecs)."""
    from harness.faults import FAULTS

    return tuple(FAULTS)


class FaultSpec(BaseModel):
    """One fault, as `harness.faults.make_fault` takes it. The common parameters are typed here;
    the rest (per fault type) are checked by make_fault."""

    model_config = ConfigDict(extra="allow", strict=True, serialize_by_alias=True)

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
        message = str(exc)
        where = ""
        for pattern in (r"^fault '[^']*': ([A-Za-z_][A-Za-z0-9_]*) ", r"parameter '([A-Za-z_][A-Za-z0-9_]*)'"):
            match = re.search(pattern, message)
            if match and match.group(1) in spec:
                where = match.group(1)
                message = message.removeprefix(f"fault {spec.get('type')!r}: ")
                break
        raise At(join_path(path, where), message) from None


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


# ---------------------------------------------------------------------------------------------
# Contracts


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


# ---------------------------------------------------------------------------------------------
# Phases, sweep, proxy


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


class ProxySettings(_Model):
    """The shadow proxy the runner starts in front of the incumbent."""

    sample: float = Field(1.0, ge=0, le=1, description="Share of requests mirrored (seeded draw).")
    shadow_timeout_s: float = Field(5.0, gt=0, le=300, description="Seconds a mirrored copy may take.")
    incumbent_timeout_s: float = Field(30.0, gt=0, le=300, description="Seconds the incumbent may take before the client gets 504.")
    max_inflight: int = Field(512, ge=0, le=100_000, description="Mirrored requests in flight before copies are shed.")


def format_value(value: float) -> str:
    """A sweep level as it appears in labels and phase names: 0.05, 1, 2000."""
    return f"{value:g}"


def base_label(label: str) -> str:
    """The label a contract is keyed by: `nan@0.05` -> `nan`."""
    return label.split("@", 1)[0]



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


# ---------------------------------------------------------------------------------------------
# The scenario


class Scenario(_Model):
    """A shadow or chaos scenario: targets, traffic, load, phases of faults, contracts and checks."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        serialize_by_alias=True,
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
        from harness.checks import checks_from_config

        problems = []
        for name, params in config.items():
            try:
                checks_from_config({name: params}, defaults=False)
            except ValueError as exc:
                message = str(exc)
                match = re.search(r"parameter '([^']+)'", message)
                where = name
                if match and isinstance(params, Mapping) and match.group(1) in params:
                    where = join_path(name, match.group(1))
                    message = message.removeprefix(f"check {name!r}: ")
                problems.append((where, message))
        if problems:
            raise Problems(problems)
        return config

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
        return [label for p in self.phases for label in [f.name for f in p.faults] + [t.label for t in p.toxics]]

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


def _resolve_contract(item: Any) -> tuple[str, _Model]:
    if isinstance(item, str):
        return item, CONTRACTS[item]()
    return item.contract()


def _expand(phase: Phase, sweep: Sweep | None) -> Iterator[tuple]:
    """(name, duration, fault specs, toxics, level) for each phase run from `phase`."""
    toxics = tuple(t.model_copy(update={"name": t.label}) for t in phase.toxics)
    labels = [f.name for f in phase.faults] + [t.label for t in phase.toxics]
    if sweep is None or sweep.fault not in labels:
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


def _cross_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Rules across fields, as (path, message)."""
    yield from _target_problems(s)
    yield from _protocol_problems(s)
    labels: dict[str, str] = {}  # label -> where it is defined
    kinds: dict[str, tuple] = {}  # label -> ("fault" | "toxic", spec, phase)
    yield from _phase_problems(s, labels, kinds)
    yield from _load_problems(s)
    yield from _sweep_problems(s, labels, kinds)
    yield from _contract_problems(s, labels)
    expanded = s.expanded_phases()
    where = "sweep" if s.sweep is not None else "phases"
    if len(expanded) > MAX_PHASES:
        yield (where, f"{len(expanded)} phases after the sweep; at most {MAX_PHASES}")
    total = sum(p.duration_s for p in expanded)
    if total > MAX_TOTAL_DURATION_S:
        yield (where, f"the scenario runs {total} s in all; at most {MAX_TOTAL_DURATION_S} s")


def _target_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    arms = s.targets.arms()
    demo_arms = [arm for arm in arms if s.targets.demo(arm) is not None]
    if not s.allow_remote_targets:
        for arm in arms:
            url = s.targets.url(arm)
            if url is not None and getattr(s.targets, arm) != "incumbent" and not is_loopback(url):
                yield (f"targets.{arm}", f"{url} is not a loopback address; scenarios send load and faults to loopback targets only (allow_remote_targets: true overrides)")
    if demo_arms and s.protocol == "http" and s.codec not in (None, "v2", "v2grpc"):  # gRPC: _protocol_problems
        yield ("codec", f"the demo servers speak the Open Inference Protocol v2; codec {s.codec!r} cannot read them")
    if s.select is not None and s.codec != "generic":
        yield ("select", "selectors are for codec: generic")
    if s.codec == "generic":
        if s.select is None:
            yield ("select", "codec generic needs selectors, e.g. 'label=predictions[*].label'")
        else:
            from harness.codecs import get_codec

            try:
                get_codec("generic", select=s.select)
            except ValueError as exc:
                yield ("select", str(exc))
    synthetic = s.traffic.synthetic
    if demo_arms and synthetic is not None and synthetic.features is not None:
        names = [f.name for f in synthetic.features]
        if sorted(names) != sorted(DEMO_FEATURES):
            yield ("traffic.synthetic.features", f"the demo servers take exactly the features {', '.join(DEMO_FEATURES)}; got {', '.join(names)}")
        for i, feature in enumerate(synthetic.features):
            if feature.type == "category":
                yield (f"traffic.synthetic.features[{i}].type", "the demo servers take numeric features only")
    from harness.load.sources import validate_source

    try:  # what the load driver will be given must pass its own checks
        validate_source(s.traffic.source(), "traffic")
    except ValueError as exc:
        yield ("traffic", str(exc))


def _protocol_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Targets, codec and faults that fit the protocol."""
    grpc = s.protocol == "grpc"
    if grpc and s.codec != "v2grpc":
        yield ("codec", f"over gRPC the requests and responses are v2 protobuf messages: codec v2grpc (or null); {s.codec!r} reads JSON bodies")
    if not grpc and s.codec == "v2grpc":
        yield ("codec", "v2grpc reads gRPC messages; this scenario's protocol is http (set protocol: grpc)")
    for arm in s.targets.arms():
        url = getattr(s.targets, arm)
        if not isinstance(url, str) or url in ("demo", "incumbent"):
            continue
        scheme = target_scheme(url)
        if grpc and scheme != "grpc":
            yield (f"targets.{arm}", f"{url} is an HTTP URL; over gRPC a target is host:port or grpc://host:port")
        elif not grpc and scheme != "http":
            yield (f"targets.{arm}", f"{url} is a gRPC target; with protocol http give http://host:port (or set protocol: grpc)")
    yield from _traffic_protocol_problems(s)
    if not grpc:
        return
    for i, phase in enumerate(s.phases):
        for j, fault in enumerate(phase.faults):
            path = f"phases[{i}].faults[{j}]"
            why = GRPC_UNSUPPORTED_FAULTS.get(fault.type)
            if why is not None:
                yield (f"{path}.type", f"{fault.type} is not supported over gRPC: {why}")
            elif fault.type == "broken_chars" and (fault.model_extra or {}).get("raw"):
                yield (f"{path}.raw", "broken_chars raw breaks a JSON string literal; over gRPC use it without raw (text features)")
            for k, selector in enumerate(fault.fields or ()):
                if selector.startswith("$"):
                    yield (join_path(path, f"fields[{k}]"), f"JSON paths select nodes of a JSON body; over gRPC select features by name or '#index' (got {selector!r})")


def _traffic_protocol_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Over gRPC no nulls (a tensor has none) and only gRPC captures replayed; over HTTP no gRPC captures."""
    from harness.load.sources import check_replay_protocol, validate_source

    synthetic = s.traffic.synthetic
    if s.protocol == "grpc" and synthetic is not None:
        for i, feature in enumerate(synthetic.features or ()):
            if feature.missing > 0:
                yield (f"traffic.synthetic.features[{i}].missing", "a v2 gRPC tensor cannot carry a null; over gRPC, missing must be 0")
    if s.traffic.file is not None:
        try:
            source = validate_source(s.traffic.source(), "traffic")
        except ValueError:
            return  # reported by _target_problems
        try:
            check_replay_protocol(source, s.protocol, "traffic.file")
        except ValueError as exc:
            path, _, message = str(exc).partition(": ")  # "traffic.file.path: ..."
            yield (path, message)


def _phase_problems(s: Scenario, labels: dict, kinds: dict) -> Iterator[tuple[str, str]]:
    """Unique phase names and labels; faults and toxics that fit the targets and the traffic."""
    arms = s.targets.arms()
    dependency_arms = s.targets.with_dependency()
    feature_names = s.traffic.feature_names()
    seen_phases: dict[str, int] = {}
    for i, phase in enumerate(s.phases):
        if phase.name in seen_phases:
            yield (f"phases[{i}].name", f"phase {phase.name!r} is already phases[{seen_phases[phase.name]}]")
        seen_phases.setdefault(phase.name, i)
        for j, fault in enumerate(phase.faults):
            path = f"phases[{i}].faults[{j}]"
            if fault.name in labels:
                yield (join_path(path, "label"), f"label {fault.name!r} is already used by {labels[fault.name]}; give each fault a unique label")
            labels.setdefault(fault.name, path)
            kinds.setdefault(fault.name, ("fault", fault, phase))
            for arm in fault.arms or ():
                if arm not in arms:
                    yield (join_path(path, "arms"), f"the scenario has no {arm} target")
            if fault.window is not None:
                begin, end = fault.window
                if not 0 <= begin < end:
                    yield (join_path(path, "window"), f"must be [start, end) with 0 <= start < end (got [{begin:g}, {end:g}])")
                elif begin >= phase.duration_s:
                    yield (join_path(path, "window"), f"starts after the phase ends ({phase.duration_s} s)")
            if fault.fields and feature_names is not None:
                for k, selector in enumerate(fault.fields):
                    if selector[:1] not in ("#", "$") and selector not in feature_names:
                        yield (join_path(path, f"fields[{k}]"), f"no feature {selector!r} in the traffic; features: {', '.join(feature_names)}")
        for j, toxic in enumerate(phase.toxics):
            path = f"phases[{i}].toxics[{j}]"
            if toxic.label in labels:
                yield (join_path(path, "name"), f"label {toxic.label!r} is already used by {labels[toxic.label]}; give each toxic a unique name")
            labels.setdefault(toxic.label, path)
            kinds.setdefault(toxic.label, ("toxic", toxic, phase))
            if not dependency_arms:
                yield (path, "toxics act on a demo server's dependency: give a demo target `dependency: toxic`")
            for arm in toxic.arms or ():
                if arm not in dependency_arms:
                    yield (join_path(path, "arms"), f"the {arm} target is not a demo server with dependency: toxic")
    yield from _payload_arms_problems(s)
    faulted = [i for i, p in enumerate(s.phases) if p.faulted]
    steady = [i for i, p in enumerate(s.phases) if p.steady_state]
    if faulted:
        if not any(i < faulted[0] for i in steady):
            yield ("phases", "a chaos scenario starts with a steady-state phase (steady_state: true) before the first faults")
        if not any(i > faulted[-1] for i in steady):
            yield ("phases", "a chaos scenario ends with a steady-state phase (steady_state: true) after the last faults")


def _payload_arms_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """The fault plan sends one faulted body to every payload arm: all payload faults share arms."""
    from harness.faults import FAULTS

    first: tuple[str, tuple[str, ...]] | None = None
    for i, phase in enumerate(s.phases):
        for j, fault in enumerate(phase.faults):
            cls = FAULTS.get(fault.type)
            if cls is None or cls.kind != "payload":
                continue
            arms = tuple(fault.arms) if fault.arms is not None else tuple(cls.parameters()["arms"])
            if first is None:
                first = (f"phases[{i}].faults[{j}]", arms)
            elif set(arms) != set(first[1]):
                yield (
                    f"phases[{i}].faults[{j}].arms",
                    f"payload faults share one faulted request, so they all target the same arms; "
                    f"{first[0]} targets {', '.join(first[1])}, this one {', '.join(arms)}",
                )


def _load_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Run-level settings at the top only; a custom shape alone; shapes that fit their span."""
    problems = list(_own_load_problems(s))
    yield from problems
    found = bool(problems)
    if found:
        return
    from harness.load.shapes import validate_shape

    try:  # what the load driver will be given must pass its own checks
        validate_shape(s.load_shape(), "load")
    except ValueError as exc:
        yield ("load", str(exc))


def _own_load_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    phase_loads = [(i, p) for i, p in enumerate(s.phases) if p.load is not None]
    for i, phase in phase_loads:
        for key in ("spawn_rate", "timeout_s"):
            if getattr(phase.load, key) is not None:
                yield (f"phases[{i}].load.{key}", "applies to the whole run: set it in the top-level load")
        if isinstance(phase.load, CustomLoad):
            yield (f"phases[{i}].load.shape", "a custom shape runs the whole timeline: make it the top-level load")
        yield from _load_fits(phase.load, phase.duration_s, f"phases[{i}].load", "phase")
    if isinstance(s.load, CustomLoad) and phase_loads:
        yield ("load.shape", "a custom shape runs the whole timeline: the phases cannot have loads of their own")
    total = sum(p.duration_s for p in s.expanded_phases())
    if not all(p.load is not None for p in s.phases):
        yield from _load_fits(s.load, total, "load", "run")


def _load_fits(load: Any, duration_s: float, path: str, span: str) -> Iterator[tuple[str, str]]:
    """A load shape must happen within its phase (or the run)."""
    if isinstance(load, RampLoad) and load.over_s > duration_s:
        yield (f"{path}.over_s", f"the ramp ({load.over_s:g} s) is longer than the {span} ({duration_s:g} s)")
    if isinstance(load, SpikeLoad) and load.at_s + load.for_s > duration_s:
        yield (f"{path}.at_s", f"the spike (at_s + for_s = {load.at_s + load.for_s:g} s) ends after the {span} ({duration_s:g} s)")
    if isinstance(load, StepLoad) and load.span_s - load.steps[-1].duration_s >= duration_s:
        yield (f"{path}.steps", f"the {span} ends ({duration_s:g} s) before the last step starts")


def _sweep_problems(s: Scenario, labels: dict, kinds: dict) -> Iterator[tuple[str, str]]:
    sweep = s.sweep
    if sweep is None:
        return
    kind = kinds.get(sweep.fault)
    if kind is None:
        yield ("sweep.fault", f"no fault or toxic labelled {sweep.fault!r}; labels: {', '.join(labels) or 'none'}")
        return
    if kind[0] == "fault":
        fault: FaultSpec = kind[1]
        if sweep.parameter in ("type", "label", "arms", "fields", "window"):
            yield ("sweep.parameter", f"{sweep.parameter!r} cannot be swept; sweep a numeric parameter")
            return
        for k, value in enumerate(sweep.values):
            spec = {**fault.spec(), sweep.parameter: value}
            if sweep.parameter == "probability" and not 0 <= value <= 1:
                yield (f"sweep.values[{k}]", f"probability must be within [0, 1] (got {format_value(value)})")
                continue
            try:
                check_fault(spec)
            except At as exc:
                yield (f"sweep.values[{k}]", exc.message)
        return
    toxic: Toxic = kind[1]
    parameter = sweep_parameter(kind[2], sweep)
    known = TOXIC_ATTRIBUTES[toxic.type]
    if parameter != "toxicity" and parameter not in known:
        yield ("sweep.parameter", f"a {toxic.type} toxic has no attribute {sweep.parameter!r}; sweep toxicity or one of {', '.join(known)}")
        return
    for k, value in enumerate(sweep.values):
        if parameter == "toxicity":
            if not 0 <= value <= 1:
                yield (f"sweep.values[{k}]", f"toxicity must be within [0, 1] (got {format_value(value)})")
            continue
        if value < 0:
            yield (f"sweep.values[{k}]", f"toxic attributes are >= 0 (got {format_value(value)})")
            continue
        try:
            canonical_toxic_attributes(toxic.type, {**toxic.attributes, parameter: value})
        except Problems as exc:
            yield (f"sweep.values[{k}]", "; ".join(m for _, m in exc.problems))


def _contract_problems(s: Scenario, labels: dict) -> Iterator[tuple[str, str]]:
    arms = s.targets.arms()
    phases = [p.name for p in s.phases]
    steady = any(p.steady_state for p in s.phases)
    for key, items in s.contracts.items():
        path = f"contracts.{key}"
        if key.startswith("phase:"):
            if key[len("phase:"):] not in phases:
                yield (path, f"no phase named {key[len('phase:'):]!r}; phases: {', '.join(phases)}")
        elif key != "*" and key not in labels:
            yield (path, f"no fault or toxic labelled {key!r}; labels: {', '.join(labels) or 'none'} (or 'phase:<name>', '*')")
        names = []
        for k, item in enumerate(items):
            name, params = _resolve_contract(item)
            where = f"{path}[{k}]" if isinstance(item, str) else f"{path}[{k}].{name}"
            if name in names:
                yield (f"{path}[{k}]", f"{name} is listed twice for {key!r}")
            names.append(name)
            for arm in getattr(params, "arms", ()):
                if arm not in arms:
                    yield (f"{where}.arms" if not isinstance(item, str) else where, f"the scenario has no {arm} target")
            if getattr(params, "against", None) == "baseline" and "baseline" not in arms:
                yield (f"{where}.against", "the scenario has no baseline target")
            if name == "production_unaffected" and not steady:
                yield (where, "production_unaffected compares with the steady-state phases; the scenario has none")
