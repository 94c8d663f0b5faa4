"""The `Fault` base classes, the registry, and the transport faults.

A fault is a frozen dataclass of parameters, like a Toxiproxy toxic: it decides nothing about
*when* it fires (that is `FaultPlan`'s job, from a seed) and does no I/O. Payload faults
(`harness.faults.payload`) turn a request into a faulted request; transport faults (here) are
pure descriptions the proxies execute on the mirrored copy to one arm (`Action`).

Parameters are validated in `__post_init__` with messages that name the fault and the
parameter, because they usually come from a scenario file a person wrote.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import numpy as np

from harness.codecs.base import Features
from harness.codecs.generic import Selector
from harness.registry import registrar

MIRRORED_ARMS = ("candidate", "baseline")  # the incumbent's answer goes to the client: never faulted

# Registry: fault name -> class. Filled by @register when the modules are imported.
FAULTS: dict[str, type[Fault]] = {}
register = registrar(FAULTS, "fault")  # class decorator: add a fault class under its `name`


def _fmt(value: float) -> str:
    """Numbers in labels: 100 not 100.0."""
    return f"{value:g}"


@dataclass(frozen=True, kw_only=True)
class Fault:
    """Parameters every fault has; subclasses set `name` and `kind` and add their own."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""  # "payload" | "transport"

    probability: float = 1.0  # chance that a request (within the window) is faulted
    arms: tuple[str, ...] = MIRRORED_ARMS  # which mirrored copies get it
    fields: tuple[str, ...] = ()  # selectors: `age`, `#2` (column index), `$.inputs[0].data`
    window: tuple[float, float] | None = None  # [start, end) in seconds since the run started
    label: str = ""  # the name in the ledger; default derived from the type and fields

    def __post_init__(self) -> None:
        self._number("probability", 0.0, 1.0)
        self._strings("arms")
        if not self.arms:
            self._bad("arms", "must name at least one arm")
        for arm in self.arms:
            if arm not in MIRRORED_ARMS:
                self._bad("arms", f"may only hold {' and '.join(MIRRORED_ARMS)} (faults apply to mirrored "
                                  f"copies, never to the incumbent's answer)", arm)
        self._strings("fields")
        for selector in self.fields:
            self._check_selector(selector)
        if self.window is not None:
            w = self.window
            if (not isinstance(w, (list, tuple)) or len(w) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in w)):
                self._bad("window", "must be [start, end] in seconds")
            start, end = float(w[0]), float(w[1])
            if math.isnan(start) or math.isnan(end) or start < 0 or end <= start:
                self._bad("window", "must be [start, end) with 0 <= start < end")
            object.__setattr__(self, "window", (start, end))
        if not isinstance(self.label, str):
            self._bad("label", "must be a string")

    # -- public ----------------------------------------------------------------------------

    @cached_property  # computed once: it is read per request (cached_property bypasses frozen)
    def ledger_label(self) -> str:
        """The name written to the ledger and the reports: `label`, or e.g. `nan:age`."""
        return self.label or self._default_label()

    def active(self, elapsed_s: float) -> bool:
        """True when `elapsed_s` (seconds since the run started) is inside the window."""
        return self.window is None or self.window[0] <= elapsed_s < self.window[1]

    @classmethod
    def parameters(cls) -> dict[str, object]:
        """Parameter names and their defaults, in declaration order."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def params(self) -> dict[str, Any]:
        """This fault's parameters as plain JSON values (tuples as lists)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # -- for subclasses --------------------------------------------------------------------

    def _default_label(self) -> str:
        return f"{self.name}:{','.join(self.fields)}" if self.fields else self.name

    def _check_selector(self, selector: str) -> None:
        if not selector:
            self._bad("fields", "may not hold an empty selector", selector)
        if selector.startswith("#"):
            try:
                int(selector[1:])
            except ValueError:
                self._bad("fields", "must write a column index as '#' and an integer, e.g. '#2'", selector)
        elif selector.startswith("$"):
            try:
                parsed = Selector.parse(selector)
            except ValueError as exc:
                self._bad("fields", str(exc), selector)
            if not parsed.steps:
                self._bad("fields", "a JSON path must select something inside the body, not '$' itself", selector)

    def _bad(self, param: str, what: str, value: Any = MISSING) -> None:
        value = getattr(self, param) if value is MISSING else value
        raise ValueError(f"fault {self.name!r}: {param} {what}, got {value!r}")

    def _number(self, param: str, lo: float | None = None, hi: float | None = None, *,
                integer: bool = False, optional: bool = False, lo_open: bool = False) -> None:
        """Check a numeric parameter's type and range; ints become floats unless `integer`."""
        value = getattr(self, param)
        if value is None and optional:
            return
        if integer:
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                self._bad(param, "must be an integer")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                self._bad(param, "must be a number")
            value = float(value)
        too_low = lo is not None and (value < lo or (lo_open and value == lo))
        if too_low or (hi is not None and value > hi):
            if hi is None:
                self._bad(param, f"must be {'>' if lo_open else '>='} {_fmt(lo)}")
            self._bad(param, f"must be within {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]")
        object.__setattr__(self, param, value)

    def _strings(self, param: str) -> None:
        """A tuple of strings; a list (from YAML) or a single string is accepted."""
        value = getattr(self, param)
        if isinstance(value, str):
            value = (value,)
        elif value is None and param == "fields":  # `fields:` left empty in YAML
            value = ()
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            self._bad(param, "must be a list of strings")
        object.__setattr__(self, param, tuple(value))

    def _choice(self, param: str, options: tuple[str, ...]) -> None:
        if getattr(self, param) not in options:
            self._bad(param, f"must be one of {', '.join(options)}")

    def _no_fields(self) -> None:
        if self.fields:
            self._bad("fields", "are not used by this fault; leave them out")


# ---------------------------------------------------------------------------------------------
# Payload faults: the base class (the faults themselves are in harness.faults.payload)


@dataclass(frozen=True, kw_only=True)
class PayloadFault(Fault):
    """A fault on the request body, shared by all its target arms.

    Feature-level faults implement `apply` on decoded features (the plan re-encodes them into
    the request's own layout); faults that features cannot express implement `apply_bytes`.
    `level` says which; a fault whose level depends on its parameters overrides `on_bytes`.
    Both return their input object unchanged when there was nothing to do (the ledger then says
    `<label>:noop`), and never mutate it.
    """

    kind: ClassVar[str] = "payload"
    level: ClassVar[str] = "features"  # "features" | "bytes"
    paths: ClassVar[bool] = False  # whether `$` JSON-path selectors are meaningful

    fraction: float = 1.0  # share of rows (cells of a column) affected in a faulted request

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("fraction", 0.0, 1.0, lo_open=True)
        if not self.paths:
            for selector in self.fields:
                if selector.startswith("$"):
                    self._bad("fields", "select features by name or '#index'; JSON paths are for "
                                        "missing_field, empty_tensor and shape_mismatch", selector)

    @property
    def on_bytes(self) -> bool:
        return self.level == "bytes"

    def apply(self, features: Features, rng: np.random.Generator) -> Features:  # pragma: no cover
        raise NotImplementedError(f"{self.name} works on bytes")

    def apply_bytes(self, body: bytes, rng: np.random.Generator) -> bytes:  # pragma: no cover
        raise NotImplementedError(f"{self.name} works on features")


# ---------------------------------------------------------------------------------------------
# Transport faults: pure data; the proxy executes the `Action`

TERMINAL = frozenset(("abort", "reset", "hang", "truncate"))  # action kinds that end a copy


class Action(NamedTuple):
    """What the proxy does to one arm's mirrored copy; it switches on `kind`.

    - "delay":    wait `delay_s` before sending the copy; the arm's latency includes the wait.
    - "throttle": write the request body to the arm at `bytes_per_s`.
    - "abort":    do not call the arm; record `status` and `body` as its answer.
    - "reset":    send the copy, then `after_s` later close the connection abortively (RST)
                  without reading the answer; record error "reset".
    - "hang":     do not call the arm; hold the copy until the arm's timeout; record "timeout".
    - "truncate": send the headers (original Content-Length) and only `keep(len(body))` bytes
                  of the body, then stop writing; record whatever the arm does (an error
                  status, a reset, or a timeout).
    The last four are terminal: an arm gets at most one, after any delay and throttle.
    A NamedTuple: built per request for drawn actions, and cheaper than a frozen dataclass.
    """

    kind: str
    label: str
    delay_s: float = 0.0
    bytes_per_s: float = 0.0
    status: int = 0
    body: bytes = b""
    after_s: float = 0.0
    keep_fraction: float = 1.0
    keep_bytes: int | None = None
    grpc_status: int = 0  # abort over gRPC: the status code recorded instead of `status`

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL

    def keep(self, body_length: int) -> int:
        """Bytes of a body of `body_length` a truncate action sends (always fewer, unless empty)."""
        keep = self.keep_bytes if self.keep_bytes is not None else int(body_length * self.keep_fraction)
        return max(0, min(keep, body_length - 1))


@dataclass(frozen=True, kw_only=True)
class TransportFault(Fault):
    """A change to how one arm's copy is delivered; `action(u)` describes it for the proxy.

    `u` is a uniform draw in [0, 1) from the plan (a pure function of seed, request and fault),
    for the faults that need randomness (latency jitter).
    """

    kind: ClassVar[str] = "transport"
    uses_draw: ClassVar[bool] = False  # whether action() reads its draw (saves a hash otherwise)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._no_fields()

    def action(self, u: float) -> Action:  # pragma: no cover
        raise NotImplementedError


@register
@dataclass(frozen=True, kw_only=True)
class Latency(TransportFault):
    """Delay the copy by `ms`, plus a uniform jitter in [-jitter_ms, +jitter_ms] (floored at 0)."""

    name: ClassVar[str] = "latency"
    uses_draw: ClassVar[bool] = True

    ms: float = 100.0
    jitter_ms: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("ms", 0.0)
        self._number("jitter_ms", 0.0)

    def delay_s(self, u: float) -> float:
        return max(0.0, self.ms + self.jitter_ms * (2.0 * u - 1.0)) / 1000.0

    def action(self, u: float) -> Action:
        return Action("delay", self.ledger_label, delay_s=self.delay_s(u))

    def _default_label(self) -> str:
        jitter = f"+-{_fmt(self.jitter_ms)}ms" if self.jitter_ms else ""
        return f"latency:{_fmt(self.ms)}ms{jitter}"


DEFAULT_ABORT_BODY = '{"error":"shadowline: injected abort"}'

# The gRPC code a client sees for an HTTP status from a server that is not gRPC
# (grpc/grpc doc/http-grpc-status-mapping.md); every other status maps to UNKNOWN (2).
GRPC_CODE_OF_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
GRPC_UNKNOWN = 2


def grpc_code_of_http(status: int) -> int:
    """The gRPC status code an HTTP status stands for (400 -> INTERNAL, 503 -> UNAVAILABLE...)."""
    return GRPC_CODE_OF_HTTP.get(status, GRPC_UNKNOWN)


@register
@dataclass(frozen=True, kw_only=True)
class Abort(TransportFault):
    """Answer for the arm with `status` and `body`, without calling it. Over gRPC the answer
    is `grpc_status` (default: the gRPC code `status` maps to) with `body` as its details."""

    name: ClassVar[str] = "abort"

    status: int = 503
    body: str = DEFAULT_ABORT_BODY
    grpc_status: int | None = None  # 1..16; None: grpc_code_of_http(status)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("status", 100, 599, integer=True)
        if not isinstance(self.body, str):
            self._bad("body", "must be a string")
        self._number("grpc_status", 1, 16, integer=True, optional=True)  # 0 is OK: not an abort

    def action(self, u: float) -> Action:
        grpc_status = self.grpc_status if self.grpc_status is not None else grpc_code_of_http(self.status)
        return Action("abort", self.ledger_label, status=self.status, body=self.body.encode(), grpc_status=grpc_status)

    def _default_label(self) -> str:
        if self.grpc_status is not None:
            return f"abort:grpc{self.grpc_status}"
        return f"abort:{self.status}"


@register
@dataclass(frozen=True, kw_only=True)
class Reset(TransportFault):
    """Send the copy, then close the connection abortively `after_ms` later (0: at once)."""

    name: ClassVar[str] = "reset"

    after_ms: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("after_ms", 0.0)

    def action(self, u: float) -> Action:
        return Action("reset", self.ledger_label, after_s=self.after_ms / 1000.0)

    def _default_label(self) -> str:
        return f"reset:after{_fmt(self.after_ms)}ms" if self.after_ms else "reset"


@register
@dataclass(frozen=True, kw_only=True)
class Hang(TransportFault):
    """Never answer: the copy is held until the arm's timeout and recorded as a timeout."""

    name: ClassVar[str] = "hang"

    def action(self, u: float) -> Action:
        return Action("hang", self.ledger_label)


@register
@dataclass(frozen=True, kw_only=True)
class Bandwidth(TransportFault):
    """Write the request body to the arm at `bytes_per_s`."""

    name: ClassVar[str] = "bandwidth"

    bytes_per_s: float = 10_000.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("bytes_per_s", 0.0, lo_open=True)

    def action(self, u: float) -> Action:
        return Action("throttle", self.ledger_label, bytes_per_s=self.bytes_per_s)

    def _default_label(self) -> str:
        return f"bandwidth:{_fmt(self.bytes_per_s)}Bps"


@register
@dataclass(frozen=True, kw_only=True)
class Truncate(TransportFault):
    """Send only part of the body (`bytes` if given, else `fraction` of it) under the original
    Content-Length, then stop. Unlike `malformed_json`, the HTTP framing itself is broken."""

    name: ClassVar[str] = "truncate"

    fraction: float = 0.5  # share of the body sent
    bytes: int | None = None  # or this many bytes (wins over fraction)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("fraction", 0.0, 1.0)
        if self.fraction >= 1.0:
            self._bad("fraction", "must be below 1 (a truncated body is shorter)")
        self._number("bytes", 0, integer=True, optional=True)

    def action(self, u: float) -> Action:
        return Action("truncate", self.ledger_label, keep_fraction=self.fraction, keep_bytes=self.bytes)

    def _default_label(self) -> str:
        return f"truncate:{self.bytes}B" if self.bytes is not None else f"truncate:{_fmt(self.fraction * 100)}%"
