"""report.html: one self-contained file (inline CSS and SVG, no scripts, nothing fetched).

The verdict comes first, then the checks, then the plots with captions saying what to look
for, then counts per arm and how the run was made. Rendered with Jinja2, autoescape on; the
only unescaped content is the SVG the plots module produced.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from harness.evidence import Evidence
from reports.model import (
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

TEMPLATES = Path(__file__).with_name("templates")
VERDICT_CLASS = {"GO": "go", "NO_GO": "nogo", "INCONCLUSIVE": "inconclusive"}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=fmt_num, count=fmt_int, p=fmt_p, effect=fmt_effect, seconds=fmt_seconds, ticks=_ticks)
    return env


def _ticks(text) -> Markup:
    """Escape `text`, then show `quoted` parts as <code> (the summaries name contracts so)."""
    escaped = str(Markup.escape(str(text)))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def pair_summary(evidence: Evidence, arm: str = "candidate", top: int = 8) -> dict:
    """The numbers behind the score and label plots: quantiles of the score difference and
    the most frequent label changes (from the incumbent's label to the other arm's)."""
    pairs = evidence.pairs.get(arm)
    out: dict = {"n": 0, "quantiles": [], "shares": [], "changes": [], "changed": 0, "labelled": 0,
                 "kinds": 0}
    if pairs is None or pairs.n == 0:
        return out
    out["n"] = pairs.n
    si = np.asarray(pairs.score_incumbent, dtype=float)
    so = np.asarray(pairs.score_other, dtype=float)
    d = (so - si)[np.isfinite(si) & np.isfinite(so)]
    if len(d):
        qs = np.quantile(d, [0.01, 0.5, 0.99])
        absd = np.abs(d)
        out["quantiles"] = [("mean", fmt_num(float(d.mean()))), ("p1", fmt_num(float(qs[0]))),
                            ("median", fmt_num(float(qs[1]))), ("p99", fmt_num(float(qs[2]))),
                            ("largest |Δ|", fmt_num(float(absd.max())))]
        probabilities = bool(np.all((si >= 0) & (si <= 1)) and np.all((so >= 0) & (so <= 1)))
        if probabilities:
            out["shares"] = [(f"|Δ| > {t:g}", f"{float(np.mean(absd > t)):.2%}") for t in (0.01, 0.05, 0.1)]
    li = np.asarray(pairs.label_incumbent, dtype=np.int64)
    lo = np.asarray(pairs.label_other, dtype=np.int64)
    labelled = (li >= 0) & (lo >= 0)
    li, lo = li[labelled], lo[labelled]
    out["labelled"] = int(len(li))
    changed = li != lo
    out["changed"] = int(changed.sum())
    if out["changed"]:
        classes, inverse = np.unique(np.concatenate([li, lo]), return_inverse=True)
        k = len(classes)
        key = inverse[: len(li)] * k + inverse[len(li):]
        keys, counts = np.unique(key[changed], return_counts=True)
        out["kinds"] = int(len(keys))
        per_class = np.bincount(inverse[: len(li)], minlength=k)
        order = np.argsort(-counts, kind="stable")[:top]
        for i in order:
            a, b = divmod(int(keys[i]), k)
            out["changes"].append({
                "src": str(classes[a]), "dst": str(classes[b]), "count": fmt_int(int(counts[i])),
                "of_all": f"{counts[i] / len(li):.2%}", "of_class": f"{counts[i] / per_class[a]:.2%}",
            })
    return out


def figures(evidence: Evidence, arm: str = "candidate") -> dict:
    """What the HTML report draws from the evidence alone: {"plots": all_plots, "summary":
    pair_summary}. `reports.plots.PlotJob` computes it beside other work."""
    from reports.plots import all_plots

    return {"plots": all_plots(evidence, arm), "summary": pair_summary(evidence, arm)}


def render_html(report: dict, evidence: Evidence, *, arm: str = "candidate", drawn: dict | None = None) -> str:
    """The HTML report for `report` (built by build_report), plots drawn from `evidence`
    (or `drawn`: what `figures(evidence, arm)` returned, computed beforehand)."""
    from reports.plots import dose_response_plot

    if drawn is None:
        drawn = figures(evidence, arm)
    plots = [dict(p, svg=Markup(p["svg"])) for p in drawn["plots"]]
    dose = report.get("dose_response")
    dose_view = None
    if dose is not None:
        dose_view = dict(dose_rows(dose), summary=list(dose.get("summary") or []), fault=dose.get("fault") or "",
                         parameter=dose.get("parameter") or "level", svg=Markup(dose_response_plot(dose)),
                         reference=dose.get("reference"))
    run = report.get("run") or {}
    checks = []
    for c in report.get("checks") or []:
        details = c.get("details") or {}
        checks.append(dict(
            c,
            effect_text=fmt_effect(c),
            details_json=json.dumps(details, indent=2, ensure_ascii=False) if details else "",
        ))
    template = _environment().get_template("report.html.j2")
    return template.render(
        report=report,
        verdict=report["verdict"],
        verdict_word=verdict_word(report["verdict"]),
        verdict_class=VERDICT_CLASS.get(report["verdict"], "inconclusive"),
        reasons=report.get("reasons") or [],
        checks=checks,
        tally=status_counts(report),
        plots=plots,
        arms=arm_rows(report),
        run=run,
        duration=run_duration(run),
        versions=run.get("versions") or {},
        arm=arm,
        summary=drawn["summary"],
        dose=dose_view,
    )
