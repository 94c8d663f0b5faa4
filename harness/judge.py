"""Judge a run directory: capture -> evidence -> checks -> verdict -> reports (a composition root).

`analyze` and `demo` both come through here, so a capture is judged the same way however it
was made. The codec used (named or detected) is recorded in the run directory, so a second
`analyze` of the same run decodes it the same way.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.capture import CaptureError, CaptureReader
from harness.verdict import GO, NO_GO, Verdict

CODEC_FILE = "codec.json"
SCENARIO_FILE = "scenario.json"  # the resolved scenario of a `shadowline run`: analyze judges it the same way
EXIT_CODES = {GO: 0, NO_GO: 1, "INCONCLUSIVE": 3}


class JudgeInputError(ValueError):
    """Bad input to the judge (policy file, overrides, codec spec): exit code 2."""


@dataclass
class Judgement:
    verdict: Verdict
    report: dict
    paths: dict[str, Path]
    seconds: float

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict.decision]


def load_policy(path: Path | None, overrides: list[str]) -> dict:
    """Check parameters from a policy file and `CHECK.PARAM=VALUE` flags (flags win).

    The file: `checks: {name: {param: value}}`; `name: false` leaves a default check out.
    """
    config: dict[str, dict] = {}
    if path is not None:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise JudgeInputError(f"policy file {path}: {exc}") from None
        checks = (doc or {}).get("checks") if isinstance(doc, dict) else None
        if not isinstance(checks, dict):
            raise JudgeInputError(f"policy file {path}: expected a mapping 'checks: {{name: {{param: value}}}}'")
        config.update(checks)  # values are checked, with their names, by checks_from_config
    for item in overrides:
        key, sep, raw = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot or not name or not param:
            raise JudgeInputError(f"--set {item!r}: expected CHECK.PARAM=VALUE, e.g. label_agreement.margin=0.02")
        params = config.get(name)
        config[name] = {**(params if isinstance(params, dict) else {}), param: yaml.safe_load(raw)}
    return config


def _codec(run_dir: Path, name: str | None, options: dict):
    """The codec named on the command line, else the one recorded for this run, else None (detect)."""
    from harness.codecs import get_codec

    recorded = run_dir / CODEC_FILE
    if name is None and recorded.exists():
        try:
            saved = json.loads(recorded.read_text())
            name, options = saved["name"], saved.get("options", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise JudgeInputError(f"{recorded}: not a codec record ({exc})") from None
    if name is None:
        return None
    try:
        return get_codec(name, **options)
    except (KeyError, TypeError, ValueError) as exc:
        raise JudgeInputError(f"--codec {name}: {exc}") from None


def _recorded_scenario(path: Path):
    from harness.scenario import ScenarioError, scenario_from_data

    try:
        return scenario_from_data(json.loads(path.read_text()), source=str(path))
    except (ValueError, ScenarioError) as exc:  # ScenarioError names the file and field
        raise JudgeInputError(str(exc) if isinstance(exc, ScenarioError) else f"{path}: {exc}") from None


def _run_info(run_dir: Path, evidence) -> dict:
    from harness.rundir import RunDirError, read_run_info

    try:
        info = read_run_info(run_dir)
    except RunDirError:
        info = {}  # a capture copied without its run.json can still be judged
    started = evidence.started_at
    duration = float(started.max() - started.min()) if len(started) else 0.0
    return {
        "id": info.get("run_id", run_dir.name),
        "seed": info.get("seed"),
        "start": info.get("started_at"),
        "duration_s": round(duration, 3),
        "versions": info.get("versions", {}),
        "command": info.get("argv"),
    }


def judge(
    run_dir: Path,
    *,
    codec: str | None = None,
    codec_options: dict | None = None,
    checks_config: dict[str, dict] | None = None,
    arm: str = "candidate",
    scenario=None,
) -> Judgement:
    """Judge `run_dir/capture.db` and write report.json, report.md, report.html and junit.xml.

    With a `scenario` (a chaos run), the shadow checks judge the phases without faults, the
    steady-state checks each steady-state phase, and the contracts each fault (see
    `scenario_results`).

    Speed (a large capture, from `harness.pairing.PARALLEL_MIN` exchanges): worker processes read
    the capture while this process imports what comes next (`_warm_imports`, which also freezes
    the garbage collector's view of what is loaded then: `gc.freeze`); then a forked child draws
    the HTML report's figures while this process runs the checks (`reports.plots.PlotJob`).
    Neither changes a result.
    """
    from harness.checks import checks_from_config, default_checks
    from harness.codecs import DecodeError
    from harness.pairing import EvidenceJob
    from harness.policy import decide
    from reports import build_report, write_reports

    began = time.perf_counter()
    capture_path = run_dir / "capture.db"
    if not run_dir.is_dir():
        raise CaptureError(f"{run_dir}: no such run directory")
    if scenario is None and (run_dir / SCENARIO_FILE).exists():
        scenario = _recorded_scenario(run_dir / SCENARIO_FILE)
    chosen = _codec(run_dir, codec, codec_options or {})
    try:
        if scenario is not None:
            checks = scenario.check_objects()
        else:
            checks = checks_from_config(checks_config) if checks_config else default_checks()
    except ValueError as exc:
        raise JudgeInputError(str(exc)) from None
    with CaptureReader(capture_path) as reader:
        if reader.count() == 0:
            raise CaptureError(f"{capture_path}: the capture holds no exchanges; nothing to judge")
        try:
            # A large capture is read and decoded by worker processes; meanwhile this one imports
            # what the checks and reports need (scipy, matplotlib: most of a second).
            with EvidenceJob(reader, chosen) as job:
                if job.parallel:
                    _warm_imports(ready=job.done)
                evidence = job.result()
        except DecodeError as exc:  # no codec fits this traffic: the user must name one
            raise JudgeInputError(f"{capture_path}: {exc}") from None
        counts = reader.summary()
    if codec is not None or not (run_dir / CODEC_FILE).exists():
        record = {"name": evidence.codec, "options": codec_options or {}, "detected": codec is None}
        (run_dir / CODEC_FILE).write_text(json.dumps(record, indent=2) + "\n")
    from reports.plots import PlotJob

    faults, dose = [], None
    # The plots need only the evidence: a large capture's are drawn in a child process while
    # this one runs the checks (same figures; see PlotJob).
    plots = PlotJob(evidence)
    try:
        if scenario is not None:
            results, dose = scenario_results(evidence, scenario, checks, arm, alive=_alive(run_dir))
            faults = [
                {"phase": p.name, "labels": list(p.labels), "start_s": p.start_s, "end_s": p.end_s}
                for p in scenario.expanded_phases()
                if p.faulted
            ]
        else:
            results = [check.evaluate(evidence, arm) for check in checks]
        verdict = decide(results)
        report = build_report(
            verdict, evidence, run=_run_info(run_dir, evidence), counts=counts, faults=faults, dose_response=dose
        )
        paths = write_reports(run_dir, report, evidence, drawn=plots.result())
    finally:
        plots.close()
    return Judgement(verdict, report, paths, time.perf_counter() - began)


def _warm_imports(ready=lambda: False) -> None:
    """Import the modules the reports and the checks will need, and warm the plots' font caches
    (while the evidence is read by worker processes, this overlaps their work instead of adding
    to it). Nothing else: a module that fails to import here fails again, with its error, where
    it is used.

    What the plots' child needs comes first: once `ready()` (the evidence is read), the rest is
    left to be imported where it is used, so the child can start drawing (a small capture is
    read before everything is imported)."""
    import gc
    import importlib
    import sys

    def warm_plots() -> None:
        for name in ("reports.plots", "matplotlib.backends.backend_svg", "reports.html"):
            importlib.import_module(name)
        from reports.plots import warm_up

        warm_up()

    steps = [warm_plots] + [lambda name=name: importlib.import_module(name)
                            for name in ("reports.markdown", "reports.junit", "jsonschema", "scipy.stats")]

    # The pool's thread in this process receives the workers' results (megabytes, through a
    # pipe, a pipe-buffer at a time); at the default switch interval (5 ms) it would get the
    # GIL back from the imports only every 5 ms per 64 KiB, and the workers would wait for it.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, 0.0002))
    try:
        for step in steps:
            try:
                step()
            except Exception:  # only a head start: imported and drawn (or failing) later all the same
                pass
            if ready():
                break
    finally:
        sys.setswitchinterval(interval)
    # What is loaded now (matplotlib, scipy: hundreds of thousands of objects) stays loaded: as
    # the gc module's documentation advises before a fork (the plots' child, see PlotJob), move
    # it to the permanent generation, so no collection in either process walks it again (and no
    # page of it is copied in the child for the collector's bookkeeping). It also spares this
    # process a walk over all of it when it exits (about a quarter of a second). Garbage is
    # collected first, so no cycle that is already garbage is kept.
    gc.collect()
    gc.freeze()


# A fault-free phase right after a faulted one is judged from this many seconds into it:
# requests sent just before the boundary are still answered under the fault.
SETTLE_S = 1.0
# A toxic acts when the model server calls its dependency, a few ms after the request arrived,
# and toxics switch within tens of ms of a boundary: a toxic's contracts leave out the requests
# this close to either end of its phase.
TOXIC_GUARD_S = 0.5


def phase_masks(evidence, phases) -> dict[str, "np.ndarray"]:
    """Per phase name, the exchanges that arrived during it (time from the first exchange).

    A fault-free phase that follows a faulted one starts `SETTLE_S` later.
    """
    elapsed = evidence.started_at - evidence.started_at.min() if evidence.n_exchanges else evidence.started_at
    masks = {}
    for i, p in enumerate(phases):
        start = p.start_s
        if i and phases[i - 1].faulted and not p.faulted:
            start += min(SETTLE_S, p.duration_s / 2)
        masks[p.name] = (elapsed >= start) & (elapsed < p.end_s)
    return masks


ALIVE_FILE = "alive.json"  # the runner's liveness probe of each arm's server at the end of the load


def _alive(run_dir: Path) -> dict[str, bool] | None:
    path = run_dir / ALIVE_FILE
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError as exc:
        raise JudgeInputError(f"{path}: {exc}") from None


def scenario_results(evidence, scenario, checks, arm: str, *, alive: dict[str, bool] | None = None):
    """Every check of a chaos run, and the dose-response of a sweep (or None).

    Shadow checks judge the fault-free phases; steady-state checks each steady-state phase
    (named `steady:<phase>:<check>`); one contract check per fault and contract.
    """
    import dataclasses

    import numpy as np

    from harness.checks.contracts import Timeline, contract_checks, dose_response
    from harness.evidence import subset
    from harness.scenario import base_label

    phases = scenario.expanded_phases()
    masks = phase_masks(evidence, phases)
    clean = np.zeros(evidence.n_exchanges, dtype=bool)
    for phase in phases:
        if not phase.faulted:
            clean |= masks[phase.name]
    results = [check.evaluate(subset(evidence, clean), arm) for check in checks]
    for phase in phases:
        if phase.steady_state:
            part = subset(evidence, masks[phase.name])
            for check in scenario.steady_state_check_objects():
                result = check.evaluate(part, arm)
                results.append(dataclasses.replace(result, name=f"steady:{phase.name}:{result.name}"))
    run_start = float(evidence.started_at.min()) if evidence.n_exchanges else 0.0
    guarded = [
        dataclasses.replace(p, start_s=p.start_s + TOXIC_GUARD_S, duration_s=p.duration_s - 2 * TOXIC_GUARD_S) if p.toxics else p
        for p in phases
    ]
    timeline = Timeline.from_phases(guarded, run_start, alive=alive)
    contracts = scenario.contract_items()
    results += contract_checks(contracts, evidence, arm=arm, timeline=timeline)
    dose = None
    if scenario.sweep is not None:
        levels = [
            (label, p.sweep_value)
            for p in phases
            if p.sweep_value is not None
            for label in p.labels
            if base_label(label) == scenario.sweep.fault
        ]
        dose = dose_response(evidence, contracts, levels, arm=arm, timeline=timeline, parameter=scenario.sweep.parameter)
    return results, dose

