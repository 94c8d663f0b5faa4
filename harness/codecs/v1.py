"""TF-Serving / KServe v1 REST payloads.

Request: `{"instances": [...]}` (row format: one entry per row, a dict of named features, a
list, or a scalar) or `{"inputs": ...}` (columnar: a dict of name -> one value per row, or the
rows as a list). A feature holding a list per row becomes columns `name[0]`, `name[1]`, ...;
list rows become `instances[j]` / `inputs[j]`, or `feature_names` when given.

Response: `{"predictions": [...]}` or `{"outputs": ...}`, one entry per row:
- scalars: labels when every one is an integer, otherwise regression values (`scalars`
  forces one reading: "label" or "value");
- lists: class probabilities (a one-element list is a regression value, as TF-Serving
  writes a [n, 1] output);
- dicts: the label, probabilities and score under configured keys (`label_key`,
  `probabilities_key`, `score_key`) or conventional ones (`label`, `probabilities`, `score`, ...).
A columnar `outputs` dict is read like one dict per row.
"""

from __future__ import annotations

import copy
import re
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

LABEL_KEYS = ("label", "labels", "predicted_label", "class", "class_id", "classes")
PROBABILITY_KEYS = ("probabilities", "probability", "probs", "proba", "scores")  # list-valued
SCORE_KEYS = ("score", "value", "prediction", "probability", "scores", "output")  # scalar-valued
SCALAR_READINGS = ("auto", "label", "value")



class V1Codec(Codec):
    """TF-Serving / KServe v1 REST; see the module docstring for how outputs are read."""

    name = "v1"
    templated = True  # outputs copy the JSON numbers as they are

    def __init__(self, *, label_key: str | None = None, probabilities_key: str | None = None,
                 score_key: str | None = None, scalars: str = "auto", feature_names: list[str] | None = None):
        if scalars not in SCALAR_READINGS:
            raise ValueError(f"scalars must be one of {SCALAR_READINGS}, got {scalars!r}")
        self.label_key = label_key
        self.probabilities_key = probabilities_key
        self.score_key = score_key
        self.scalars = scalars
        self.feature_names = list(feature_names) if feature_names is not None else None

    def options(self) -> dict:
        out = {k: getattr(self, k) for k in ("label_key", "probabilities_key", "score_key", "feature_names")
               if getattr(self, k) is not None}
        if self.scalars != "auto":
            out["scalars"] = self.scalars
        return out

    # -- responses -------------------------------------------------------------------------

    def _extract_response(self, obj: Any) -> RawPrediction:
        if type(obj) is dict:
            if "predictions" in obj:
                return self._rows(obj["predictions"], "predictions")
            outputs = obj.get("outputs")
            if type(outputs) is dict:
                return self._columns(outputs)
            if outputs is not None:
                return self._rows(outputs, "outputs")
        raise DecodeError(error_message(obj) or "not a v1 response: no 'predictions' or 'outputs'")

    def _rows(self, rows: Any, where: str) -> RawPrediction:
        if type(rows) is not list:
            raise DecodeError(f"v1 '{where}' is not a list")
        n = len(rows)
        if n == 0:
            return RawPrediction(0)
        kinds = set(map(type, rows))
        if not kinds & {list, dict}:  # scalars (a string among them fails with a clear message)
            return self._scalars(rows, where)
        if kinds == {list}:
            return _list_rows(rows, where)
        if kinds == {dict}:
            columns = {}
            for key in rows[0]:
                try:
                    columns[key] = [row[key] for row in rows]
                except KeyError:
                    raise DecodeError(f"v1 '{where}': key {key!r} is missing from some rows") from None
            return self._columns(columns, where)
        raise DecodeError(f"v1 '{where}' mixes row types: {sorted(t.__name__ for t in kinds)}")

    def _scalars(self, values: list, where: str) -> RawPrediction:
        reading = self.scalars
        if reading == "auto":
            reading = "label" if set(map(type, values)) <= {int, bool} else "value"
        if reading == "label":
            return RawPrediction(len(values), labels=integer_list(values, f"v1 '{where}'"))
        return RawPrediction(len(values), values=number_list(values, f"v1 '{where}'"))

    def _columns(self, columns: dict, where: str = "outputs") -> RawPrediction:
        """Named per-row outputs (from dict rows or a columnar `outputs`)."""
        lengths = {len(v) for v in columns.values() if type(v) is list}
        if any(type(v) is not list for v in columns.values()) or len(lengths) > 1:
            raise DecodeError(f"v1 '{where}': outputs must be lists with one entry per row")
        n = lengths.pop() if lengths else 0

        def find(option: str, conventional: tuple[str, ...], want_list: bool) -> str | None:
            wanted = getattr(self, option)
            if wanted is not None:
                if wanted not in columns:
                    raise DecodeError(f"v1 '{where}' has no {wanted!r} ({option}); keys are {sorted(columns)}")
                return wanted
            for key in conventional:
                values = columns.get(key)
                if values and (type(values[0]) is list) == want_list:
                    return key
            return None

        label_key = find("label_key", LABEL_KEYS, want_list=False)
        prob_key = find("probabilities_key", PROBABILITY_KEYS, want_list=True)
        score_key = find("score_key", tuple(k for k in SCORE_KEYS if k != label_key), want_list=False)
        if not (label_key or prob_key or score_key):
            if len(columns) == 1:  # a single unnamed output: read it like plain predictions
                (key, values), = columns.items()
                return self._rows(values, f"{where}.{key}")
            raise DecodeError(f"v1 '{where}': none of the keys {sorted(columns)} is a label, "
                              f"probabilities or score; name them with label_key=, probabilities_key=, score_key=")
        labels = probabilities = values = None
        k = 0
        if label_key:
            labels = integer_list(columns[label_key], f"v1 '{where}.{label_key}'")
        if prob_key:
            probs = _list_rows(columns[prob_key], f"{where}.{prob_key}", single_is_value=False)
            probabilities, k = probs.probabilities, probs.k
        if score_key:
            values = number_list(columns[score_key], f"v1 '{where}.{score_key}'")
        return RawPrediction(n, labels, probabilities, k, values)

    # -- requests --------------------------------------------------------------------------

    def decode_request(self, body: bytes) -> Features:
        key, node = _request_node(load_json(body))
        columns = table_to_columns(node, key, f"v1 '{key}'")
        if self.feature_names is not None:
            columns = _rename_positional(columns, key, self.feature_names)
        return features_from_columns(columns, "v1 request")

    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        template = load_json(template_body)
        key, node = _request_node(template)
        if self.feature_names is not None:
            rename = {name: f"{key}[{j}]" for j, name in enumerate(self.feature_names)}
            features = Features({rename.get(k, k): v for k, v in features.columns.items()}, features.n)
        payload = copy.copy(template)  # other fields (signature_name, parameters) are kept
        payload[key] = columns_to_table(node, features)
        return dump_json(payload)


def _list_rows(rows: list, where: str, single_is_value: bool = True) -> RawPrediction:
    """Rows of k numbers each: probabilities (or, for k = 1, regression values)."""
    k = len(rows[0]) if rows and type(rows[0]) is list else 0
    if not all(type(r) is list and len(r) == k for r in rows):
        raise DecodeError(f"v1 '{where}': rows must be lists of the same length")
    flat = number_list([v for r in rows for v in r], f"v1 '{where}'")
    if k == 1 and single_is_value:
        return RawPrediction(len(rows), values=flat)
    if k == 0:
        raise DecodeError(f"v1 '{where}': empty probability rows")
    return RawPrediction(len(rows), probabilities=flat, k=k)


def _request_node(payload: Any) -> tuple[str, Any]:
    if type(payload) is dict:
        for key in ("instances", "inputs"):
            if key in payload:
                return key, payload[key]
    raise DecodeError("not a v1 request: no 'instances' or 'inputs'")


def _rename_positional(columns: dict, prefix: str, names: list[str]) -> dict:
    positional = [f"{prefix}[{j}]" for j in range(len(names))]
    if [c for c in columns if c in positional] != positional or len(columns) != len(names):
        raise DecodeError(f"feature_names has {len(names)} names but the rows have {len(columns)} columns")
    return dict(zip(names, columns.values()))


# ---------------------------------------------------------------------------------------------
# JSON tables: rows of dicts, rows of lists, rows of scalars, or a dict of columns.
# Shared with the generic codec.

_POSITIONAL = re.compile(r"^(.*)\[(\d+)\]$")


def table_to_columns(node: Any, prefix: str, what: str) -> dict[str, list]:
    """Named columns (JSON values) from a tabular JSON node; `prefix` names positional columns."""
    columns: dict[str, list] = {}
    if type(node) is dict:  # columnar
        for name, values in node.items():
            if type(values) is not list:
                raise DecodeError(f"{what}: column {name!r} is not a list of values")
            _add_column(columns, name, values, what)
        return columns
    if type(node) is not list:
        raise DecodeError(f"{what} is not a list of rows or a dict of columns")
    kinds = set(map(type, node))
    if kinds == {dict}:
        names = list(dict.fromkeys(k for row in node for k in row))  # every key, first-seen order
        for name in names:  # a key missing from a row reads as null (NaN)
            _add_column(columns, name, [row.get(name) for row in node], what)
    elif node:
        _add_column(columns, prefix, node, what)  # list rows -> prefix[j]; scalar rows -> prefix
    return columns


def _add_column(columns: dict, name: str, values: list, what: str) -> None:
    kinds = set(map(type, values))
    if list not in kinds:
        columns[name] = values
        return
    width = len(values[0]) if type(values[0]) is list else -1
    if kinds != {list} or any(len(v) != width for v in values):
        raise DecodeError(f"{what}: {name!r} mixes lists of different lengths or lists and scalars")
    for j in range(width):
        columns[f"{name}[{j}]"] = [v[j] for v in values]


def _grouped(columns: dict[str, list]) -> dict[str, list | list[list]]:
    """Columns by the key they go under: `x[0]`, `x[1]` regroup as one per-row list under `x`."""
    groups: dict[str, Any] = {}
    for name, values in columns.items():
        match = _POSITIONAL.match(name)
        if match:
            groups.setdefault(match.group(1), {})[int(match.group(2))] = values
        else:
            groups[name] = values
    out = {}
    for key, value in groups.items():
        if type(value) is dict:  # positional members: zip them into one list per row
            members = [value[j] for j in sorted(value)]
            out[key] = [list(row) for row in zip(*members)]
        else:
            out[key] = value
    return out


def columns_to_table(template: Any, features: Features) -> Any:
    """Features written back in the template node's layout."""
    columns = {name: column_to_json(col) for name, col in features.columns.items()}
    n = features.n
    if type(template) is dict:
        return _grouped(columns)
    kinds = set(map(type, template)) if type(template) is list else set()
    if kinds == {dict}:
        groups = _grouped(columns)
        keys = list(groups)
        return [dict(zip(keys, row)) for row in zip(*groups.values())] if keys else [{} for _ in range(n)]
    values = list(columns.values())
    if kinds and list not in kinds and len(values) == 1:  # scalar rows stay scalar rows
        return values[0]
    return [list(row) for row in zip(*values)] if values else [[] for _ in range(n)]
