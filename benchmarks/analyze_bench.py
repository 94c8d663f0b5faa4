"""Time `shadowline analyze` on synthetic captures of growing size: seconds and peak memory.

    .venv/bin/python benchmarks/analyze_bench.py [--sizes 100000 1000000]

Each capture holds demo-like v2 exchanges (distinct response bodies, ~3% label flips, a few
candidate timeouts), written through `CaptureWriter` as the proxy writes them. `analyze`
runs as a child process; its wall time and peak RSS (from wait4) are the figures. Goal
(issue 3): 1M exchanges judged in under 5 s, cost growing linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.synthetic import write_synthetic_capture  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "analyze"


def time_analyze(run_dir: Path) -> dict:
    argv = [str(ROOT / ".venv" / "bin" / "shadowline"), "analyze", str(run_dir)]
    if not Path(argv[0]).exists():
        argv = [sys.executable, "-m", "harness.cli", "analyze", str(run_dir)]
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out = process.stdout.read().decode()
    err = process.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1, 3):
        raise SystemExit(f"analyze failed with exit {code}: {err.strip()[-500:]}")
    verdict = out.strip().splitlines()[0] if out.strip() else "?"
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit_code": code, "verdict": verdict, "argv": argv}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    results = []
    for n in args.sizes:
        run_dir = OUT / f"n{n}"
        capture = run_dir / "capture.db"
        if not capture.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            print(f"writing a synthetic capture of {n:,} exchanges ...", flush=True)
            print(f"  written in {write_synthetic_capture(capture, n, timeout_rate=0.001):.1f} s ({capture.stat().st_size / 2**20:.0f} MiB)", flush=True)
        result = {"exchanges": n, **time_analyze(run_dir)}
        results.append(result)
        print(f"analyze {n:>10,} exchanges: {result['seconds']:6.2f} s, peak RSS {result['peak_rss_mib']:7.1f} MiB, verdict {result['verdict']}", flush=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = (b["seconds"] / a["seconds"]) / (b["exchanges"] / a["exchanges"])
        print(f"time per exchange at {b['exchanges']:,} vs {a['exchanges']:,}: {growth:.2f}x (1.0 = linear)")
    big = [r for r in results if r["exchanges"] == 1_000_000]
    if big:
        print(f"goal: 1M exchanges judged in under 5 s: {'met' if big[0]['seconds'] < 5 else 'NOT met'} ({big[0]['seconds']} s)")
    (OUT / "results.json").write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
