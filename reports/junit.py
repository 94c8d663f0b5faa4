"""junit.xml: one test case per check, so CI systems show check failures natively.

A failed check is a `<failure>`; an inconclusive one is `<skipped>` (JUnit has no
"inconclusive", and skipped is the status CI systems show as neither passed nor failed);
a passed check is a plain test case. The verdict and run id are suite properties.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from reports.model import fmt_effect, fmt_int, fmt_num, fmt_p, run_duration, verdict_word

SUITE = "shadowline"
# Characters XML 1.0 cannot carry at all, even escaped.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value) -> str:
    return _INVALID_XML.sub("\ufffd", "" if value is None else str(value))


def _comment(text: str) -> ET.Element:
    # "--" may not appear inside an XML comment, nor may it end with "-".
    return ET.Comment(" " + _text(text).replace("--", "- -").rstrip("-") + " ")


def _evidence_text(check: dict) -> str:
    lines = [
        _text(check.get("message")),
        f"effect [CI]: {fmt_effect(check)}",
        f"threshold: {fmt_num(check.get('threshold'))}",
        f"n: {fmt_int(check.get('n'))}",
        f"p-value: {fmt_p(check.get('p_value'))}",
        f"statistic: {fmt_num(check.get('statistic'))}",
    ]
    if check.get("test"):
        lines.append(f"test: {_text(check['test'])}")
    if check.get("required_n"):
        lines.append(f"required n: {fmt_int(check['required_n'])}")
    lines.append("critical: " + ("yes" if check.get("critical", True) else "no (does not block the verdict)"))
    return "\n".join(lines)


def render_junit(report: dict) -> str:
    checks = report.get("checks") or []
    run = report.get("run") or {}
    failures = sum(1 for c in checks if c.get("status") == "fail")
    skipped = sum(1 for c in checks if c.get("status") == "inconclusive")
    counts = {"tests": str(len(checks)), "failures": str(failures), "errors": "0", "skipped": str(skipped)}
    duration = run_duration(run)
    seconds = f"{float(duration):.3f}" if isinstance(duration, (int, float)) else "0"

    root = ET.Element("testsuites", {"name": SUITE, **counts, "time": seconds})
    suite = ET.SubElement(root, "testsuite", {"name": SUITE, **counts, "time": seconds})
    if run.get("start"):
        suite.set("timestamp", _text(run["start"]))
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", report.get("verdict")),
        ("run_id", run.get("id")),
        ("seed", run.get("seed")),
        ("codec", report.get("codec")),
        ("task", report.get("task")),
        ("required_n", report.get("required_n")),
        ("schema_version", report.get("schema_version")),
    ):
        if value is not None and value != "":
            ET.SubElement(props, "property", {"name": name, "value": _text(value)})

    for check in checks:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"{SUITE}.checks", "name": _text(check.get("name")), "time": "0",
        })
        status = check.get("status")
        message = _text(check.get("message"))
        if status == "fail":
            kind = "critical" if check.get("critical", True) else "non-critical"
            failure = ET.SubElement(case, "failure", {"message": message, "type": f"{kind} check failed"})
            failure.text = _evidence_text(check)
        elif status == "inconclusive":
            case.append(_comment(
                "inconclusive: the data could not decide this check (too few samples or too wide an "
                "interval); JUnit has no inconclusive status, so it is reported as skipped"))
            skip = ET.SubElement(case, "skipped", {"message": "inconclusive: " + message})
            skip.text = _evidence_text(check)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = _evidence_text(check)

    summary = [f"Shadowline verdict: {verdict_word(str(report.get('verdict')))}"]
    summary += [f"- {_text(r)}" for r in report.get("reasons") or []]
    ET.SubElement(suite, "system-out").text = "\n".join(summary)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
