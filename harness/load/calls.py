"""What a load user sends next: one call of its stream, over HTTP or gRPC. Pure: no Locust.

A user's stream is a pure function of (seed, worker, user index) and the source
(`harness.load.sources`), whatever the protocol: request k of a user carries the same rows over
HTTP (a v2 JSON body) as over gRPC (an `inference.ModelInferRequest`, typed contents built
with the v2grpc codec's helpers), so the same scenario over either protocol judges the same
inputs. Over gRPC a synthetic request is the JSON body's message twin (`grpc_infer_message`);
a recorded request is replayed only from a capture of the gRPC proxy, byte for byte, to the
method path it was recorded on (`sources.check_replay_protocol` refuses anything else).

The protobuf messages are imported on first use (`harness.codecs.v2grpc.messages`), so an
HTTP load never imports them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from harness.load import sources

PROTOCOLS = ("http", "grpc")
V2_GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"  # the method a synthetic request calls
# Typed contents have no field for these; a message then carries every tensor raw.
_RAW_ONLY = ("FP16", "BF16")


@dataclass(frozen=True)
class HttpCall:
    method: str
    path: str
    body: str | bytes  # bytes: replayed as recorded
    headers: dict[str, str]
    name: str  # Locust's stats row


@dataclass(frozen=True)
class GrpcCall:
    method: str  # full method path, /package.Service/Method
    body: bytes  # the serialized request message
    metadata: tuple[tuple[str, str], ...]
    name: str  # Locust's stats row


def grpc_infer_message(payload: Mapping, model: str) -> bytes:
    """A v2 JSON infer request (`{"id", "inputs": [{name, shape, datatype, data}]}`) as a
    serialized ModelInferRequest for `model`: the same tensors, typed (raw when any input is
    FP16). ValueError when a value cannot be carried (a null: gRPC tensors have none)."""
    from harness.codecs.v2grpc import messages, tensor_to_contents, tensor_to_raw

    request = messages().ModelInferRequest(model_name=model, id=str(payload.get("id") or ""))
    inputs = payload["inputs"]
    raw = any(item["datatype"] in _RAW_ONLY for item in inputs)
    for item in inputs:
        data = list(item["data"])
        if any(v is None for v in data):
            raise ValueError(f"input {item['name']!r} holds a null; a v2 gRPC tensor cannot carry one")
        values = np.asarray(data, dtype=object if item["datatype"] == "BYTES" else None)
        tensor = request.inputs.add(name=item["name"], datatype=item["datatype"], shape=item["shape"])
        if raw:
            request.raw_input_contents.append(tensor_to_raw(item["datatype"], values))
        else:
            tensor_to_contents(item["datatype"], values, tensor.contents)
    return request.SerializeToString()


def grpc_channel_target(url: str) -> str:
    """`grpc://host:port` or `host:port` -> `host:port` (what grpc.insecure_channel takes)."""
    if "://" not in url:
        url = "grpc://" + url
    parts = urlsplit(url)
    if parts.scheme != "grpc" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"expected grpc://host:port or host:port, got {url!r}")
    return parts.netloc


class UserStream:
    """One load user's calls, in order: `next()` builds call k, k+1, ...

    Synthetic rows come from the user's own generator (seeded with (seed, worker, user)), so
    the stream does not depend on timing or on the other users; recorded requests are the
    user's slice of the records (`sources.user_slice`), cycled.
    """

    def __init__(
        self,
        *,
        protocol: str = "http",
        seed: int = 0,
        worker: int = 0,
        user_index: int = 0,
        pool: int = 1,
        model: str = "demo",
        rows: int = 1,
        layout: str = "named",
        features: Sequence[Mapping] | None = None,
        records: Sequence[sources.RecordedRequest] = (),
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.protocol = protocol
        self.rng = np.random.default_rng([seed, worker, user_index])
        self.id_prefix = f"load-{seed}-w{worker}-u{user_index}"
        self.model, self.rows, self.layout, self.features = model, rows, layout, features
        self.default_path = f"/v2/models/{model}/infer"
        self.slice = sources.user_slice(records, user_index, pool) if records else None
        self.sent = 0

    def next(self) -> HttpCall | GrpcCall:
        request_id = f"{self.id_prefix}-{self.sent}"
        record = self.slice[self.sent % len(self.slice)] if self.slice is not None else None
        payload = self._payload(request_id) if record is None else None
        self.sent += 1
        if self.protocol == "grpc":
            return self._grpc(request_id, record, payload)
        return self._http(request_id, record, payload)

    def _payload(self, request_id: str) -> dict:
        if self.features is not None:
            return sources.synthetic_request(self.features, self.rng, request_id, self.rows, self.layout)
        return sources.demo_request(self.rng, request_id, self.rows, self.layout)

    def _http(self, request_id: str, record, payload) -> HttpCall:
        if record is None:
            headers = {"content-type": "application/json", "x-request-id": request_id}
            return HttpCall("POST", self.default_path, json.dumps(payload), headers, "v2 infer")
        # Recorded headers as recorded (their x-request-id was dropped: ours is unique).
        headers = {**record.headers, "x-request-id": request_id}
        if not any(k.lower() == "content-type" for k in record.headers):
            headers["content-type"] = "application/json"
        return HttpCall(record.method, record.path or self.default_path, record.body, headers, "replay")

    def _grpc(self, request_id: str, record, payload) -> GrpcCall:
        metadata = (("x-request-id", request_id),)  # the proxy keeps it: the capture's request_id
        if record is None:
            return GrpcCall(V2_GRPC_INFER, grpc_infer_message(payload, self.model), metadata, "v2 grpc infer")
        return GrpcCall(record.path or V2_GRPC_INFER, record.body, metadata, "replay")
