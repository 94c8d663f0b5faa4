"""Field paths in protobuf messages: the generic codec's selector syntax (`harness.codecs.generic`),
resolved against a message descriptor when the codec is built, then read from and written into
messages.

    rows[*].amount      a field of every element of a repeated message field
    probs               a repeated scalar field: one value per row (or a row of k, for probabilities)
    result.label        a field of a nested message
    extra['age']        a map entry (maps with string or integer keys)
    rows[0].amount      one element of a repeated field

Resolving first means a typo is an error when the codec is built ("field path 'foo.bar':
message a.Req has no field 'bar'; it has ..."), never a per-body failure, and reading a body
walks known fields only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import Descriptor
from google.protobuf.descriptor import FieldDescriptor as FD

from harness.codecs.base import DecodeError
from harness.codecs.generic import Selector
from harness.codecs.proto_values import MISSING, element, feature_value, fit, is_map, leaves_unset, type_name

# What a path ends at.
MESSAGE, REPEATED, MAP, SCALAR = "message", "repeated", "map", "scalar"
_LISTED = 12  # field names quoted in an error


@dataclass(frozen=True)
class FieldPath:
    """A selector resolved against a message type.

    `steps`: ("field", FieldDescriptor), ("index", i), ("all", None) or ("key", map key).
    `end`: what the path selects (MESSAGE, REPEATED, MAP or SCALAR); `field` the last field
    on the way (None for the message itself); `message` the message type at the end (MESSAGE,
    or the elements of a REPEATED message field).
    """

    text: str
    steps: tuple
    end: str
    field: FD | None
    message: Descriptor | None

    @property
    def wildcards(self) -> int:
        return sum(1 for kind, _ in self.steps if kind == "all")

    @property
    def has_wildcard(self) -> bool:  # (as `Selector`'s: the generic codec's row rules read it)
        return self.wildcards > 0

    @property
    def scalar_values(self) -> bool:
        """Whether the selected values are scalars (a scalar, or a repeated scalar field)."""
        return self.end == SCALAR or (self.end == REPEATED and self.field.cpp_type != FD.CPPTYPE_MESSAGE)


def resolve(selector: Selector | str, root: Descriptor) -> FieldPath:
    """`selector` resolved against message type `root`; ValueError naming the path and the step."""
    sel = Selector.parse(selector) if isinstance(selector, str) else selector
    text = sel.text
    end, field, message = MESSAGE, None, root
    steps = []
    for kind, arg in sel.steps:
        here = _describe(steps) or "the message"
        if end == MESSAGE:
            if kind != "key":
                raise ValueError(f"field path {text!r}: {here} is message {message.full_name}, not a repeated field")
            field = message.fields_by_name.get(arg)
            if field is None:
                names = [f.name for f in message.fields]
                listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
                raise ValueError(f"field path {text!r}: message {message.full_name} has no field {arg!r}"
                                 + (f"; it has {listed}" if names else "; it has no fields"))
            steps.append(("field", field))
            end, message = _after_field(field)
        elif end == REPEATED:
            if kind == "key":
                raise ValueError(f"field path {text!r}: {here} is a repeated field; use {here}[*] or {here}[N] "
                                 f"before .{arg}")
            steps.append((kind, arg))
            end, message = (MESSAGE, field.message_type) if field.cpp_type == FD.CPPTYPE_MESSAGE else (SCALAR, None)
        elif end == MAP:
            if kind == "all":
                raise ValueError(f"field path {text!r}: {here} is a map; select an entry with {here}['KEY']")
            steps.append(("key", _map_key(field, arg, text)))
            value = field.message_type.fields_by_name["value"]
            end, message = (MESSAGE, value.message_type) if value.cpp_type == FD.CPPTYPE_MESSAGE else (SCALAR, None)
            field = value
        else:
            raise ValueError(f"field path {text!r}: {here} is a {type_name(field)} field; it has no "
                             f"{'field ' + repr(arg) if kind == 'key' else 'elements'}")
    return FieldPath(text, tuple(steps), end, field, message)


def _after_field(field: FD) -> tuple[str, Descriptor | None]:
    if is_map(field):
        return MAP, None
    if field.is_repeated:
        return REPEATED, field.message_type if field.cpp_type == FD.CPPTYPE_MESSAGE else None
    if field.cpp_type == FD.CPPTYPE_MESSAGE:
        return MESSAGE, field.message_type
    return SCALAR, None


def _map_key(field: FD, arg: Any, text: str) -> Any:
    key_field = field.message_type.fields_by_name["key"]
    if key_field.cpp_type == FD.CPPTYPE_STRING:
        return str(arg)
    if key_field.cpp_type == FD.CPPTYPE_BOOL:
        if str(arg).lower() in ("true", "false"):
            return str(arg).lower() == "true"
    else:
        try:
            return int(arg)
        except ValueError:
            pass
    raise ValueError(f"field path {text!r}: {arg!r} is not a key of map {field.name} ({type_name(key_field)} keys)")


def _describe(steps: list) -> str:
    out = ""
    for kind, arg in steps:
        if kind == "field":
            out += ("." if out else "") + arg.name
        elif kind == "index":
            out += f"[{arg}]"
        elif kind == "all":
            out += "[*]"
        else:
            out += f"[{arg!r}]"
    return out


# ---------------------------------------------------------------------------------------------
# Reading


def read(message: Any, path: FieldPath, *, absent_ok: bool = False) -> Any:
    """The values at `path`: a scalar, a list (repeated scalars, and one item per element of a
    [*]), a message, or a map. A message field or a field with presence that is not set (or a
    map key not there) is a DecodeError, or None with `absent_ok` (a missing feature)."""
    return _read(message, path, 0, absent_ok)


def _read(node: Any, path: FieldPath, start: int, absent_ok: bool) -> Any:
    steps = path.steps
    for pos in range(start, len(steps)):
        kind, arg = steps[pos]
        if kind == "field":
            if arg.has_presence and not arg.is_repeated and not node.HasField(arg.name):
                if absent_ok:
                    return None
                raise DecodeError(f"field path {path.text!r}: {_describe(steps[:pos + 1])} is not set")
            node = getattr(node, arg.name)
        elif kind == "all":
            return [_read(item, path, pos + 1, absent_ok) for item in node]
        elif kind == "index":
            if not -len(node) <= arg < len(node):
                raise DecodeError(f"field path {path.text!r}: no element [{arg}] in {_describe(steps[:pos])} "
                                  f"({len(node)} elements)")
            node = node[arg]
        else:
            if arg not in node:
                if absent_ok:
                    return None
                raise DecodeError(f"field path {path.text!r}: map {_describe(steps[:pos])} has no key {arg!r}")
            node = node[arg]
    if path.end == REPEATED and path.field.cpp_type != FD.CPPTYPE_MESSAGE:
        return [feature_value(v) for v in node]
    if path.end == SCALAR:
        return feature_value(node)
    return node


# ---------------------------------------------------------------------------------------------
# Writing one feature column at a path


def write(message: Any, path: FieldPath, values: list | object, n: int) -> None:
    """Write a column (one value per row; MISSING: the column was left out) at `path`, which
    ends at a scalar or a repeated scalar field and holds at most one [*] (checked when built).

    Through a [*] over repeated messages, the field is resized to `n` elements (new ones copy
    the last element, as the generic codec's rows do); a field left out is cleared in each."""
    _write(message, path, 0, values, n)


def _write(node: Any, path: FieldPath, pos: int, values: list | object, n: int) -> None:
    steps = path.steps
    kind, arg = steps[pos]
    last = pos == len(steps) - 1
    if last:
        _write_last(node, path, kind, arg, values, n)
        return
    if kind == "field":
        if arg.cpp_type == FD.CPPTYPE_MESSAGE and not arg.is_repeated and not node.HasField(arg.name) \
                and (values is MISSING or all(leaves_unset(path.field, v) for v in values)):
            return  # nothing to write: do not create the message (that would set it)
        _write(getattr(node, arg.name), path, pos + 1, values, n)
    elif kind == "index":
        if not -len(node) <= arg < len(node):
            raise DecodeError(f"field path {path.text!r}: no element [{arg}] in {_describe(steps[:pos])}")
        _write(node[arg], path, pos + 1, values, n)
    elif kind == "key":
        if arg not in node and (values is MISSING or all(leaves_unset(path.field, v) for v in values)):
            return
        _write(node[arg], path, pos + 1, values, n)
    else:  # [*] over repeated messages: one element per row
        if values is MISSING:
            for item in node:
                _write(item, path, pos + 1, MISSING, 1)
            return
        resize(node, n)
        for item, value in zip(node, values):
            _write(item, path, pos + 1, [value], 1)


def _write_last(node: Any, path: FieldPath, kind: str, arg: Any, values: list | object, n: int) -> None:
    where = path.text
    if kind == "field" and arg.is_repeated:  # a repeated scalar field: one element per row
        container = getattr(node, arg.name)
        del container[:]
        if values is not MISSING:
            container.extend([element(arg, v, where) for v in values])
    elif kind == "field":
        set_scalar(node, arg, _single(values, n, path), where)
    elif kind == "all":  # repeated scalars through [*]
        del node[:]
        if values is not MISSING:
            node.extend([element(path.field, v, where) for v in values])
    elif kind == "index":
        value = _single(values, n, path)
        if value is MISSING:
            raise DecodeError(f"field path {where!r}: an element of a repeated field cannot be left out")
        if not -len(node) <= arg < len(node):
            raise DecodeError(f"field path {where!r}: no element [{arg}] to write")
        node[arg] = element(path.field, value, where)
    else:  # a map entry
        value = _single(values, n, path)
        if leaves_unset(path.field, value):
            node.pop(arg, None)
        else:
            node[arg] = fit(path.field, value, where)


def _single(values: list | object, n: int, path: FieldPath) -> Any:
    """The one value a single field holds; a batch of 0 rows leaves it unset."""
    if values is MISSING or n == 0:
        return MISSING
    if n != 1:
        raise DecodeError(f"field path {path.text!r}: a single field holds one value, the features have {n} rows")
    return values[0]


def set_scalar(message: Any, field: FD, value: Any, where: str) -> None:
    """Set a singular scalar field; a missing value (left out, None, or NaN where the field
    cannot hold NaN) clears it."""
    if leaves_unset(field, value):
        message.ClearField(field.name)
        return
    try:
        setattr(message, field.name, fit(field, value, where))
    except DecodeError:
        raise
    except ValueError as exc:  # the runtime's own refusal (kept as one line)
        raise DecodeError(f"field path {where!r}: {exc}") from None


def resize(container: Any, n: int) -> None:
    """A repeated message field with exactly `n` elements; new ones copy the last (or are empty)."""
    if len(container) > n:
        del container[n:]
    while len(container) < n:
        model = container[-1] if len(container) else None
        new = container.add()
        if model is not None:
            new.CopyFrom(model)

