"""`shadowline demo`: the whole flow on embedded defaults (a composition root).

Demo incumbent and candidate servers, the HTTP shadow proxy capturing to a run directory,
a seeded Locust load through the proxy, then a summary of the capture. Every child is
started here and stopped here, by PID, whatever happens.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.procs import Child, shadowline_command, spawn
from harness.records import ARMS, CANDIDATE, INCUMBENT


def run_demo(*, duration: float, rate: float, variant: str, seed: int, run_dir: Path | None) -> dict:
    from harness.capture import CaptureReader
    from harness.load import LoadSpec, run_load
    from harness.rundir import new_run_dir, write_run_info

    console = Console(stderr=False)
    run_dir = run_dir or new_run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_info(run_dir, command=sys.argv, seed=seed, extra={"demo": {"duration": duration, "rate": rate, "variant": variant}})
    logs = run_dir / "logs"
    children: list[Child] = []
    try:
        incumbent = spawn("incumbent", shadowline_command("serve-demo", "--role", "incumbent", "--port", "0"), logs / "incumbent.log")
        children.append(incumbent)
        candidate = spawn(
            "candidate",
            shadowline_command("serve-demo", "--role", "candidate", "--variant", variant, "--port", "0"),
            logs / "candidate.log",
        )
        children.append(candidate)
        proxy = spawn(
            "proxy",
            shadowline_command(
                "proxy", "http", "--listen", "127.0.0.1:0", "--incumbent", incumbent.url,
                "--candidate", candidate.url, "--run-dir", str(run_dir), "--seed", str(seed),
            ),
            logs / "proxy.log",
        )
        children.append(proxy)
        console.print(f"[bold]shadowline demo[/]: {duration:g} s at {rate:g} req/s through {proxy.url}, candidate '{variant}'")
        users = max(1, min(50, math.ceil(rate / 20)))
        spec = LoadSpec(target=proxy.url, rate=rate, duration_s=max(1, round(duration)), users=users, seed=seed)

        def progress(stats: dict) -> None:
            if "requests" in stats:
                console.print(
                    f"  {stats['elapsed_s']:5.1f} s  requests {stats['requests']:>7}  "
                    f"failures {stats['failures']:>5}  rate {stats.get('current_rps', 0):7.1f}/s"
                )

        load = run_load(spec, run_dir / "load", on_progress=progress)
        proxy_exit = proxy.stop()
    finally:
        for child in reversed(children):
            child.stop()
    with CaptureReader(run_dir / "capture.db") as capture:
        summary = capture.summary()
        agreement = _label_agreement(capture)
    _print_summary(console, load, summary, agreement, run_dir, proxy_exit)
    return {"summary": summary, "agreement": agreement, "load": load, "run_dir": run_dir}


def _label_agreement(capture) -> dict:
    """Paired labels: same request, both arms answered 200. A first look; the judge does it properly."""
    from proxies.demo_server import parse_infer_response

    pairs = flips = 0
    for inc, cand in zip(capture.bodies(INCUMBENT), capture.bodies(CANDIDATE)):
        if inc is None or cand is None:
            continue
        try:
            inc_labels, _ = parse_infer_response(inc)
            cand_labels, _ = parse_infer_response(cand)
        except ValueError:
            continue
        if inc_labels.shape != cand_labels.shape:
            continue
        pairs += len(inc_labels)
        flips += int((inc_labels != cand_labels).sum())
    return {"pairs": pairs, "flips": flips, "flip_rate": flips / pairs if pairs else None}


def _print_summary(console: Console, load, summary: dict, agreement: dict, run_dir: Path, proxy_exit: int) -> None:
    table = Table(title="capture")
    for column in ("arm", "exchanges", "ok", "statuses", "errors"):
        table.add_column(column)
    for arm in ARMS:
        row = summary[arm]
        if row["present"]:
            statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items()) or "-"
            errors = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "-"
            table.add_row(arm, str(row["present"]), str(row["ok"]), statuses, errors)
    console.print(table)
    console.print(
        f"load: {load.requests} requests, {load.failures} failures, {load.rps:.1f} req/s, "
        f"p50 {load.p50_ms} ms, p99 {load.p99_ms} ms (client side, through the proxy)"
    )
    if agreement["pairs"]:
        console.print(
            f"label flips: {agreement['flips']} of {agreement['pairs']} paired predictions "
            f"({100 * agreement['flip_rate']:.2f}%)"
        )
    console.print(f"proxy exit code {proxy_exit}; run directory: {run_dir}")
