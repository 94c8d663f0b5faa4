"""The load's gRPC client, inside the Locust process only (like the locustfile, which imports it
only for a gRPC load). Never import it in the main process: it switches grpc to gevent.

grpc does its I/O in C, which gevent's monkey-patching cannot reach: without
`grpc.experimental.gevent.init_gevent()` every call would block the whole Locust process (one
user at a time). grpc's documentation: call it after the standard library has been patched
(importing locust did that) and before any gRPC object is created; so at import, here.

Each call fires Locust's `request` event (request_type "grpc"), as Locust's own gRPC example
does; a status other than OK is the event's exception, so Locust counts it as a failure.
"""

from __future__ import annotations

import time

import grpc
import grpc.experimental.gevent as grpc_gevent

from harness.load.calls import GrpcCall, grpc_channel_target

grpc_gevent.init_gevent()

MAX_MESSAGE_BYTES = 4 << 20  # gRPC's default, as the shadow proxy's


class GrpcStatusError(Exception):
    """A call that ended with a status other than OK. Its text is the code and the details
    only: Locust groups failures by text, and grpc's own error text holds a per-call debug
    string that would make every failure a group of its own."""


class GrpcClient:
    """One channel to the target (a user's own, as a FastHttpUser has its own connection);
    bytes in, bytes out: the calls are serialized already."""

    def __init__(self, target: str, environment, timeout_s: float) -> None:
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                   ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        self.channel = grpc.insecure_channel(grpc_channel_target(target), options=options)
        self.environment = environment
        self.timeout_s = timeout_s
        self._stubs: dict[str, grpc.UnaryUnaryMultiCallable] = {}

    def call(self, call: GrpcCall) -> bytes | None:
        """Make one unary call and report it to Locust; the response, or None on failure."""
        stub = self._stubs.get(call.method)
        if stub is None:
            stub = self._stubs[call.method] = self.channel.unary_unary(call.method)  # no serializers
        started = time.perf_counter()
        response, exception = None, None
        try:
            response = stub(call.body, metadata=call.metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            exception = GrpcStatusError(f"{code.name if code else 'UNKNOWN'}: {(details or '')[:200]}")
        self.environment.events.request.fire(
            request_type="grpc",
            name=call.name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=len(response) if response is not None else 0,
            exception=exception,
            context={},
            response=response,
        )
        return response

    def close(self) -> None:
        self.channel.close()
