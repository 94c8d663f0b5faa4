"""Feature values in and out of protobuf scalar fields: what a field holds as a feature, and
what a (possibly faulted) feature value becomes when it is written back into a field.

A protobuf field has one type on the wire, so a payload fault cannot change it the way it
changes a JSON value (v2 gRPC changes a tensor's datatype instead; a protobuf field has none
to change). The rules, in one place (docs/grpc-codecs.md has the table):

- float / double: any number (bool as 0/1); NaN and +-Inf are kept; float fields round to the
  nearest float32 (beyond its range: +-Inf).
- integers (int32, int64, uint32, uint64, sint*, fixed*, sfixed*) and enums: whole numbers;
  a fraction is rounded to the nearest integer, a value beyond the field's range (+-Inf
  included) saturates at the range's end. Enums also take a value's name.
- bool: a number is true when not 0.
- string: text; a lone surrogate (not encodable as UTF-8, which protobuf requires) becomes
  U+FFFD; bytes are read as UTF-8 (bad bytes -> U+FFFD); a number becomes its text.
- bytes: bytes; text is encoded as UTF-8 (lone surrogates kept as their bytes: invalid UTF-8);
  a number becomes its text.
- a missing value (None, or NaN where the field cannot hold NaN) in a singular field leaves
  the field unset: the protobuf way a value is missing (the server reads the default, or
  "not set" for a field with presence). In a repeated field, where an element cannot be left
  out, NaN stands for it in float fields; elsewhere it cannot be written.

What cannot be written (text into a number field, NaN into an integer list element, an enum
value a closed enum does not define) raises DecodeError naming the field path: the fault plan
then sends the request without that fault and records it as not applied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf.descriptor import FieldDescriptor as FD

from harness.codecs.base import DecodeError, short

MISSING = object()  # a column left out of the features (the missing-field fault): clear the field

_INT_RANGES = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
    FD.CPPTYPE_ENUM: (-(2**31), 2**31 - 1),
}
_FLOATS = (FD.CPPTYPE_FLOAT, FD.CPPTYPE_DOUBLE)
_TYPE_NAMES = {
    FD.TYPE_DOUBLE: "double", FD.TYPE_FLOAT: "float", FD.TYPE_INT64: "int64", FD.TYPE_UINT64: "uint64",
    FD.TYPE_INT32: "int32", FD.TYPE_FIXED64: "fixed64", FD.TYPE_FIXED32: "fixed32", FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string", FD.TYPE_GROUP: "group", FD.TYPE_MESSAGE: "message", FD.TYPE_BYTES: "bytes",
    FD.TYPE_UINT32: "uint32", FD.TYPE_ENUM: "enum", FD.TYPE_SFIXED32: "sfixed32", FD.TYPE_SFIXED64: "sfixed64",
    FD.TYPE_SINT32: "sint32", FD.TYPE_SINT64: "sint64",
}


def type_name(field: FD) -> str:
    if field.type == FD.TYPE_ENUM:
        return f"enum {field.enum_type.full_name}"
    if field.type == FD.TYPE_MESSAGE:
        return f"message {field.message_type.full_name}"
    return _TYPE_NAMES.get(field.type, "?")


def is_map(field: FD) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def is_float(field: FD) -> bool:
    return field.cpp_type in _FLOATS


# ---------------------------------------------------------------------------------------------
# Reading


def feature_value(value: Any) -> Any:
    """A scalar read from a field, as a feature: bools as 0/1 (so a bool field is a numeric
    column); ints, floats, str and bytes as they are (enums are read as their numbers)."""
    return int(value) if type(value) is bool else value


# ---------------------------------------------------------------------------------------------
# Writing


def is_missing(value: Any) -> bool:
    """None, or NaN (a float column's missing value)."""
    return value is None or (type(value) is float and math.isnan(value))


def leaves_unset(field: FD | None, value: Any) -> bool:
    """Whether writing `value` into a singular `field` (None: any field) leaves it unset: the
    column was left out, or the value is missing where the field cannot hold it (NaN can
    only be held by float fields)."""
    if value is MISSING or value is None:
        return True
    return is_missing(value) and (field is None or not is_float(field))


def fit(field: FD, value: Any, where: str) -> Any:
    """`value` as what `field` holds (the rules above); DecodeError when it has no such form.
    A missing value is the caller's to handle (it means unset, or NaN in a float list)."""
    if isinstance(value, np.generic):
        value = value.item()
    kind = field.cpp_type
    if kind in _FLOATS:
        return _fit_float(field, value, where)
    if kind in _INT_RANGES:
        return _fit_integer(field, value, where)
    if kind == FD.CPPTYPE_BOOL:
        if type(value) is bool:
            return value
        if type(value) in (int, float) and not math.isnan(value):
            return value != 0
        raise _unfit(field, value, where)
    if kind == FD.CPPTYPE_STRING:
        return _fit_bytes(value) if field.type == FD.TYPE_BYTES else _fit_text(value)
    raise _unfit(field, value, where)


def _fit_float(field: FD, value: Any, where: str) -> float:
    if type(value) not in (int, float, bool):
        raise _unfit(field, value, where)
    try:
        out = float(value)
    except OverflowError:  # an int beyond float64
        out = math.copysign(math.inf, value)
    if field.cpp_type == FD.CPPTYPE_FLOAT and math.isfinite(out):
        with np.errstate(over="ignore"):
            out = float(np.float32(out))  # nearest float32; beyond its range: +-Inf
    return out


def _fit_integer(field: FD, value: Any, where: str) -> int:
    if field.cpp_type == FD.CPPTYPE_ENUM and type(value) is str:
        found = field.enum_type.values_by_name.get(value)
        if found is None:
            raise DecodeError(f"field path {where!r}: {short(value)} is not a value of {type_name(field)}")
        return found.number
    if type(value) not in (int, float, bool) or (type(value) is float and math.isnan(value)):
        raise _unfit(field, value, where)
    low, high = _INT_RANGES[field.cpp_type]
    if type(value) is float:
        if math.isinf(value):
            return high if value > 0 else low
        value = round(value)  # nearest, ties to even
    out = min(max(int(value), low), high)
    if field.cpp_type == FD.CPPTYPE_ENUM and field.enum_type.is_closed and out not in field.enum_type.values_by_number:
        raise DecodeError(f"field path {where!r}: {out} is not a value of closed {type_name(field)}")
    return out


def _fit_text(value: Any) -> str:
    if type(value) is bytes:
        return value.decode("utf-8", "replace")
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is float:
        return repr(value)
    text = value if type(value) is str else str(value)
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: not UTF-8, which a protobuf string must be
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _fit_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass")
    return _fit_text(value).encode()


def _unfit(field: FD, value: Any, where: str) -> DecodeError:
    return DecodeError(f"field path {where!r}: {short(value)} ({type(value).__name__}) does not fit "
                       f"{type_name(field)} field {field.full_name}")


def element(field: FD, value: Any, where: str) -> Any:
    """One element of a repeated scalar field: a missing value is NaN in a float list, and
    cannot be written elsewhere (a list has no holes)."""
    if is_missing(value):
        if field.cpp_type in _FLOATS:
            return math.nan
        raise DecodeError(f"field path {where!r}: a repeated {type_name(field)} field cannot hold a missing value")
    return fit(field, value, where)
