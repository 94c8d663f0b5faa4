"""Generic JSON payloads, read through path selectors given on the command line or in a scenario.

Selector syntax (a small subset of JSONPath, parsed here, never evaluated as code):

    $                   the whole body (optional at the start)
    .name  or  name     a key of an object (any characters but . [ ] and whitespace)
    ['odd.key']         a key in quotes (single or double), for keys with those characters
    [3]  [-1]           an element of a list
    [*]                 every element of a list: the selector then yields one value per row

Examples: `outputs[0].data`, `$.predictions[*].score`, `result['class-probs']`.

A spec names what each selector reads, comma-separated:

    label=predictions[*].label,score=predictions[*].p          (responses)
    probabilities=probs                                         (responses)
    features=instances                                          (requests: a table)
    feature.age=rows[*].age,feature.income=rows[*].income      (requests: one column each)

Response roles: `label` (integers), `probabilities` (alias `probs`; one list of k per row),
`score` (alias `value`; a regression value, or a score next to a label). A selected list is
one value per row; a scalar is a single row. For probabilities, a flat list selected through
`[*]` is one P(class 1) per row, and without `[*]` it is a single row of k classes.
`features=` selects a table: a list of row objects or lists, or an object of columns.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harness.codecs.base import (
    Codec,
    DecodeError,
    Features,
    RawPrediction,
    column_to_json,
    dump_json,
    error_message,
    features_from_columns,
    integer_list,
    load_json,
    number_list,
)
from harness.codecs.v1 import columns_to_table, table_to_columns

RESPONSE_ROLES = {"label": "label", "probabilities": "probabilities", "probs": "probabilities",
                  "score": "score", "value": "score"}
_ALL = ("all", None)  # the [*] step

_STEP = re.compile(
    r"""\.?(?P<name>[^.\[\]\s'"]+)"""  # .name (or a bare name first)
    r"""|\[(?P<index>-?\d+)\]"""
    r"""|\[(?P<all>\*)\]"""
    r"""|\[(?P<q>['"])(?P<quoted>.*?)(?P=q)\]"""
)


@dataclass(frozen=True)
class Selector:
    """A parsed path: steps are ("key", name), ("index", i) or ("all", None) for [*]."""

    text: str
    steps: tuple

    @classmethod
    def parse(cls, text: str) -> Selector:
        source = text.strip()
        rest = source[1:] if source.startswith("$") else source
        steps = []
        pos = 0
        while pos < len(rest):
            match = _STEP.match(rest, pos)
            if not match or match.end() == pos:
                raise ValueError(f"selector {text!r}: cannot read {rest[pos:]!r} (see `harness.codecs.generic` for the syntax)")
            if match.group("name") is not None:
                steps.append(("key", match.group("name")))
            elif match.group("index") is not None:
                steps.append(("index", int(match.group("index"))))
            elif match.group("all"):
                steps.append(_ALL)
            else:
                steps.append(("key", match.group("quoted")))
            pos = match.end()
        return cls(source, tuple(steps))

    @property
    def has_wildcard(self) -> bool:
        return _ALL in self.steps

    def select(self, node: Any) -> Any:
        """The selected value; DecodeError naming the selector when the path is not there."""
        return self._walk(node, 0)

    def _walk(self, node: Any, start: int) -> Any:
        for pos in range(start, len(self.steps)):
            kind, arg = self.steps[pos]
            if kind == "all":
                if type(node) is not list:
                    raise DecodeError(f"selector {self.text!r}: [*] needs a list, found {_kind(node)}")
                return [self._walk(item, pos + 1) for item in node]
            if kind == "key":
                if type(node) is not dict or arg not in node:
                    raise DecodeError(f"selector {self.text!r}: no key {arg!r} in {_kind(node)}")
                node = node[arg]
            else:
                if type(node) is not list or not -len(node) <= arg < len(node):
                    raise DecodeError(f"selector {self.text!r}: no element [{arg}] in {_kind(node)}")
                node = node[arg]
        return node


def _kind(node: Any) -> str:
    if type(node) is dict:
        return f"an object with keys {sorted(node)[:8]}"
    if type(node) is list:
        return f"a list of {len(node)}"
    return type(node).__name__


def parse_spec(spec: str | Mapping[str, str]) -> dict[str, Selector]:
    """`label=a[*].b,score=c` (or a mapping) -> {role: Selector}; ValueError names a bad item."""
    items = spec.items() if isinstance(spec, Mapping) else _split_items(spec)
    out: dict[str, Selector] = {}
    for key, text in items:
        key = key.strip()
        if key in RESPONSE_ROLES:
            role = RESPONSE_ROLES[key]
        elif key == "features" or (key.startswith("feature.") and len(key) > len("feature.")):
            role = key
        else:
            raise ValueError(f"selector spec: unknown role {key!r}; expected label, probabilities, score, "
                             f"features or feature.NAME")
        if role in out:
            raise ValueError(f"selector spec: {key!r} given twice")
        out[role] = Selector.parse(text)
    return out


def _split_items(spec: str) -> list[tuple[str, str]]:
    """Split on commas outside brackets and quotes, then on the first '='."""
    items, depth, quote, current = [], 0, None, []
    for ch in spec:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(ch)
    items.append("".join(current))
    out = []
    for item in items:
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not value.strip():
            raise ValueError(f"selector spec: expected ROLE=SELECTOR, got {item.strip()!r}")
        out.append((key, value))
    return out


class GenericCodec(Codec):
    """JSON read through selectors: `GenericCodec(select="label=predictions[*].label")`."""

    name = "generic"
    templated = True  # outputs copy the JSON numbers as they are

    def __init__(self, *, select: str | Mapping[str, str]):
        self.select_spec = select if isinstance(select, str) else ",".join(f"{k}={v}" for k, v in select.items())
        self.selectors = parse_spec(select)
        if not self.selectors:
            raise ValueError("the generic codec needs selectors, e.g. select='label=predictions[*].label'")
        self.response = {r: s for r, s in self.selectors.items() if r in ("label", "probabilities", "score")}
        self.feature_columns = {r[len("feature."):]: s for r, s in self.selectors.items() if r.startswith("feature.")}
        self.table = self.selectors.get("features")
        if self.table is not None and _table_selector(self.table).has_wildcard:
            raise ValueError("selector spec: features= selects a table; [*] may only end it")

    def options(self) -> dict:
        return {"select": self.select_spec}

    # -- responses -------------------------------------------------------------------------

    def _extract_response(self, obj: Any) -> RawPrediction:
        if not self.response:
            raise DecodeError("the generic codec has no response selectors (label=, probabilities=, score=)")
        labels = probabilities = values = n = None
        k = 0
        try:
            if "label" in self.response:
                sel = self.response["label"]
                labels = integer_list(_per_row(sel.select(obj)), f"selector {sel.text!r}")
                n = _agree(n, len(labels), sel)
            if "probabilities" in self.response:
                sel = self.response["probabilities"]
                rows, probabilities, k = _probability_rows(sel.select(obj), sel)
                n = _agree(n, rows, sel)
            if "score" in self.response:
                sel = self.response["score"]
                values = number_list(_per_row(sel.select(obj)), f"selector {sel.text!r}")
                n = _agree(n, len(values), sel)
        except DecodeError:
            message = error_message(obj)
            if message:  # an error body: say so rather than "no key 'predictions'"
                raise DecodeError(message) from None
            raise
        return RawPrediction(n, labels, probabilities, k, values)

    # -- requests --------------------------------------------------------------------------

    def decode_request(self, body: bytes) -> Features:
        if self.table is None and not self.feature_columns:
            raise DecodeError("the generic codec has no request selectors (features=, feature.NAME=)")
        obj = load_json(body)
        columns: dict[str, list] = {}
        if self.table is not None:
            node = _table_selector(self.table).select(obj)
            columns.update(table_to_columns(node, _prefix(self.table), f"selector {self.table.text!r}"))
        for name, sel in self.feature_columns.items():
            columns[name] = _per_row(sel.select(obj))
        return features_from_columns(columns, "generic request")

    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        doc = copy.deepcopy(load_json(template_body))
        own = set(self.feature_columns)
        if self.table is not None:
            sel = _table_selector(self.table)
            table = Features({k: v for k, v in features.columns.items() if k not in own}, features.n)
            doc = _assign(doc, sel.steps, sel.text, columns_to_table(sel.select(doc), table))
        for name, sel in self.feature_columns.items():
            col = features.columns.get(name)
            values = None if col is None else column_to_json(col)
            doc = _set_column(doc, sel, values, features.n)
        return dump_json(doc)


def _per_row(value: Any) -> list:
    """One value per row: a list (single-element lists unwrapped, as from an [n, 1] tensor) or a scalar."""
    if type(value) is not list:
        return [value]
    if value and type(value[0]) is list and all(type(v) is list and len(v) == 1 for v in value):
        return [v[0] for v in value]
    return value


def _probability_rows(value: Any, sel: Selector) -> tuple[int, list, int]:
    if type(value) is not list:
        value = [value]
    if value and all(type(v) is list for v in value):  # rows of k
        k = len(value[0])
        if k == 0 or any(len(v) != k for v in value):
            raise DecodeError(f"selector {sel.text!r}: probability rows must be non-empty and of equal length")
        return len(value), number_list([p for v in value for p in v], f"selector {sel.text!r}"), k
    flat = number_list(value, f"selector {sel.text!r}")
    if sel.has_wildcard:  # one P(class 1) per row
        return len(flat), flat, 1
    return 1, flat, len(flat)  # a single row of k classes


def _agree(n: int | None, rows: int, sel: Selector) -> int:
    if n is not None and rows != n:
        raise DecodeError(f"selector {sel.text!r} gives {rows} rows, another selector {n}")
    return rows


def _table_selector(sel: Selector) -> Selector:
    """`features=rows[*]` and `features=rows` both select the table `rows`."""
    if sel.steps[-1:] == (_ALL,):
        return Selector(sel.text, sel.steps[:-1])
    return sel


def _prefix(sel: Selector) -> str:
    """Name for positional columns of a table: its last key (`instances` -> `instances[j]`)."""
    keys = [arg for kind, arg in sel.steps if kind == "key"]
    return keys[-1] if keys else "features"


def _assign(doc: Any, steps: tuple, text: str, value: Any) -> Any:
    """`doc` with the node at `steps` (no wildcard) replaced by `value`."""
    if not steps:
        return value
    parent = Selector(text, steps[:-1]).select(doc)
    parent[steps[-1][1]] = value
    return doc


def _set_column(doc: Any, sel: Selector, values: list | None, n: int) -> Any:
    """Write one feature column at its selector; None removes it (the missing-field fault)."""
    steps = sel.steps
    if not sel.has_wildcard:
        if values is None:
            parent = Selector(sel.text, steps[:-1]).select(doc) if steps else None
            if type(parent) is dict:
                parent.pop(steps[-1][1], None)
            return doc
        current = sel.select(doc)
        return _assign(doc, steps, sel.text, values if type(current) is list or n != 1 else values[0])
    cut = steps.index(_ALL)
    if _ALL in steps[cut + 1:]:
        raise DecodeError(f"selector {sel.text!r}: a feature column may use [*] only once")
    rows = Selector(sel.text, steps[:cut]).select(doc)
    if type(rows) is not list:
        raise DecodeError(f"selector {sel.text!r}: [*] needs a list")
    if len(rows) != n:  # resize, new rows shaped like the template's last one
        model = rows[-1] if rows else {}
        rows[:] = rows[:n] + [copy.deepcopy(model) for _ in range(n - len(rows))]
    rest = steps[cut + 1:]
    for i, row in enumerate(rows):
        if not rest:
            rows[i] = None if values is None else values[i]
            continue
        parent = Selector(sel.text, rest[:-1]).select(row) if len(rest) > 1 else row
        arg = rest[-1][1]
        if values is None:
            if type(parent) is dict:
                parent.pop(arg, None)
        else:
            parent[arg] = values[i]
    return doc
