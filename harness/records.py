"""The unit of evidence: one request and what each arm did with it.

An `Exchange` is built by a proxy and written to the capture store; the judge reads the
store back as numpy columns. Failures are outcomes too: an arm that timed out, was reset,
could not be reached or was shed still gets an `ArmOutcome`, with `error` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INCUMBENT = "incumbent"
CANDIDATE = "candidate"
BASELINE = "baseline"
ARMS = (INCUMBENT, CANDIDATE, BASELINE)

# Exchange.method of every gRPC exchange (gRPC is always an HTTP/2 POST; this says which protocol).
GRPC_METHOD = "GRPC"

# Error kinds (DESIGN.md): why an arm produced no usable response.
TIMEOUT = "timeout"  # no complete response within the arm's timeout (or the drain deadline)
RESET = "reset"  # the upstream closed the connection mid-exchange
CONNECT = "connect"  # the upstream could not be reached
SHED = "shed"  # the mirrored copy was not sent: the in-flight budget was full
PROTOCOL = "protocol"  # the upstream answered with something that is not valid HTTP
INTERNAL = "internal"  # the proxy itself failed on this copy (a bug, logged); kept, not dropped
ERROR_KINDS = (TIMEOUT, RESET, CONNECT, SHED, PROTOCOL, INTERNAL)


@dataclass(slots=True)
class ArmOutcome:
    """What one arm did with one request."""

    status: int | None = None  # HTTP status (or gRPC code); None when there was no response
    latency_s: float | None = None  # send to complete response, seconds; None when shed
    body: bytes | None = None  # the response body as received
    error: str | None = None  # one of ERROR_KINDS, None on a complete response
    faults: tuple[str, ...] = ()  # names of the faults applied to this arm's copy

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None


@dataclass(slots=True)
class Exchange:
    """One request and every arm's outcome; the row the capture store writes."""

    request_id: str
    started_at: float  # wall clock (unix seconds) when the proxy received the full request
    method: str
    route: str  # request target path (query included)
    request_body: bytes
    arms: dict[str, ArmOutcome] = field(default_factory=dict)
