"""The rules across a scenario's fields, run once every field is valid, as `(path, message)` problems.

Targets that fit the protocol and the codec, unique phase names and labels, faults and toxics that
fit the targets and the traffic, loads that fit their span, a sweep over an existing parameter,
contracts that name existing faults, and bounded durations.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from harness.demo_model import FEATURES as DEMO_FEATURES

from .base import MAX_PHASES, MAX_TOTAL_DURATION_S
from .contracts import _resolve_contract
from .errors import At, Problems, join_path
from .faults import GRPC_UNSUPPORTED_FAULTS, FaultSpec, check_fault
from .load_shapes import CustomLoad, RampLoad, SpikeLoad, StepLoad
from .phases import format_value, sweep_parameter
from .targets import is_loopback, target_scheme
from .toxics import TOXIC_ATTRIBUTES, Toxic, canonical_toxic_attributes

if TYPE_CHECKING:  # scenario.py imports this module to run the rules
    from .scenario import Scenario


def _faults(s: Scenario) -> Iterator[tuple[str, FaultSpec]]:
    """Every fault of the scenario with its path, in timeline order."""
    for i, phase in enumerate(s.phases):
        for j, fault in enumerate(phase.faults):
            yield f"phases[{i}].faults[{j}]", fault


def _cross_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Rules across fields, as (path, message)."""
    yield from _target_problems(s)
    yield from _protocol_problems(s)
    labels: dict[str, str] = {}  # label -> where it is defined
    kinds: dict[str, tuple] = {}  # label -> ("fault" | "toxic", spec, phase)
    yield from _phase_problems(s, labels, kinds)
    yield from _load_problems(s)
    yield from _sweep_problems(s, labels, kinds)
    yield from _contract_problems(s, labels)
    expanded = s.expanded_phases()
    where = "sweep" if s.sweep is not None else "phases"
    if len(expanded) > MAX_PHASES:
        yield (where, f"{len(expanded)} phases after the sweep; at most {MAX_PHASES}")
    total = sum(p.duration_s for p in expanded)
    if total > MAX_TOTAL_DURATION_S:
        yield (where, f"the scenario runs {total} s in all; at most {MAX_TOTAL_DURATION_S} s")


def _target_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    arms = s.targets.arms()
    demo_arms = [arm for arm in arms if s.targets.demo(arm) is not None]
    if not s.allow_remote_targets:
        for arm in arms:
            url = s.targets.url(arm)
            if url is not None and getattr(s.targets, arm) != "incumbent" and not is_loopback(url):
                yield (f"targets.{arm}", f"{url} is not a loopback address; scenarios send load and faults to loopback targets only (allow_remote_targets: true overrides)")
    if demo_arms and s.protocol == "http" and s.codec not in (None, "v2", "v2grpc"):  # gRPC: _protocol_problems
        yield ("codec", f"the demo servers speak the Open Inference Protocol v2; codec {s.codec!r} cannot read them")
    if s.select is not None and s.codec != "generic":
        yield ("select", "selectors are for codec: generic")
    if s.codec == "generic":
        if s.select is None:
            yield ("select", "codec generic needs selectors, e.g. 'label=predictions[*].label'")
        else:
            from harness.codecs import get_codec

            try:
                get_codec("generic", select=s.select)
            except ValueError as exc:
                yield ("select", str(exc))
    synthetic = s.traffic.synthetic
    if demo_arms and synthetic is not None and synthetic.features is not None:
        names = [f.name for f in synthetic.features]
        if sorted(names) != sorted(DEMO_FEATURES):
            yield ("traffic.synthetic.features", f"the demo servers take exactly the features {', '.join(DEMO_FEATURES)}; got {', '.join(names)}")
        for i, feature in enumerate(synthetic.features):
            if feature.type == "category":
                yield (f"traffic.synthetic.features[{i}].type", "the demo servers take numeric features only")
    from harness.load.sources import validate_source

    try:  # what the load driver will be given must pass its own checks
        validate_source(s.traffic.source(), "traffic")
    except ValueError as exc:
        yield ("traffic", str(exc))


def _protocol_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Targets, codec and faults that fit the protocol."""
    grpc = s.protocol == "grpc"
    if grpc and s.codec != "v2grpc":
        yield ("codec", f"over gRPC the requests and responses are v2 protobuf messages: codec v2grpc (or null); {s.codec!r} reads JSON bodies")
    if not grpc and s.codec == "v2grpc":
        yield ("codec", "v2grpc reads gRPC messages; this scenario's protocol is http (set protocol: grpc)")
    for arm in s.targets.arms():
        url = getattr(s.targets, arm)
        if not isinstance(url, str) or url in ("demo", "incumbent"):
            continue
        scheme = target_scheme(url)
        if grpc and scheme != "grpc":
            yield (f"targets.{arm}", f"{url} is an HTTP URL; over gRPC a target is host:port or grpc://host:port")
        elif not grpc and scheme != "http":
            yield (f"targets.{arm}", f"{url} is a gRPC target; with protocol http give http://host:port (or set protocol: grpc)")
    yield from _traffic_protocol_problems(s)
    if not grpc:
        return
    for path, fault in _faults(s):
        why = GRPC_UNSUPPORTED_FAULTS.get(fault.type)
        if why is not None:
            yield (f"{path}.type", f"{fault.type} is not supported over gRPC: {why}")
        elif fault.type == "broken_chars" and (fault.model_extra or {}).get("raw"):
            yield (f"{path}.raw", "broken_chars raw breaks a JSON string literal; over gRPC use it without raw (text features)")
        for k, selector in enumerate(fault.fields or ()):
            if selector.startswith("$"):
                yield (join_path(path, f"fields[{k}]"), f"JSON paths select nodes of a JSON body; over gRPC select features by name or '#index' (got {selector!r})")


def _traffic_protocol_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Over gRPC no nulls (a tensor has none) and only gRPC captures replayed; over HTTP no gRPC captures."""
    from harness.load.sources import check_replay_protocol, validate_source

    synthetic = s.traffic.synthetic
    if s.protocol == "grpc" and synthetic is not None:
        for i, feature in enumerate(synthetic.features or ()):
            if feature.missing > 0:
                yield (f"traffic.synthetic.features[{i}].missing", "a v2 gRPC tensor cannot carry a null; over gRPC, missing must be 0")
    if s.traffic.file is not None:
        try:
            source = validate_source(s.traffic.source(), "traffic")
        except ValueError:
            return  # reported by _target_problems
        try:
            check_replay_protocol(source, s.protocol, "traffic.file")
        except ValueError as exc:
            path, _, message = str(exc).partition(": ")  # "traffic.file.path: ..."
            yield (path, message)


def _phase_problems(s: Scenario, labels: dict, kinds: dict) -> Iterator[tuple[str, str]]:
    """Unique phase names and labels; faults and toxics that fit the targets and the traffic."""
    arms = s.targets.arms()
    dependency_arms = s.targets.with_dependency()
    feature_names = s.traffic.feature_names()
    seen_phases: dict[str, int] = {}
    for i, phase in enumerate(s.phases):
        if phase.name in seen_phases:
            yield (f"phases[{i}].name", f"phase {phase.name!r} is already phases[{seen_phases[phase.name]}]")
        seen_phases.setdefault(phase.name, i)
        for j, fault in enumerate(phase.faults):
            path = f"phases[{i}].faults[{j}]"
            yield from _claim_label(labels, kinds, fault.name, path, "label", ("fault", fault, phase))
            for arm in fault.arms or ():
                if arm not in arms:
                    yield (join_path(path, "arms"), f"the scenario has no {arm} target")
            if fault.window is not None:
                begin, end = fault.window
                if not 0 <= begin < end:
                    yield (join_path(path, "window"), f"must be [start, end) with 0 <= start < end (got [{begin:g}, {end:g}])")
                elif begin >= phase.duration_s:
                    yield (join_path(path, "window"), f"starts after the phase ends ({phase.duration_s} s)")
            if fault.fields and feature_names is not None:
                for k, selector in enumerate(fault.fields):
                    if selector[:1] not in ("#", "$") and selector not in feature_names:
                        yield (join_path(path, f"fields[{k}]"), f"no feature {selector!r} in the traffic; features: {', '.join(feature_names)}")
        for j, toxic in enumerate(phase.toxics):
            path = f"phases[{i}].toxics[{j}]"
            yield from _claim_label(labels, kinds, toxic.label, path, "name", ("toxic", toxic, phase))
            if not dependency_arms:
                yield (path, "toxics act on a demo server's dependency: give a demo target `dependency: toxic`")
            for arm in toxic.arms or ():
                if arm not in dependency_arms:
                    yield (join_path(path, "arms"), f"the {arm} target is not a demo server with dependency: toxic")
    yield from _payload_arms_problems(s)
    faulted = [i for i, p in enumerate(s.phases) if p.faulted]
    steady = [i for i, p in enumerate(s.phases) if p.steady_state]
    if faulted:
        if not any(i < faulted[0] for i in steady):
            yield ("phases", "a chaos scenario starts with a steady-state phase (steady_state: true) before the first faults")
        if not any(i > faulted[-1] for i in steady):
            yield ("phases", "a chaos scenario ends with a steady-state phase (steady_state: true) after the last faults")


def _claim_label(labels: dict, kinds: dict, label: str, path: str, field: str, kind: tuple) -> Iterator[tuple[str, str]]:
    """Record where `label` is defined; a problem when a fault or toxic before it has it already.

    Faults and toxics share one namespace of labels: contracts and the sweep name either kind.
    """
    if label in labels:
        yield (join_path(path, field), f"label {label!r} is already used by {labels[label]}; give each {kind[0]} a unique {field}")
    labels.setdefault(label, path)
    kinds.setdefault(label, kind)


def _payload_arms_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """The fault plan sends one faulted body to every payload arm: all payload faults share arms."""
    from harness.faults import FAULTS

    first: tuple[str, tuple[str, ...]] | None = None
    for path, fault in _faults(s):
        cls = FAULTS.get(fault.type)
        if cls is None or cls.kind != "payload":
            continue
        arms = tuple(fault.arms) if fault.arms is not None else tuple(cls.parameters()["arms"])
        if first is None:
            first = (path, arms)
        elif set(arms) != set(first[1]):
            yield (
                f"{path}.arms",
                f"payload faults share one faulted request, so they all target the same arms; "
                f"{first[0]} targets {', '.join(first[1])}, this one {', '.join(arms)}",
            )


def _load_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    """Run-level settings at the top only; a custom shape alone; shapes that fit their span."""
    problems = list(_own_load_problems(s))
    yield from problems
    found = bool(problems)
    if found:
        return
    from harness.load.shapes import validate_shape

    try:  # what the load driver will be given must pass its own checks
        validate_shape(s.load_shape(), "load")
    except ValueError as exc:
        yield ("load", str(exc))


def _own_load_problems(s: Scenario) -> Iterator[tuple[str, str]]:
    phase_loads = [(i, p) for i, p in enumerate(s.phases) if p.load is not None]
    for i, phase in phase_loads:
        for key in ("spawn_rate", "timeout_s"):
            if getattr(phase.load, key) is not None:
                yield (f"phases[{i}].load.{key}", "applies to the whole run: set it in the top-level load")
        if isinstance(phase.load, CustomLoad):
            yield (f"phases[{i}].load.shape", "a custom shape runs the whole timeline: make it the top-level load")
        yield from _load_fits(phase.load, phase.duration_s, f"phases[{i}].load", "phase")
    if isinstance(s.load, CustomLoad) and phase_loads:
        yield ("load.shape", "a custom shape runs the whole timeline: the phases cannot have loads of their own")
    total = sum(p.duration_s for p in s.expanded_phases())
    if not all(p.load is not None for p in s.phases):
        yield from _load_fits(s.load, total, "load", "run")


def _load_fits(load: Any, duration_s: float, path: str, span: str) -> Iterator[tuple[str, str]]:
    """A load shape must happen within its phase (or the run)."""
    if isinstance(load, RampLoad) and load.over_s > duration_s:
        yield (f"{path}.over_s", f"the ramp ({load.over_s:g} s) is longer than the {span} ({duration_s:g} s)")
    if isinstance(load, SpikeLoad) and load.at_s + load.for_s > duration_s:
        yield (f"{path}.at_s", f"the spike (at_s + for_s = {load.at_s + load.for_s:g} s) ends after the {span} ({duration_s:g} s)")
    if isinstance(load, StepLoad) and load.span_s - load.steps[-1].duration_s >= duration_s:
        yield (f"{path}.steps", f"the {span} ends ({duration_s:g} s) before the last step starts")


def _sweep_problems(s: Scenario, labels: dict, kinds: dict) -> Iterator[tuple[str, str]]:
    sweep = s.sweep
    if sweep is None:
        return
    kind = kinds.get(sweep.fault)
    if kind is None:
        yield ("sweep.fault", f"no fault or toxic labelled {sweep.fault!r}; labels: {', '.join(labels) or 'none'}")
        return
    if kind[0] == "fault":
        fault: FaultSpec = kind[1]
        if sweep.parameter in ("type", "label", "arms", "fields", "window"):
            yield ("sweep.parameter", f"{sweep.parameter!r} cannot be swept; sweep a numeric parameter")
            return
        for k, value in enumerate(sweep.values):
            spec = {**fault.spec(), sweep.parameter: value}
            if sweep.parameter == "probability" and not 0 <= value <= 1:
                yield (f"sweep.values[{k}]", f"probability must be within [0, 1] (got {format_value(value)})")
                continue
            try:
                check_fault(spec)
            except At as exc:
                yield (f"sweep.values[{k}]", exc.message)
        return
    toxic: Toxic = kind[1]
    parameter = sweep_parameter(kind[2], sweep)
    known = TOXIC_ATTRIBUTES[toxic.type]
    if parameter != "toxicity" and parameter not in known:
        yield ("sweep.parameter", f"a {toxic.type} toxic has no attribute {sweep.parameter!r}; sweep toxicity or one of {', '.join(known)}")
        return
    for k, value in enumerate(sweep.values):
        if parameter == "toxicity":
            if not 0 <= value <= 1:
                yield (f"sweep.values[{k}]", f"toxicity must be within [0, 1] (got {format_value(value)})")
            continue
        if value < 0:
            yield (f"sweep.values[{k}]", f"toxic attributes are >= 0 (got {format_value(value)})")
            continue
        try:
            canonical_toxic_attributes(toxic.type, {**toxic.attributes, parameter: value})
        except Problems as exc:
            yield (f"sweep.values[{k}]", "; ".join(m for _, m in exc.problems))


def _contract_problems(s: Scenario, labels: dict) -> Iterator[tuple[str, str]]:
    arms = s.targets.arms()
    phases = [p.name for p in s.phases]
    steady = any(p.steady_state for p in s.phases)
    for key, items in s.contracts.items():
        path = f"contracts.{key}"
        if key.startswith("phase:"):
            if key[len("phase:"):] not in phases:
                yield (path, f"no phase named {key[len('phase:'):]!r}; phases: {', '.join(phases)}")
        elif key != "*" and key not in labels:
            yield (path, f"no fault or toxic labelled {key!r}; labels: {', '.join(labels) or 'none'} (or 'phase:<name>', '*')")
        names = []
        for k, item in enumerate(items):
            name, params = _resolve_contract(item)
            where = f"{path}[{k}]" if isinstance(item, str) else f"{path}[{k}].{name}"
            if name in names:
                yield (f"{path}[{k}]", f"{name} is listed twice for {key!r}")
            names.append(name)
            for arm in getattr(params, "arms", ()):
                if arm not in arms:
                    yield (f"{where}.arms" if not isinstance(item, str) else where, f"the scenario has no {arm} target")
            if getattr(params, "against", None) == "baseline" and "baseline" not in arms:
                yield (f"{where}.against", "the scenario has no baseline target")
            if name == "production_unaffected" and not steady:
                yield (where, "production_unaffected compares with the steady-state phases; the scenario has none")
