"""Payload faults: what a faulted request looks like. Semantics and defaults: docs/faults.md.

Feature-level faults work on the decoded `Features` (named columns) and are re-encoded by the
request's codec into its own layout, so one fault works the same on v2, v1 and generic JSON.
They copy what they change and keep every other cell as it was decoded: an integer column
that receives a NaN or a string becomes an object column (ints stay ints in the JSON) rather
than a float column (which would rewrite every untouched 3 as 3.0).

Byte-level faults (`level = "bytes"`) produce bodies no codec would write: invalid JSON,
oversize bodies, invalid UTF-8, shapes that disagree with their data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.codecs.base import Features, dump_json, load_json
from harness.codecs.generic import Selector

from .base import PayloadFault, register

_POSITIONAL = re.compile(r"^(.*)\[(\d+)\]$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# ---------------------------------------------------------------------------------------------
# Column helpers


def is_numeric(col: np.ndarray) -> bool:
    return col.dtype.kind in "iuf"


def is_text(col: np.ndarray) -> bool:
    """An object column of strings (nulls allowed): what a categorical feature decodes to."""
    return col.dtype == object and any(type(v) is str for v in col) and all(type(v) in (str, type(None)) for v in col)


def resolve(features: Features, selectors: tuple[str, ...]) -> list[str]:
    """Column names for selectors: an exact name, `#index` (in decode order), or the name of a
    tensor / list feature standing for all its columns (`x` -> `x[0]`, `x[1]`, ...).
    Selectors that match nothing in this request are skipped."""
    names = features.names
    out: dict[str, None] = {}
    for selector in selectors:
        if selector.startswith("#"):
            j = int(selector[1:])
            if -len(names) <= j < len(names):
                out[names[j]] = None
        elif selector in features.columns:
            out[selector] = None
        else:
            for name in names:
                match = _POSITIONAL.match(name)
                if match and match.group(1) == selector:
                    out[name] = None
    return list(out)


def pick_rows(n: int, fraction: float, rng: np.random.Generator, eligible: np.ndarray | None = None) -> np.ndarray:
    """A boolean row mask: `fraction` of the eligible rows (at least one when any is eligible),
    chosen at random; all of them when fraction is 1 (no draw taken)."""
    mask = np.ones(n, dtype=bool) if eligible is None else eligible.copy()
    m = int(mask.sum())
    if m == 0 or fraction >= 1.0:
        return mask
    # The k smallest of m uniforms: a uniform k-subset, cheaper than rng.choice(replace=False).
    chosen = np.flatnonzero(mask)[np.argsort(rng.random(m))[: max(1, round(fraction * m))]]
    out = np.zeros(n, dtype=bool)
    out[chosen] = True
    return out


def put(col: np.ndarray, rows: np.ndarray, values: Any) -> np.ndarray:
    """A copy of `col` with `values` (one scalar, or one per selected row) in `rows`.

    The column keeps its dtype when the new values fit it (floats into a float column, ints
    into an int column); otherwise it becomes an object column so untouched cells stay exact.
    """
    k = int(rows.sum())
    items = values.tolist() if isinstance(values, np.ndarray) else list(values) if isinstance(values, list) else [values] * k
    types = set(map(type, items))
    if col.dtype.kind == "f" and types <= {float}:
        out = col.copy()
    elif col.dtype.kind == "i" and types <= {int} and all(_INT64_MIN <= v <= _INT64_MAX for v in items):
        out = col.copy()
    else:
        out = col.astype(object)
    holder = np.empty(k, dtype=object) if out.dtype == object else None
    if holder is not None:  # element-wise, so numpy does not try to broadcast lists or strings
        holder[:] = items
        out[rows] = holder
    else:
        out[rows] = items
    return out


def put_numbers(col: np.ndarray, rows: np.ndarray, new: np.ndarray) -> np.ndarray:
    """`put` for computed floats: an int column stays int when every new value is whole."""
    if col.dtype.kind in "iu" and np.all(np.isfinite(new)) and np.all(new == np.round(new)) \
            and (new.size == 0 or (new.min() >= _INT64_MIN and new.max() <= _INT64_MAX)):
        out = col.copy()
        out[rows] = new.astype(np.int64)
        return out
    return put(col, rows, new.astype(np.float64))


def as_floats(col: np.ndarray) -> np.ndarray:
    """A column as float64, NaN where a value is not a number (after a wrong_type, say)."""
    if col.dtype.kind in "iuf":
        return col.astype(np.float64)
    return np.array([v if type(v) in (int, float) else np.nan for v in col.tolist()], dtype=np.float64)


def replaced(features: Features, changed: Mapping[str, np.ndarray | None]) -> Features:
    """New Features with changed columns (None drops one); the same object when nothing changed."""
    if not changed:
        return features
    columns = {k: v for k, v in {**features.columns, **changed}.items() if v is not None}
    return Features(columns, features.n)


# ---------------------------------------------------------------------------------------------
# Cell faults: a change to some cells of some columns


@dataclass(frozen=True, kw_only=True)
class CellFault(PayloadFault):
    """Changes `fraction` of the rows of each selected column (rows drawn per column).

    Subclasses say which columns are affected by default (`default_columns`) and how selected
    cells change (`change`); a column with nothing to change returns None.
    """

    def default_columns(self, features: Features) -> list[str]:
        return [name for name, col in features.columns.items() if is_numeric(col)]

    def rows(self, features: Features, name: str, rng: np.random.Generator) -> np.ndarray:
        return pick_rows(features.n, self.fraction, rng)

    def change(self, col: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        raise NotImplementedError  # pragma: no cover

    def apply(self, features: Features, rng: np.random.Generator) -> Features:
        names = resolve(features, self.fields) if self.fields else self.default_columns(features)
        changed = {}
        for name in names:
            rows = self.rows(features, name, rng)
            if rows.any():
                new = self.change(features.columns[name], rows, rng)
                if new is not None:
                    changed[name] = new
        return replaced(features, changed)


MECHANISMS = ("mcar", "mar", "mnar")


@dataclass(frozen=True, kw_only=True)
class MissingnessFault(CellFault):
    """Which rows go missing, as in Jenga: completely at random (`mcar`), depending on another
    feature (`mar`, `depends_on`), or on the value itself (`mnar`).

    Under mar/mnar a row is eligible when its deciding value is on `side` of a cut: `threshold`
    when given (a string threshold means "equals"), else the `quantile` of the deciding values
    in this request. "above" is `value >= cut`, "below" is `value < cut`, so the two split the
    rows; NaN never qualifies. Then `fraction` of the eligible rows are affected.
    """

    mechanism: str = "mcar"
    depends_on: str | None = None  # mar: the feature (name or #index) whose value decides
    quantile: float = 0.5
    threshold: float | str | None = None
    side: str = "above"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._choice("mechanism", MECHANISMS)
        self._choice("side", ("above", "below"))
        self._number("quantile", 0.0, 1.0)
        if self.mechanism == "mar":
            if not isinstance(self.depends_on, str) or not self.depends_on or self.depends_on.startswith("$"):
                self._bad("depends_on", "must name the deciding feature (or '#index') when mechanism is mar")
        elif self.depends_on is not None:
            self._bad("depends_on", f"is only used when mechanism is mar, not {self.mechanism}")
        if not isinstance(self.threshold, str):
            self._number("threshold", optional=True)

    def eligible(self, features: Features, name: str) -> np.ndarray:
        if self.mechanism == "mcar":
            return np.ones(features.n, dtype=bool)
        if self.mechanism == "mnar":
            decider = features.columns[name]
        else:
            found = resolve(features, (self.depends_on,))
            if len(found) != 1:  # the deciding feature is not in this request: nothing qualifies
                return np.zeros(features.n, dtype=bool)
            decider = features.columns[found[0]]
        if isinstance(self.threshold, str):
            return np.array([v == self.threshold for v in decider.tolist()], dtype=bool)
        values = as_floats(decider)
        if self.threshold is not None:
            cut = self.threshold
        elif np.isnan(values).all():
            return np.zeros(features.n, dtype=bool)
        else:
            cut = float(np.nanquantile(values, self.quantile))
        with np.errstate(invalid="ignore"):
            return values >= cut if self.side == "above" else values < cut

    def rows(self, features: Features, name: str, rng: np.random.Generator) -> np.ndarray:
        return pick_rows(features.n, self.fraction, rng, self.eligible(features, name))


@register
@dataclass(frozen=True, kw_only=True)
class Nan(MissingnessFault):
    """Selected cells become NaN (the bare `NaN` token in JSON)."""

    name: ClassVar[str] = "nan"

    def change(self, col, rows, rng):
        return put(col, rows, float("nan"))


@register
@dataclass(frozen=True, kw_only=True)
class Null(MissingnessFault):
    """Selected cells become JSON null."""

    name: ClassVar[str] = "null"

    def change(self, col, rows, rng):
        return put(col, rows, None)


@register
@dataclass(frozen=True, kw_only=True)
class Inf(CellFault):
    """Selected cells become +Infinity, -Infinity, or either at random per cell."""

    name: ClassVar[str] = "inf"

    sign: str = "+"  # "+", "-" or "random"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._choice("sign", ("+", "-", "random"))

    def change(self, col, rows, rng):
        if self.sign == "random":
            return put(col, rows, np.where(rng.random(int(rows.sum())) < 0.5, np.inf, -np.inf))
        return put(col, rows, np.inf if self.sign == "+" else -np.inf)


@register
@dataclass(frozen=True, kw_only=True)
class MissingField(MissingnessFault):
    """Drop a feature (a v2 input, a v1 key, a generic feature) from the whole request, or the
    nodes at JSON paths (`$.parameters`). Under mar/mnar the field is dropped when any row is
    eligible. The codecs cannot leave a key out of some rows only: use `null` for that."""

    name: ClassVar[str] = "missing_field"
    paths: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        kinds = {s.startswith("$") for s in self.fields}
        if len(kinds) > 1:
            self._bad("fields", "must be all feature names or all JSON paths, not both")
        if self.fraction != 1.0:
            self._bad("fraction", "must be 1: a field is dropped from every row of the request")

    @property
    def on_bytes(self) -> bool:
        return bool(self.fields) and self.fields[0].startswith("$")

    def apply(self, features, rng):
        names = resolve(features, self.fields) if self.fields else self.default_columns(features)
        return replaced(features, {name: None for name in names if self.eligible(features, name).any()})

    def apply_bytes(self, body, rng):
        doc = load_json(body)
        found = False
        for selector in self.fields:
            for parent, key in locate(doc, Selector.parse(selector).steps):
                del parent[key]  # located right to left, so list indices stay valid
                found = True
        return dump_json(doc) if found else body


_TYPES = ("string", "float", "bool")


@register
@dataclass(frozen=True, kw_only=True)
class WrongType(CellFault):
    """Selected cells get the wrong JSON type: `string` ("3.5" for 3.5), `float` (3.0 for an
    integer 3; a numeric string becomes its number), or `bool` (true/false)."""

    name: ClassVar[str] = "wrong_type"

    to: str = "string"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._choice("to", _TYPES)

    def default_columns(self, features):
        if self.to == "float":  # a float where an int is expected
            return [name for name, col in features.columns.items() if col.dtype.kind in "iu"]
        return super().default_columns(features)

    def change(self, col, rows, rng):
        old = col[rows].tolist()
        new = [self._convert(v) for v in old]
        if all(a is b for a, b in zip(old, new)):  # _convert returns a value it leaves as it is
            return None
        out = col.astype(object)
        holder = np.empty(len(new), dtype=object)
        holder[:] = new
        out[rows] = holder
        return out

    def _convert(self, v: Any) -> Any:
        if v is None:
            return None
        if self.to == "string":
            return v if type(v) is str else str(v)
        if self.to == "bool":
            return bool(v) if type(v) in (int, float) else v
        if type(v) is int:
            return float(v)
        if type(v) is str:
            try:
                return float(v)
            except ValueError:
                return v
        return v


@register
@dataclass(frozen=True, kw_only=True)
class OutOfRange(CellFault):
    """Selected cells are multiplied by `factor`, or set to `value` when given."""

    name: ClassVar[str] = "out_of_range"

    factor: float = 100.0
    value: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("factor")
        self._number("value", optional=True)

    def change(self, col, rows, rng):
        if not is_numeric(col):
            return None
        if self.value is not None:
            new = np.full(int(rows.sum()), self.value)
        else:
            new = col[rows].astype(np.float64) * self.factor
        return put_numbers(col, rows, new)


@register
@dataclass(frozen=True, kw_only=True)
class Noise(CellFault):
    """Gaussian noise with standard deviation `sigma` times the column's scale in this request:
    its standard deviation (two or more finite values), else its mean absolute value, else 1.
    Integer columns are rounded back to integers."""

    name: ClassVar[str] = "noise"

    sigma: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("sigma", 0.0, lo_open=True)

    def change(self, col, rows, rng):
        if not is_numeric(col):
            return None
        x = col.astype(np.float64)
        finite = x[np.isfinite(x)]
        scale = float(finite.std()) if finite.size >= 2 else 0.0
        if scale == 0.0:
            scale = float(np.abs(finite).mean()) if finite.size else 0.0
        if scale == 0.0:
            scale = 1.0
        new = x[rows] + rng.normal(0.0, self.sigma * scale, int(rows.sum()))
        return put_numbers(col, rows, np.rint(new) if col.dtype.kind in "iu" else new)


@register
@dataclass(frozen=True, kw_only=True)
class SwapFields(PayloadFault):
    """Swap the values of two columns in the selected rows: the two `fields`, or two numeric
    columns chosen at random per request (a column-order mix-up)."""

    name: ClassVar[str] = "swap_fields"

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.fields) not in (0, 2):
            self._bad("fields", "must name exactly two columns (or none: two numeric columns at random)")

    def apply(self, features, rng):
        if self.fields:
            a, b = (resolve(features, (s,)) for s in self.fields)
            if len(a) != 1 or len(b) != 1 or a == b:
                return features
            a, b = a[0], b[0]
        else:
            numeric = [name for name, col in features.columns.items() if is_numeric(col)]
            if len(numeric) < 2:
                return features
            a, b = (numeric[j] for j in rng.choice(len(numeric), size=2, replace=False))
        rows = pick_rows(features.n, self.fraction, rng)
        x, y = features.columns[a], features.columns[b]
        if rows.all():
            return replaced(features, {a: y, b: x})
        return replaced(features, {a: put(x, rows, y[rows]), b: put(y, rows, x[rows])})


UNSEEN = "__unseen__"


@register
@dataclass(frozen=True, kw_only=True)
class CategoryShift(CellFault):
    """Selected categorical cells change category: through `mapping` (old -> new; unmapped
    values stay), or to `value`, or by default to a category never seen: "__unseen__" for
    strings, one more than the column's largest value for integer codes."""

    name: ClassVar[str] = "category_shift"

    value: str | int | None = None
    mapping: Mapping[Any, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, (str, int, float))):
            self._bad("value", "must be a string or a number")
        if self.mapping is not None:
            if not isinstance(self.mapping, Mapping) or not self.mapping:
                self._bad("mapping", "must be a non-empty mapping of old category to new")
            object.__setattr__(self, "mapping", dict(self.mapping))

    def __hash__(self) -> int:  # mapping is a dict, which cannot be hashed; equal faults share these
        return hash((self.name, self.ledger_label, self.value))

    def default_columns(self, features):
        return [name for name, col in features.columns.items() if is_text(col)]

    def change(self, col, rows, rng):
        old = col[rows].tolist()
        if self.mapping is not None:
            new = [self.mapping.get(v, v) for v in old]
        elif self.value is not None:
            new = [self.value] * len(old)
        elif col.dtype.kind in "iu":
            new = [int(col.max()) + 1] * len(old)
        elif is_text(col):
            new = [UNSEEN] * len(old)
        else:
            return None
        if new == old:
            return None
        return put(col, rows, new)


# Characters that break naive text handling: replacement char, NUL, zero-width space, a lone
# surrogate (valid JSON as an escape, invalid Unicode), mojibake, right-to-left override.
BROKEN = ("\ufffd", "\x00", "\u200b", "\ud800", "\u00c3\u00a9", "\u202e")
# Byte sequences that are not UTF-8: a stray byte, a bad continuation, an encoded surrogate,
# a truncated sequence, an overlong encoding.
INVALID_UTF8 = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf")
_STRING_LITERAL = re.compile(rb'"(?:[^"\\]|\\.)*"')


@register
@dataclass(frozen=True, kw_only=True)
class BrokenChars(CellFault):
    """Selected text cells get a character that breaks naive text handling (see BROKEN),
    inserted at a random position; a named numeric column becomes such a string. With
    `raw=true`, invalid UTF-8 bytes go into one string literal of the body instead."""

    name: ClassVar[str] = "broken_chars"

    raw: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.raw, bool):
            self._bad("raw", "must be true or false")
        if self.raw and self.fields:
            self._bad("fields", "are for text features; with raw=true a random string of the body is broken")

    @property
    def on_bytes(self) -> bool:
        return self.raw

    def default_columns(self, features):
        return [name for name, col in features.columns.items() if is_text(col)]

    def change(self, col, rows, rng):
        old = col[rows].tolist()
        if all(v is None for v in old):
            return None
        new = []
        for v in old:
            if v is None:
                new.append(None)
                continue
            text = v if type(v) is str else str(v)
            at = int(rng.integers(0, len(text) + 1))
            new.append(text[:at] + BROKEN[int(rng.integers(len(BROKEN)))] + text[at:])
        return put(col, rows, new)

    def apply_bytes(self, body, rng):
        literals = list(_STRING_LITERAL.finditer(body))
        if not literals:
            return body
        at = literals[int(rng.integers(len(literals)))].start() + 1  # just inside the quote: never splits an escape
        return body[:at] + INVALID_UTF8[int(rng.integers(len(INVALID_UTF8)))] + body[at:]


@register
@dataclass(frozen=True, kw_only=True)
class EmptyTensor(PayloadFault):
    """Without fields: every input emptied, a batch of 0 rows (v2 shapes [0] / [0, F], v1
    `instances: []`). With JSON paths: each selected node becomes empty ([], {} or "") and
    everything else, declared shapes included, stays as it was."""

    name: ClassVar[str] = "empty_tensor"
    paths: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(not s.startswith("$") for s in self.fields):
            self._bad("fields", "must be JSON paths (e.g. '$.inputs[0].data'); without fields every input is emptied")

    @property
    def on_bytes(self) -> bool:
        return bool(self.fields)

    def apply(self, features, rng):
        if features.n == 0:
            return features
        return Features({name: col[:0] for name, col in features.columns.items()}, 0)

    def apply_bytes(self, body, rng):
        doc = load_json(body)
        found = False
        for selector in self.fields:
            for parent, key in locate(doc, Selector.parse(selector).steps):
                node = parent[key]
                parent[key] = {} if type(node) is dict else "" if type(node) is str else []
                found = True
        return dump_json(doc) if found else body


@register
@dataclass(frozen=True, kw_only=True)
class ShapeMismatch(PayloadFault):
    """Rows get `delta` more values (copies of the row's last value) or |delta| fewer.

    v2 (`inputs` with shapes): each selected input (`fields` = input names, default all) is
    re-laid row by row and its shape updated, [n, F] -> [n, F + delta], a consistent tensor of
    the wrong width; with `keep_shape` the declared shape is left as it was, so it disagrees
    with the data. v1 (`instances` / `inputs`): `fraction` of the list rows (or list values of
    the selected keys) change, a ragged batch unless fraction is 1. JSON paths: the selected
    list is resized (its rows, if it is a list of lists).
    """

    name: ClassVar[str] = "shape_mismatch"
    level: ClassVar[str] = "bytes"
    paths: ClassVar[bool] = True

    delta: int = 1
    keep_shape: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._number("delta", integer=True)
        if self.delta == 0:
            self._bad("delta", "must not be 0")
        if not isinstance(self.keep_shape, bool):
            self._bad("keep_shape", "must be true or false")

    def apply_bytes(self, body, rng):
        doc = load_json(body)
        paths = [s for s in self.fields if s.startswith("$")]
        names = tuple(s for s in self.fields if not s.startswith("$"))
        changed = False
        for selector in paths:
            for parent, key in locate(doc, Selector.parse(selector).steps):
                node = parent[key]
                if type(node) is list and node and all(type(r) is list for r in node):
                    changed |= self._rows(node, rng)
                elif type(node) is list:
                    parent[key] = self._resize(node)
                    changed = True
        if not paths and type(doc) is dict:
            inputs = doc.get("inputs")
            if type(inputs) is list and inputs and all(type(i) is dict and "shape" in i for i in inputs):
                changed = any([self._v2_input(item) for item in inputs if not names or item.get("name") in names])
            else:
                changed = self._v1(doc, names, rng)
        return dump_json(doc) if changed else body

    def _resize(self, row: list) -> list:
        if self.delta > 0:
            return row + [row[-1] if row else 0] * self.delta
        return row[: max(0, len(row) + self.delta)]

    def _rows(self, rows: list, rng) -> bool:
        """Resize `fraction` of `rows` (lists) in place."""
        mask = pick_rows(len(rows), self.fraction, rng)
        for i in np.flatnonzero(mask).tolist():
            rows[i] = self._resize(rows[i])
        return bool(mask.any())

    def _v2_input(self, item: dict) -> bool:
        shape, data = item.get("shape"), item.get("data")
        if type(shape) is not list or not shape or type(shape[0]) is not int or type(data) is not list:
            return False
        flat = _flatten(data)
        n = shape[0]
        if n <= 0 or len(flat) % n:
            return False
        width = len(flat) // n
        rows = [self._resize(flat[i * width:(i + 1) * width]) for i in range(n)]
        item["data"] = [v for row in rows for v in row]
        if not self.keep_shape:
            item["shape"] = [n, max(0, width + self.delta)]
        return True

    def _v1(self, doc: dict, names: tuple[str, ...], rng) -> bool:
        key = "instances" if "instances" in doc else "inputs" if "inputs" in doc else None
        node = doc.get(key) if key else None
        if type(node) is list:
            if node and all(type(r) is list for r in node):
                return self._rows(node, rng)
            if node and all(type(r) is dict for r in node):
                keys = names or tuple(k for k, v in node[0].items() if type(v) is list)
                mask = pick_rows(len(node), self.fraction, rng)
                hit = False
                for i in np.flatnonzero(mask).tolist():
                    for k in keys:
                        if type(node[i].get(k)) is list:
                            node[i][k] = self._resize(node[i][k])
                            hit = True
                return hit
        elif type(node) is dict:  # columnar: name -> one value per row
            hit = False
            for k, values in node.items():
                if (not names or k in names) and type(values) is list and values and all(type(r) is list for r in values):
                    hit |= self._rows(values, rng)
            return hit
        return False


def _flatten(data: list) -> list:
    if not data or type(data[0]) is not list:
        return data
    return [v for part in data for v in _flatten(part)]


PAD_KEY = "_shadowline_padding"


@register
@dataclass(frozen=True, kw_only=True)
class Oversize(PayloadFault):
    """The body grows to at least `size_bytes`: a padding string under a new top-level key
    (`pad: field`, the JSON stays valid) or trailing whitespace (`pad: whitespace`, also valid
    JSON). A body that is not a JSON object is padded with whitespace."""

    name: ClassVar[str] = "oversize"
    level: ClassVar[str] = "bytes"

    size_bytes: int = 5 * 1024 * 1024  # above common limits: 1 MiB (nginx, aiohttp), 4 MiB (gRPC)
    pad: str = "field"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._no_fields()
        self._number("size_bytes", 1, integer=True)
        self._choice("pad", ("field", "whitespace"))

    def apply_bytes(self, body, rng):
        missing = self.size_bytes - len(body)
        if missing <= 0:
            return body
        stripped = body.rstrip()
        if self.pad == "field" and stripped.lstrip().startswith(b"{") and stripped.endswith(b"}"):
            empty = stripped[:-1].rstrip().endswith(b"{")
            head = stripped[:-1] + (b'"' if empty else b',"') + PAD_KEY.encode() + b'":"'
            return head + b"x" * max(0, self.size_bytes - len(head) - 2) + b'"}'
        return body + b" " * missing


MALFORMATIONS = ("truncate", "unclosed", "trailing_comma", "single_quotes")


@register
@dataclass(frozen=True, kw_only=True)
class MalformedJson(PayloadFault):
    """A body that is not valid JSON, sent with a correct Content-Length: `truncate` (cut in
    the middle half), `unclosed` (the last closing bracket removed), `trailing_comma` (a comma
    before it), `single_quotes` (every " becomes '), or `random` (one of them per request)."""

    name: ClassVar[str] = "malformed_json"
    level: ClassVar[str] = "bytes"

    how: str = "truncate"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._no_fields()
        self._choice("how", (*MALFORMATIONS, "random"))

    def apply_bytes(self, body, rng):
        how = self.how if self.how != "random" else MALFORMATIONS[int(rng.integers(len(MALFORMATIONS)))]
        text = body.rstrip()  # trailing whitespace would let a cut body stay valid
        if len(text) < 2:
            return body
        if how == "truncate":
            return text[: int(rng.integers(len(text) // 4, 3 * len(text) // 4)) or 1]
        if how == "unclosed":
            return text[:-1]
        if how == "trailing_comma":
            return text[:-1] + b"," + text[-1:]
        out = text.replace(b'"', b"'")
        return out if out != text else body


# ---------------------------------------------------------------------------------------------
# JSON paths


def locate(doc: Any, steps: tuple) -> list[tuple[Any, Any]]:
    """(parent, key) of every node a path selects, rightmost first so deleting list elements in
    that order keeps the other indices valid. Missing keys and indices select nothing."""
    out: list[tuple[Any, Any]] = []

    def walk(node: Any, pos: int) -> None:
        kind, arg = steps[pos]
        last = pos == len(steps) - 1
        if kind == "all":
            keys = range(len(node)) if type(node) is list else ()
        elif kind == "key":
            keys = (arg,) if type(node) is dict and arg in node else ()
        else:
            keys = (arg % len(node),) if type(node) is list and -len(node) <= arg < len(node) else ()
        for key in keys:
            if last:
                out.append((node, key))
            else:
                walk(node[key], pos + 1)

    if steps:
        walk(doc, 0)
    out.reverse()
    return out


__all__ = [
    "BrokenChars", "CategoryShift", "CellFault", "EmptyTensor", "Inf", "MalformedJson", "MissingField",
    "MissingnessFault", "Nan", "Noise", "Null", "OutOfRange", "Oversize", "ShapeMismatch", "SwapFields",
    "WrongType",
]
