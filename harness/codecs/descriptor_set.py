"""Descriptor sets: what a user's `protoc --include_imports --descriptor_set_out=FILE` wrote (or
what a server's reflection gave), turned into a descriptor pool and one method's messages.

Pure except `read_descriptor_set` and `write_descriptor_set`, the two file helpers. Errors are
`ValueError`s of one line naming the set (its file name, or `reflection HOST:PORT`) and what is
wrong, so the CLI can print them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError as ProtobufDecodeError

PROTOC_HINT = "make it with protoc --include_imports --descriptor_set_out=FILE"
_LISTED = 12  # methods named in an "it has ..." message


def read_descriptor_set(path: str | Path) -> bytes:
    """The bytes of a descriptor-set file; ValueError naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"descriptor set {path}: {exc.strerror or exc}") from None


def write_descriptor_set(data: bytes, path: str | Path) -> Path:
    """Write a serialized FileDescriptorSet (e.g. fetched by reflection) to `path`, atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def parse_descriptor_set(data: bytes, source: str) -> descriptor_pb2.FileDescriptorSet:
    """A FileDescriptorSet from bytes; ValueError when the bytes are not one (or hold no file)."""
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(bytes(data))
    except (ProtobufDecodeError, ValueError) as exc:
        raise ValueError(f"descriptor set {source}: not a serialized FileDescriptorSet ({exc}); "
                         f"{PROTOC_HINT}") from None
    if not fds.file or not all(f.name for f in fds.file):
        raise ValueError(f"descriptor set {source}: holds no .proto file descriptors; {PROTOC_HINT}")
    return fds


def descriptor_set_from_files(files: list[descriptor_pb2.FileDescriptorProto], source: str) -> bytes:
    """Serialized FileDescriptorSet of these files, dependencies first (as protoc writes it)."""
    return descriptor_pb2.FileDescriptorSet(file=_dependency_order(files, source)).SerializeToString()


def _dependency_order(files, source: str) -> list:
    """Files ordered so each comes after what it imports (reflection answers in any order);
    ValueError naming an import the set does not hold."""
    by_name = {f.name: f for f in files}
    ordered, done, visiting = [], set(), set()

    def visit(f) -> None:
        if f.name in done:
            return
        if f.name in visiting:
            raise ValueError(f"descriptor set {source}: import cycle through {f.name}")
        visiting.add(f.name)
        for dep in f.dependency:
            if dep not in by_name:
                raise ValueError(f"descriptor set {source}: {f.name} imports {dep}, which the set does not hold; "
                                 f"{PROTOC_HINT}")
            visit(by_name[dep])
        visiting.discard(f.name)
        done.add(f.name)
        ordered.append(f)

    for f in files:
        visit(f)
    return ordered


def build_pool(fds: descriptor_pb2.FileDescriptorSet, source: str) -> descriptor_pool.DescriptorPool:
    """A fresh pool (not the process's default one, so user files never clash with generated code)."""
    pool = descriptor_pool.DescriptorPool()
    for f in _dependency_order(list(fds.file), source):
        try:
            pool.Add(f)
        except (TypeError, ValueError) as exc:  # unresolved type names, duplicate symbols
            reason = str(exc).removeprefix("Couldn't build proto file into descriptor pool: ")
            raise ValueError(f"descriptor set {source}: {f.name}: {reason}") from None
    return pool


def method_names(fds: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every method of the set as `/package.Service/Method`."""
    out = []
    for f in fds.file:
        prefix = f"{f.package}." if f.package else ""
        for service in f.service:
            out += [f"/{prefix}{service.name}/{m.name}" for m in service.method]
    return out


def normalize_method(method: str) -> str:
    """`/pkg.Service/Method` or `pkg.Service.Method` (or `pkg.Service/Method`) -> `/pkg.Service/Method`."""
    text = method.strip()
    if text.startswith("/"):
        text = text[1:]
    service, sep, name = text.rpartition("/")
    if not sep:
        service, sep, name = text.rpartition(".")
    if not sep or not service or not name or "/" in service:
        raise ValueError(f"method {method!r}: expected /package.Service/Method or package.Service.Method")
    return f"/{service}/{name}"


@dataclass(frozen=True)
class MethodTypes:
    """One unary method's request and response message classes, built at run time."""

    path: str  # /package.Service/Method
    request: type
    response: type


def find_method(pool: descriptor_pool.DescriptorPool, fds: descriptor_pb2.FileDescriptorSet, method: str,
                source: str) -> MethodTypes:
    """The message classes of `method`; ValueError naming the methods the set does have."""
    path = normalize_method(method)
    service_name, name = path[1:].split("/")
    try:
        found = pool.FindServiceByName(service_name).methods_by_name[name]
    except KeyError:
        known = method_names(fds)
        listed = ", ".join(known[:_LISTED]) + (f" (and {len(known) - _LISTED} more)" if len(known) > _LISTED else "")
        raise ValueError(f"descriptor set {source}: no method {path}; "
                         + (f"it has {listed}" if known else "it describes no service")) from None
    if found.client_streaming or found.server_streaming:
        raise ValueError(f"descriptor set {source}: method {path} streams; "
                         f"captures hold the bodies of unary calls only")
    return MethodTypes(path, message_factory.GetMessageClass(found.input_type),
                       message_factory.GetMessageClass(found.output_type))
