"""Codecs: one protocol's payloads to numpy and back (see `harness.codecs.base`).

    codec = get_codec("v2")                       # or "v1", or "generic" with select="..."
    codec = get_codec("grpc", descriptor_set="set.pb", method="/pkg.Svc/M", select="features=rows,label=label")
    prediction = codec.decode_response(body)      # labels / probabilities / values per row
    batch = codec.decode_responses(bodies)        # the fast path for a whole capture
    codec, reason = detect_codec(requests, responses)
"""

from __future__ import annotations

import inspect

from harness.codecs.base import Codec, DecodeError, Features, Prediction, PredictionBatch
from harness.codecs.descriptor import DescriptorCodec
from harness.codecs.detect import detect_codec
from harness.codecs.generic import GenericCodec, Selector, parse_spec
from harness.codecs.v1 import V1Codec
from harness.codecs.v2 import V2Codec
from harness.codecs.v2grpc import V2GrpcCodec

CODECS: dict[str, type[Codec]] = {
    "v2": V2Codec, "v1": V1Codec, "generic": GenericCodec, "v2grpc": V2GrpcCodec, "grpc": DescriptorCodec,
}


def get_codec(name: str, **options) -> Codec:
    """A codec by name with its options; ValueError names an unknown codec or option."""
    try:
        cls = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; expected one of {', '.join(CODECS)}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"codec {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options are {', '.join(accepted) or 'none'}")
    try:
        return cls(**options)
    except TypeError as exc:  # a required option missing, e.g. generic without select
        raise ValueError(f"codec {name!r}: {exc}") from None


__all__ = [
    "CODECS", "Codec", "DecodeError", "DescriptorCodec", "Features", "GenericCodec", "Prediction", "PredictionBatch",
    "Selector", "V1Codec", "V2Codec", "detect_codec", "get_codec", "parse_spec",
]
