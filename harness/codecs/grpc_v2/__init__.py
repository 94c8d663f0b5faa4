"""Open Inference Protocol v2 over gRPC: the `inference.GRPCInferenceService` messages.

`grpc_predict_v2_pb2` is generated from `grpc_predict_v2.proto` (see README.md for the
command) and checked in, so a plain install needs no protoc. The service is served and
called through generic handlers (`grpc.method_handlers_generic_handler`, `channel.unary_unary`)
with the method paths below, so no `_pb2_grpc` module is needed.
"""

from __future__ import annotations

from harness.codecs.grpc_v2 import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer")

# method -> (request class, response class)
MESSAGES = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def method_path(method: str) -> str:
    """The full gRPC method path, e.g. `/inference.GRPCInferenceService/ModelInfer`."""
    return f"/{SERVICE}/{method}"


__all__ = ["MESSAGES", "METHODS", "SERVICE", "method_path", "pb"]
