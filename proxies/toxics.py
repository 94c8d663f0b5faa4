"""Toxics for the TCP fault proxy: what each one is, how it is written in JSON, and its arithmetic.

Pure: no sockets, no clocks. `proxies.toxic_proxy` does the I/O and asks this module how
long to hold a chunk, how to slice it, how much of it may pass.

A toxic follows Toxiproxy's model: a `name`, a `type`, a `stream` (`upstream` is data from
the client towards the dependency, `downstream` is the dependency's answers back), a
`toxicity` (the probability that it applies to a given connection, drawn once per
connection) and typed `attributes`:

    latency      latency_ms, jitter_ms        hold each chunk latency ± jitter (uniform)
    bandwidth    rate_kbps                    at most rate KB/s (1 KB = 1000 bytes)
    slow_close   delay_ms                     hold the close (EOF) back for delay
    timeout      timeout_ms                   drop all data; close after timeout (0: never)
    reset_peer   timeout_ms                   on the first data, wait timeout, then TCP RST
    slicer       average_size, size_variation, delay_us   cut chunks into small writes
    limit_data   bytes                        pass this many bytes, then close

Toxiproxy's unit-less attribute names (`latency`, `jitter`, `rate`, `delay`, `timeout`) are
accepted as aliases, so its JSON works unchanged. "Down" is not a toxic but a proxy state
(`enabled: false`): the listener is closed and open connections are closed.

Randomness (toxicity, jitter, slice sizes) comes from a generator seeded by
(seed, connection number, toxic name): the same seed gives the same draws for the same
connection whatever other toxics exist or in which order they were added.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

STREAMS = ("upstream", "downstream")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # names go into URL paths: DELETE /toxics/{name}
_TOXIC_KEYS = ("name", "type", "stream", "toxicity", "attributes")


class ToxicError(ValueError):
    """A toxic or a request that cannot be used; the message names the field."""


@dataclass(frozen=True)
class _Attributes:
    """Base of the typed attributes: every field is a number >= 0, checked on construction."""

    type: ClassVar[str] = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    INTEGERS: ClassVar[tuple[str, ...]] = ()
    ALIASES: ClassVar[dict[str, str]] = {}  # Toxiproxy's name -> ours

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ToxicError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ToxicError(f"{f.name} must be a finite number >= 0, got {value!r}")
            if f.name in self.INTEGERS and value != int(value):
                raise ToxicError(f"{f.name} must be a whole number, got {value!r}")
        self._check()

    def _check(self) -> None:
        """Cross-field rules of one type."""

    @classmethod
    def from_json(cls, attributes: object) -> _Attributes:
        if not isinstance(attributes, Mapping):
            raise ToxicError(f"attributes must be a JSON object, got {type(attributes).__name__}")
        names = [f.name for f in fields(cls)]
        values: dict[str, object] = {}
        for key, value in attributes.items():
            field = cls.ALIASES.get(key, key)
            if field not in names:
                raise ToxicError(f"attributes.{key} is not an attribute of {cls.type}; it has {', '.join(names)}")
            if field in values:
                raise ToxicError(f"attributes.{field} is given twice (as {field} and its alias {key})")
            values[field] = value
        for field in cls.REQUIRED:
            if field not in values:
                raise ToxicError(f"attributes.{field} is required for {cls.type}")
        for field in cls.INTEGERS:  # 100.0 from a JSON writer is still a whole number
            if isinstance(values.get(field), float) and values[field] == int(values[field]):
                values[field] = int(values[field])
        try:
            return cls(**values)
        except ToxicError as exc:
            raise ToxicError(f"attributes.{exc}") from None


@dataclass(frozen=True)
class Latency(_Attributes):
    type: ClassVar[str] = "latency"
    REQUIRED: ClassVar[tuple[str, ...]] = ("latency_ms",)
    ALIASES: ClassVar[dict[str, str]] = {"latency": "latency_ms", "jitter": "jitter_ms"}
    latency_ms: float = 0.0
    jitter_ms: float = 0.0

    def delay_ms(self, rng: np.random.Generator) -> float:
        """One chunk's delay: latency plus a uniform draw in [-jitter, +jitter], never negative."""
        if not self.jitter_ms:
            return float(self.latency_ms)
        return max(0.0, self.latency_ms + float(rng.uniform(-self.jitter_ms, self.jitter_ms)))


@dataclass(frozen=True)
class Bandwidth(_Attributes):
    type: ClassVar[str] = "bandwidth"
    REQUIRED: ClassVar[tuple[str, ...]] = ("rate_kbps",)
    ALIASES: ClassVar[dict[str, str]] = {"rate": "rate_kbps"}
    rate_kbps: float = 0.0  # kilobytes (1000 bytes) per second, as Toxiproxy's `rate`

    def _check(self) -> None:
        if self.rate_kbps <= 0:
            raise ToxicError(f"rate_kbps must be > 0, got {self.rate_kbps!r}")

    def seconds(self, nbytes: int) -> float:
        """How long `nbytes` take at this rate."""
        return nbytes / (self.rate_kbps * 1000.0)

    def pieces(self, nbytes: int) -> list[int]:
        """Sizes to send `nbytes` in, each at most 100 ms worth, so a slow rate trickles
        instead of holding a big chunk back and bursting it (as Toxiproxy does)."""
        step = max(1, int(self.rate_kbps * 100))
        sizes = [step] * (nbytes // step)
        if nbytes % step:
            sizes.append(nbytes % step)
        return sizes

    def schedule(self, free_at: float, now: float, nbytes: int) -> float:
        """When a piece of `nbytes` arriving at `now` has gone through a link free from
        `free_at`: the next free time, which is also when the piece is released."""
        return max(free_at, now) + self.seconds(nbytes)


@dataclass(frozen=True)
class SlowClose(_Attributes):
    type: ClassVar[str] = "slow_close"
    REQUIRED: ClassVar[tuple[str, ...]] = ("delay_ms",)
    ALIASES: ClassVar[dict[str, str]] = {"delay": "delay_ms"}
    delay_ms: float = 0.0


@dataclass(frozen=True)
class Timeout(_Attributes):
    type: ClassVar[str] = "timeout"
    ALIASES: ClassVar[dict[str, str]] = {"timeout": "timeout_ms"}
    timeout_ms: float = 0.0  # 0: hold the connection open forever, passing nothing


@dataclass(frozen=True)
class ResetPeer(_Attributes):
    type: ClassVar[str] = "reset_peer"
    ALIASES: ClassVar[dict[str, str]] = {"timeout": "timeout_ms"}
    timeout_ms: float = 0.0  # 0: reset as soon as data arrives


@dataclass(frozen=True)
class Slicer(_Attributes):
    type: ClassVar[str] = "slicer"
    REQUIRED: ClassVar[tuple[str, ...]] = ("average_size",)
    INTEGERS: ClassVar[tuple[str, ...]] = ("average_size", "size_variation", "delay_us")
    ALIASES: ClassVar[dict[str, str]] = {"delay": "delay_us"}
    average_size: int = 1
    size_variation: int = 0
    delay_us: int = 0

    def _check(self) -> None:
        if self.average_size < 1:
            raise ToxicError(f"average_size must be >= 1, got {self.average_size!r}")
        if self.size_variation >= self.average_size:
            raise ToxicError(
                f"size_variation must be smaller than average_size ({self.average_size}), got {self.size_variation!r}"
            )

    def sizes(self, nbytes: int, rng: np.random.Generator) -> list[int]:
        """Slice sizes summing to `nbytes`, each at most average + variation, by Toxiproxy's
        rule: split near the middle (± variation) until a part is small enough. Splitting
        halves keeps the sizes even: no runt at the start or the end."""
        out: list[int] = []
        stack = [(0, nbytes)]
        variation = int(self.size_variation)
        while stack:
            start, end = stack.pop()
            if (end - start) - self.average_size <= variation:
                if end > start:
                    out.append(end - start)
                continue
            # end - start > average + variation >= 2 * variation + 1, so mid stays strictly inside.
            shift = int(rng.integers(-variation, variation + 1)) if variation else 0
            mid = start + (end - start) // 2 + shift
            stack.append((mid, end))
            stack.append((start, mid))  # popped first: slices come out in order
        return out


@dataclass(frozen=True)
class LimitData(_Attributes):
    type: ClassVar[str] = "limit_data"
    REQUIRED: ClassVar[tuple[str, ...]] = ("bytes",)
    INTEGERS: ClassVar[tuple[str, ...]] = ("bytes",)
    bytes: int = 0

    def allow(self, sent: int, nbytes: int) -> int:
        """How many of the next `nbytes` may pass when `sent` have passed already."""
        return max(0, min(nbytes, self.bytes - sent))


TOXIC_TYPES: dict[str, type[_Attributes]] = {
    cls.type: cls for cls in (Latency, Bandwidth, SlowClose, Timeout, ResetPeer, Slicer, LimitData)
}
ToxicAttributes = Latency | Bandwidth | SlowClose | Timeout | ResetPeer | Slicer | LimitData


@dataclass(frozen=True)
class Toxic:
    """One named fault on one stream of the proxy."""

    name: str
    attributes: ToxicAttributes
    stream: str = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ToxicError(f"name must be 1-64 characters of A-Z a-z 0-9 _ . -, got {self.name!r}")
        if not isinstance(self.attributes, _Attributes):
            raise ToxicError(f"attributes must be one of the toxic types {', '.join(TOXIC_TYPES)}")
        if self.stream not in STREAMS:
            raise ToxicError(f"stream must be 'upstream' or 'downstream', got {self.stream!r}")
        t = self.toxicity
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ToxicError(f"toxicity must be a number within [0, 1], got {t!r}")

    @property
    def type(self) -> str:
        return self.attributes.type

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": asdict(self.attributes),
        }


def parse_toxic(payload: object) -> Toxic:
    """A Toxic from its JSON form; ToxicError names the field that is wrong.

    Defaults as in Toxiproxy: stream `downstream`, toxicity 1, name `<type>_<stream>`.
    """
    if not isinstance(payload, Mapping):
        raise ToxicError(f"a toxic must be a JSON object, got {type(payload).__name__}")
    for key in payload:
        if key not in _TOXIC_KEYS:
            raise ToxicError(f"{key} is not a toxic field; a toxic has {', '.join(_TOXIC_KEYS)}")
    kind = payload.get("type")
    if kind is None:
        raise ToxicError(f"type is required: one of {', '.join(TOXIC_TYPES)}")
    if kind not in TOXIC_TYPES:
        raise ToxicError(f"type must be one of {', '.join(TOXIC_TYPES)}, got {kind!r}")
    stream = payload.get("stream", "downstream")
    if stream not in STREAMS:  # checked before it goes into the default name
        raise ToxicError(f"stream must be 'upstream' or 'downstream', got {stream!r}")
    attributes = TOXIC_TYPES[kind].from_json(payload.get("attributes", {}))
    name = payload.get("name", f"{kind}_{stream}")
    return Toxic(name=name, attributes=attributes, stream=stream, toxicity=payload.get("toxicity", 1.0))


def parse_toxic_json(text: str) -> Toxic:
    """A Toxic from a JSON string, as given to `shadowline proxy toxic --toxic`."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ToxicError(f"toxic is not valid JSON: {exc}") from None
    return parse_toxic(payload)


def parse_state(payload: object) -> bool:
    """The `enabled` flag from a POST /state body: `{"enabled": false}` takes the proxy down."""
    if not isinstance(payload, Mapping) or "enabled" not in payload:
        raise ToxicError('enabled is required: send {"enabled": true} or {"enabled": false}')
    extra = [k for k in payload if k != "enabled"]
    if extra:
        raise ToxicError(f"{extra[0]} is not a state field; the state has enabled")
    if not isinstance(payload["enabled"], bool):
        raise ToxicError(f"enabled must be true or false, got {payload['enabled']!r}")
    return payload["enabled"]


def toxic_rng(seed: int, connection: int, name: str) -> np.random.Generator:
    """The generator for one toxic on one connection: its toxicity draw comes first, then
    its jitter or slice draws. Keyed by name, so adding or removing other toxics never
    shifts these draws."""
    return np.random.default_rng([seed, connection, zlib.crc32(name.encode())])


def draw_applies(toxicity: float, rng: np.random.Generator) -> bool:
    """Does the toxic apply to this connection? Always one draw, so later draws line up."""
    return bool(rng.random() < toxicity)
