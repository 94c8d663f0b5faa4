"""The `grpc` codec from a live server's gRPC server reflection: the one codec-building step
that does I/O, kept here, apart from the pure codec.

    codec = codec_from_reflection("127.0.0.1:50051", "/fraud.Scorer/Score",
                                  select="features=rows,label=predictions[*].label",
                                  save_to=run_dir / "grpc-descriptors.pb")

`fetch_descriptor_set` asks the server (reflection v1alpha, the one grpcio serves, else v1) for
the file that defines the method's service and every file it imports, once, and returns them
as a serialized FileDescriptorSet: the same bytes `protoc --include_imports
--descriptor_set_out` would write. Saved into the run directory (`save_to`), they let
`shadowline analyze` be re-run later without the server.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from harness.codecs.descriptor import DescriptorCodec

_V1ALPHA = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"  # same messages on the wire
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_MAX_FILES = 10_000  # a server naming new imports without end is not answering in good faith


class ReflectionError(ValueError):
    """The server answered, but not with what is needed (no reflection, no such service): bad input."""


class ReflectionUnavailable(ConnectionError):
    """The server could not be reached (or did not answer in time)."""


def plain_target(target: str) -> str:
    """`host:port` or `grpc://host:port` -> `host:port` (TLS is not supported here yet)."""
    text = target.strip()
    if text.startswith("grpcs://"):
        raise ReflectionError(f"reflection {target}: grpcs:// (TLS) is not supported; give host:port")
    text = text.removeprefix("grpc://").rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ReflectionError(f"reflection {target!r}: expected HOST:PORT")
    return text


def fetch_descriptor_set(target: str, service: str, *, timeout: float = 10.0) -> bytes:
    """A serialized FileDescriptorSet of the file defining `service` and all it imports, from
    the reflection service of the server at `target`.

    ReflectionUnavailable when the server cannot be reached; ReflectionError when it has no
    reflection service or does not know `service` (the message names the services it has).
    """
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as rpb

    from harness.codecs.descriptor_set import descriptor_set_from_files

    address = plain_target(target)
    with grpc.insecure_channel(address) as channel:
        path = _reflection_path(channel, address, rpb, timeout)

        def ask(**request) -> rpb.ServerReflectionResponse:
            try:
                return _one_answer(channel, path, rpb.ServerReflectionRequest(**request), rpb, address, timeout)
            except grpc.RpcError as exc:
                raise _rpc_error(exc, address) from None

        answer = ask(file_containing_symbol=service)
        if answer.HasField("error_response"):
            services = ask(list_services="").list_services_response.service
            known = ", ".join(sorted(s.name for s in services)) or "none"
            raise ReflectionError(f"reflection {address}: the server has no service {service}; it offers {known}")
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        asked: set[str] = set()
        pending = list(answer.file_descriptor_response.file_descriptor_proto)
        while pending:
            for raw in pending:
                try:
                    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                except Exception as exc:  # protobuf's DecodeError
                    raise ReflectionError(f"reflection {address}: a file descriptor does not parse ({exc})") from None
                files.setdefault(proto.name, proto)
            missing = sorted({d for f in files.values() for d in f.dependency if d not in files})
            if len(files) > _MAX_FILES or asked.intersection(missing):
                raise ReflectionError(f"reflection {address}: the server does not send the files "
                                      f"{service}'s files import ({', '.join(missing[:3])})")
            pending = []
            for name in missing:  # servers that send a file without its imports
                asked.add(name)
                reply = ask(file_by_filename=name)
                if reply.HasField("error_response"):
                    raise ReflectionError(f"reflection {address}: the server does not have {name}, "
                                          f"which {service}'s files import")
                pending += reply.file_descriptor_response.file_descriptor_proto
    try:
        return descriptor_set_from_files(list(files.values()), f"from reflection {address}")
    except ValueError as exc:
        raise ReflectionError(str(exc)) from None


def _reflection_path(channel: grpc.Channel, address: str, rpb, timeout: float) -> str:
    """The reflection method the server serves: v1alpha (grpcio's), else v1."""
    for path in (_V1ALPHA, _V1):
        try:
            _one_answer(channel, path, rpb.ServerReflectionRequest(list_services=""), rpb, address, timeout)
            return path
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise _rpc_error(exc, address) from None
    raise ReflectionError(f"reflection {address}: the server offers no gRPC server reflection (v1alpha or v1); "
                          f"pass its descriptor set instead (--descriptor-set FILE)")


def _one_answer(channel: grpc.Channel, path: str, request, rpb, address: str, timeout: float):
    """One request on its own reflection stream, and its one answer."""
    call = channel.stream_stream(path, request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=rpb.ServerReflectionResponse.FromString)
    answers = call(iter([request]), timeout=timeout)
    try:
        for answer in answers:
            return answer
    finally:
        answers.cancel()  # done with the stream (a no-op when the server already ended it)
    raise ReflectionError(f"reflection {address}: the server closed the reflection stream without answering")


def _rpc_error(exc: grpc.RpcError, address: str) -> Exception:
    code, details = exc.code(), exc.details()
    message = f"reflection {address}: {code.name if code else 'error'}" + (f" ({details})" if details else "")
    return ReflectionUnavailable(message) if code in _UNREACHABLE else ReflectionError(message)


def codec_from_reflection(target: str, method: str, select: str, *, save_to: str | Path | None = None,
                          timeout: float = 10.0) -> DescriptorCodec:
    """The `grpc` codec for `method`, its descriptors fetched from the server at `target`.

    With `save_to`, the descriptors are written there first and the codec refers to that file
    (its `spec()` then rebuilds it offline); without, it holds them in memory.
    """
    from harness.codecs.descriptor_set import normalize_method, write_descriptor_set

    path = normalize_method(method)
    data = fetch_descriptor_set(target, path[1:].split("/")[0], timeout=timeout)
    if save_to is not None:
        return DescriptorCodec(descriptor_set=str(write_descriptor_set(data, save_to)), method=path, select=select)
    return DescriptorCodec.from_bytes(data, method=path, select=select, source=f"reflection {plain_target(target)}")
