"""Open Inference Protocol v2 (KServe v2, Triton, MLServer) REST payloads.

Response: `{"outputs": [{"name", "datatype", "shape", "data"}, ...]}`, data row-major, flat
or nested. Which output is what (the defaults when not named):
- label: an integer or BOOL output with one value per row (shape [n] or [n, 1]);
- probabilities: a float output of shape [n, k], k > 1;
- score: a float output with one value per row (a regression value, or a score next to a label).
When several outputs fit one role, a conventional name decides (`label`, `probabilities`,
`score`, ...); otherwise the codec asks for the output to be named. BYTES outputs are not
predictions and are ignored.

Request: `{"inputs": [...]}`, either one input per feature (shape [n] or [n, 1]) or a 2-D
tensor [n, F] whose columns are named `<input>[i]`, or `feature_names` when given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    short,
)

INTEGER_DATATYPES = frozenset(("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"))
FLOAT_DATATYPES = frozenset(("FP16", "BF16", "FP32", "FP64"))
NUMERIC_DATATYPES = INTEGER_DATATYPES | FLOAT_DATATYPES

# Tie-breakers when several outputs fit a role (lower case).
LABEL_NAMES = ("label", "labels", "predicted_label", "class", "classes", "class_id", "prediction", "predictions")
PROBABILITY_NAMES = ("probabilities", "probability", "probs", "proba", "predict_proba", "scores")
SCORE_NAMES = ("score", "scores", "value", "prediction", "predictions", "output", "y")
_MAX_PLANS = 1000  # distinct output layouts remembered; real traffic has one or two


@dataclass(frozen=True)
class _Role:
    index: int  # position in the outputs list
    name: str
    width: int  # values per row
    what: str = ""  # how error messages name it (built once, not per body)

    def __post_init__(self) -> None:
        object.__setattr__(self, "what", f"v2 output {self.name!r}")


@dataclass(frozen=True)
class _Plan:
    """Which output plays which role, for one output layout (cached: most bodies share one)."""

    label: _Role | None
    probabilities: _Role | None
    score: _Role | None
    error: str | None = None  # this layout cannot be decoded, and why
    k: int = 0  # probability columns
    roles: tuple[_Role, ...] = ()  # the roles present, in the order above

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", self.probabilities.width if self.probabilities else 0)
        object.__setattr__(self, "roles", tuple(r for r in (self.label, self.probabilities, self.score) if r))


def _row_width(shape: Any) -> int | None:
    """Values per row of a [n] or [n, k] shape; None for anything else (images, ...).

    A plan is cached by (name, datatype, shape[1:]), so it may depend on nothing else: a
    scalar shape [] counts as [n] here and is rejected per body, when its rows are read.
    """
    if type(shape) is not list or len(shape) > 2:
        return None
    return shape[1] if len(shape) == 2 else 1


def _describe(outputs: list) -> str:
    return ", ".join(f"{o.get('name')} ({o.get('datatype')} {o.get('shape')})" for o in outputs)


class V2Codec(Codec):
    """Open Inference Protocol v2 REST; see the module docstring for the defaults."""

    name = "v2"
    templated = True  # outputs copy the JSON numbers as they are

    def __init__(self, *, label_output: str | None = None, probabilities_output: str | None = None,
                 score_output: str | None = None, feature_names: list[str] | None = None):
        self.label_output = label_output
        self.probabilities_output = probabilities_output
        self.score_output = score_output
        self.feature_names = list(feature_names) if feature_names is not None else None
        self._plans: dict[tuple, _Plan] = {}

    def options(self) -> dict:
        names = ("label_output", "probabilities_output", "score_output", "feature_names")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    # -- responses -------------------------------------------------------------------------

    def _extract_response(self, obj: Any) -> RawPrediction:
        outputs = obj.get("outputs") if type(obj) is dict else None
        if type(outputs) is not list:
            raise DecodeError(error_message(obj) or "not a v2 response: no 'outputs' list")
        try:
            # The layout minus the batch size: bodies with the same layout share a plan.
            plan = self._plans[tuple([(o["name"], o["datatype"], tuple(o["shape"][1:])) for o in outputs])]
        except (KeyError, TypeError):  # a new layout, or a malformed one
            plan = self._plan_for(outputs)
        if plan.error:
            raise DecodeError(plan.error)

        n = None
        labels = probabilities = values = None
        for role in plan.roles:
            o = outputs[role.index]
            shape = o["shape"]
            data = o.get("data")
            rows = shape[0] if type(shape) is list and shape else None
            # Inline check of the common case (flat, complete, batch sizes agree); anything
            # else goes through _output_data, which says precisely what is wrong.
            if (type(rows) is not int or rows < 0 or (n is not None and rows != n) or type(data) is not list
                    or len(data) != rows * role.width or (data and type(data[0]) is list)):
                rows, data = _output_data(o, role, n)
            n = rows
            if role is plan.label:
                labels = integer_list(data, role.what)
            elif role is plan.probabilities:
                probabilities = number_list(data, role.what)
            else:
                values = number_list(data, role.what)
        return n, labels, probabilities, plan.k, values  # a RawPrediction, as a plain tuple

    def _plan_for(self, outputs: list) -> _Plan:
        """Validate a layout and assign roles; cached by layout when the layout is hashable."""
        key = []
        for o in outputs:
            if type(o) is not dict:
                raise DecodeError(f"v2 output is not an object: {short(o)}")
            shape = o.get("shape")
            key.append((o.get("name"), o.get("datatype"), tuple(shape[1:]) if type(shape) is list else None))
        try:
            plan = self._plans.get(tuple(key))
        except TypeError:  # a list where a name or dimension should be: invalid, and not cacheable
            return self._plan(outputs)
        if plan is None:
            plan = self._plan(outputs)
            if len(self._plans) < _MAX_PLANS:
                self._plans[tuple(key)] = plan
        return plan

    def _plan(self, outputs: list) -> _Plan:
        try:
            return self._assign_roles(outputs)
        except DecodeError as exc:
            return _Plan(None, None, None, error=str(exc))

    def _assign_roles(self, outputs: list) -> _Plan:
        usable = []  # (index, name, family, width)
        by_name = {}
        for i, o in enumerate(outputs):
            name, datatype, shape = o.get("name"), o.get("datatype"), o.get("shape")
            if type(name) is not str:
                raise DecodeError(f"v2 output {i} has no string 'name'")
            if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape[1:]):
                raise DecodeError(f"v2 output {name!r} has invalid shape {short(shape)}")
            by_name[name] = (i, datatype, shape)
            width = _row_width(shape)
            if datatype in NUMERIC_DATATYPES and width is not None:
                usable.append((i, name, "int" if datatype in INTEGER_DATATYPES else "float", width))

        def named(option: str, role: str, ok_width) -> _Role | None:
            wanted = getattr(self, option)
            if wanted is None:
                return None
            if wanted not in by_name:
                raise DecodeError(f"no v2 output named {wanted!r} ({option}); outputs are {_describe(outputs)}")
            i, datatype, shape = by_name[wanted]
            width = _row_width(shape)
            if datatype not in NUMERIC_DATATYPES or width is None or not ok_width(width):
                raise DecodeError(f"v2 output {wanted!r} ({datatype} {shape}) cannot be the {role}")
            return _Role(i, wanted, width)

        label = named("label_output", "label", lambda w: w == 1)
        probabilities = named("probabilities_output", "probabilities", lambda w: w >= 1)
        score = named("score_output", "score", lambda w: w == 1)
        taken = {r.index for r in (label, probabilities, score) if r}
        free = [u for u in usable if u[0] not in taken]
        if label is None and self.label_output is None:
            label = _pick(free, "label", LABEL_NAMES, lambda f, w: f == "int" and w == 1)
        if probabilities is None and self.probabilities_output is None:
            probabilities = _pick(free, "probabilities", PROBABILITY_NAMES, lambda f, w: f == "float" and w > 1)
        if score is None and self.score_output is None:
            score = _pick(free, "score", SCORE_NAMES, lambda f, w: f == "float" and w == 1)
        if not (label or probabilities or score):
            raise DecodeError(f"no v2 output is a prediction (numeric, shape [n] or [n, k]); "
                              f"outputs are {_describe(outputs)}")
        return _Plan(label, probabilities, score)

    # -- requests --------------------------------------------------------------------------

    def _input_columns(self, item: dict) -> list[str]:
        """Feature names carried by one input: its name, or one per column of an [n, F] tensor."""
        shape = item["shape"]
        if not _is_tensor(shape):
            return [item["name"]]
        if self.feature_names is not None:
            if len(self.feature_names) != shape[1]:
                raise DecodeError(f"feature_names has {len(self.feature_names)} names but input "
                                  f"{item['name']!r} has {shape[1]} columns")
            return list(self.feature_names)
        return [f"{item['name']}[{j}]" for j in range(shape[1])]

    def decode_request(self, body: bytes) -> Features:
        inputs = _inputs(load_json(body))
        if self.feature_names is not None:
            tensors = sum(1 for item in inputs if _is_tensor(item["shape"]))
            if tensors != 1:
                raise DecodeError(f"feature_names needs exactly one [n, F] input tensor, found {tensors}")
        columns: dict[str, list] = {}
        for item in inputs:
            names = self._input_columns(item)
            data = _flatten(item["data"], item["shape"], f"v2 input {item['name']!r}")
            width = len(names)
            for j, name in enumerate(names):
                if name in columns:
                    raise DecodeError(f"feature {name!r} appears twice in the request")
                columns[name] = data[j::width] if width > 1 else data
        return features_from_columns(columns, "v2 request")

    def encode_request(self, features: Features, template_body: bytes) -> bytes:
        template = load_json(template_body)
        inputs = _inputs(template)
        payload = copy.copy(template)  # top-level fields (id, parameters, outputs) are kept as they are
        n = features.n
        used = set()
        new_inputs = []
        for item in inputs:
            shape = item["shape"]
            integer = item.get("datatype") in INTEGER_DATATYPES
            if _is_tensor(shape):  # columns in template order; a missing one narrows the tensor
                names = [c for c in self._input_columns(item) if c in features.columns]
                used.update(names)
                if not names:
                    continue
                cols = [column_to_json(features.columns[c], integer) for c in names]
                data = [v for row in zip(*cols) for v in row]  # row-major
                new_inputs.append({**item, "shape": [n, len(names)], "data": data})
            else:
                name = item["name"]
                if name not in features.columns:
                    continue  # the missing-field fault: the input is left out
                used.add(name)
                new_shape = [n] if len(shape) == 1 else [n, 1]
                new_inputs.append({**item, "shape": new_shape,
                                   "data": column_to_json(features.columns[name], integer)})
        for name, col in features.columns.items():
            if name not in used:
                new_inputs.append({"name": name, "shape": [n], "datatype": _datatype_of(col),
                                   "data": column_to_json(col)})
        payload["inputs"] = new_inputs
        return dump_json(payload)


def _is_tensor(shape: list) -> bool:
    """An [n, F] input carrying several features (as opposed to [n] or [n, 1]: one feature)."""
    return len(shape) == 2 and shape[1] != 1


def _pick(candidates: list, role: str, preferred: tuple[str, ...], fits) -> _Role | None:
    matches = [c for c in candidates if fits(c[2], c[3])]
    if not matches:
        return None
    if len(matches) > 1:
        for conventional in preferred:
            named = [c for c in matches if c[1].lower() == conventional]
            if len(named) == 1:
                matches = named
                break
        else:
            names = ", ".join(repr(c[1]) for c in matches)
            option = {"label": "label_output", "probabilities": "probabilities_output", "score": "score_output"}[role]
            raise DecodeError(f"several v2 outputs could be the {role} ({names}); name one with {option}=")
    i, name, _, width = matches[0]
    return _Role(i, name, width)


def _output_data(o: dict, role: _Role, n: int | None) -> tuple[int, list]:
    """(rows, flat data) of one output; the batch size must agree with the other outputs."""
    shape = o["shape"]
    rows = shape[0] if type(shape) is list and shape else None
    if type(rows) is not int or rows < 0:
        raise DecodeError(f"{role.what} has invalid shape {short(shape)}")
    if n is not None and rows != n:
        raise DecodeError(f"v2 outputs disagree on the batch size: {role.name!r} has {rows} rows, another {n}")
    data = o.get("data")
    if type(data) is list and data and type(data[0]) is not list and len(data) == rows * role.width:
        return rows, data  # the common case: flat and complete
    return rows, _flatten(data, shape, role.what)


def _flatten(data: Any, shape: list, what: str) -> list:
    """Row-major flat data, from flat or nested lists; the count must match the shape."""
    if type(data) is not list:
        raise DecodeError(f"{what} has no 'data' list")
    expected = math.prod(shape)
    if data and type(data[0]) is list:  # nested: must follow the declared shape level by level
        flat: list = []

        def walk(node: Any, depth: int) -> None:
            if type(node) is not list or depth >= len(shape) or len(node) != shape[depth]:
                raise DecodeError(f"{what}: nested data does not match its shape {shape}")
            if depth == len(shape) - 1:
                flat.extend(node)  # a list left among the leaves fails the type check later
            else:
                for child in node:
                    walk(child, depth + 1)

        walk(data, 0)
        data = flat
    if len(data) != expected:
        raise DecodeError(f"{what} declares shape {shape} ({expected} values) but holds {len(data)}")
    return data


def _inputs(payload: Any) -> list[dict]:
    """A request's inputs, each checked to have a name, a [n] or [n, k] shape and data."""
    inputs = payload.get("inputs") if type(payload) is dict else None
    if type(inputs) is not list or not inputs:
        raise DecodeError("not a v2 request: no 'inputs' list")
    for item in inputs:
        if type(item) is not dict or type(item.get("name")) is not str:
            raise DecodeError(f"v2 input without a string 'name': {short(item)}")
        shape = item.get("shape")
        if type(shape) is not list or not 1 <= len(shape) <= 2 or not all(type(d) is int and d >= 0 for d in shape):
            raise DecodeError(f"v2 input {item['name']!r} has shape {short(shape)}; expected [n] or [n, k]")
    return inputs


def _datatype_of(col: np.ndarray) -> str:
    kind = np.asarray(col).dtype.kind
    return {"i": "INT64", "u": "UINT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")
