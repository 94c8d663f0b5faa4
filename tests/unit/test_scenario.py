"""Scenarios: the shipped library validates (against the models and the JSON Schema), bad files
are refused with the file, the field path and what was expected, and a sweep expands."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from harness.scenario import (
    CONTRACTS,
    ScenarioError,
    load_scenario,
    scenario_from_data,
    scenario_json_schema,
)
from harness.scenario.commands import schema_command, validate_command
from harness.scenario.schema import TOXIC_ALIASES, TOXIC_ATTRIBUTES, TOXIC_REQUIRED

REPO = Path(__file__).resolve().parents[2]
LIBRARY = sorted((REPO / "scenarios").glob("*.yaml"))
EXPECTED_LIBRARY = {
    "shadow-smoke", "nan-storm", "missing-fields", "type-drift", "out-of-range", "upstream-latency",
    "candidate-outage", "slow-candidate", "dose-response-nan", "grpc-shadow-smoke", "grpc-nan-storm",
}  # fmt: skip


@pytest.fixture(scope="module")
def schema() -> dict:
    return scenario_json_schema()


def _chaos() -> dict:
    """A small valid chaos scenario to break in the tests."""
    return {
        "name": "t",
        "targets": {"incumbent": "demo", "candidate": {"demo": {"variant": "identical"}}, "baseline": "incumbent"},
        "phases": [
            {"name": "before", "duration_s": 5, "steady_state": True},
            {"name": "storm", "duration_s": 10, "faults": [{"type": "nan", "label": "nan", "fields": ["age"], "probability": 0.2}]},
            {"name": "after", "duration_s": 5, "steady_state": True},
        ],
        "contracts": {"nan": ["clean_4xx", {"within_latency": {"ms": 500}}]},
    }


def _problems(data, tmp_path: Path, name: str = "bad.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    lines = str(info.value).splitlines()
    assert lines and all(line.startswith(f"{path}: ") for line in lines), lines
    return [line[len(f"{path}: "):] for line in lines]


# ---------------------------------------------------------------------------------------------
# The library


def test_the_library_has_its_scenarios():
    assert {p.stem for p in LIBRARY} == EXPECTED_LIBRARY


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_scenario_validates_and_is_short(path, schema):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.total_duration_s <= (20 if path.stem == "shadow-smoke" else 60)
    for arm in scenario.targets.arms():  # runnable against the demo servers
        assert scenario.targets.demo(arm) is not None and scenario.targets.url(arm) is None
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))
    # The resolved form (what the runner writes to the run directory) reads back the same.
    resolved = json.loads(scenario.model_dump_json())
    jsonschema.Draft202012Validator(schema).validate(resolved)
    again = scenario_from_data(resolved)
    assert json.loads(again.model_dump_json()) == resolved
    assert again.expanded_phases() == scenario.expanded_phases()


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_scenario_says_what_it_proves(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    for part in ("Proves:", "ML Test Score (Breck et al. 2017):", "Runs:", "Expected against the demo servers:"):
        assert part in text, f"{path.name}: header has no {part!r}"
    assert re.search(r"(Data|Model|Infra|Monitor) [1-7]", text)
    # Every library scenario is in the docs' table.
    assert f"`{path.name}`" in (REPO / "docs" / "scenarios.md").read_text()


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_scenario_feeds_the_load_driver_and_the_fault_plan(path):
    from harness.codecs import get_codec
    from harness.faults import FaultPlan, make_fault
    from harness.load import LoadSpec

    scenario = load_scenario(path)
    spec = LoadSpec(
        target="http://127.0.0.1:8000",
        duration_s=scenario.total_duration_s,
        users=scenario.users(),
        rows_per_request=scenario.traffic.rows_per_request,
        seed=scenario.seed,
        shape=scenario.load_shape(),
        source=scenario.traffic.source(),
    )
    assert spec.run_time_s == scenario.total_duration_s
    faults = [make_fault(f) for p in scenario.expanded_phases() for f in p.faults]
    FaultPlan(faults, seed=scenario.seed, codec=get_codec("v2"))
    labels = [f.ledger_label for f in faults]
    assert len(labels) == len(set(labels))


# ---------------------------------------------------------------------------------------------
# The JSON Schema


def test_json_schema_is_valid_draft_2020_12(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    json.dumps(schema)  # plain JSON


def test_json_schema_documents_every_field(schema):
    def walk(node, where):
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                if "$ref" not in prop and name != "type":
                    assert prop.get("description") or prop.get("const"), f"{where}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk({k: v for k, v in schema.items() if k != "$defs"}, "")
    for name, definition in schema["$defs"].items():
        if name != "FaultSpec":  # per-type fault parameters are documented in docs/faults.md
            walk(definition, name)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["phases"][0].update(duraton_s=3),
        lambda d: d["phases"][1]["faults"][0].update(probability=2),
        lambda d: d["phases"][1]["faults"][0].update(type="nann"),
        lambda d: d["phases"][1]["faults"][0].update(frac=1),
        lambda d: d.update(checks={"nope": {}}),
        lambda d: d.update(checks={"latency": {"marg": 1}}),
        lambda d: d["targets"].update(candidate="ftp://127.0.0.1:1"),
        lambda d: d.update(load={"shape": "rampp"}),
    ],
)
def test_json_schema_refuses_what_the_models_refuse(schema, change):
    data = _chaos()
    change(data)
    with pytest.raises(ScenarioError):
        scenario_from_data(data)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data))


# ---------------------------------------------------------------------------------------------
# Errors name the file, the field path and what was expected


def test_a_valid_scenario_loads(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(_chaos()))
    scenario = load_scenario(path)
    assert scenario.source == path.resolve()
    assert scenario.fault_labels() == ["nan"]
    assert [c.name for c in scenario.contracts_for("nan")] == ["clean_4xx", "within_latency"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["phases"][0].update(duraton_s=3), "phases[0].duraton_s: unknown field (did you mean 'duration_s'?)"),
        (lambda d: d.update(sed=1), "sed: unknown field (did you mean 'seed'?)"),
        (lambda d: d["targets"]["candidate"]["demo"].update(latency=3), "targets.candidate.demo.latency: unknown field (did you mean 'latency_ms'?)"),
        (lambda d: d["phases"][1]["faults"][0].update(probability=2),
         "phases[1].faults[0].probability: Input should be less than or equal to 1 (got 2)"),
        (lambda d: d["phases"][1]["faults"][0].update(type="nann"), "phases[1].faults[0].type: unknown fault type 'nann'"),
        (lambda d: d["phases"][1]["faults"][0].update(fraction=0), "phases[1].faults[0].fraction: fraction must be within (0, 1]"),
        (lambda d: d["phases"][1]["faults"][0].update(sigma=1), "phases[1].faults[0].sigma: unknown parameter 'sigma'"),
        (lambda d: d["phases"][1]["faults"][0].update(fields=["agee"]), "phases[1].faults[0].fields[0]: no feature 'agee'"),
        (lambda d: d.update(checks={"label_agreemnt": {}}), "checks.label_agreemnt: unknown check 'label_agreemnt'"),
        (lambda d: d.update(checks={"latency": {"margin": "big"}}), "checks.latency.margin: parameter 'margin' must be a number"),
        (lambda d: d.update(steady_state_checks={"errors": {"min_nn": 1}}), "steady_state_checks.errors.min_nn:"),
        (lambda d: d["contracts"].update(nann=["no_5xx"]), "contracts.nann: no fault or toxic labelled 'nann'"),
        (lambda d: d["contracts"].update(nan=["no_500"]), "contracts.nan[0]: Input should be 'clean_4xx'"),
        (lambda d: d["contracts"].update(nan=[{"within_latency": {}}]), "contracts.nan[0].within_latency.ms: required field is missing"),
        (lambda d: d["contracts"].update(nan=["within_latency"]), "contracts.nan[0]: Input should be"),
        (lambda d: d["contracts"].update(nan=[{"no_5xx": None, "no_hang": None}]), "contracts.nan[0]: one contract per item"),
        (lambda d: d["targets"].update(candidate="ftp://127.0.0.1:8002"), "targets.candidate: expected an http://host:port URL (or 'demo'), got 'ftp://127.0.0.1:8002'"),
        (lambda d: d["targets"].update(candidate="http://127.0.0.1"), "targets.candidate: expected http://host:port with an explicit port"),
        (lambda d: d["targets"].update(candidate="http://10.1.2.3:8002"), "targets.candidate: http://10.1.2.3:8002 is not a loopback address"),
        (lambda d: d["targets"].update(baseline=5), "targets.baseline: expected 'demo', an http://host:port URL or a mapping {demo: {...}} (got 5)"),
        (lambda d: d["targets"].update(incumbent={"demo": {"variant": "broken"}}), "targets.incumbent.demo.variant: only the candidate has a variant"),
        (lambda d: d.update(load={"shape": "rampp"}), "load.shape: Input should be one of constant, ramp, step, spike, custom (got 'rampp')"),
        (lambda d: d.update(load={"shape": "ramp", "from_rate": 1, "to_rate": "x", "over_s": 3}), "load.to_rate: Input should be a valid number (got 'x')"),
        (lambda d: d.update(load={"shape": "spike", "base_rate": 10, "peak_rate": 90, "at_s": 18, "for_s": 5}), "load.at_s: the spike (at_s + for_s = 23 s) ends after the run (20 s)"),
        (lambda d: d.update(load={"rate": 50_000}), "load.rate: Input should be less than or equal to 10000 (got 50000)"),
        (lambda d: d["phases"][1].update(duration_s=4000), "phases[1].duration_s: Input should be less than or equal to 3600"),
        (lambda d: d["phases"][1].update(duration_s=2.5), "phases[1].duration_s: Input should be a valid integer (got 2.5)"),
        (lambda d: d["phases"][0].update(name="storm"), "phases[1].name: phase 'storm' is already phases[0]"),
        (lambda d: d["phases"][1]["faults"].append({"type": "inf", "label": "nan"}), "phases[1].faults[1].label: label 'nan' is already used by phases[1].faults[0]"),
        (lambda d: d["phases"][2].update(steady_state=False), "phases: a chaos scenario ends with a steady-state phase"),
        (lambda d: d["phases"][0].update(faults=[{"type": "inf"}]), "phases[0].steady_state: a steady-state phase has no faults"),
        (lambda d: d.update(phases=[]), "phases: List should have at least 1 item"),
        (lambda d: d["phases"][1]["faults"][0].update(arms=["incumbent"]), "phases[1].faults[0].arms[0]: Input should be 'candidate' or 'baseline' (got 'incumbent')"),
        (lambda d: d["phases"][1].update(toxics=[{"type": "latency", "attributes": {"latency_ms": 5}}]), "phases[1].toxics[0]: toxics act on a demo server's dependency"),
        (lambda d: d.update(codec="v1"), "codec: the demo servers speak the Open Inference Protocol v2"),
        (lambda d: d.update(sweep={"fault": "inf", "parameter": "probability", "values": [0.1]}), "sweep.fault: no fault or toxic labelled 'inf'"),
        (lambda d: d.update(sweep={"fault": "nan", "parameter": "fraction", "values": [0, 0.5]}), "sweep.values[0]: fraction must be within (0, 1]"),
        (lambda d: d.update(sweep={"fault": "nan", "parameter": "probability", "values": [0.1, 0.1]}), "sweep.values[1]: 0.1 is listed twice"),
        (lambda d: d.update(sweep={"fault": "nan", "parameter": "probability", "values": [0.1, 0.2], "phase_duration_s": 3600}), "sweep: the scenario runs 7210 s in all; at most 3600 s"),
        (lambda d: d.update(traffic={"file": {"path": "nowhere.jsonl"}}), "traffic.file.path: no such file"),
        (lambda d: d.update(traffic={"synthetic": {"features": [{"name": "x", "min": 0, "max": 1}]}}), "traffic.synthetic.features: the demo servers take exactly the features"),
        (lambda d: d.update(traffic={"synthetic": {"features": [{"name": "x", "mean": 0}]}}), "traffic.synthetic.features[0].std: mean and std go together"),
    ],
)
def test_invalid_scenario_names_file_field_and_expectation(tmp_path, change, expected):
    data = _chaos()
    change(data)
    problems = _problems(data, tmp_path)
    assert any(line.startswith(expected) for line in problems), problems


def test_every_problem_is_reported_one_line_each(tmp_path):
    data = _chaos()
    data["phases"][0]["duraton_s"] = 3
    data["phases"][1]["faults"][0]["probability"] = 2
    data["load"] = {"rate": -1}
    problems = _problems(data, tmp_path)
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["load.rate", "phases[0].duraton_s", "phases[1].faults[0].probability"]


def test_remote_targets_need_allow_remote_targets():
    data = _chaos()
    data["targets"] = {"incumbent": "http://10.0.0.5:8001", "candidate": "http://10.0.0.6:8002"}
    with pytest.raises(ScenarioError, match="not a loopback address"):
        scenario_from_data(data)
    data["allow_remote_targets"] = True
    scenario = scenario_from_data(data)
    assert scenario.targets.url("incumbent") == "http://10.0.0.5:8001"
    assert scenario.targets.demo("incumbent") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: x\nphases:\n  - name: a\n    duration_s: 5\n  bad: [\n", "line 5, column 3: invalid YAML"),
        ("name: x\nname: y\nphases: []\n", "line 2, column 1: invalid YAML: duplicate key 'name' (first at line 1)"),
        ("- a\n- b\n", "a scenario is a mapping of fields"),
        ("", "a scenario is a mapping of fields (name, targets, phases, ...); the file is empty"),
        ("name: x\nphases: !!python/object/apply:os.system ['true']\n", "line 2, column 9: invalid YAML"),
    ],
)
def test_bad_yaml_names_the_file_and_line(tmp_path, text, expected):
    problems = _problems(text, tmp_path)
    assert problems[0].startswith(expected), problems


def test_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match=re.escape(f"{tmp_path / 'nope.yaml'}: no such file")):
        load_scenario(tmp_path / "nope.yaml")


def test_file_traffic_is_relative_to_the_scenario(tmp_path):
    (tmp_path / "data").mkdir()
    recorded = tmp_path / "data" / "requests.jsonl"
    recorded.write_text(json.dumps({"inputs": []}) + "\n")
    data = _chaos()
    data["traffic"] = {"file": {"path": "data/requests.jsonl"}}
    data["phases"][1]["faults"][0]["fields"] = ["anything"]  # unknown features: not checked
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    assert scenario.traffic.file.path == str(recorded.resolve())
    assert scenario.traffic.source() == {"type": "file", "path": str(recorded.resolve())}


# ---------------------------------------------------------------------------------------------
# Sweep, timeline, load


def test_expanded_phases_of_a_sweep():
    data = _chaos()
    data["sweep"] = {"fault": "nan", "parameter": "probability", "values": [0, 0.01, 0.5], "phase_duration_s": 4}
    scenario = scenario_from_data(data)
    phases = scenario.expanded_phases()
    assert [p.name for p in phases] == ["before", "storm@0", "storm@0.01", "storm@0.5", "after"]
    assert [p.start_s for p in phases] == [0, 5, 9, 13, 17]
    assert [p.sweep_value for p in phases] == [None, 0, 0.01, 0.5, None]
    assert scenario.total_duration_s == 22
    level = phases[2]
    assert level.source == "storm"
    assert level.faults == (
        {"type": "nan", "label": "nan@0.01", "fields": ["age"], "probability": 0.01, "window": [9.0, 13.0]},
    )
    assert level.labels == ("nan@0.01",)
    # The contracts under the base label hold for every level.
    assert [c.name for c in scenario.contracts_for("nan@0.5")] == ["clean_4xx", "within_latency"]


def test_expanded_phases_of_a_toxic_sweep():
    data = _chaos()
    data["targets"]["candidate"]["demo"]["dependency"] = "toxic"
    data["phases"][1]["toxics"] = [{"name": "store", "type": "latency", "attributes": {"latency": 100, "jitter": 10}}]
    data["sweep"] = {"fault": "store", "parameter": "latency", "values": [0, 500, 2000]}
    phases = scenario_from_data(data).expanded_phases()[1:4]
    assert [p.toxics[0].toxiproxy() for p in phases] == [
        {"name": "store", "type": "latency", "stream": "downstream", "toxicity": 1.0,
         "attributes": {"latency_ms": value, "jitter_ms": 10.0}}
        for value in (0, 500, 2000)
    ]  # fmt: skip
    assert [p.labels for p in phases] == [("nan@0", "store@0"), ("nan@500", "store@500"), ("nan@2000", "store@2000")]


def test_fault_window_moves_into_run_time():
    data = _chaos()
    data["phases"][1]["faults"][0]["window"] = [2, 30]
    (fault,) = scenario_from_data(data).expanded_phases()[1].faults
    assert fault["window"] == [7.0, 15.0]  # phase starts at 5 s; the window is cut at its end


def test_load_shape_of_the_run():
    data = _chaos()
    data["load"] = {"shape": "spike", "base_rate": 20, "peak_rate": 80, "at_s": 8, "for_s": 4}
    scenario = scenario_from_data(data)
    assert scenario.load_shape() == {
        "type": "spike", "base_rate": 20.0, "peak_rate": 80.0, "at_s": 8.0, "for_s": 4.0, "users": 5, "duration_s": 20.0,
    }  # fmt: skip
    data["phases"][1]["load"] = {"rate": 200}  # a phase's own load: the run becomes steps
    scenario = scenario_from_data(data)
    assert scenario.rate_at(3) == 20 and scenario.rate_at(6) == 200 and scenario.rate_at(16) == 20
    shape = scenario.load_shape()
    assert shape["type"] == "step" and shape["users"] == 10 and shape["duration_s"] == 20
    assert shape["steps"] == [{"rate": 20.0, "duration_s": 5.0}, {"rate": 200.0, "duration_s": 10.0}, {"rate": 20.0, "duration_s": 5.0}]


def test_payload_faults_share_their_arms():
    data = _chaos()
    data["phases"][1]["faults"].append({"type": "inf", "label": "inf", "arms": ["candidate"]})
    with pytest.raises(ScenarioError, match=r"faults\[1\]\.arms: payload faults share one faulted request"):
        scenario_from_data(data)
    data["phases"][1]["faults"][1] = {"type": "latency", "label": "slow", "arms": ["candidate"], "ms": 50}
    scenario_from_data(data)  # transport faults may target one arm


# ---------------------------------------------------------------------------------------------
# Consistency with the rest of the code and the docs


def test_toxic_tables_match_the_toxic_proxy():
    from dataclasses import fields

    from proxies.toxics import TOXIC_TYPES

    assert set(TOXIC_ATTRIBUTES) == set(TOXIC_TYPES)
    for kind, cls in TOXIC_TYPES.items():
        assert TOXIC_ATTRIBUTES[kind] == tuple(f.name for f in fields(cls)), kind
        assert TOXIC_ALIASES[kind] == cls.ALIASES, kind
        assert TOXIC_REQUIRED[kind] == cls.REQUIRED, kind


def test_toxics_pass_the_toxic_proxy_parser():
    from proxies.toxics import parse_toxic

    scenario = load_scenario(REPO / "scenarios" / "upstream-latency.yaml")
    for phase in scenario.expanded_phases():
        for toxic in phase.toxics:
            parsed = parse_toxic(toxic.toxiproxy()).to_json()
            assert {**parsed, "attributes": None} == {**toxic.toxiproxy(), "attributes": None}
            assert toxic.attributes.items() <= parsed["attributes"].items()


def test_every_contract_is_documented():
    docs = (REPO / "docs" / "scenarios.md").read_text()
    for name, cls in CONTRACTS.items():
        row = next((line for line in docs.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is not in the contracts table"
        for param in cls.model_fields:
            assert f"`{param}`" in row, f"{name}.{param} is not documented"


def test_validate_command(capsys):
    assert validate_command(REPO / "scenarios" / "dose-response-nan.yaml") == 0
    out = capsys.readouterr().out
    assert out.strip() == f"ok: {REPO / 'scenarios' / 'dose-response-nan.yaml'}: 7 phases, 5 faults, 56 s"


def test_validate_command_reports_problems_on_stderr(tmp_path, capsys):
    data = _chaos()
    data["phases"][1]["faults"][0]["probability"] = 2
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert validate_command(path) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"{path}: phases[1].faults[0].probability: Input should be less than or equal to 1 (got 2)"


def test_schema_command_prints_the_schema(capsys):
    assert schema_command() == 0
    assert json.loads(capsys.readouterr().out) == scenario_json_schema()


def test_scenario_from_data_does_not_change_its_input():
    data = _chaos()
    before = copy.deepcopy(data)
    scenario_from_data(data)
    assert data == before


def test_a_chaos_scenario_gets_a_baseline_unless_told_otherwise():
    data = _chaos()
    del data["targets"]["baseline"]
    assert scenario_from_data(data).targets.arms() == ("incumbent", "candidate", "baseline")
    data["targets"]["baseline"] = None
    assert scenario_from_data(data).targets.arms() == ("incumbent", "candidate")
    quiet = {"name": "quiet", "phases": [{"name": "shadow", "duration_s": 5}]}
    assert scenario_from_data(quiet).targets.arms() == ("incumbent", "candidate")


# ---------------------------------------------------------------------------------------------
# Over gRPC


def _grpc_shadow(**changes) -> dict:
    data = {"name": "g", "protocol": "grpc", "phases": [{"name": "shadow", "duration_s": 5}]}
    data.update(changes)
    return data


def test_a_grpc_scenario_reads_with_codec_v2grpc_and_reads_back_the_same(schema):
    scenario = scenario_from_data(_grpc_shadow())
    assert scenario.protocol == "grpc" and scenario.codec == "v2grpc"
    resolved = json.loads(scenario.model_dump_json())
    jsonschema.Draft202012Validator(schema).validate(resolved)
    assert json.loads(scenario_from_data(resolved).model_dump_json()) == resolved
    assert scenario_from_data(_grpc_shadow(codec="v2grpc")).codec == "v2grpc"
    assert scenario_from_data({"name": "h", "phases": [{"name": "p", "duration_s": 5}]}).codec is None  # http: detected


def test_grpc_targets_are_host_port_or_grpc_urls(schema):
    targets = {"incumbent": "127.0.0.1:9001", "candidate": "grpc://localhost:9002", "baseline": "grpc://[::1]:9003"}
    scenario = scenario_from_data(_grpc_shadow(targets=targets))
    assert scenario.targets.url("candidate") == "grpc://localhost:9002"
    assert scenario.targets.demo("incumbent") is None
    jsonschema.Draft202012Validator(schema).validate(_grpc_shadow(targets=targets))


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.update(codec="v2"), "codec: over gRPC the requests and responses are v2 protobuf messages: codec v2grpc"),
        (lambda d: d.update(protocol="http", codec="v2grpc"), "codec: v2grpc reads gRPC messages; this scenario's protocol is http"),
        (lambda d: d.update(protocol="udp"), "protocol: Input should be 'http' or 'grpc'"),
        (lambda d: d.update(targets={"candidate": "http://127.0.0.1:9002"}), "targets.candidate: http://127.0.0.1:9002 is an HTTP URL; over gRPC a target is host:port or grpc://host:port"),
        (lambda d: d.update(protocol="http", targets={"candidate": "127.0.0.1:9002"}), "targets.candidate: 127.0.0.1:9002 is a gRPC target; with protocol http give http://host:port"),
        (lambda d: d.update(targets={"candidate": "grpc://127.0.0.1:9002/v2"}), "targets.candidate: a gRPC target is host:port or grpc://host:port, without a path"),
        (lambda d: d.update(targets={"candidate": "grpc://127.0.0.1"}), "targets.candidate: expected host:port or grpc://host:port with an explicit port"),
        (lambda d: d.update(targets={"candidate": "10.1.2.3:9002"}), "targets.candidate: 10.1.2.3:9002 is not a loopback address"),
        (lambda d: d.update(targets={"candidate": "ftp://127.0.0.1:9002"}), "targets.candidate: expected an http://host:port URL (or 'demo'), got 'ftp://127.0.0.1:9002'; over gRPC: host:port or grpc://host:port"),
    ],
)
def test_grpc_protocol_rules_name_the_field(tmp_path, change, expected):
    data = _grpc_shadow()
    change(data)
    problems = _problems(data, tmp_path)
    assert any(line.startswith(expected) for line in problems), problems


def _grpc_chaos(fault: dict) -> dict:
    data = _chaos()
    data["protocol"] = "grpc"
    data["phases"][1]["faults"] = [{"label": "f", **fault}]
    data["contracts"] = {}
    return data


@pytest.mark.parametrize(
    "fault, expected",
    [
        ({"type": "bandwidth", "bytes_per_s": 100}, "phases[1].faults[0].type: bandwidth is not supported over gRPC: it throttles the bytes of one HTTP/1.1 connection"),
        ({"type": "truncate"}, "phases[1].faults[0].type: truncate is not supported over gRPC"),
        ({"type": "malformed_json"}, "phases[1].faults[0].type: malformed_json is not supported over gRPC: it breaks JSON text"),
        ({"type": "oversize"}, "phases[1].faults[0].type: oversize is not supported over gRPC"),
        ({"type": "broken_chars", "raw": True}, "phases[1].faults[0].raw: broken_chars raw breaks a JSON string literal"),
        ({"type": "missing_field", "fields": ["$.inputs[0]"]}, "phases[1].faults[0].fields[0]: JSON paths select nodes of a JSON body; over gRPC select features by name"),
    ],
)
def test_faults_the_grpc_proxy_cannot_apply_are_refused(tmp_path, fault, expected):
    problems = _problems(_grpc_chaos(fault), tmp_path)
    assert any(line.startswith(expected) for line in problems), problems
    http = _grpc_chaos(fault)
    http["protocol"] = "http"
    scenario_from_data(http)  # the same fault is fine over HTTP


@pytest.mark.parametrize(
    "fault",
    [
        {"type": "latency", "ms": 50},
        {"type": "hang"},
        {"type": "abort", "status": 503},
        {"type": "abort", "grpc_status": 14},
        {"type": "nan", "fields": ["age"]},
        {"type": "null", "fields": ["age"]},
        {"type": "missing_field", "fields": ["age"]},
        {"type": "wrong_type", "fields": ["age"]},
    ],
)
def test_faults_the_grpc_proxy_applies_are_accepted(fault):
    scenario = scenario_from_data(_grpc_chaos(fault))
    assert scenario.expanded_phases()[1].faults[0]["type"] == fault["type"]


def test_the_schema_and_the_grpc_proxy_agree_on_transport_faults():
    """The schema refuses exactly the transport faults `proxies.grpc_proxy.check_plan` refuses
    (harness does not import proxies, so this test keeps the two lists equal)."""
    from harness.faults import FAULTS, FaultPlan, make_fault
    from harness.scenario.schema import GRPC_UNSUPPORTED_FAULTS
    from proxies.grpc_proxy import check_plan

    for name, cls in FAULTS.items():
        if cls.kind != "transport":
            continue
        try:
            check_plan(FaultPlan([make_fault({"type": name})], seed=0))
            proxy_runs_it = True
        except ValueError:
            proxy_runs_it = False
        assert proxy_runs_it == (name not in GRPC_UNSUPPORTED_FAULTS), name


def test_grpc_traffic_carries_no_nulls_and_replays_only_grpc_captures(tmp_path):
    targets = {"incumbent": "127.0.0.1:9001", "candidate": "127.0.0.1:9002"}
    features = [{"name": "x", "min": 0, "max": 1, "missing": 0.1}]
    problems = _problems(_grpc_shadow(targets=targets, traffic={"synthetic": {"features": features}}), tmp_path)
    assert any(p.startswith("traffic.synthetic.features[0].missing: a v2 gRPC tensor cannot carry a null") for p in problems), problems
    lines = tmp_path / "requests.jsonl"
    lines.write_text('{"inputs": []}\n')
    problems = _problems(_grpc_shadow(targets=targets, traffic={"file": {"path": str(lines)}}), tmp_path, "file.yaml")
    assert any(p.startswith("traffic.file.path: ") and "over gRPC only a capture recorded by the gRPC proxy" in p for p in problems), problems


@pytest.mark.parametrize("path", [p for p in LIBRARY if p.stem.startswith("grpc-")], ids=lambda p: p.stem)
def test_a_grpc_library_scenario_is_the_twin_of_its_http_scenario(path):
    """grpc-X.yaml is X.yaml over gRPC: the same targets, traffic, load, phases, contracts and checks."""
    grpc = json.loads(load_scenario(path).model_dump_json())
    http = json.loads(load_scenario(path.with_name(path.name.removeprefix("grpc-"))).model_dump_json())
    assert (grpc.pop("protocol"), grpc.pop("codec"), http.pop("protocol"), http.pop("codec")) == ("grpc", "v2grpc", "http", None)
    for key in ("name", "description"):
        grpc.pop(key), http.pop(key)
    assert grpc == http
