"""The report.json document: built from a verdict and its evidence, described by a JSON Schema.

`build_report` is the single place that decides what goes into report.json; the Markdown,
JUnit and HTML renderers read only this document (the HTML report also draws plots from the
evidence). The document is JSON-safe: plain dicts, lists, str, int, float, bool and None;
non-finite numbers become null, dict keys become strings, numpy values become Python values.

Fields (schema_version 1), in this order:
    schema_version, verdict, reasons, required_n, checks, counts, faults, run,
    codec, task, notes, exchanges, paired, and dose_response when a fault parameter was swept
    (harness.checks.contracts.dose_response: per level and arm, each contract's violation rate
    with its interval, and the level where each arm first breaks it)
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from harness.evidence import Evidence
from harness.verdict import FAIL, GO, INCONCLUSIVE, NO_GO, PASS, UNDECIDED, Verdict

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
DECISIONS = (GO, NO_GO, UNDECIDED)
STATUSES = (PASS, FAIL, INCONCLUSIVE)


class ReportSchemaError(ValueError):
    """A report document does not match report.schema.json (the message names the field)."""


def build_report(verdict: Verdict, evidence: Evidence, *, run: dict, counts: dict,
                 faults: list | None = None, dose_response: dict | None = None) -> dict:
    """The report.json document for one judged run.

    `run` (id, seed, start, duration, versions, ...) and `counts` (per arm: present, ok,
    errors by kind, statuses) are passed through, made JSON-safe (int keys become strings).
    `dose_response` (from harness.checks.contracts.dose_response) adds that section; without
    it the document has no `dose_response` key.
    """
    if verdict.decision not in DECISIONS:
        raise ValueError(f"verdict.decision must be one of {DECISIONS}, not {verdict.decision!r}")
    doc = {
        "schema_version": SCHEMA_VERSION,
        "verdict": verdict.decision,
        "reasons": [str(r) for r in verdict.reasons],
        "required_n": verdict.required_n,
        "checks": [check.to_json() for check in verdict.checks],
        "counts": counts or {},
        "faults": list(faults or []),
        "run": dict(run or {}),
        "codec": evidence.codec or "",
        "task": evidence.task or "",
        "notes": [str(n) for n in evidence.notes],
        "exchanges": int(evidence.n_exchanges),
        "paired": {name: int(pairs.n) for name, pairs in evidence.pairs.items()},
    }
    if dose_response is not None:
        doc["dose_response"] = dose_response
    return json_safe(doc)


def json_safe(value: Any) -> Any:
    """A copy of `value` that `json.dumps(..., allow_nan=False)` accepts, key order kept."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(v) for v in items]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "to_json"):
        return json_safe(value.to_json())
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, np.bool_)):
        return "true" if key else "false"
    if isinstance(key, (int, np.integer)):
        return str(int(key))
    if key is None:
        return "null"
    return str(key)


def dumps(report: dict) -> str:
    """report.json text: indented, key order as built, no NaN (raises if one slipped in)."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_report(doc: dict) -> None:
    """Raise ReportSchemaError when `doc` does not match report.schema.json.

    Uses `jsonschema` when it is installed (the test extra); otherwise a structural check of
    the top-level fields and of each check, so a broken document is caught either way.
    """
    try:
        import jsonschema
    except ImportError:
        _validate_minimal(doc)
        return
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(document)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ReportSchemaError(f"report.json {where}: {first.message}{more}")


def _validate_minimal(doc: dict) -> None:
    if not isinstance(doc, dict):
        raise ReportSchemaError("report.json: expected an object")
    schema = load_schema()
    for key in schema["required"]:
        if key not in doc:
            raise ReportSchemaError(f"report.json {key}: missing")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ReportSchemaError(f"report.json schema_version: expected {SCHEMA_VERSION}")
    if doc["verdict"] not in DECISIONS:
        raise ReportSchemaError(f"report.json verdict: {doc['verdict']!r} is not one of {list(DECISIONS)}")
    if not isinstance(doc["checks"], list):
        raise ReportSchemaError("report.json checks: expected a list")
    required = schema["$defs"]["check"]["required"]
    for i, check in enumerate(doc["checks"]):
        if not isinstance(check, dict):
            raise ReportSchemaError(f"report.json checks/{i}: expected an object")
        for key in required:
            if key not in check:
                raise ReportSchemaError(f"report.json checks/{i}/{key}: missing")
        if check["status"] not in STATUSES:
            raise ReportSchemaError(f"report.json checks/{i}/status: {check['status']!r} is not one of {list(STATUSES)}")
    try:
        dumps(doc)
    except (TypeError, ValueError) as exc:
        raise ReportSchemaError(f"report.json: not JSON-safe ({exc})") from None


# ----------------------------------------------------------------------------------------
# Formatting shared by the Markdown, JUnit and HTML renderers.

DASH = "\u2013"  # shown for a missing number


def verdict_word(decision: str) -> str:
    """GO, NO-GO or INCONCLUSIVE: the word a person reads."""
    return decision.replace("_", "-")


def fmt_num(x: Any, digits: int = 4) -> str:
    """A number in a few significant digits; missing numbers as an en dash."""
    if x is None:
        return DASH
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int):
        return f"{x:,}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(x):
        return DASH
    if x == 0:
        return "0"
    if abs(x) < 1e-3 or abs(x) >= 1e6:
        return f"{x:.{max(digits - 2, 1)}e}"
    return f"{x:.{digits}g}"


def fmt_int(x: Any) -> str:
    if x is None:
        return DASH
    try:
        return f"{int(x):,}"
    except (TypeError, ValueError):
        return str(x)


def fmt_p(p: Any) -> str:
    """p-values: three significant digits, and '< 0.0001' below that."""
    if p is None:
        return DASH
    try:
        p = float(p)
    except (TypeError, ValueError):
        return str(p)
    if not math.isfinite(p):
        return DASH
    if p < 1e-4:
        return "< 0.0001"
    return f"{p:.3g}"


def fmt_effect(check: dict) -> str:
    """'effect [ci_low, ci_high]', or as much of it as is known."""
    effect, lo, hi = check.get("effect"), check.get("ci_low"), check.get("ci_high")
    text = fmt_num(effect)
    if lo is not None or hi is not None:
        text += f" [{fmt_num(lo)}, {fmt_num(hi)}]"
    return text


def fmt_seconds(s: Any) -> str:
    if s is None:
        return DASH
    try:
        s = float(s)
    except (TypeError, ValueError):
        return str(s)
    if not math.isfinite(s):
        return DASH
    if s < 120:
        return f"{s:.1f} s"
    minutes, seconds = divmod(int(round(s)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def run_duration(run: dict) -> Any:
    """The run's duration in seconds, whichever key the run info used."""
    for key in ("duration_s", "duration"):
        if run.get(key) is not None:
            return run[key]
    return None


def status_counts(report: dict) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for check in report.get("checks", []):
        counts[check.get("status")] = counts.get(check.get("status"), 0) + 1
    return counts


def arm_rows(report: dict) -> list[dict]:
    """Counts per arm as display rows (arms that took no part are left out)."""
    rows = []
    for arm, c in (report.get("counts") or {}).items():
        if not isinstance(c, dict):
            continue
        present = c.get("present")
        if not present:
            continue
        ok = c.get("ok")
        errors = c.get("errors") or {}
        statuses = c.get("statuses") or {}
        rows.append({
            "arm": arm,
            "present": fmt_int(present),
            "ok": fmt_int(ok),
            "ok_share": f"{100.0 * ok / present:.2f}%" if isinstance(ok, (int, float)) and present else DASH,
            "errors": ", ".join(f"{kind} {fmt_int(n)}" for kind, n in errors.items()) or "none",
            "statuses": ", ".join(f"{code}: {fmt_int(n)}" for code, n in statuses.items()) or DASH,
        })
    return rows


def dose_rows(dose: dict) -> dict:
    """The dose-response section as display rows: one row per level, one cell per contract
    listing each arm's status and violation rate ('candidate FAIL 100.0% of 46')."""
    contracts = dose.get("contracts") or []
    rows = []
    for i, level in enumerate(dose.get("levels") or []):
        cells = []
        for c in contracts:
            points = c.get("points") or []
            point = points[i] if i < len(points) else {}
            parts = []
            for arm in c.get("arms") or []:
                a = (point.get("arms") or {}).get(arm) or {}
                status = a.get("status")
                word = {"fail": "FAIL", "pass": "pass", "inconclusive": "inconclusive", "n/a": "n/a"}.get(status, "")
                rate = a.get("rate")
                if not a.get("n"):
                    text = f"{arm} n/a (no requests)"
                else:
                    share = f"{100.0 * rate:.1f}%" if rate is not None else DASH
                    text = " ".join(x for x in (arm, word, f"{share} of {fmt_int(a.get('n'))}") if x)
                parts.append({"arm": arm, "status": status, "text": text})
            cells.append(parts)
        metrics = level.get("metrics") or {}
        rows.append({"label": level.get("label", ""), "value": fmt_num(level.get("value")), "cells": cells,
                     "faulted": ", ".join(f"{arm} {fmt_int(m.get('faulted'))}" for arm, m in metrics.items())})
    return {"contracts": [c.get("name", "") for c in contracts], "rows": rows}
