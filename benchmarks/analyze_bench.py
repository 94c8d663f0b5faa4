"""Time `shadowline analyze` on synthetic captures of growing size: seconds, stages and peak memory.

    .venv/bin/python benchmarks/analyze_bench.py [--sizes 100000 1000000] [--repeat 3] [--stages] [--protocol http|grpc]

Each capture holds demo-like v2 exchanges (distinct response bodies, ~3% label flips, a few
candidate timeouts; `--protocol grpc`: the same as v2 gRPC ModelInfer messages, in
benchmarks/out/analyze/grpc-nN/), written through `CaptureWriter` as the proxy writes them (once: a capture
already in benchmarks/out/analyze/nN/ is reused). `analyze` runs as a child process, `--repeat`
times per size; its wall time and peak RSS (from wait4) are the figures, and the median over
the repeats is reported (every run and the load averages go to results.json). Goal (issue 3):
1M exchanges judged in under 5 s, cost growing linearly.

`--stages` also reports when each stage ended, from inside the child (seconds since it started,
medians): `evidence` (capture read, decoded and paired; the imports the checks and reports
need happen meanwhile), `checks`, `reports` (the four files written), `exit` (the process
ended). It patches the functions that end the stages (EvidenceJob.result, policy.decide,
reports.write_reports), so it times the same code paths as a plain run.

On a 2-core machine other work skews everything: the load averages before each run are
recorded; compare medians of runs made at a low load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out" / "analyze"

# Run in the child with --stages: the CLI's `analyze`, with the end of each stage recorded.
_STAGES_CHILD = r"""
import json, sys, time
began = time.perf_counter()
marks = {}
def mark(name):
    marks.setdefault(name, round(time.perf_counter() - began, 3))
import harness.pairing, harness.policy, reports
def wrap(owner, name, stage, before=False):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if before:
            mark(stage)
        out = original(*args, **kwargs)
        if not before:
            mark(stage)
        return out
    setattr(owner, name, wrapper)
wrap(harness.pairing.EvidenceJob, "result", "evidence")
wrap(harness.policy, "decide", "checks", before=True)
wrap(reports, "write_reports", "reports")
sys.argv = ["shadowline", "analyze", sys.argv[1]]
from harness.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stderr.write("STAGES " + json.dumps(marks) + "\n")
sys.exit(code)
"""


def time_analyze(run_dir: Path, *, stages: bool) -> dict:
    if stages:
        argv = [sys.executable, "-c", _STAGES_CHILD, str(run_dir)]
    else:
        argv = [str(ROOT / ".venv" / "bin" / "shadowline"), "analyze", str(run_dir)]
        if not Path(argv[0]).exists():
            argv = [sys.executable, "-m", "harness.cli", "analyze", str(run_dir)]
    load = os.getloadavg()
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out_file, stderr=err_file, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    usage_rss = round(usage.ru_maxrss / 1024, 1)
    if code not in (0, 1, 3):
        raise SystemExit(f"analyze failed with exit {code}: {err.decode().strip()[-500:]}")
    out_text = out.decode().strip()
    verdict = out_text.splitlines()[0] if out_text else "?"
    result = {"seconds": round(seconds, 2), "peak_rss_mib": usage_rss, "exit_code": code, "verdict": verdict,
              "load_before": [round(x, 2) for x in load], "argv": argv if not stages else argv[:1] + ["-c", "<stages>"] + argv[3:]}
    if stages:
        line = next((x for x in err.decode().splitlines() if x.startswith("STAGES ")), None)
        marks = json.loads(line[len("STAGES "):]) if line else {}
        marks["exit"] = round(seconds, 3)
        result["stages"] = marks
    return result


def median_of(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs of analyze per size (the median is reported)")
    parser.add_argument("--stages", action="store_true", help="also time the stages inside the child (see above)")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http",
                        help="grpc: v2 ModelInfer messages, as the gRPC proxy captures them (no goal set)")
    args = parser.parse_args()
    from harness.synthetic import write_synthetic_capture

    results = []
    for n in args.sizes:
        run_dir = OUT / (f"n{n}" if args.protocol == "http" else f"grpc-n{n}")
        capture = run_dir / "capture.db"
        if not capture.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"writing a synthetic capture of {n:,} exchanges ...", flush=True)
            seconds = write_synthetic_capture(capture, n, timeout_rate=0.001, protocol=args.protocol)
            print(f"  written in {seconds:.1f} s ({capture.stat().st_size / 2**20:.0f} MiB)", flush=True)
        runs = [time_analyze(run_dir, stages=args.stages) for _ in range(max(1, args.repeat))]
        result = {"exchanges": n, "seconds": median_of(runs, "seconds"), "runs": runs,
                  "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "verdict": runs[0]["verdict"]}
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        loads = ", ".join(f"{r['load_before'][0]:.2f}" for r in runs)
        line = (f"analyze {n:>10,} {args.protocol} exchanges: {result['seconds']:6.2f} s (median of {len(runs)}: {each}; "
                f"1-min load before each: {loads}), peak RSS {result['peak_rss_mib']:7.1f} MiB, "
                f"verdict {result['verdict']}")
        if args.stages:
            names = ["evidence", "checks", "reports", "exit"]
            ends = {k: round(statistics.median(r["stages"].get(k, float("nan")) for r in runs), 2) for k in names}
            result["stage_ends_s"] = ends
            spans, last = [], 0.0
            for k in names:
                spans.append(f"{k} {ends[k] - last:.2f}")
                last = ends[k]
            line += "\n    stages (median end times, as durations): " + ", ".join(spans)
        results.append(result)
        print(line, flush=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = (b["seconds"] / a["seconds"]) / (b["exchanges"] / a["exchanges"])
        print(f"time per exchange at {b['exchanges']:,} vs {a['exchanges']:,}: {growth:.2f}x (1.0 = linear)")
    big = [r for r in results if r["exchanges"] == 1_000_000 and args.protocol == "http"]
    if big:
        print(f"goal: 1M exchanges judged in under 5 s: {'met' if big[0]['seconds'] < 5 else 'NOT met'} ({big[0]['seconds']} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / ("results.json" if args.protocol == "http" else "results-grpc.json")).write_text(json.dumps({"command": " ".join(sys.argv), "nproc": os.cpu_count(),
                                                  "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
