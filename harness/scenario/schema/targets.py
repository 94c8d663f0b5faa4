"""`targets`: the model servers of a scenario, a demo server or the URL of a running one per arm.

URLs are checked for form only here; whether their scheme fits the scenario's protocol and whether
they are loopback are rules across fields (`rules.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import AfterValidator, Discriminator, Field, WithJsonSchema, model_validator

from harness.demo_model import VARIANTS

from .base import ARMS, _Model, _tagged
from .errors import Problems

# http://host:port[/prefix] (protocol http); grpc://host:port or host:port (protocol grpc)
_URL_PATTERN = r"^(http://[^/?#@\s]+:[0-9]+(/[^?#\s]*)?|(grpc://)?[^/?#@\s:]+:[0-9]+/?|(grpc://)?\[[0-9A-Fa-f:.]+\]:[0-9]+/?)$"


def target_scheme(url: str) -> str:
    """`http` for an http:// URL, `grpc` for grpc://host:port or host:port (a gRPC target)."""
    return url.split("://", 1)[0] if "://" in url else "grpc"


def _split(url: str):
    return urlsplit(url if "://" in url else "grpc://" + url)


def _port(url: str, parts: Any) -> int | None:
    # urlsplit parses the port only when asked, and its error does not name the URL
    try:
        return parts.port
    except ValueError:
        raise ValueError(f"the port of {url!r} is not a number from 1 to 65535") from None


def _check_url(url: str) -> str:
    """http://host:port[/prefix], grpc://host:port or host:port; which one the scenario's
    protocol takes is a rule across fields (`rules._protocol_problems`)."""
    if target_scheme(url) == "grpc":
        return _check_grpc_target(url)
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"expected an http://host:port URL (or 'demo'), got {url!r}; over gRPC: host:port or grpc://host:port")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"expected http://host:port with at most a path, got {url!r}")
    port = _port(url, parts)
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise ValueError(f"expected http://host:port with an explicit port, got {url!r}")
    return url


def _check_grpc_target(url: str) -> str:
    parts = _split(url)
    port = _port(url, parts)
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
