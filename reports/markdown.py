"""report.md: the verdict, its reasons, the checks and the counts, fit to paste in a pull request."""

from __future__ import annotations

from reports.model import (
    DASH,
    arm_rows,
    dose_rows,
    fmt_effect,
    fmt_int,
    fmt_num,
    fmt_p,
    fmt_seconds,
    run_duration,
    status_counts,
    verdict_word,
)

STATUS_WORDS = {"pass": "pass", "fail": "**FAIL**", "inconclusive": "*inconclusive*"}


def _text(text) -> str:
    """Free text on one line, with < and > as entities so GitHub does not take them for HTML."""
    return " ".join(str(text).split()).replace("<", "&lt;").replace(">", "&gt;")


def _cell(text) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def _code(text) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def render_markdown(report: dict) -> str:
    run = report.get("run") or {}
    checks = report.get("checks") or []
    lines = [f"## Shadowline verdict: {verdict_word(report['verdict'])}", ""]

    facts = [f"run {_code(run.get('id', '?'))}"]
    if run.get("seed") is not None:
        facts.append(f"seed {run['seed']}")
    if run_duration(run) is not None:
        facts.append(fmt_seconds(run_duration(run)))
    if report.get("exchanges") is not None:
        facts.append(f"{fmt_int(report['exchanges'])} exchanges")
    for arm, n in (report.get("paired") or {}).items():
        facts.append(f"{fmt_int(n)} paired predictions ({arm})")
    if report.get("codec"):
        facts.append(f"codec {_code(report['codec'])}")
    if report.get("task"):
        facts.append(report["task"])
    lines += [" · ".join(facts), ""]

    for reason in report.get("reasons") or []:
        lines.append(f"- {_text(reason)}")
    if report.get("verdict") == "INCONCLUSIVE" and report.get("required_n"):
        lines.append(f"- About {fmt_int(report['required_n'])} exchanges in all would decide.")
    if report.get("reasons") or report.get("required_n"):
        lines.append("")

    tally = status_counts(report)
    lines.append(f"### Checks ({tally['pass']} pass, {tally['fail']} fail, {tally['inconclusive']} inconclusive)")
    lines.append("")
    if checks:
        lines += [
            "| Check | Status | Effect [CI] | Threshold | n | p-value |",
            "|---|---|---|---:|---:|---:|",
        ]
        for c in checks:
            name = _code(c["name"]) + ("" if c.get("critical", True) else " (non-critical)")
            lines.append("| " + " | ".join(_cell(x) for x in (
                name,
                STATUS_WORDS.get(c["status"], c["status"]),
                fmt_effect(c),
                fmt_num(c.get("threshold")),
                fmt_int(c.get("n")),
                fmt_p(c.get("p_value")),
            )) + " |")
        lines.append("")
        for c in checks:
            message = _text(c.get("message") or "")
            test = f" ({_text(c['test'])})" if c.get("test") else ""
            needs = ""
            if c["status"] == "inconclusive" and c.get("required_n"):
                needs = f" About {fmt_int(c['required_n'])} would decide."
            lines.append(f"- {_code(c['name'])}: {message or DASH}{test}{needs}")
        lines.append("")
    else:
        lines += ["No checks were run.", ""]

    rows = arm_rows(report)
    if rows:
        lines += [
            "### Counts per arm",
            "",
            "| Arm | Present | OK | OK share | Errors | Statuses |",
            "|---|---:|---:|---:|---|---|",
        ]
        for r in rows:
            cells = (_text(r[k]) for k in ("arm", "present", "ok", "ok_share", "errors", "statuses"))
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")

    dose = report.get("dose_response")
    if dose is not None:
        lines += _dose_lines(dose)

    notes = report.get("notes") or []
    faults = report.get("faults") or []
    if notes or faults:
        lines += ["### Notes", ""]
        lines += [f"- {_text(n)}" for n in notes]
        if faults:
            lines.append(f"- {len(faults)} fault rule(s) applied; see report.json `faults`.")
        lines.append("")

    versions = run.get("versions") or {}
    if versions:
        shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v and k != "platform")
        lines += [f"<sub>Shadowline report schema {report.get('schema_version')} · {shown}</sub>", ""]
    return "\n".join(lines)


def _dose_lines(dose: dict) -> list[str]:
    """The dose-response section: the sentences naming where each arm first breaks each
    contract, and a table of levels by contracts (each arm's status and violation rate)."""
    parameter = dose.get("parameter") or "level"
    lines = [f"### Dose-response: {_code(dose.get('fault') or '?')} over {_text(parameter)}", ""]
    for sentence in dose.get("summary") or []:
        lines.append(f"- {_text(sentence)}")
    if not dose.get("reference"):
        lines.append("- No baseline arm: the incumbent model's side under the fault is unknown.")
    lines.append("")
    view = dose_rows(dose)
    if view["rows"] and view["contracts"]:
        lines += [
            "| Level | " + _cell(parameter) + " | Faulted | "
            + " | ".join(_cell(_code(c)) for c in view["contracts"]) + " |",
            "|---|---:|---|" + "---|" * len(view["contracts"]),
        ]
        for row in view["rows"]:
            cells = []
            for cell in row["cells"]:
                cells.append("; ".join(
                    part["text"].replace(" FAIL ", " **FAIL** ") if part["status"] == "fail" else part["text"]
                    for part in cell) or DASH)
            row_cells = (_code(row["label"]), row["value"], row["faulted"] or DASH, *cells)
            lines.append("| " + " | ".join(_cell(x) for x in row_cells) + " |")
        lines.append("")
    return lines
