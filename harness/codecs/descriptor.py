"""Any unary gRPC method, read through a user's descriptor set: `DescriptorCodec` (`"grpc"`).

    codec = get_codec("grpc", descriptor_set="scorer.pb", method="/fraud.Scorer/Score",
                      select="features=rows,label=label,score=score")

The descriptor set is what `protoc --include_imports --descriptor_set_out=FILE` writes (or what
`harness.codecs.reflection` fetches from a live server); the message classes are built from it
at run time, so no generated code is needed. The selector spec is the generic codec's
(`harness.codecs.generic`: roles, syntax, how a Prediction is built from what is selected);
its paths name fields of the method's request (features) and response (outputs), and are
checked against the descriptors when the codec is built (`harness.codecs.proto_paths`).

Features, `features=PATH` (a table):
- a repeated message field (`rows` or `rows[*]`): one row per element;
- a message (`$` for the request itself, or a message field): one row;
- a repeated scalar field: one column named after the field, one row per element;
- a map with scalar values: one row, a column per key.
A row message's columns: a scalar field is a column of its name; a repeated scalar field one
column per element, `name[j]` (every row the same length); a map with scalar values one column
per key, `name.key`; a nested message its own columns, `name.sub`. Repeated messages and maps
of messages inside a row are not features (kept as they are when a request is written back).
`feature.NAME=PATH` adds one column: a scalar per row (`rows[*].age`, or `age` for one row) or
a repeated scalar field (one row per element).

Writing faulted features back (`encode_request`): into a copy of the template request, every
other field kept. Rows are added (copies of the last) or removed to match the features; a
column left out (the missing-field fault) clears its field; values are fitted to their field's
type by the rules of `harness.codecs.proto_values` (e.g. NaN into an integer field leaves it
unset; text into a number field cannot be written: DecodeError, the fault is not applied).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import DecodeError as ProtobufDecodeError

from harness.codecs.base import (
    Codec,
    DecodeError,
    Features,
    RawPrediction,
    features_from_columns,
    integer_list,
    number_list,
)
# The generic codec's rules for turning selected values into rows (shared, not copied).
from harness.codecs.generic import _ALL, _agree, _per_row, _probability_rows, parse_spec
from harness.codecs.proto_paths import (
    MAP,
    MESSAGE,
    REPEATED,
    SCALAR,
    FieldPath,
    read,
    resize,
    resolve,
    set_scalar,
    write,
)
from harness.codecs.proto_values import MISSING, element, feature_value, fit, is_map, leaves_unset, type_name

_NUMBER_TYPES = (FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64, FD.CPPTYPE_DOUBLE,
                 FD.CPPTYPE_FLOAT, FD.CPPTYPE_BOOL, FD.CPPTYPE_ENUM)
_OUTPUT_ROLES = ("label", "probabilities", "score")


class DescriptorCodec(Codec):
    """A unary gRPC method described by a descriptor set; see the module docstring."""

    name = "grpc"
    templated = False  # bodies are protobuf, not JSON

    def __init__(self, *, descriptor_set: str | Path | bytes, method: str, select: str | Mapping[str, str]):
        from harness.codecs.descriptor_set import read_descriptor_set

        if isinstance(descriptor_set, (bytes, bytearray, memoryview)):
            data, source, option = bytes(descriptor_set), "(bytes)", bytes(descriptor_set)
        else:
            data, source, option = read_descriptor_set(descriptor_set), str(descriptor_set), str(descriptor_set)
        self._setup(data, source, option, method, select)

    @classmethod
    def from_bytes(cls, data: bytes, *, method: str, select: str | Mapping[str, str], source: str) -> DescriptorCodec:
        """Built from a serialized FileDescriptorSet; `source` names it in errors (e.g. `reflection HOST:PORT`)."""
        codec = cls.__new__(cls)
        codec._setup(bytes(data), source, bytes(data), method, select)
        return codec

    def _setup(self, data: bytes, source: str, option: str | bytes, method: str, select: str | Mapping) -> None:
        # (imported here: the descriptor machinery is heavy, and the registry is imported everywhere)
        from harness.codecs.descriptor_set import build_pool, find_method, parse_descriptor_set

        self._data, self._source, self._option = data, source, option
        fds = parse_descriptor_set(data, source)
        types = find_method(build_pool(fds, source), fds, method, source)
        self.method = types.path
        self.request_type, self.response_type = types.request, types.response
        self.select_spec = select if isinstance(select, str) else ",".join(f"{k}={v}" for k, v in select.items())
        selectors = parse_spec(select)
        if not selectors:
            raise ValueError("the grpc codec needs selectors, e.g. select='features=rows,label=label,score=score'")
        request, response = self.request_type.DESCRIPTOR, self.response_type.DESCRIPTOR
        self.response = {role: _output_path(role, sel, response)
                         for role, sel in selectors.items() if role in _OUTPUT_ROLES}
        self.feature_columns = {role[len("feature."):]: _column_path(sel, request)
                                for role, sel in selectors.items() if role.startswith("feature.")}
        self.table = _table_path(selectors["features"], request) if "features" in selectors else None

    def options(self) -> dict:
        return {"descriptor_set": self._option, "method": self.method, "select": self.select_spec}

    def __reduce__(self):  # message classes do not pickle: rebuild from the descriptors (worker processes)
        return (_rebuild, (self._data, self._source, self._option, self.method, self.select_spec))

    # -- parsing ---------------------------------------------------------------------------

    def _parse(self, cls: type, body: bytes | None) -> Any:
        if body is None:
            raise DecodeError("no body")
        message = cls()
        try:  # an empty body is a valid message: every field at its default
            message.ParseFromString(bytes(body))
        except (ProtobufDecodeError, ValueError) as exc:  # bad wire format, bad UTF-8 in a string field
            raise DecodeError(f"body is not a serialized {cls.DESCRIPTOR.full_name}: {exc}") from None
        return message

    # -- responses -------------------------------------------------------------------------

    def _parse_response(self, body: bytes | None) -> Any:
        return self._parse(self.response_type, body)

    def _extract_response(self, message: Any) -> RawPrediction:
        if not self.response:
            raise DecodeError("the grpc codec has no response selectors (label=, probabilities=, score=)")
        labels = probabilities = values = n = None
        k = 0
        if "label" in self.response:
            path = self.response["label"]
            labels = integer_list(_per_row(read(message, path)), f"field path {path.text!r}")
            n = _agree(n, len(labels), path)
        if "probabilities" in self.response:
            path = self.response["probabilities"]
            rows, probabilities, k = _probability_rows(read(message, path), path)
            if k == 0:
                raise DecodeError(f"field path {path.text!r}: no probabilities")
            n = _agree(n, rows, path)
        if "score" in self.response:
            path = self.response["score"]
            values = number_list(_per_row(read(message, path)), f"field path {path.text!r}")
            n = _agree(n, len(values), path)
        return RawPrediction(n, labels, probabilities, k, values)

    # -- requests --------------------------------------------------------------------------

    def decode_request(self, body: bytes) -> Features:
        if self.table is None and not self.feature_columns:
            raise DecodeError("the grpc codec has no request selectors (features=, feature.NAME=)")
        message = self._parse(self.request_type, body)
        columns: dict[str, list] = self._table_columns(message) if self.table is not None else {}
        for name, path in self.feature_columns.items():
            if name in columns:
                raise DecodeError(f"feature {name!r} appears twice (the table has a column of that name)")
            value = read(message, path, absent_ok=True)
            columns[name] = value if type(value) is list else [value]
        return features_from_columns(columns, f"{self.request_type.DESCRIPTOR.full_name} request")

    def _table_columns(self, message: Any) -> dict[str, list]:
        path = self.table
        node = read(message, path)
        if path.end == REPEATED and path.message is None:  # repeated scalars: one column
            return {path.field.name: node}
        if path.end == MAP:
            return {_key_text(k): [feature_value(node[k])] for k in sorted(node)}
        rows = list(node) if path.end == REPEATED else [node]
        cells, widths = [], {}
        for i, row in enumerate(rows):
            row_widths: dict[str, int] = {}
            cells.append(_row_cells(row, "", row_widths))
            for name, width in row_widths.items():
                if widths.setdefault(name, width) != width:
                    raise DecodeError(f"field path {path.text!r}: repeated field {name!r} has {width} values in "
                                      f"row {i} but {widths[name]} in row 0; rows must be the same length")
        names = dict.fromkeys(name for row in cells for name in row)  # first-seen order; absent -> None
        return {name: [row.get(name) for row in cells] for name in names}

    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        message = self._parse(self.request_type, template_body)
        used: set[str] = set()
        n = features.n
        columns = {name: col.tolist() for name, col in features.columns.items()}
        if self.table is not None:
            table_names = [name for name in columns if name not in self.feature_columns]
            self._write_table(message, columns, table_names, n, used)
        for name, path in self.feature_columns.items():
            write(message, path, columns.get(name, MISSING), n)
            used.add(name)
        unknown = [name for name in columns if name not in used]
        if unknown:
            raise DecodeError(f"feature {unknown[0]!r} has no field in {self.request_type.DESCRIPTOR.full_name} "
                              f"to be written to")
        return message.SerializeToString()

    def _write_table(self, message: Any, columns: dict[str, list], names: list[str], n: int, used: set[str]) -> None:
        path = self.table
        node = _locate(message, path)
        if path.end == REPEATED and path.message is None:
            name = path.field.name
            del node[:]
            if name in columns:
                used.add(name)
                node.extend([element(path.field, v, path.text) for v in columns[name]])
            return
        if path.end == MAP:
            if n > 1:
                raise DecodeError(f"field path {path.text!r}: a map holds one row, the features have {n}")
            value_field = path.field.message_type.fields_by_name["value"]
            node.clear()
            for name in names:
                used.add(name)
                value = columns[name][0] if n else None
                if not leaves_unset(value_field, value):
                    node[_map_key(path.field, name, path.text)] = fit(value_field, value, f"{path.text}['{name}']")
            return
        plan = _row_plan(path.message, "", names)
        used.update(_plan_names(plan))
        if path.end == REPEATED:
            resize(node, n)
            for i, row in enumerate(node):
                _write_row(row, plan, columns, i, f"{path.text}[{i}]")
        elif n > 1:
            raise DecodeError(f"field path {path.text!r}: message {path.message.full_name} holds one row, "
                              f"the features have {n}")
        else:
            _write_row(node, plan, columns, 0 if n else None, path.text if path.steps else "")


def _rebuild(data: bytes, source: str, option: str | bytes, method: str, select: str) -> DescriptorCodec:
    codec = DescriptorCodec.__new__(DescriptorCodec)
    codec._setup(data, source, option, method, select)
    return codec


# ---------------------------------------------------------------------------------------------
# Paths of each role, checked when the codec is built


def _output_path(role: str, selector, response) -> FieldPath:
    path = resolve(selector, response)
    if not path.scalar_values:
        raise ValueError(f"field path {path.text!r}: {role}= needs a number field, or a repeated one; "
                         f"it selects {_what(path)}")
    if path.field.cpp_type not in _NUMBER_TYPES:
        raise ValueError(f"field path {path.text!r}: {role}= needs numbers; {path.field.full_name} is "
                         f"{type_name(path.field)}")
    return path


def _column_path(selector, request) -> FieldPath:
    path = resolve(selector, request)
    if not path.scalar_values:
        raise ValueError(f"field path {path.text!r}: feature.NAME= needs a scalar field (or a repeated one); "
                         f"it selects {_what(path)} (use features= for a table)")
    if path.wildcards > 1 or (path.wildcards and path.end == REPEATED):
        raise ValueError(f"field path {path.text!r}: a feature column gives one scalar per row; "
                         f"use [*] once, over repeated messages")
    return path


def _table_path(selector, request) -> FieldPath:
    steps = selector.steps[:-1] if selector.steps[-1:] == (_ALL,) else selector.steps  # rows[*] is rows
    path = resolve(type(selector)(selector.text, steps), request)
    if path.wildcards:
        raise ValueError(f"field path {path.text!r}: features= selects a table; [*] may only end it")
    if path.end == SCALAR:
        raise ValueError(f"field path {path.text!r}: features= selects a table (a message, a repeated field or a "
                         f"map); {path.field.full_name} is a {type_name(path.field)} field "
                         f"(use feature.NAME= for one column)")
    if path.end == MAP and path.field.message_type.fields_by_name["value"].cpp_type == FD.CPPTYPE_MESSAGE:
        raise ValueError(f"field path {path.text!r}: features= may select a map of scalars, not of messages")
    return path


def _what(path: FieldPath) -> str:
    if path.end == MAP:
        return f"map {path.field.name}"
    if path.end == MESSAGE:
        return f"message {path.message.full_name}"
    return f"repeated message field {path.field.full_name}"


# ---------------------------------------------------------------------------------------------
# Row messages <-> cells


def _row_cells(message: Any, prefix: str, widths: dict[str, int]) -> dict[str, Any]:
    """One row message as {column name: value} (module docstring: the column rules)."""
    cells: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        name = prefix + field.name
        if is_map(field):
            if field.message_type.fields_by_name["value"].cpp_type != FD.CPPTYPE_MESSAGE:
                container = getattr(message, field.name)
                for key in sorted(container):
                    cells[f"{name}.{_key_text(key)}"] = feature_value(container[key])
        elif field.is_repeated:
            if field.cpp_type != FD.CPPTYPE_MESSAGE:
                values = getattr(message, field.name)
                widths[name] = len(values)
                for j, value in enumerate(values):
                    cells[f"{name}[{j}]"] = feature_value(value)
        elif field.cpp_type == FD.CPPTYPE_MESSAGE:
            if message.HasField(field.name):
                cells.update(_row_cells(getattr(message, field.name), name + ".", widths))
        elif field.has_presence and not message.HasField(field.name):
            cells[name] = None
        else:
            cells[name] = feature_value(getattr(message, field.name))
    return cells


def _row_plan(descriptor, prefix: str, names: list[str]) -> list[tuple]:
    """How the columns `names` map onto the fields of a row message type (built once per request).

    Entries: ("scalar", field, name or None), ("vector", field, [names by position]),
    ("map", field, [(name, key text)]), ("message", field, sub-plan).
    """
    plan = []
    for field in descriptor.fields:
        name = prefix + field.name
        if is_map(field):
            if field.message_type.fields_by_name["value"].cpp_type != FD.CPPTYPE_MESSAGE:
                start = name + "."
                plan.append(("map", field, [(c, c[len(start):]) for c in names if c.startswith(start)]))
        elif field.is_repeated:
            if field.cpp_type != FD.CPPTYPE_MESSAGE:
                pattern = re.compile(re.escape(name) + r"\[(\d+)\]")
                found = sorted((int(m.group(1)), c) for c in names if (m := pattern.fullmatch(c)))
                plan.append(("vector", field, [c for _, c in found]))
        elif field.cpp_type == FD.CPPTYPE_MESSAGE:
            start = name + "."
            inner = [c for c in names if c.startswith(start)]
            # Without columns the sub-plan is made when writing, and only for a message that is
            # there (a recursive message type would otherwise never end).
            plan.append(("message", field, _row_plan(field.message_type, start, inner) if inner else None))
        else:
            plan.append(("scalar", field, name if name in names else None))
    return plan


def _plan_names(plan: list[tuple]) -> list[str]:
    out = []
    for kind, _, arg in plan:
        if kind == "scalar" and arg is not None:
            out.append(arg)
        elif kind == "vector":
            out += arg
        elif kind == "map":
            out += [c for c, _ in arg]
        elif kind == "message" and arg is not None:
            out += _plan_names(arg)
    return out


def _write_row(message: Any, plan: list[tuple], columns: dict[str, list], i: int | None, where: str) -> None:
    """Row `i` of the columns into a row message (`i` None: a batch of 0 rows, every field cleared)."""
    at = f"{where}." if where else ""

    def cell(name: str) -> Any:
        return MISSING if i is None else columns[name][i]

    for kind, field, arg in plan:
        if kind == "scalar":
            set_scalar(message, field, MISSING if arg is None else cell(arg), at + field.name)
        elif kind == "vector":
            container = getattr(message, field.name)
            del container[:]
            if i is not None:
                container.extend([element(field, cell(name), f"{at}{name}") for name in arg])
        elif kind == "map":
            container = getattr(message, field.name)
            container.clear()
            value_field = field.message_type.fields_by_name["value"]
            for name, key in arg:
                value = cell(name)
                if not leaves_unset(value_field, value):
                    container[_map_key(field, key, at + name)] = fit(value_field, value, at + name)
        else:
            names = _plan_names(arg) if arg is not None else []
            if not message.HasField(field.name) and all(leaves_unset(None, cell(name)) for name in names):
                continue  # not there and nothing to write: writing would create it
            inner = arg if arg is not None else _row_plan(field.message_type, f"{field.name}.", [])
            _write_row(getattr(message, field.name), inner, columns, i, at + field.name)


def _locate(message: Any, path: FieldPath) -> Any:
    """The node a table path selects, creating messages on the way (for writing)."""
    node = message
    for kind, arg in path.steps:
        if kind == "field":
            node = getattr(node, arg.name)
        elif kind == "index":
            if not -len(node) <= arg < len(node):
                raise DecodeError(f"field path {path.text!r}: no element [{arg}] to write into")
            node = node[arg]
        else:
            node = node[arg]
    return node


def _key_text(key: Any) -> str:
    return ("true" if key else "false") if type(key) is bool else str(key)


def _map_key(field, text: str, where: str) -> Any:
    key_field = field.message_type.fields_by_name["key"]
    if key_field.cpp_type == FD.CPPTYPE_STRING:
        return text
    if key_field.cpp_type == FD.CPPTYPE_BOOL and text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        raise DecodeError(f"field path {where!r}: {text!r} is not a {type_name(key_field)} map key") from None
