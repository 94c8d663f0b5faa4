"""`shadowline demo`: the whole flow on embedded defaults (a composition root).

Demo incumbent and candidate servers (8 ms each, like the target service), the shadow proxy
capturing to a run directory, a seeded Locust load through the proxy with a live view
(requests, rate, running flip rate), then the judge: verdict, reasons, reports. Over HTTP
(v2 REST) by default; `protocol="grpc"` runs the same models, rows and seed over v2 gRPC
(`serve-demo --grpc`, `proxy grpc`, ModelInfer calls). Every child is started here and
stopped here, by PID, whatever happens.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.live import Live

from harness.capture import CaptureError, CaptureReader
from harness.procs import Child, shadowline_command, spawn
from harness.records import CANDIDATE

# The demo servers answer in 8 ms plus up to 2 ms of jitter, as the service in the brief does;
# it also keeps latency comparisons about the models, not about scheduler noise.
SERVER_LATENCY = ("--latency-ms", "8", "--jitter-ms", "2")


class RunningFlips:
    """Counts label flips in the capture as it grows (reads only rows it has not seen)."""

    def __init__(self, capture_path: Path, codec: str = "v2"):
        from harness.codecs import get_codec

        self.path = capture_path
        self.codec = get_codec(codec)
        self.seq = 0
        self.pairs = 0
        self.flips = 0

    def update(self) -> None:
        try:
            with CaptureReader(self.path) as reader:
                rows = reader.paired_bodies_since(self.seq, CANDIDATE)
        except CaptureError:
            return  # not created yet
        for seq, incumbent, candidate in rows:
            self.seq = seq
            if incumbent is None or candidate is None:
                continue
            try:
                a = self.codec.decode_response(incumbent).labels
                b = self.codec.decode_response(candidate).labels
            except ValueError:
                continue
            if a is not None and b is not None and len(a) == len(b):
                self.pairs += len(a)
                self.flips += int((a != b).sum())

    @property
    def rate(self) -> float | None:
        return self.flips / self.pairs if self.pairs else None


def _view(stats: dict, flips: RunningFlips, duration: float) -> str:
    """One short status line (fits an 80-column terminal)."""
    rate = flips.rate
    return (
        f"{stats.get('elapsed_s', 0):4.0f}/{duration:g} s  {stats.get('requests', 0):,} req  "
        f"{stats.get('failures', 0):,} failed  {stats.get('current_rps', 0):,.0f}/s  "
        f"paired {flips.pairs:,}  flips " + (f"{100 * rate:.2f}%" if rate is not None else "-")
    )


def run_demo(*, duration: float, rate: float, variant: str, seed: int, run_dir: Path | None, protocol: str = "http") -> int:
    """Run the demo over `protocol` ("http" or "grpc"); print the verdict; return its exit code."""
    from harness.cli import print_verdict
    from harness.judge import judge
    from harness.load import LoadSpec, start_load
    from harness.rundir import new_run_dir, write_run_info

    if protocol not in ("http", "grpc"):
        raise ValueError(f"protocol must be http or grpc, got {protocol!r}")

    def address(child: Child) -> str:
        return f"grpc://{child.host}:{child.port}" if grpc else child.url

    console = Console()
    run_dir = run_dir or new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, command=sys.argv, seed=seed, extra={"demo": {"duration": duration, "rate": rate, "variant": variant, "protocol": protocol}})
    logs = run_dir / "logs"
    grpc = protocol == "grpc"
    server = ("serve-demo", "--grpc") if grpc else ("serve-demo",)
    children: list[Child] = []
    try:
        incumbent = spawn(
            "incumbent", shadowline_command(*server, "--role", "incumbent", "--port", "0", *SERVER_LATENCY), logs / "incumbent.log"
        )
        children.append(incumbent)
        candidate = spawn(
            "candidate",
            shadowline_command(*server, "--role", "candidate", "--variant", variant, "--port", "0", *SERVER_LATENCY),
            logs / "candidate.log",
        )
        children.append(candidate)
        proxy = spawn(
            "proxy",
            shadowline_command(
                "proxy", protocol, "--listen", "127.0.0.1:0", "--incumbent", address(incumbent),
                "--candidate", address(candidate), "--run-dir", str(run_dir), "--seed", str(seed),
            ),
            logs / "proxy.log",
        )
        children.append(proxy)
        console.print(
            f"[bold]shadowline demo[/]: {duration:g} s at {rate:g} req/s through the {protocol} shadow proxy {address(proxy)}; "
            f"candidate variant '{variant}'; run {run_dir}",
            highlight=False,
        )
        # Each Locust user sends its requests one after another; keep each under ~20/s so
        # an 8-10 ms answer never caps the rate.
        users = max(1, min(100, math.ceil(rate / 20)))
        spec = LoadSpec(target=address(proxy), rate=rate, duration_s=max(1, round(duration)), users=users, seed=seed,
                        protocol=protocol)
        flips = RunningFlips(run_dir / "capture.db", "v2grpc" if grpc else "v2")
        load = start_load(spec, run_dir / "load")
        with Live(_view({}, flips, duration), console=console, refresh_per_second=4, transient=True) as live:

            def progress(stats: dict) -> None:
                flips.update()
                live.update(_view(stats, flips, duration))

            result = load.wait(on_progress=progress)
        proxy.stop()
    finally:
        for child in reversed(children):
            child.stop()
    console.print(
        f"load: {result.requests:,} requests, {result.failures:,} failures, {result.rps:,.1f} req/s; "
        f"client latency through the proxy p50 {result.p50_ms} ms, p99 {result.p99_ms} ms",
        highlight=False,
    )
    judgement = judge(run_dir, codec="v2grpc" if grpc else "v2")
    print_verdict(judgement)
    return judgement.exit_code
