"""Pick the codec from the traffic itself, so `shadowline analyze RUN_DIR` needs no flags on
standard v2 or v1 traffic, REST or gRPC. Generic JSON has no recognisable shape, and other gRPC
services need their descriptor set: those must be named.

JSON bodies are looked at first; when none is recognisable and the bodies are binary, they are
tried as v2 gRPC messages (`inference.ModelInferResponse`, or the requests). When the caller
knows the routes of the capture's gRPC exchanges (`grpc_routes`), a route other than v2's
ModelInfer is reported as such, with the flags to pass.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from harness.codecs.base import Codec, DecodeError
from harness.codecs.v1 import V1Codec
from harness.codecs.v2 import V2Codec

SAMPLE = 200  # bodies looked at per kind; spread over the whole capture
_DESCRIPTIONS = {"v2": "v2 (Open Inference Protocol)", "v1": "v1 (TF-Serving / KServe v1)"}
_HINT = "name the codec, e.g. --codec generic --select 'label=predictions[*].label,score=predictions[*].p'"
V2_GRPC_ROUTE = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HINT = ("pass the service's descriptor set: --codec grpc --descriptor-set FILE "
             "--grpc-method /package.Service/Method --select 'features=...,label=...,score=...' "
             "(or --reflection HOST:PORT instead of --descriptor-set; see docs/grpc-codecs.md)")


def _response_protocol(obj: Any) -> str | None:
    if type(obj) is not dict:
        return None
    outputs = obj.get("outputs")
    if type(outputs) is list and outputs and all(type(o) is dict and "name" in o and "data" in o for o in outputs):
        return "v2"
    if "predictions" in obj or "outputs" in obj:
        return "v1"
    return None


def _request_protocol(obj: Any) -> str | None:
    if type(obj) is not dict:
        return None
    inputs = obj.get("inputs")
    if type(inputs) is list and inputs and all(type(i) is dict and "name" in i and "data" in i for i in inputs):
        return "v2"
    if "instances" in obj or "inputs" in obj:
        return "v1"
    return None


def _spread(bodies: Sequence[bytes | None], k: int) -> list[bytes]:
    present = [b for b in bodies if b]
    step = max(1, len(present) // k)
    return present[::step][:k]


def _look(bodies: list[bytes], classify) -> tuple[Counter, Counter]:
    """Votes per protocol, and what the other bodies looked like (for the error message)."""
    votes: Counter = Counter()
    seen: Counter = Counter()
    for body in bodies:
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            seen["not JSON"] += 1
            continue
        protocol = classify(obj)
        if protocol:
            votes[protocol] += 1
        elif type(obj) is dict and set(obj) == {"error"}:
            seen["error bodies"] += 1
        elif type(obj) is dict:
            seen["keys " + ",".join(sorted(obj)[:6])] += 1
        else:
            seen[f"a JSON {type(obj).__name__}"] += 1
    return votes, seen


def detect_codec(request_bodies: Sequence[bytes | None], response_bodies: Sequence[bytes | None],
                 *, sample: int = SAMPLE, grpc_routes: Sequence[str] | None = None) -> tuple[Codec, str]:
    """(codec, reason) from a spread sample of successful bodies; responses decide, requests
    break the tie when no response is recognisable. DecodeError says what was seen otherwise.

    `grpc_routes`: the distinct routes of the capture's gRPC exchanges (method `GRPC`), when
    known; only v2's ModelInfer is detected, any other route is an error naming it.
    """
    responses = _spread(response_bodies, sample)
    requests = _spread(request_bodies, sample)
    routes = sorted(set(grpc_routes or ()))
    others = [r for r in routes if r != V2_GRPC_ROUTE]
    if others:
        listed = ", ".join(others[:3]) + (f" (and {len(others) - 3} more)" if len(others) > 3 else "")
        raise DecodeError(f"cannot detect the codec of gRPC method {listed}: only v2 inference ({V2_GRPC_ROUTE}) "
                          f"is detected; {GRPC_HINT}")
    if not responses and not requests:
        raise DecodeError(f"no bodies to detect the codec from; {GRPC_HINT if routes else _HINT}")
    if routes:  # every gRPC exchange is v2 ModelInfer: no JSON to look for
        found = _v2grpc(requests, responses)
        if isinstance(found, str):
            raise DecodeError(f"the capture's gRPC calls are {V2_GRPC_ROUTE} but {found}")
        return found
    response_votes, response_seen = _look(responses, _response_protocol)
    request_votes, request_seen = _look(requests, _request_protocol)
    votes, source, looked = (response_votes, "responses", responses) if response_votes else (
        request_votes, "requests", requests)
    if not votes:
        seen_all = response_seen + request_seen
        binary = seen_all["not JSON"]
        if binary and binary >= sum(seen_all.values()) / 2:  # mostly binary bodies: protobuf, perhaps
            found = _v2grpc(requests, responses)
            if not isinstance(found, str):
                return found
        seen = "; ".join(f"{what}: {n}" for what, n in seen_all.most_common(4))
        hint = f"if this is gRPC traffic, {GRPC_HINT}; if JSON, {_HINT}" if binary else _HINT
        raise DecodeError(f"cannot detect the codec: {len(responses)} sampled responses and {len(requests)} "
                          f"requests look like neither v2 nor v1 (JSON or v2 gRPC) ({seen}); {hint}")
    protocol, count = votes.most_common(1)[0]
    codec: Codec = V2Codec() if protocol == "v2" else V1Codec()
    reason = f"{_DESCRIPTIONS[protocol]}: {count} of {len(looked)} sampled {source} have its shape"
    if source == "responses":
        batch = codec.decode_responses(responses)
        decoded = int(batch.decoded.sum())
        if decoded == 0:
            first = next(iter(batch.errors.values()), "no body decoded")
            raise DecodeError(f"the responses look like {_DESCRIPTIONS[protocol]} but none of {len(responses)} "
                              f"sampled decoded ({first}); {_HINT}")
        reason += f", {decoded} decoded"
    return codec, reason


def _v2grpc(requests: list[bytes], responses: list[bytes]) -> tuple[Codec, str] | str:
    """(V2GrpcCodec, reason) when most sampled responses (else requests) decode as v2 gRPC
    messages; otherwise why not, as a string. Strict enough for detection: a message of
    another service parses (protobuf skips unknown fields) but has no v2 outputs or inputs."""
    from harness.codecs.v2grpc import V2GrpcCodec

    codec = V2GrpcCodec()
    if responses:
        batch = codec.decode_responses(responses)
        decoded, looked, what = int(batch.decoded.sum()), len(responses), "responses"
        first = next(iter(batch.errors.values()), "")
    else:
        decoded, first = 0, ""
        for body in requests:
            try:
                codec.decode_request(body)
                decoded += 1
            except DecodeError as exc:
                first = first or str(exc)
        looked, what = len(requests), "requests"
    message = "ModelInferResponse" if what == "responses" else "ModelInferRequest"
    if decoded == 0 or decoded * 2 < looked:
        return f"{looked - decoded} of {looked} sampled {what} do not decode as {message} ({first})"
    return codec, f"v2 gRPC (Open Inference Protocol, {message}): {decoded} of {looked} sampled {what} decoded"
