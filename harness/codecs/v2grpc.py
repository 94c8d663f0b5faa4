"""Open Inference Protocol v2 over gRPC: serialized `inference.ModelInferRequest` /
`ModelInferResponse` messages (`harness/codecs/grpc_v2/grpc_predict_v2.proto`).

The same rules as the REST codec (`harness.codecs.v2`), which this one extends: the roles of
outputs (label, probabilities, score; the `*_output` options), the two request layouts (one
input per feature, or one [n, F] tensor with `feature_names`), the error messages. Only the
wire format differs:

- a tensor's values are either typed (`contents.<type>_contents`, the field of its datatype)
  or raw (`raw_input_contents` / `raw_output_contents`, one entry per tensor in order:
  flattened row-major, little-endian; BYTES elements each a 4-byte little-endian length then
  the bytes). A message uses one form for all its tensors. FP16 and BF16 exist only raw.
- every datatype the protocol defines is read: BOOL, UINT8-64, INT8-64, FP16, BF16, FP32,
  FP64, BYTES.

`encode_request` keeps the template's form (raw or typed) and layout. A column whose values
no longer fit the template's datatype after a payload fault is written in a datatype that
holds them, so the fault reaches the model as it would over REST: non-integral or non-finite
values in an integer input become FP64, non-numeric values (strings, null among strings)
become BYTES (UTF-8 text).

The generated message classes live in `harness.codecs.grpc_v2`; they are imported
on first use, so importing the codec registry does not import protobuf.

Registry: `harness/codecs/__init__.py` lists it as `"v2grpc"` in `CODECS` (this module does not
add itself on import, so the registry stays what that file says).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.codecs.base import (
    DecodeError,
    Features,
    features_from_columns,
)
from harness.codecs.v2 import V2Codec, _inputs, _is_tensor

DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "BF16", "FP32", "FP64", "BYTES")

# datatype -> numpy dtype of its values (raw form: little-endian). BF16 is read as float32.
NUMPY_DTYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_ITEM_SIZE = {**{k: v.itemsize for k, v in NUMPY_DTYPES.items()}, "BF16": 2}

# datatype -> its field of InferTensorContents (FP16 and BF16 have none: raw only)
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_INTEGER = ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
_FLOAT = ("FP16", "BF16", "FP32", "FP64")

_pb = None


def messages():
    """The generated module `harness.codecs.grpc_v2.grpc_predict_v2_pb2` (imported on first use)."""
    global _pb
    if _pb is None:
        from harness.codecs.grpc_v2 import grpc_predict_v2_pb2

        _pb = grpc_predict_v2_pb2
    return _pb


def parse_message(cls, body: bytes | None, what: str):
    """`cls` parsed from `body`; DecodeError when it is not one."""
    if not body:
        raise DecodeError("empty body")
    message = cls()
    try:
        message.ParseFromString(bytes(body))
    except Exception as exc:  # google.protobuf.message.DecodeError, and bad UTF-8 in strings
        raise DecodeError(f"body is not a serialized {what}: {exc}") from None
    return message


# ---------------------------------------------------------------------------------------------
# Tensors: typed contents or raw bytes <-> flat numpy arrays


def _check_shape(shape: Sequence[int], what: str) -> int:
    if any(d < 0 for d in shape):
        raise DecodeError(f"{what} has invalid shape {list(shape)}")
    return math.prod(shape)


def _typed_values(datatype: str, shape: Sequence[int], contents, what: str):
    """The repeated field holding a typed tensor's values, checked: DecodeError for an unknown
    datatype, the wrong field, or the wrong count."""
    expected = _check_shape(shape, what)
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        if datatype in ("FP16", "BF16"):
            raise DecodeError(f"{what} is {datatype}, which has no typed contents; it must be sent raw")
        raise DecodeError(f"{what} has unknown datatype {datatype!r}")
    # ListFields: only the fields that hold values, in one C call (cheaper than a len per field).
    for descriptor, _ in contents.ListFields():
        if descriptor.name != field:
            raise DecodeError(f"{what} is {datatype} but holds {descriptor.name}")
    values = getattr(contents, field)
    if len(values) != expected:
        raise DecodeError(f"{what} declares shape {list(shape)} ({expected} values) but holds {len(values)}")
    return values


# Datatypes whose typed values come out of protobuf exactly as their numpy dtype would give
# them back (FP32 values are stored as float32 and widened exactly), so a plain list will do.
_LIST_EXACT = frozenset({"BOOL", "INT32", "INT64", "UINT32", "UINT64", "FP32", "FP64"})


def tensor_from_contents(datatype: str, shape: Sequence[int], contents, what: str) -> np.ndarray:
    """The flat values of a typed tensor: numpy in the datatype's dtype (BYTES: object array
    of bytes); DecodeError for an unknown datatype, the wrong field, or the wrong count."""
    values = _typed_values(datatype, shape, contents, what)
    expected = len(values)
    if datatype == "BYTES":
        out = np.empty(expected, dtype=object)
        out[:] = list(values)
        return out
    dtype = NUMPY_DTYPES[datatype]
    if datatype in ("INT8", "INT16", "UINT8", "UINT16"):  # carried in 32-bit fields: check the range
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.size and (wide.min() < info.min or wide.max() > info.max):
            raise DecodeError(f"{what} is {datatype} but holds a value beyond its range")
        return wide.astype(dtype)
    return np.array(values, dtype=dtype)


def tensor_from_raw(datatype: str, shape: Sequence[int], raw: bytes, what: str) -> np.ndarray:
    """The flat values of a raw tensor (see `tensor_from_contents`); BF16 comes back as float32."""
    expected = _check_shape(shape, what)
    if datatype == "BYTES":
        return _bytes_elements(raw, expected, what)
    size = _ITEM_SIZE.get(datatype)
    if size is None:
        raise DecodeError(f"{what} has unknown datatype {datatype!r}")
    if len(raw) != expected * size:
        raise DecodeError(f"{what} declares shape {list(shape)} ({expected} {datatype} values, "
                          f"{expected * size} bytes) but its raw contents have {len(raw)} bytes")
    if datatype == "BF16":
        upper = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (upper << 16).view(np.float32)
    if datatype == "BOOL":
        return np.frombuffer(raw, dtype=np.uint8) != 0
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype]).copy()


def _bytes_elements(raw: bytes, expected: int, what: str) -> np.ndarray:
    out = np.empty(expected, dtype=object)
    at, end = 0, len(raw)
    for i in range(expected):
        if at + 4 > end:
            raise DecodeError(f"{what}: raw BYTES contents end before element {i} of {expected}")
        (length,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + length > end:
            raise DecodeError(f"{what}: raw BYTES element {i} claims {length} bytes, only {end - at} left")
        out[i] = raw[at:at + length]
        at += length
    if at != end:
        raise DecodeError(f"{what}: raw BYTES contents hold {end - at} bytes beyond its {expected} elements")
    return out


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    return value.encode() if isinstance(value, str) else str(value).encode()


def tensor_to_raw(datatype: str, values: np.ndarray) -> bytes:
    """Flat values as a raw tensor of `datatype` (values are cast; BYTES: length-prefixed)."""
    values = np.asarray(values).reshape(-1)
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in map(_as_bytes, values.tolist()))
    if datatype == "BF16":
        bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        nan = np.isnan(values.astype(np.float32))
        rounded[nan] = 0x7FC0
        return rounded.astype("<u2").tobytes()
    if datatype == "BOOL":
        return np.asarray(values, dtype=bool).astype(np.uint8).tobytes()
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    return np.asarray(values).astype(dtype).tobytes()


def tensor_to_contents(datatype: str, values: np.ndarray, contents) -> None:
    """Write flat values into the typed field of `datatype` of an InferTensorContents."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise ValueError(f"datatype {datatype!r} has no typed contents")
    values = np.asarray(values).reshape(-1)
    if datatype == "BYTES":
        getattr(contents, field).extend([_as_bytes(v) for v in values.tolist()])
    else:
        getattr(contents, field).extend(values.astype(NUMPY_DTYPES[datatype]).tolist())


def tensor_values(message, index: int, *, inputs: bool, what: str) -> np.ndarray:
    """The flat values of input (or output) `index` of a request (or response) message,
    typed or raw, checking the message uses one form consistently."""
    tensors = message.inputs if inputs else message.outputs
    raw_list = message.raw_input_contents if inputs else message.raw_output_contents
    tensor = tensors[index]
    if raw_list:
        if len(raw_list) != len(tensors):
            field = "raw_input_contents" if inputs else "raw_output_contents"
            raise DecodeError(f"{field} has {len(raw_list)} entries for {len(tensors)} tensors")
        if tensor.HasField("contents"):
            raise DecodeError(f"{what} has typed contents next to raw contents")
        return tensor_from_raw(tensor.datatype, tensor.shape, raw_list[index], what)
    return tensor_from_contents(tensor.datatype, tensor.shape, tensor.contents, what)


# ---------------------------------------------------------------------------------------------
# Fitting feature values back into a datatype


def _numeric_or_none(col: np.ndarray) -> np.ndarray | None:
    """An object column as int64 / float64 when every value is a number (None -> NaN)."""
    values = col.tolist()
    types = set(map(type, values))
    if types <= {int, bool} and all(-(2**63) <= v < 2**63 for v in values):
        return np.array(values, dtype=np.int64)
    if types <= {int, float, bool, type(None)}:
        try:
            return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
        except OverflowError:
            return None
    return None


def fit_values(datatype: str, values: np.ndarray) -> tuple[str, np.ndarray]:
    """(datatype, values) where the values fit: the template's datatype when they do, FP64
    for non-integral or non-finite values in an integer or BOOL tensor, BYTES for non-numbers."""
    values = np.asarray(values)
    if values.dtype.kind == "O" or values.dtype.kind in "SU":
        numeric = _numeric_or_none(values) if values.dtype.kind == "O" else None
        if numeric is None:
            return "BYTES", values.astype(object)
        values = numeric
    if datatype == "BYTES":
        return "BYTES", values.astype(object)
    if datatype in _FLOAT or datatype not in NUMPY_DTYPES:
        return (datatype if datatype in _FLOAT else "FP64"), values.astype(np.float64)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or not np.array_equal(values, np.rint(values)):
            return "FP64", values.astype(np.float64)
    if datatype == "BOOL":
        if np.isin(values, (0, 1)).all():
            return "BOOL", values.astype(bool)
        datatype = "INT64"
    info = np.iinfo(NUMPY_DTYPES[datatype])
    if values.size and (values.min() < info.min or values.max() > info.max):
        if values.dtype.kind == "f" or values.min() < -(2**63) or values.max() >= 2**63:
            return "FP64", values.astype(np.float64)
        return "INT64", values.astype(np.int64)
    return datatype, values.astype(NUMPY_DTYPES[datatype])


def _datatype_of(col: np.ndarray) -> str:
    kind = np.asarray(col).dtype.kind
    return {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")


# ---------------------------------------------------------------------------------------------
# The codec


class V2GrpcCodec(V2Codec):
    """Open Inference Protocol v2 over gRPC; the options and role rules of `V2Codec`."""

    name = "v2grpc"
    templated = False  # bodies are protobuf, not JSON

    # -- responses -------------------------------------------------------------------------

    def _parse_response(self, body: bytes | None) -> dict:
        return self.response_outputs(body)

    def response_outputs(self, body: bytes) -> dict:
        """A response as the REST codec sees one: `{"outputs": [{name, datatype, shape, data}]}`."""
        pb = messages()
        message = parse_message(pb.ModelInferResponse, body, "ModelInferResponse")
        if not message.outputs:
            raise DecodeError("not a v2 gRPC response: no outputs")
        outputs = []
        typed = not message.raw_output_contents
        for i, o in enumerate(message.outputs):
            what = f"v2 output {o.name!r}"
            if typed and o.datatype in _LIST_EXACT:  # the judge's hot path: no numpy round trip
                data = list(_typed_values(o.datatype, o.shape, o.contents, what))
            else:
                data = tensor_values(message, i, inputs=False, what=what).tolist()
            outputs.append({"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": data})
        return {"outputs": outputs}

    # -- requests --------------------------------------------------------------------------

    def _request(self, body: bytes):
        message = parse_message(messages().ModelInferRequest, body, "ModelInferRequest")
        if not message.inputs:
            raise DecodeError("not a v2 gRPC request: no inputs")
        items = [{"name": t.name, "shape": list(t.shape), "datatype": t.datatype} for t in message.inputs]
        _inputs({"inputs": items})  # names, and shapes [n] or [n, k]
        return message, items

    def decode_request(self, body: bytes) -> Features:
        message, items = self._request(body)
        if self.feature_names is not None:
            tensors = sum(1 for item in items if _is_tensor(item["shape"]))
            if tensors != 1:
                raise DecodeError(f"feature_names needs exactly one [n, F] input tensor, found {tensors}")
        columns: dict[str, list] = {}
        for i, item in enumerate(items):
            names = self._input_columns(item)
            data = tensor_values(message, i, inputs=True, what=f"v2 input {item['name']!r}").tolist()
            width = len(names)
            for j, name in enumerate(names):
                if name in columns:
                    raise DecodeError(f"feature {name!r} appears twice in the request")
                columns[name] = data[j::width] if width > 1 else data
        return features_from_columns(columns, "v2 gRPC request")

    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        template, items = self._request(template_body)
        raw = len(template.raw_input_contents) > 0
        out = messages().ModelInferRequest()
        out.CopyFrom(template)  # model name, version, id, parameters, requested outputs kept
        del out.inputs[:]
        del out.raw_input_contents[:]
        n = features.n
        used = set()

        def add(tensor, datatype: str, shape: list[int], values: np.ndarray) -> None:
            datatype, values = fit_values(datatype, values)
            if not raw and datatype in ("FP16", "BF16"):
                raise DecodeError(f"v2 input {tensor.name!r} is {datatype} but the request is typed; "
                                  f"{datatype} must be sent raw")
            new = out.inputs.add()
            new.CopyFrom(tensor)
            new.ClearField("contents")
            new.datatype = datatype
            del new.shape[:]
            new.shape.extend(shape)
            if raw:
                out.raw_input_contents.append(tensor_to_raw(datatype, values))
            else:
                tensor_to_contents(datatype, values, new.contents)

        for tensor, item in zip(template.inputs, items):
            shape = item["shape"]
            if _is_tensor(shape):  # columns in template order; a missing one narrows the tensor
                names = [c for c in self._input_columns(item) if c in features.columns]
                used.update(names)
                if not names:
                    continue
                cols = [np.asarray(features.columns[c]) for c in names]
                if any(c.dtype.kind == "O" for c in cols):
                    matrix = np.empty((n, len(names)), dtype=object)
                    for j, c in enumerate(cols):
                        matrix[:, j] = c
                else:
                    matrix = np.column_stack(cols) if cols else np.empty((n, 0))
                add(tensor, item["datatype"], [n, len(names)], matrix.reshape(-1))
            else:
                name = item["name"]
                if name not in features.columns:
                    continue  # the missing-field fault: the input is left out
                used.add(name)
                add(tensor, item["datatype"], [n] if len(shape) == 1 else [n, 1], features.columns[name])
        for name, col in features.columns.items():
            if name not in used:
                extra = messages().ModelInferRequest.InferInputTensor(name=name)
                add(extra, _datatype_of(col), [n], col)
        return out.SerializeToString()

