"""`shadowline run SCENARIO`: a scripted shadow or chaos run, end to end (a composition root).

Starts what the scenario needs (demo servers, a feature store and the toxic proxy in front of
it, the shadow proxy with the scenario's fault plan), drives the load with Locust, switches
toxics at phase boundaries, then stops everything (always, by PID, even on Ctrl-C or a
failure) and judges the capture with the scenario's checks and contracts.

Protocol: with `protocol: grpc` the demo servers are `serve-demo --grpc`, the shadow proxy is
`proxy grpc` (same options and fault plan file; its codec default is v2grpc) and the load calls
ModelInfer; servers and the proxy are then addressed as grpc://host:port. Nothing else changes.

Time: fault windows and phases count from the first request the proxy receives (the first
exchange in the capture); a timeline thread switches toxics at the phase boundaries on that
clock, within a few tens of milliseconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from harness.capture import CaptureError, CaptureReader
from harness.procs import Child, shadowline_command, spawn


class Runner:
    """Owns the children of one run and stops them all, whatever happens."""

    def __init__(self, scenario, run_dir: Path, console: Console):
        self.scenario = scenario
        self.run_dir = run_dir
        self.console = console
        self.children: list[Child] = []
        self.logs = run_dir / "logs"
        self.toxic_controls: dict[str, object] = {}  # arm -> ToxicControl of its own toxic proxy
        self.grpc = scenario.protocol == "grpc"
        self.active_toxics: dict[str, set[str]] = {}  # arm -> names of the toxics on

    def _spawn(self, name: str, *args: str, ready_lines: int = 1) -> Child:
        child = spawn(name, shadowline_command(*args), self.logs / f"{name}.log", ready_lines=ready_lines)
        self.children.append(child)
        return child

    def address(self, child: Child) -> str:
        """How the proxy and the load reach a server started here: http://host:port, or grpc://host:port."""
        return f"grpc://{child.host}:{child.port}" if self.grpc else child.url

    def record_liveness(self) -> None:
        """Which arms' servers (those started here) are still alive after the load: no_crash reads it."""
        from harness.judge import ALIVE_FILE

        arms = {"incumbent", "candidate", "baseline"}
        alive = {c.name: c.process.poll() is None for c in self.children if c.name in arms}
        (self.run_dir / ALIVE_FILE).write_text(json.dumps(alive) + "\n")

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def start_targets(self) -> dict[str, str]:
        """URLs per arm: running servers named by URL, or demo servers started here."""
        targets = self.scenario.targets
        dependencies = {}  # arm -> host:port of its toxic proxy
        if targets.with_dependency():
            from proxies.toxic_proxy import ToxicControl

            store = self._spawn("feature-store", "serve-feature-store", "--listen", "127.0.0.1:0")
            for arm in targets.with_dependency():  # one toxic proxy per arm: toxics may target one arm
                toxic = self._spawn(
                    f"toxic-proxy-{arm}", "proxy", "toxic", "--upstream", f"{store.host}:{store.port}",
                    "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--seed", str(self.scenario.seed),
                    ready_lines=2,
                )
                dependencies[arm] = f"{toxic.host}:{toxic.ports['toxic proxy']}"
                self.toxic_controls[arm] = ToxicControl(f"http://{toxic.host}:{toxic.ports['toxic control']}")
                self.active_toxics[arm] = set()
        urls = {}
        for arm in targets.arms():
            demo = targets.demo(arm)
            if demo is None:
                urls[arm] = targets.url(arm)
                continue
            role = targets.demo_role(arm)
            args = ["serve-demo", "--role", role, "--port", "0", "--seed", str(self.scenario.seed),
                    "--latency-ms", str(demo.latency_ms), "--jitter-ms", str(demo.jitter_ms),
                    "--error-rate", str(demo.error_rate), "--hang-rate", str(demo.hang_rate),
                    "--nan-behaviour", demo.nan_behaviour, "--model", self.scenario.traffic.model]
            if role == "candidate":
                args += ["--variant", demo.variant or "subtle"]
            if demo.crash_after is not None:
                args += ["--crash-after", str(demo.crash_after)]
            if demo.dependency == "toxic":
                args += ["--dependency", dependencies[arm], "--dependency-timeout-ms", str(demo.dependency_timeout_ms)]
            if self.grpc:
                args.append("--grpc")  # the same model and knobs, over v2 gRPC
            urls[arm] = self.address(self._spawn(arm, *args))
        return urls

    def start_proxy(self, urls: dict[str, str], phases) -> Child:
        settings = self.scenario.proxy
        plan = {"seed": self.scenario.seed, "codec": self.scenario.codec, "faults": [f for p in phases for f in p.faults]}
        plan_path = self.run_dir / "fault-plan.json"
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
        args = ["proxy", self.scenario.protocol, "--listen", "127.0.0.1:0", "--incumbent", urls["incumbent"],
                "--run-dir", str(self.run_dir), "--seed", str(self.scenario.seed), "--sample", str(settings.sample),
                "--shadow-timeout", str(settings.shadow_timeout_s), "--incumbent-timeout", str(settings.incumbent_timeout_s),
                "--max-inflight", str(settings.max_inflight), "--faults", str(plan_path)]
        for arm in ("candidate", "baseline"):
            if arm in urls:
                args += [f"--{arm}", urls[arm]]
        return self._spawn("proxy", *args)

    def switch_toxics(self, phases, elapsed: float) -> None:
        """Make the toxics of the phase at `elapsed` the active set on every toxic proxy."""
        current = next((p for p in phases if p.start_s <= elapsed < p.end_s), phases[-1])
        for arm, control in self.toxic_controls.items():
            wanted = {t.name: t for t in current.toxics if t.arms is None or arm in t.arms}
            for name in self.active_toxics[arm] - set(wanted):
                control.remove(name)
            for name, toxic in wanted.items():
                if name not in self.active_toxics[arm]:
                    control.add(toxic.toxiproxy())
            self.active_toxics[arm] = set(wanted)


class ToxicTimeline(threading.Thread):
    """Switches toxics at phase boundaries, on the clock of the run's first request."""

    def __init__(self, runner: Runner, phases, capture_path: Path):
        super().__init__(name="toxic-timeline", daemon=True)
        self.runner, self.phases, self.capture_path = runner, phases, capture_path
        self.stopping = threading.Event()
        self.t0: float | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.runner.switch_toxics(self.phases, 0.0)  # the first phase's toxics: on from the start
            while self.t0 is None and not self.stopping.wait(0.02):
                self.t0 = _first_request_at(self.capture_path)
            for phase in self.phases[1:]:
                if self.stopping.wait(max(0.0, self.t0 + phase.start_s - time.time()) if self.t0 else 0):
                    return
                self.runner.switch_toxics(self.phases, phase.start_s)
        except Exception as exc:  # reported by the runner; the run goes on without toxics
            self.error = exc

    def elapsed(self) -> float:
        return time.time() - self.t0 if self.t0 else 0.0


def _first_request_at(capture_path: Path) -> float | None:
    """When the proxy received the run's first request (the zero of the fault timeline)."""
    try:
        with CaptureReader(capture_path) as reader:
            return reader.first_started_at()
    except CaptureError:  # not created yet
        return None


def run_scenario(path: Path, *, run_dir: Path | None = None) -> int:
    """Run a scenario file; print the verdict; return its exit code."""
    from harness.cli import print_verdict
    from harness.judge import SCENARIO_FILE, judge
    from harness.load import LoadSpec, start_load
    from harness.rundir import new_run_dir, write_run_info
    from harness.scenario import load_scenario

    scenario = load_scenario(path)  # ScenarioError (exit 2) before anything starts
    console = Console(soft_wrap=True)
    run_dir = run_dir or new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, command=sys.argv, seed=scenario.seed, extra={"scenario": scenario.name, "file": str(path)})
    (run_dir / SCENARIO_FILE).write_text(scenario.model_dump_json(indent=2) + "\n")
    phases = scenario.expanded_phases()
    total = scenario.total_duration_s
    runner = Runner(scenario, run_dir, console)
    timeline = None
    console.print(f"[bold]shadowline run[/] {scenario.name}: {len(phases)} phases, {total} s; run {run_dir}", highlight=False)
    try:
        urls = runner.start_targets()
        proxy = runner.start_proxy(urls, phases)
        spec = LoadSpec(
            target=runner.address(proxy),
            protocol=scenario.protocol,
            duration_s=total,
            users=scenario.users(),
            rows_per_request=scenario.traffic.rows_per_request,
            model=scenario.traffic.model,
            seed=scenario.seed,
            shape=scenario.load_shape(),
            source=scenario.traffic.source(),
            spawn_rate=scenario.load.spawn_rate,
            timeout_s=scenario.load.timeout_s or 10.0,
        )
        timeline = ToxicTimeline(runner, phases, run_dir / "capture.db")
        timeline.start()
        load = start_load(spec, run_dir / "load")
        with Live("starting load ...", console=console, refresh_per_second=4, transient=True) as live:

            def progress(stats: dict) -> None:
                elapsed = timeline.elapsed()
                phase = next((p.name for p in phases if p.start_s <= elapsed < p.end_s), phases[-1].name)
                live.update(
                    f"{elapsed:4.0f}/{total} s  phase [bold]{phase}[/]  {stats.get('requests', 0):,} req  "
                    f"{stats.get('failures', 0):,} failed  {stats.get('current_rps', 0):,.0f}/s"
                )

            result = load.wait(on_progress=progress)
        timeline.stopping.set()
        runner.record_liveness()
        proxy.stop()
        if timeline.error is not None:
            raise RuntimeError(f"switching toxics failed: {timeline.error}")
    finally:
        if timeline is not None:
            timeline.stopping.set()
        runner.stop_all()
    console.print(
        f"load: {result.requests:,} requests, {result.failures:,} failures, {result.rps:,.1f} req/s",
        highlight=False,
    )
    judgement = judge(run_dir, codec=scenario.codec, codec_options={"select": scenario.select} if scenario.select else None, scenario=scenario)
    print_verdict(judgement)
    return judgement.exit_code
