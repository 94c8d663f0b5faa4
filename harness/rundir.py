"""Run directories: `runs/<run-id>/` holds one run's capture, reports, logs and `run.json`.

`run.json` records what is needed to reproduce and to trust a run: the command line, the
seed, when and where it ran, and the versions of everything that can change a result.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import harness

RUN_INFO = "run.json"
CAPTURE_DB = "capture.db"
RUN_INFO_SCHEMA_VERSION = 1


class RunDirError(ValueError):
    """A run directory or its run.json is missing, bad, or would be overwritten."""


def make_run_id() -> str:
    """UTC `YYYYmmdd-HHMMSS-xxxxxx`: sorts by start time; the random suffix keeps runs
    started in the same second (parallel CI jobs, workers) apart."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def new_run_dir(base: str | Path = "runs", run_id: str | None = None, *, overwrite: bool = False) -> Path:
    """Create and return `base/<run-id>/`.

    With no run_id, a fresh unique id is generated. A given run_id may name an existing
    empty directory; an existing non-empty one is refused unless `overwrite=True` (its
    files are then left in place and will be overwritten as the run writes them).
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    if run_id is None:
        while True:  # mkdir is atomic, so two processes can never get the same directory
            path = base / make_run_id()
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    if not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id:
        raise RunDirError(f"bad run id {run_id!r}: must be a plain directory name")
    path = base / run_id
    path.mkdir(exist_ok=True)
    if not overwrite and any(path.iterdir()):
        raise RunDirError(f"{path}: run directory exists and is not empty (pass overwrite to reuse it)")
    return path


def _dist_version(name: str) -> str | None:
    # Installed metadata, so nothing is imported just to read a version; None when absent.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions that can change a run's results (None: not installed)."""
    return {
        "python": platform.python_version(),
        "shadowline": harness.__version__,
        "numpy": _dist_version("numpy"),
        "httptools": _dist_version("httptools"),
        "uvloop": _dist_version("uvloop"),
        "platform": platform.platform(),
    }


def write_run_info(run_dir: str | Path, *, command: list[str], seed: int | None,
                   extra: dict | None = None) -> dict:
    """Write `run_dir/run.json` and return what was written.

    `extra` (e.g. scenario name, targets) is stored under the "extra" key so it can never
    shadow the standard fields.

    When run.json is already there (a command such as `shadowline demo` wrote it, then started
    a proxy writing into the same run directory), the first writer's record is kept: the later
    one only adds its command line to `extra.commands` and the `extra` keys not yet present.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_INFO
    try:
        existing = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = None
    if isinstance(existing, dict) and isinstance(existing.get("extra"), dict):
        existing["extra"].setdefault("commands", []).append([str(a) for a in command])
        for key, value in (extra or {}).items():
            existing["extra"].setdefault(key, value)
        _write_json(path, existing)
        return existing
    info = {
        "schema_version": RUN_INFO_SCHEMA_VERSION,
        "run_id": run_dir.name,
        "argv": [str(a) for a in command],
        "seed": seed,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "executable": sys.executable,
        "versions": versions(),
        "extra": dict(extra or {}),
    }
    _write_json(path, info)
    return info


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    # Write then rename: a crash never leaves a half-written run.json behind.
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_run_info(run_dir: str | Path) -> dict:
    """Read `run_dir/run.json`; RunDirError naming the file when it is absent or bad."""
    path = Path(run_dir) / RUN_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found (is {run_dir} a Shadowline run directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: cannot read run info: {e}") from e
    if not isinstance(info, dict) or "run_id" not in info:
        raise RunDirError(f"{path}: not a Shadowline run.json (expected an object with run_id)")
    return info
