"""What codecs decode to, and the machinery every codec shares.

A codec reads one protocol's payloads: a response body becomes a `Prediction` (a label,
class probabilities and/or a regression value per row), a request body becomes `Features`
(named columns), and features go back into a request laid out like a template body, so
payload faults mutate features rather than bytes. Codecs are pure: bytes in, numpy out.

Speed: the judge decodes millions of bodies, so the batch API `decode_responses` is the
primary one. A codec implements `_extract_response(obj)` on one parsed JSON value and returns
a `RawPrediction` of plain, already validated Python lists; the batch path concatenates those
lists and converts each field to numpy once, instead of building small arrays per body
(a few microseconds per body, most of it json parsing).
`decode_response` is the same path for a single body, so the two can never disagree.
"""

from __future__ import annotations

import json
import json.scanner
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np


class DecodeError(ValueError):
    """A body this codec cannot turn into predictions or features; the message says why."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Prediction:
    """The outputs of one response, one entry per row of the request's batch.

    Any of the three may be None (not in the response). Probabilities always have at least
    two columns: a single probability per row is P(class 1) and is stored as [1 - p, p].
    """

    n: int
    labels: np.ndarray | None = None  # int64 (n,)
    probabilities: np.ndarray | None = None  # float64 (n, k), k >= 2
    values: np.ndarray | None = None  # float64 (n,): regression value, or a score next to a label

    def __post_init__(self) -> None:
        for name in ("labels", "probabilities", "values"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != self.n:
                raise ValueError(f"Prediction.{name} has {len(arr)} rows, expected {self.n}")


@dataclass(frozen=True)
class Features:
    """A request's input rows as named columns: numeric columns are int64 or float64 (NaN
    for null), anything else (strings, mixed types after a payload fault) an object array."""

    columns: dict[str, np.ndarray]
    n: int

    def __post_init__(self) -> None:
        for name, col in self.columns.items():
            if len(col) != self.n:
                raise ValueError(f"feature {name!r} has {len(col)} rows, expected {self.n}")

    @property
    def names(self) -> list[str]:
        return list(self.columns)


@dataclass(frozen=True)
class PredictionBatch:
    """Many response bodies decoded at once.

    Body i owns rows `offsets[i]:offsets[i + 1]` of the row arrays (none when it did not
    decode). Per-body flags say which outputs it had; row arrays hold a filler elsewhere
    (label 0, NaN), so read them through the flags.
    """

    decoded: np.ndarray  # bool (m,)
    offsets: np.ndarray  # int64 (m + 1,)
    has_labels: np.ndarray  # bool (m,)
    n_classes: np.ndarray  # int64 (m,): probability columns, 0 when none
    has_values: np.ndarray  # bool (m,)
    labels: np.ndarray  # int64 (rows,)
    probabilities: np.ndarray  # float64 (rows, max k), NaN padded
    values: np.ndarray  # float64 (rows,)
    errors: dict[int, str] = field(default_factory=dict)  # body index -> why it did not decode

    def __len__(self) -> int:
        return len(self.decoded)

    @property
    def rows(self) -> np.ndarray:
        """Rows per body (0 where not decoded)."""
        return np.diff(self.offsets)

    def prediction(self, i: int) -> Prediction:
        """Body i as a `Prediction`; DecodeError when it did not decode."""
        if not self.decoded[i]:
            raise DecodeError(self.errors.get(i, "not decoded"))
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        k = int(self.n_classes[i])
        return Prediction(
            n=hi - lo,
            labels=self.labels[lo:hi].copy() if self.has_labels[i] else None,
            probabilities=self.probabilities[lo:hi, :k].copy() if k else None,
            values=self.values[lo:hi].copy() if self.has_values[i] else None,
        )


class RawPrediction(NamedTuple):
    """One body's outputs as validated Python lists (what `_extract_response` returns).

    `probabilities` is flat, row-major with `k` values per row (k may be 1: P(class 1)).
    A codec on the hot path may return a plain tuple in this order (it is cheaper to build).
    """

    n: int
    labels: list | None = None
    probabilities: list | None = None
    k: int = 0
    values: list | None = None


# ---------------------------------------------------------------------------------------------
# Validation of JSON values (per body, in Python; cheap because set(map(type, ...)) runs in C)

_INT_TYPES = frozenset((int, bool))
_FLOAT_TYPES = frozenset((int, float, type(None)))  # JSON null in a float output reads as NaN
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_FLOAT_MAX_INT = 2**1023  # beyond this an int does not fit a float64


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer_list(values: list, what: str) -> list:
    """`values` as a list of ints (integral floats accepted), or DecodeError naming `what`."""
    types = set(map(type, values))
    if types <= _INT_TYPES and (not values or (max(values) <= _INT64_MAX and min(values) >= _INT64_MIN)):
        return values  # the common case, checked first
    if not types <= _INT_TYPES:
        if not types <= {int, float, bool}:
            bad = next(v for v in values if type(v) not in (int, float, bool))
            raise DecodeError(f"{what} holds non-numeric value {short(bad)}")
        bad = next((v for v in values if type(v) is float and not v.is_integer()), None)
        if bad is not None:
            raise DecodeError(f"{what} holds non-integer value {short(bad)}; labels must be whole numbers")
        values = [int(v) for v in values]
    if values and (max(values) > _INT64_MAX or min(values) < _INT64_MIN):
        raise DecodeError(f"{what} holds an integer beyond int64")
    return values


def number_list(values: list, what: str) -> list:
    """`values` if every one is a number or null (NaN), else DecodeError naming `what`."""
    types = set(map(type, values))
    if float in types and len(types) == 1:
        return values  # the common case, checked first
    if not types <= _FLOAT_TYPES:
        bad = next(v for v in values if type(v) not in _FLOAT_TYPES)
        raise DecodeError(f"{what} holds non-numeric value {short(bad)}")
    if int in types and any(type(v) is int and abs(v) >= _FLOAT_MAX_INT for v in values):
        raise DecodeError(f"{what} holds a number beyond float64 range")
    return values


def load_json(body: bytes | str | None) -> Any:
    """Parse a body; DecodeError for empty, non-UTF-8 or invalid JSON (NaN tokens allowed)."""
    if not body:
        raise DecodeError("empty body")
    try:
        return json.loads(body)
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise DecodeError(f"body is not valid JSON: {exc}") from None


# json.loads(bytes) spends a third of its time on encoding detection and Python-level
# wrappers; the C scanner it ends up in is called directly here. Same scanner, same settings,
# so the same result; anything unusual (a BOM, whitespace around, an error) takes json.loads.
_scan = json.scanner.c_make_scanner(json.JSONDecoder()) if json.scanner.c_make_scanner else None


try:  # optional: about twice as fast as the json scanner
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is a dependency, but the stdlib path stands alone
    _orjson_loads = None
# orjson reads an integer beyond 64 bits as a float (json: an int); 19 digits in a row could be one.
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))
_LONG_RUN = b"0" * 19


def parse_json(body: bytes | None) -> Any:
    """`load_json`, faster on the common case of a plain UTF-8 JSON body.

    orjson first, where its result is json's: it refuses (and json decides) NaN and Infinity,
    lone surrogates, a BOM, numbers that overflow to infinity, very deep nesting; integers too
    long for 64 bits, which it would read as floats, are kept from it by the digit check.
    """
    if _orjson_loads is not None and type(body) is bytes and _LONG_RUN not in body.translate(_DIGITS):
        try:
            return _orjson_loads(body)
        except _OrjsonError:
            pass
    if _scan is not None:
        try:
            text = body.decode()
            obj, end = _scan(text, 0)
            if end == len(text):
                return obj
        except (AttributeError, ValueError, StopIteration, RecursionError):
            pass
    return load_json(body)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy scalars inside object columns
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot write {type(value).__name__} into a JSON request")


def dump_json(obj: Any) -> bytes:
    """Compact JSON bytes; NaN and Infinity are written as the bare tokens careless clients send."""
    return json.dumps(obj, separators=(",", ":"), default=_json_default).encode()


def error_message(obj: Any) -> str | None:
    """The message of an `{"error": ...}` body (v2, KServe, TF-Serving all use this), else None."""
    if isinstance(obj, dict) and "error" in obj:
        return f"error body: {short(obj['error'], 200)}"
    return None


# ---------------------------------------------------------------------------------------------
# Feature columns


def column_from_json(values: list) -> np.ndarray:
    """A feature column from JSON values: int64 if all ints, float64 if all numbers or null
    (null -> NaN), otherwise an object array of the values as they were."""
    types = set(map(type, values))
    if types <= {int}:
        if not values or (max(values) <= _INT64_MAX and min(values) >= _INT64_MIN):
            return np.array(values, dtype=np.int64)
    elif types <= _FLOAT_TYPES and not any(type(v) is int and abs(v) >= _FLOAT_MAX_INT for v in values):
        return np.array(values, dtype=np.float64)  # None -> NaN
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def column_to_json(col: np.ndarray, integer: bool | None = None) -> list:
    """A feature column as JSON values. `integer=True` writes whole finite floats as ints (for
    INT tensors); NaN and Inf stay floats (written as NaN / Infinity tokens)."""
    col = np.asarray(col)
    if col.dtype.kind == "f" and integer:
        values = col.tolist()
        return [int(v) if math.isfinite(v) and v.is_integer() else v for v in values]
    return col.tolist()


def features_from_columns(columns: Mapping[str, list], what: str) -> Features:
    """Features from JSON column lists, checking they all have the same number of rows."""
    n = None
    out = {}
    for name, values in columns.items():
        if n is None:
            n = len(values)
        elif len(values) != n:
            first = next(iter(columns))
            raise DecodeError(f"{what}: feature {name!r} has {len(values)} rows but {first!r} has {n}")
        out[name] = column_from_json(values)
    return Features(out, n or 0)


# ---------------------------------------------------------------------------------------------
# The codec base


class Codec(ABC):
    """One protocol's payloads. Subclasses set `name` and implement the three hooks."""

    name: ClassVar[str]

    def spec(self) -> dict:
        """Name and options, so `get_codec(**codec.spec())` rebuilds this codec."""
        return {"name": self.name, **self.options()}

    def options(self) -> dict:
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    # -- responses -------------------------------------------------------------------------

    @abstractmethod
    def _extract_response(self, obj: Any) -> RawPrediction:
        """One parsed response body -> validated lists; DecodeError when it has no prediction."""

    def _parse_response(self, body: bytes | None) -> Any:
        """One response body -> what `_extract_response` reads: JSON here; a binary protocol's
        codec overrides it (DecodeError when the body is not that protocol's message)."""
        return parse_json(body)

    def decode_response(self, body: bytes) -> Prediction:
        """One response body -> Prediction; DecodeError for anything not decodable."""
        return self.decode_responses([body]).prediction(0)

    # Whether `decode_responses` may take the templated path (`harness.codecs.template`): right
    # for a codec whose `_extract_response` copies numbers from the JSON into its outputs
    # unchanged, whatever their values (the tracing there checks this per layout).
    templated: ClassVar[bool] = False

    def decode_responses(self, bodies: Sequence[bytes | None], *, templated: bool | None = None) -> PredictionBatch:
        """Many bodies at once; a body that cannot be decoded is recorded, never raised.

        `templated` (default: when the codec allows it and there are many bodies) decodes
        bodies that share a layout together; the result is identical either way.
        """
        if templated is None:
            templated = self.templated and len(bodies) >= template.MIN_BODIES
        if templated:
            return template.decode_templated(self, bodies)
        # The per-body loop is the judge's hot path: the batch builder is inlined.
        m = len(bodies)
        rows = [0] * m
        errors: dict[int, str] = {}
        label_bodies: list[int] = []
        labels: list = []
        value_bodies: list[int] = []
        values: list = []
        prob_groups: dict[int, tuple[list[int], list]] = {}  # k -> (bodies, flat values)
        extract, parse = self._extract_response, self._parse_response
        for i, body in enumerate(bodies):
            try:
                n, body_labels, body_probs, k, body_values = extract(parse(body))
            except DecodeError as exc:
                errors[i] = str(exc)
                continue
            except RecursionError:
                errors[i] = "body is nested too deeply"
                continue
            rows[i] = n
            if body_labels is not None:
                label_bodies.append(i)
                labels += body_labels
            if body_values is not None:
                value_bodies.append(i)
                values += body_values
            if body_probs is not None:
                group = prob_groups.get(k)
                if group is None:
                    group = prob_groups[k] = ([], [])
                group[0].append(i)
                group[1].extend(body_probs)
        return _finish(rows, errors, label_bodies, labels, value_bodies, values, prob_groups)

    # -- requests --------------------------------------------------------------------------

    @abstractmethod
    def decode_request(self, body: bytes) -> Features:
        """A request body -> named feature columns; DecodeError when it has none."""

    @abstractmethod
    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        """Features -> request bytes laid out like `template_body` (other fields kept).

        A template column missing from `features` is left out of the request (the
        missing-field fault); columns the template lacks are added where the layout allows.
        """


def _finish(rows_list: list[int], errors: dict[int, str], label_bodies: list[int], label_list: list,
            value_bodies: list[int], value_list: list, prob_groups: dict) -> PredictionBatch:
    """Flat per-field lists -> one numpy conversion per field, rows placed by body."""
    m = len(rows_list)
    decoded = np.ones(m, dtype=bool)
    if errors:
        decoded[list(errors)] = False
    rows = np.array(rows_list, dtype=np.int64)
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(rows, out=offsets[1:])
    total = int(offsets[-1])

    has_labels = np.zeros(m, dtype=bool)
    labels = np.zeros(total, dtype=np.int64)
    if label_bodies:
        bodies = np.array(label_bodies, dtype=np.int64)
        has_labels[bodies] = True
        labels[rows_of(bodies, offsets, rows)] = np.array(label_list, dtype=np.int64)

    has_values = np.zeros(m, dtype=bool)
    values = np.full(total, np.nan)
    if value_bodies:
        bodies = np.array(value_bodies, dtype=np.int64)
        has_values[bodies] = True
        values[rows_of(bodies, offsets, rows)] = np.array(value_list, dtype=np.float64)

    n_classes = np.zeros(m, dtype=np.int64)
    width = max((max(k, 2) for k in prob_groups), default=0)
    probabilities = np.full((total, width), np.nan)
    for k, (body_list, flat) in prob_groups.items():
        bodies = np.array(body_list, dtype=np.int64)
        at = rows_of(bodies, offsets, rows)
        block = np.array(flat, dtype=np.float64).reshape(-1, k)
        if k == 1:  # P(class 1) alone: store both classes so every consumer sees k >= 2
            probabilities[at, 0] = 1.0 - block[:, 0]
            probabilities[at, 1] = block[:, 0]
        else:
            probabilities[at, :k] = block
        n_classes[bodies] = max(k, 2)

    return PredictionBatch(decoded, offsets, has_labels, n_classes, has_values,
                           labels, probabilities, values, errors)


def rows_of(bodies: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row indices owned by `bodies` (ascending body order), concatenated, without a Python loop."""
    counts = rows[bodies]
    starts = offsets[bodies]
    total = int(counts.sum())
    # Position within the body: a running index minus where each body's run starts.
    run_starts = np.cumsum(counts) - counts
    return np.repeat(starts - run_starts, counts) + np.arange(total, dtype=np.int64)


from harness.codecs import template  # noqa: E402  (it imports this module)
