"""Read a scenario file: YAML (safe loader), then the schema; errors name file, field and expectation.

    scenario = load_scenario("scenarios/nan-storm.yaml")
    # ScenarioError: scenarios/nan.yaml: phases[1].faults[0].probability: Input should be less
    #   than or equal to 1 (got 2)

`ScenarioError.problems` holds `(path, message)` pairs; `str(error)` is one line per problem.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import PATTERNS, TAGGED, At, Problems, Scenario, fault_types, join_path

MAX_FILE_BYTES = 1 << 20  # a scenario is a page of YAML, not a data set


class ScenarioError(ValueError):
    """A scenario that cannot be read or is invalid: one line per problem, each naming the file."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(_line(source, path, message) for path, message in problems))


def _line(source: str, path: str, message: str) -> str:
    return f"{source}: {path}: {message}" if path else f"{source}: {message}"


# ---------------------------------------------------------------------------------------------
# YAML


class _SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only) that also refuses a key given twice in one mapping."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor reports it
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {first.line + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, source: str) -> Any:
    try:
        # The safe loader builds plain data only (no Python objects), like yaml.safe_load.
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(filter(None, [exc.context, exc.problem]))
        raise ScenarioError(source, [("", f"{where}invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [("", f"invalid YAML: {exc}")]) from None


# ---------------------------------------------------------------------------------------------
# Loading


def load_scenario(path: str | os.PathLike) -> Scenario:
    """Read and validate a scenario file; ScenarioError names the file and every problem."""
    source = os.fspath(path)
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ScenarioError(source, [("", "not a file")])
        if size > MAX_FILE_BYTES:
            raise ScenarioError(source, [("", f"the file is {size:,} bytes; a scenario is at most {MAX_FILE_BYTES:,}")])
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(source, [("", "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    except OSError as exc:
        raise ScenarioError(source, [("", f"cannot read: {exc.strerror or exc}")]) from None
    data = _read_yaml(text, source)
    scenario = scenario_from_data(data, source=source, base_dir=p.resolve().parent)
    scenario._source = p.resolve()
    return scenario


def scenario_from_data(data: Any, *, source: str = "<scenario>", base_dir: str | os.PathLike | None = None) -> Scenario:
    """Validate already-parsed data (a mapping); relative file paths start at `base_dir` (default: cwd)."""
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {_yaml_kind(data)}"
        raise ScenarioError(source, [("", f"a scenario is a mapping of fields (name, targets, phases, ...); the file is {kind}")])
    context = {"base_dir": str(base_dir) if base_dir is not None else None}
    try:
        return Scenario.model_validate(data, context=context)
    except ValidationError as exc:
        raise ScenarioError(source, format_errors(exc)) from None


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# Error messages


def format_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """pydantic's errors as (dotted path with [indices], what was expected), in document order."""
    out: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        out.extend(_format_error(err))
    seen = set()
    unique = []
    for item in out:  # the same problem reached through two union branches is said once
        if item not in seen:
            seen.add(item)
            unique.append(item)
    return unique


def _format_error(err: Mapping[str, Any]) -> list[tuple[str, str]]:
    loc = tuple(err["loc"])
    kind = err["type"]
    message = err["msg"]
    value = err.get("input")
    path, parent = _walk(loc)
    error = (err.get("ctx") or {}).get("error")
    if isinstance(error, Problems):
        return [(join_path(path, p), m) for p, m in error.problems]
    if isinstance(error, At):
        return [(join_path(path, error.path), error.message)]
    if kind in ("value_error", "assertion_error"):
        return [(path, message.split(", ", 1)[1] if message.startswith(("Value error, ", "Assertion failed, ")) else message)]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        known = _field_names(parent)
        hint = ""
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        expected = f"; expected one of: {', '.join(known)}" if known else ""
        return [(path, f"unknown field{hint}{expected}")]
    if kind == "load_shape" and isinstance(value, Mapping) and "shape" in value:
        return [(join_path(path, "shape"), f"Input should be one of constant, ramp, step, spike, custom (got {_show(value['shape'])})")]
    if kind == "missing":
        return [(path, "required field is missing")]
    if kind == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") in PATTERNS:
        return [(path, f"expected {PATTERNS[err['ctx']['pattern']]} (got {_show(value)})")]
    message = re.sub(r"a valid dictionary( or instance of \w+)?", "a mapping", message)
    if kind in ("literal_error", "enum") and _is_fault_type(loc):
        return [(path, f"unknown fault type {_show(value)}; known types: {', '.join(fault_types())}")]
    if value is not None and not isinstance(value, (Mapping, list)) or kind.endswith(("_type", "_parsing")):
        return [(path, f"{message} (got {_show(value)})")]
    return [(path, message)]


def _is_fault_type(loc: tuple) -> bool:
    return len(loc) >= 2 and loc[-1] == "type" and "faults" in loc


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _walk(loc: tuple) -> tuple[str, Any]:
    """The printable path of `loc` (union tags dropped) and the type holding its last part."""
    parts: list[str] = []
    tp: Any = Scenario
    parent: Any = None
    for item in loc:
        if isinstance(item, str) and item.startswith("~"):  # a union member's tag
            tp = TAGGED.get(item)
            continue
        parent = tp
        if isinstance(item, int):
            parts.append(f"[{item}]")
            tp = _element_type(tp)
        elif item == "[key]":
            continue
        else:
            parts.append(str(item))
            tp = _field_type(tp, str(item))
    return join_path(*parts), parent


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _element_type(tp: Any) -> Any:
    for member in _members(tp):
        if typing.get_origin(member) in (list, tuple):
            args = typing.get_args(member)
            return args[0] if args else None
    return None


def _field_type(tp: Any, name: str) -> Any:
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field_name, info in member.model_fields.items():
                if name in (field_name, info.alias):
                    return info.annotation
        elif typing.get_origin(member) in (dict, Mapping):
            args = typing.get_args(member)
            return args[1] if len(args) == 2 else None
    return None


def _field_names(tp: Any) -> list[str]:
    for member in _members(tp):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return [info.alias or name for name, info in member.model_fields.items()]
    return []


# ---------------------------------------------------------------------------------------------
# JSON Schema


def scenario_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a scenario file, for editors and CI."""
    schema = Scenario.model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    defs = schema.get("$defs", {})
    if "FaultSpec" in defs:
        defs["FaultSpec"] = _faults_schema(defs["FaultSpec"])
    checks = _checks_schema()
    for key in ("checks", "steady_state_checks"):
        schema["properties"][key]["additionalProperties"] = False
        schema["properties"][key]["properties"] = checks
    return json.loads(json.dumps(schema))  # plain JSON types only


def _faults_schema(common: dict) -> dict:
    """One branch per registered fault type: its own parameters, and no others."""
    from harness.faults import FAULTS

    shared = common["properties"]
    branches = []
    for name, cls in sorted(FAULTS.items()):
        properties: dict[str, Any] = {"type": {"const": name}}
        for param, default in cls.parameters().items():
            properties[param] = shared.get(param) or _json_type(default)
        doc = (cls.__doc__ or "").strip().splitlines()
        branches.append({
            "title": name,
            "description": f"{cls.kind} fault" + (f": {doc[0]}" if doc else ""),
            "type": "object",
            "properties": properties,
            "required": ["type"],
            "additionalProperties": False,
        })
    return {
        "title": "Fault",
        "description": (common.get("description") or "") + " Parameters per type: docs/faults.md.",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": sorted(FAULTS), "description": "The fault type."}},
        "oneOf": branches,
    }


_CHECK_PARAMETERS = {  # the parameters every check has (docs/checks.md)
    "critical": "a failure makes the verdict NO-GO; false: it only warns",
    "confidence": "two-sided confidence level of the interval the status is read from",
    "min_n": "below this many observations the check is inconclusive",
}


def _checks_schema() -> dict:
    """One property per registered check: false/true/null, or its parameters with their types."""
    from harness.checks import CHECKS

    out = {}
    for name, cls in sorted(CHECKS.items()):
        params = {}
        for param, default in cls.parameters().items():
            meaning = _CHECK_PARAMETERS.get(param, f"see docs/checks.md, `{name}`")
            params[param] = {**_json_type(default), "description": f"{meaning} (default {default!r})"}
        doc = (cls.__doc__ or "").strip().splitlines()
        out[name] = {
            "description": (doc[0] if doc else name) + " Parameters and defaults: docs/checks.md.",
            "anyOf": [
                {"type": "boolean"},
                {"type": "null"},
                {"type": "object", "properties": params, "additionalProperties": False},
            ],
        }
    return out


def _json_type(default: Any) -> dict:
    if isinstance(default, bool):
        return {"type": "boolean", "default": default}
    if isinstance(default, int):
        return {"type": "integer", "default": default}
    if isinstance(default, float):
        return {"type": "number", "default": default}
    if isinstance(default, tuple):
        return {"type": "array", "default": list(default)}
    if isinstance(default, str):
        return {"type": "string", "default": default}
    return {}
