"""Renderers from a verdict to JSON, Markdown, HTML and JUnit.

    report = build_report(verdict, evidence, run=..., counts=..., faults=[])
    paths = write_reports(run_dir, report, evidence)  # report.json, report.md, report.html, junit.xml

matplotlib and Jinja2 are imported only when the HTML report is rendered.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from reports.model import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    ReportSchemaError,
    build_report,
    dumps,
    json_safe,
    validate_report,
)

REPORT_FILES = {"json": "report.json", "md": "report.md", "html": "report.html", "junit": "junit.xml"}

__all__ = [
    "REPORT_FILES",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "ReportSchemaError",
    "build_report",
    "json_safe",
    "validate_report",
    "write_reports",
]


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary file in the same directory, then rename over `path`: a reader
    never sees a half-written report, and a crash leaves the previous one intact."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_reports(run_dir, report: dict, evidence, *, drawn: dict | None = None) -> dict[str, Path]:
    """Validate `report` and write report.json, report.md, report.html and junit.xml into
    `run_dir`. Returns their paths by kind: json, md, html, junit. `drawn`: the HTML report's
    figures when they were computed beforehand (`reports.html.figures`, e.g. by
    `reports.plots.PlotJob`), else they are computed here.

    Everything is rendered before anything is written, so a rendering error leaves the
    run directory as it was.
    """
    from reports.html import render_html
    from reports.junit import render_junit
    from reports.markdown import render_markdown

    validate_report(report)
    run_dir = Path(run_dir)
    texts = {
        "json": dumps(report),
        "md": render_markdown(report),
        "html": render_html(report, evidence, drawn=drawn),
        "junit": render_junit(report),
    }
    paths = {}
    for kind, text in texts.items():
        path = run_dir / REPORT_FILES[kind]
        _write_atomic(path, text)
        paths[kind] = path
    return paths
