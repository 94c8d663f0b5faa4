"""Pick the codec from the traffic itself, so `shadowline analyze RUN_DIR` needs no flags on
standard v2 or v1 traffic. Generic JSON has no recognisable shape: it must be named."""

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
                 *, sample: int = SAMPLE) -> tuple[Codec, str]:
    """(codec, reason) from a spread sample of successful bodies; responses decide, requests
    break the tie when no response is recognisable. DecodeError says what was seen otherwise."""
    responses = _spread(response_bodies, sample)
    requests = _spread(request_bodies, sample)
    if not responses and not requests:
        raise DecodeError(f"no bodies to detect the codec from; {_HINT}")
    response_votes, response_seen = _look(responses, _response_protocol)
    request_votes, request_seen = _look(requests, _request_protocol)
    votes, source, looked = (response_votes, "responses", responses) if response_votes else (
        request_votes, "requests", requests)
    if not votes:
        seen = "; ".join(f"{what}: {n}" for what, n in (response_seen + request_seen).most_common(4))
        raise DecodeError(f"cannot detect the codec: {len(responses)} sampled responses and {len(requests)} "
                          f"requests look like neither v2 nor v1 ({seen}); {_HINT}")
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
