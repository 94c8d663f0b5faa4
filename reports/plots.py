"""Plots for the HTML report, each returned as an inline SVG string (no files, no network).

Figures are drawn with matplotlib's object API (`Figure`, no pyplot, no global backend
switch) and saved through the SVG backend with text as paths, so they look the same on a
machine without the fonts. Data is binned or subsampled before drawing, so a capture of a
million exchanges renders in about the time of a few sorts. Every function copes with empty
or degenerate evidence by returning a small "no data" placeholder that says why.
"""

from __future__ import annotations

import html
import io
import math
import multiprocessing
import re
import threading
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from harness.evidence import Evidence

INCUMBENT = "incumbent"
ARM_ORDER = ("incumbent", "candidate", "baseline")
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
ARM_COLOURS = {"incumbent": "#0072B2", "candidate": "#E69F00", "baseline": "#009E73"}
ARM_TEXT = {"incumbent": "#005A8C", "candidate": "#9A6400", "baseline": "#00704F"}  # darker, for text
ERROR_COLOURS = {
    "timeout": "#D55E00",
    "reset": "#CC79A7",
    "connect": "#7F3C8D",
    "shed": "#9E9E9E",
    "protocol": "#B8860B",
    "internal": "#333333",
    "http 5xx": "#56B4E9",
}
_FALLBACK = ("#1B9E77", "#66A61E", "#E7298A", "#A6761D", "#666666")
SCATTER_MAX = 5000  # points drawn one by one; above this, a hexbin of density
HEXBIN_MAX = 400_000  # points fed to the hexbin (a uniform subsample beyond this)
_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "shadowline",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,  # grid lines under bars and fills, not across them
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.dpi": 100,
    "savefig.dpi": 110,  # for rasterized layers (hexbin, dense scatter)
}
_SEED = 20240229  # subsampling is deterministic: the same evidence draws the same figure


# ----------------------------------------------------------------------------------------
# SVG plumbing


def placeholder(title: str, reason: str, width: int = 480, height: int = 150) -> str:
    """A small figure that says there is nothing to plot and why."""
    t, r = html.escape(title), html.escape(reason)
    return (
        f'<svg class="plot placeholder" viewBox="0 0 {width} {height}" role="img" aria-label="{t}: {r}">'
        f'<rect x="1" y="1" width="{width - 2}" height="{height - 2}" rx="8" fill="#fafafa" '
        f'stroke="#cccccc" stroke-dasharray="6 4"/>'
        f'<text x="{width / 2}" y="{height / 2 - 10}" text-anchor="middle" font-family="sans-serif" '
        f'font-size="16" font-weight="bold" fill="#555555">{t}</text>'
        f'<text x="{width / 2}" y="{height / 2 + 16}" text-anchor="middle" font-family="sans-serif" '
        f'font-size="13" fill="#777777">{r}</text></svg>'
    )


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


_TEXT_TO_PATH = None  # one matplotlib TextToPath shared by the SVG renderers of our figures (see below)


@contextmanager
def _shared_text_to_path():
    """Let every renderer made meanwhile share one `TextToPath`: each renderer makes its own,
    and with it a new math-text parser whose cache (the log axes' 10^k tick labels) starts
    empty. Shared, each label is parsed once per report instead of once per figure. Only
    caches are shared: the drawing is the same."""
    global _TEXT_TO_PATH
    import matplotlib.text as mtext

    original = getattr(mtext, "TextToPath", None)
    if original is None:  # not where this matplotlib looks for it: nothing to share
        yield
        return
    if _TEXT_TO_PATH is None:
        _TEXT_TO_PATH = original()
    mtext.TextToPath = lambda: _TEXT_TO_PATH
    try:
        yield
    finally:
        mtext.TextToPath = original


def warm_up() -> None:
    """Load the fonts and fill the text caches that every report's figures use (about 0.15 s,
    which the first figure would otherwise pay). The judge calls it while the capture is read,
    before `PlotJob` forks: the child inherits the caches. Changes no figure."""
    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.plot([1, 100], [1e-3, 1])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("warm-up 0123456789%")
        ax.set_xlabel("latency (ms, log scale)")
        ax.text(0.5, 0.5, "p99", fontsize=7)
        ax.legend(["arm"])

    _draw("warm", "warm-up", 2, 2, draw)


def _to_svg(fig: Figure, key: str, label: str) -> str:
    """The figure as an <svg> element fit to inline in HTML: no XML prolog, no metadata,
    no namespace URLs, ids prefixed with `key` so several figures can share one page."""
    buf = io.StringIO()
    with rc_context(_RC), _shared_text_to_path():
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    head_end = svg.index(">")
    head = svg[:head_end]
    head = re.sub(r'\s(?:xmlns(?::\w+)?|width|height|version)="[^"]*"', "", head)
    head += f' class="plot" role="img" aria-label="{html.escape(label)}"'
    svg = head + svg[head_end:]
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', svg)
    return svg.strip()


def _draw(key: str, label: str, width: float, height: float, draw) -> str:
    with rc_context(_RC):
        fig = _figure(width, height)
        draw(fig)
        return _to_svg(fig, key, label)


def _arms_present(evidence: Evidence) -> list[str]:
    names = [a for a in ARM_ORDER if a in evidence.arms] + sorted(set(evidence.arms) - set(ARM_ORDER))
    return [a for a in names if len(evidence.arms[a].present) and bool(np.any(evidence.arms[a].present))]


def _colour(arm: str) -> str:
    return ARM_COLOURS.get(arm, "#555555")


def _not_none(values: np.ndarray) -> np.ndarray:
    """Elementwise `is not None` for an object array (fast: numpy compares in C)."""
    if values.dtype == object:
        return np.not_equal(values, None)
    if values.dtype.kind in "US":  # a string column: the empty string is "no error"
        return values != ""
    return np.zeros(values.shape, dtype=bool)


def _is_kind(values: np.ndarray, kind: str) -> np.ndarray:
    """Elementwise `== kind` for an error column (all False for a column that cannot hold one)."""
    if values.dtype == object or values.dtype.kind in "US":
        return np.asarray(values == kind, dtype=bool)
    return np.zeros(values.shape, dtype=bool)


def _short(n: float) -> str:
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def _ms(x: float) -> str:
    if x >= 1000:
        return f"{x / 1000:.3g} s"
    if x >= 1:
        return f"{x:.3g} ms"
    return f"{x * 1000:.3g} µs"


# ----------------------------------------------------------------------------------------
# Latency


def _ms_axis(ax, lo: float, hi: float) -> None:
    """Log x axis in milliseconds with plain labels (2, 5, 10, 20 ...), not powers of ten."""
    decades = math.log10(hi / lo)
    if decades < 1:  # less than a decade: plain evenly spaced ticks read better
        ticks = [t for t in MaxNLocator(6).tick_values(lo, hi) if lo <= t <= hi and t > 0]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def latency_plot(evidence: Evidence, arms: Sequence[str] | None = None) -> str:
    """Latency per arm: log-binned distribution and the tail (share slower than x, log-log),
    with p50 and p99 in the legend.

    Counted as the latency check counts them: complete responses that are not 5xx, plus
    timeouts at the moment the proxy gave up (a lower bound), so a candidate that hangs cannot
    look fast by losing its slowest requests."""
    title = "Latency"
    series = []
    for arm in arms or _arms_present(evidence):
        cols = evidence.arms.get(arm)
        if cols is None:
            continue
        lat = np.asarray(cols.latency_s, dtype=float)
        err = np.asarray(cols.error)
        status = np.asarray(cols.status)
        usable = np.asarray(cols.present, dtype=bool) & np.isfinite(lat)
        complete = usable & ~_not_none(err) & (status >= 0) & ~((status >= 500) & (status < 600))
        timeouts = usable & _is_kind(err, "timeout")
        ms = np.sort(np.maximum(lat[complete | timeouts] * 1000.0, 1e-3))
        if len(ms):
            series.append((arm, ms, int(timeouts.sum())))
    if not series:
        return placeholder(title, "no responses with a latency")

    lo = min(s[0] for _, s, _ in series)
    hi = max(s[-1] for _, s, _ in series)
    if hi <= lo * 1.01:
        lo, hi = lo / 1.5, hi * 1.5
    edges = np.geomspace(lo, hi, 61)

    def draw(fig: Figure) -> None:
        left, right = fig.subplots(1, 2)
        peak = 0.0
        for arm, ms, n_timeouts in series:
            n = len(ms)
            c = _colour(arm)
            p50, p99 = ms[int(0.5 * (n - 1))], ms[int(math.ceil(0.99 * (n - 1)))]
            counts = np.histogram(ms, bins=edges)[0] / n
            label = f"{arm}: p50 {_ms(p50)}, p99 {_ms(p99)} (n={_short(n)}"
            label += f", {_short(n_timeouts)} timeouts)" if n_timeouts else ")"
            left.stairs(counts, edges, fill=True, color=c, alpha=0.18)
            style = "--" if arm == "baseline" else "-"  # the baseline often overlays the incumbent
            left.stairs(counts, edges, color=c, linewidth=1.6, linestyle=style, label=label)
            peak = max(peak, float(counts.max()))
            # Survival: fraction slower than x, sampled densely in the tail.
            k = np.unique(np.round(n - np.geomspace(n, 1, 600)).astype(np.int64))
            k = k[(k >= 0) & (k < n)]
            surv = (n - 1 - k) / n
            keep = surv > 0
            right.step(ms[k][keep], surv[keep], where="post", color=c, linewidth=1.6, linestyle=style)
            if n >= 100:  # a p99 of fewer points is not worth marking
                right.plot([p99], [0.01], marker="o", color=c, markersize=5)
        left.set_xscale("log")
        _ms_axis(left, lo, hi)
        left.set_xlabel("latency (ms, log scale)")
        left.set_ylabel("share of responses")
        left.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        left.set_title("Distribution")
        left.legend(loc="upper right")
        left.set_ylim(0, peak * (1.3 + 0.12 * len(series)))  # headroom: the legend sits above the bars
        right.set_xscale("log")
        _ms_axis(right, lo, hi)
        right.set_yscale("log")
        n_max = max(len(ms) for _, ms, _ in series)
        right.set_ylim(min(max(0.5 / n_max, 1e-6), 0.005), 1.05)
        right.yaxis.set_minor_formatter(NullFormatter())
        right.axhline(0.01, color="#888888", linestyle=":", linewidth=1)
        right.text(0.01, 0.01, " p99", transform=right.get_yaxis_transform(), ha="left",
                   va="bottom", fontsize=7, color="#666666")
        if n_max >= 1000:
            right.axhline(0.001, color="#888888", linestyle=":", linewidth=1)
            right.text(0.01, 0.001, " p99.9", transform=right.get_yaxis_transform(), ha="left",
                       va="bottom", fontsize=7, color="#666666")
        right.set_xlabel("latency (ms, log scale)")
        right.set_ylabel("share slower than x")
        right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:g}%"))
        right.set_title("Tail")

    return _draw("lat", "Latency distributions per arm", 10.5, 3.6, draw)


# ----------------------------------------------------------------------------------------
# Scores


def _finite_pairs(evidence: Evidence, arm: str):
    pairs = evidence.pairs.get(arm)
    if pairs is None or pairs.n == 0:
        return None, f"no paired predictions of {arm} and incumbent"
    x = np.asarray(pairs.score_incumbent, dtype=float)
    y = np.asarray(pairs.score_other, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return None, "no finite scores in the paired predictions"
    return (pairs, x, y, ok), ""


def _score_limits(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.quantile(values, 0.001)), float(np.quantile(values, 0.999))
    if lo >= -1e-9 and hi <= 1 + 1e-9:
        return -0.02, 1.02  # probabilities: always the whole unit square
    if hi - lo < 1e-12:
        return lo - 0.5, hi + 0.5
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def score_scatter(evidence: Evidence, arm: str = "candidate") -> str:
    """Each paired prediction as a point (candidate score against incumbent score); points
    off the diagonal are predictions that moved. Above ~5k points, a hexbin of density."""
    title = f"{arm.capitalize()} vs incumbent scores"
    got, why = _finite_pairs(evidence, arm)
    if got is None:
        return placeholder(title, why)
    pairs, x, y, ok = got
    li, lo_ = np.asarray(pairs.label_incumbent)[ok], np.asarray(pairs.label_other)[ok]
    labelled = bool(np.any((li >= 0) & (lo_ >= 0)))
    flips = (li != lo_) & (li >= 0) & (lo_ >= 0)
    x, y = x[ok], y[ok]
    n = len(x)
    lo, hi = _score_limits(np.concatenate([x, y]))
    corr = float(np.corrcoef(x, y)[0, 1]) if n > 2 and x.std() > 0 and y.std() > 0 else float("nan")

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        ax.plot([lo, hi], [lo, hi], color="#888888", linewidth=1, linestyle="--", zorder=1)
        n_flips = int(flips.sum())
        if n <= SCATTER_MAX:
            same = ~flips
            ax.scatter(x[same], y[same], s=9, color=ARM_COLOURS["incumbent"], alpha=0.45, linewidths=0,
                       label="same label" if labelled else None, rasterized=n > 2000, zorder=2)
            if n_flips:
                ax.scatter(x[flips], y[flips], s=14, color="#D55E00", alpha=0.85, linewidths=0,
                           label=f"label changed ({n_flips:,})", rasterized=n > 2000, zorder=3)
            if labelled:
                ax.legend(loc="upper left", markerscale=1.5)
        else:
            xs, ys = x, y
            if n > HEXBIN_MAX:
                idx = np.random.default_rng(_SEED).choice(n, HEXBIN_MAX, replace=False)
                xs, ys = x[idx], y[idx]
            hb = ax.hexbin(xs, ys, gridsize=60, extent=(lo, hi, lo, hi), bins="log", mincnt=1,
                           cmap="viridis", linewidths=0, rasterized=True, zorder=2)
            fig.colorbar(hb, ax=ax, label="predictions per cell" + (" (sample)" if n > HEXBIN_MAX else ""),
                         shrink=0.85)
            if n_flips:  # the changed labels on top, as points (a sample when there are many)
                idx = np.flatnonzero(flips)
                if len(idx) > SCATTER_MAX // 2:
                    idx = np.sort(np.random.default_rng(_SEED).choice(idx, SCATTER_MAX // 2, replace=False))
                ax.scatter(x[idx], y[idx], s=7, color="#E4002B", alpha=0.8, linewidths=0, rasterized=True,
                           label=f"label changed ({n_flips:,}" + (", sample)" if len(idx) < n_flips else ")"),
                           zorder=3)
                ax.legend(loc="upper left", markerscale=1.5)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("incumbent score")
        ax.set_ylabel(f"{arm} score")
        r = f", r = {corr:.4f}" if math.isfinite(corr) else ""
        ax.set_title(f"{n:,} paired predictions{r}")

    return _draw("sc", title, 5.2, 4.6, draw)


def difference_histogram(evidence: Evidence, arm: str = "candidate") -> str:
    """Histogram of candidate − incumbent score per paired prediction; with a baseline arm,
    its difference (the noise floor of two identical models) is overlaid."""
    title = f"{arm.capitalize()} − incumbent score"
    got, why = _finite_pairs(evidence, arm)
    if got is None:
        return placeholder(title, why)
    _, x, y, ok = got
    d = (y - x)[ok]
    floor = None
    if arm != "baseline":
        got_b, _ = _finite_pairs(evidence, "baseline")
        if got_b is not None:
            _, bx, by, bok = got_b
            floor = (by - bx)[bok]
    both = d if floor is None else np.concatenate([d, floor])
    lo, hi = (float(v) for v in np.quantile(both, [0.001, 0.999]))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.05, hi + 0.05
    pad = 0.02 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, 81)
    n = len(d)
    outside = int(np.sum((d < edges[0]) | (d > edges[-1])))
    counts = np.histogram(d, bins=edges)[0]
    mean, median = float(d.mean()), float(np.median(d))
    exact = float(np.mean(d == 0))

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        share = counts / n
        ax.stairs(share, edges, fill=True, color=_colour(arm), alpha=0.55, label=f"{arm} − incumbent")
        if floor is not None and len(floor):
            fshare = np.histogram(floor, bins=edges)[0] / len(floor)
            ax.stairs(fshare, edges, color=ARM_COLOURS["baseline"], linewidth=1.6,
                      label="baseline − incumbent (noise floor)")
        ax.axvline(0, color="#444444", linewidth=1)
        positive = share[share > 0]
        peak = float(positive.max()) if len(positive) else 1.0
        if floor is not None and len(floor):
            peak = max(peak, float(fshare.max()))
        # Log scale when one spike (typically exactly 0) dwarfs the rest, so the tails stay visible.
        # Headroom above the tallest bar keeps the legend and the text box off the data.
        if len(positive) > 1 and positive.max() / np.median(positive) > 30:
            ax.set_yscale("log")
            ax.set_ylim(float(positive.min()) / 2, peak * 8)
            ax.set_ylabel("share of predictions (log scale)")
        else:
            ax.set_ylim(0, peak * 1.3)
            ax.set_ylabel("share of predictions")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 100:g}%"))
        ax.set_xlabel(f"{arm} score − incumbent score")
        ax.set_title(f"mean {mean:+.4g}, median {median:+.4g}")
        lines = [f"n = {n:,}", f"exactly equal: {exact:.1%}"]
        if outside:
            lines.append(f"{outside:,} beyond the axis")
        ax.text(0.98, 0.97, "\n".join(lines), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": "#dddddd"})
        ax.legend(loc="upper left")

    return _draw("diff", title, 5.2, 4.6, draw)


# ----------------------------------------------------------------------------------------
# Labels


def confusion_matrix(evidence: Evidence, arm: str = "candidate", max_classes: int = 12) -> str:
    """Counts of (incumbent label, candidate label) over paired predictions; the diagonal
    is agreement. Beyond `max_classes` labels, the rarest are pooled as "other"."""
    title = f"Labels: incumbent × {arm}"
    pairs = evidence.pairs.get(arm)
    if pairs is None or pairs.n == 0:
        return placeholder(title, f"no paired predictions of {arm} and incumbent")
    li = np.asarray(pairs.label_incumbent, dtype=np.int64)
    lo = np.asarray(pairs.label_other, dtype=np.int64)
    ok = (li >= 0) & (lo >= 0)
    if not ok.any():
        why = "regression outputs carry no labels" if evidence.task == "regression" else "no labels in the predictions"
        return placeholder(title, why)
    li, lo = li[ok], lo[ok]
    n = len(li)
    classes, inverse = np.unique(np.concatenate([li, lo]), return_inverse=True)
    freq = np.bincount(inverse)
    names = [str(c) for c in classes]
    if len(classes) > max_classes:
        keep = np.sort(np.argsort(-freq, kind="stable")[: max_classes - 1])
        remap = np.full(len(classes), max_classes - 1)
        remap[keep] = np.arange(len(keep))
        inverse = remap[inverse]
        names = [names[i] for i in keep] + ["other"]
    k = len(names)
    ri, ci = inverse[:n], inverse[n:]
    matrix = np.bincount(ri * k + ci, minlength=k * k).reshape(k, k)
    agree = float(np.trace(matrix)) / n

    def draw(fig: Figure) -> None:
        ax = fig.subplots()
        shown = np.where(matrix > 0, matrix, np.nan)
        vmax = max(int(matrix.max()), 2)
        im = ax.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=vmax), aspect="equal")
        fig.colorbar(im, ax=ax, label="predictions (log scale)", shrink=0.85)
        size = 10 if k <= 4 else 8 if k <= 8 else 6
        for i in range(k):
            for j in range(k):
                value = int(matrix[i, j])
                if value == 0:
                    continue
                dark = math.log(value) > 0.6 * math.log(vmax) if vmax > 1 else False
                colour = "white" if dark else ("#B00020" if i != j else "#1a1a1a")
                ax.text(j, i, _short(value) if value >= 10_000 else f"{value:,}", ha="center",
                        va="center", fontsize=size, color=colour,
                        fontweight="bold" if i != j else "normal")
        ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0)
        ax.set_yticks(range(k), names)
        ax.grid(False)
        ax.set_xlabel(f"{arm} label")
        ax.set_ylabel("incumbent label")
        ax.set_title(f"agreement {agree:.2%} of {n:,}")

    return _draw("cm", title, 5.2, 4.6, draw)


# ----------------------------------------------------------------------------------------
# Errors


def _bin_width(duration: float, max_bins: int = 150) -> float:
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if duration / width <= max_bins:
            return float(width)
    return float(math.ceil(duration / max_bins / 86400) * 86400)


def _error_kinds(cols) -> dict[str, np.ndarray]:
    """Per error kind, a mask over exchanges; HTTP 5xx answers count as a kind of their own."""
    present = np.asarray(cols.present, dtype=bool)
    err = np.asarray(cols.error)
    has = _not_none(err) & present
    kinds: dict[str, np.ndarray] = {}
    if has.any():
        for kind in sorted({str(e) for e in err[has].tolist()}):
            kinds[kind] = has & _is_kind(err, kind)
    status = np.asarray(cols.status)
    five = present & ~has & (status >= 500) & (status < 600)
    if five.any():
        kinds["http 5xx"] = five
    return kinds


def errors_over_time(evidence: Evidence, arms: Sequence[str] | None = None) -> str:
    """Share of each arm's exchanges that failed, per time bin, stacked by error kind."""
    title = "Errors over time"
    names = list(arms or _arms_present(evidence))
    names = [a for a in names if a in evidence.arms]
    t = np.asarray(evidence.started_at, dtype=float)
    if len(t) == 0 or not names:
        return placeholder(title, "no exchanges")
    finite = np.isfinite(t)
    if not finite.any():
        return placeholder(title, "no arrival times")
    t0 = float(t[finite].min())
    rel = np.where(finite, t - t0, 0.0)
    duration = float(rel.max())
    width = _bin_width(duration)
    nbins = int(duration // width) + 1
    b = np.minimum((rel // width).astype(np.int64), nbins - 1)

    panels = []
    all_kinds: list[str] = []
    peak = 0.0
    for arm in names:
        cols = evidence.arms[arm]
        present = np.asarray(cols.present, dtype=bool) & finite
        total = np.bincount(b[present], minlength=nbins)
        denom = np.where(total > 0, total, 1)
        kinds = _error_kinds(cols)
        rates = {kind: np.bincount(b[mask & finite], minlength=nbins) / denom for kind, mask in kinds.items()}
        n_err = sum(int(mask.sum()) for mask in kinds.values())
        n_present = int(present.sum())
        if rates:
            peak = max(peak, float(np.sum(list(rates.values()), axis=0).max()))
        for kind in kinds:
            if kind not in all_kinds:
                all_kinds.append(kind)
        panels.append((arm, rates, n_err, n_present, total))
    all_kinds.sort(key=lambda k: (list(ERROR_COLOURS).index(k) if k in ERROR_COLOURS else 99, k))
    colours = {k: ERROR_COLOURS.get(k, _FALLBACK[i % len(_FALLBACK)]) for i, k in enumerate(all_kinds)}
    top = 0.01 if peak == 0 else min(1.0, peak * 1.15)

    def draw(fig: Figure) -> None:
        axes = fig.subplots(len(panels), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
        for ax, (arm, rates, n_err, n_present, total) in zip(axes, panels):
            edges = np.arange(nbins + 1) * width
            bottom = np.zeros(nbins)
            for kind in all_kinds:
                if kind not in rates:
                    continue
                # One filled path per kind, stacked on the kinds below it (cheap at any size).
                ax.stairs(bottom + rates[kind], edges, baseline=bottom, fill=True, color=colours[kind],
                          linewidth=0, label=kind)
                bottom = bottom + rates[kind]
            empty = total == 0
            if empty.any() and not empty.all():  # bins where the arm saw no traffic: shaded
                ax.stairs(np.where(empty, top, 0.0), edges, fill=True, color="#f2f2f2", linewidth=0, zorder=0)
            share = n_err / n_present if n_present else 0.0
            ax.set_title(f"{arm}: {share:.2%} of {n_present:,} exchanges failed", loc="left",
                         color=ARM_TEXT.get(arm, "#333333"))
            if n_err == 0:
                ax.text(0.5, 0.5, "no errors", transform=ax.transAxes, ha="center", va="center",
                        color="#888888", fontsize=9)
            ax.set_ylabel("failed")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if top >= 0.05 else None))
        axes[0].set_ylim(0, top)
        axes[0].set_xlim(0, max(nbins * width, width))
        axes[-1].set_xlabel(f"seconds since the first request (bins of {width:g} s)")
        if all_kinds:
            handles = [Patch(color=colours[k], label=k) for k in all_kinds]
            fig.legend(handles=handles, loc="outside upper right", ncols=min(len(handles), 7))

    height = 1.0 + 1.45 * len(panels)
    return _draw("err", title, 10.5, height, draw)


# ----------------------------------------------------------------------------------------
# Dose-response (a swept fault parameter)


def _dose_axis(ax, values: list[float]) -> None:
    """Linear x axis for a narrow range; symmetric-log when the levels span decades (0 kept)."""
    positive = sorted(v for v in values if v > 0)
    if len(positive) >= 2 and positive[-1] / positive[0] > 20 and min(values) >= 0:
        ax.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))) if len(set(values)) <= 8 else MaxNLocator(8))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = min(values), max(values)
    if ax.get_xscale() == "linear":
        pad = (hi - lo) * 0.05 if hi > lo else max(abs(hi) * 0.1, 0.5)
        ax.set_xlim(lo - pad, hi + pad)
    else:  # every level on the axis, the ones without data (never fired) included
        ax.set_xlim(lo - 0.3 * positive[0] if lo == 0 else lo / 1.3, hi * 1.3)


def dose_response_plot(dose: dict | None) -> str:
    """One panel per contract: x the swept value, y each arm's violation rate with its
    confidence interval as error bars; a failed level is drawn as a cross and the first break
    per arm is marked with a dashed line. Levels where the fault never fired are left out."""
    title = "Dose-response"
    if not dose or not dose.get("levels"):
        return placeholder(title, "no sweep levels")
    contracts = [c for c in dose.get("contracts") or [] if c.get("points")]
    if not contracts:
        return placeholder(title, "no contract on the swept fault")
    panels = []
    for c in contracts:
        series = []
        for arm in c.get("arms") or []:
            xs, ys, lo, hi, failed = [], [], [], [], []
            for pt in c["points"]:
                a = (pt.get("arms") or {}).get(arm) or {}
                rate, value = a.get("rate"), pt.get("value")
                if rate is None or value is None or not a.get("n"):
                    continue
                xs.append(float(value))
                ys.append(float(rate))
                lo.append(max(0.0, float(rate) - float(a["ci_low"] if a.get("ci_low") is not None else rate)))
                hi.append(max(0.0, float(a["ci_high"] if a.get("ci_high") is not None else rate) - float(rate)))
                failed.append(a.get("status") == "fail")
            if xs:
                series.append((arm, xs, ys, lo, hi, failed, (c.get("first_break") or {}).get(arm)))
        panels.append((c, series))
    if not any(series for _, series in panels):
        return placeholder(title, "no level with faulted requests")
    values = [float(lv["value"]) for lv in dose["levels"] if lv.get("value") is not None]
    word = dose.get("parameter") or "level"
    cols = min(3, len(panels))
    rows = int(math.ceil(len(panels) / cols))

    def draw(fig: Figure) -> None:
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        for ax, (c, series) in zip(axes, panels):
            for k, (arm, xs, ys, lo, hi, failed, first) in enumerate(series):
                colour = _colour(arm)
                style = "--" if k else "-"
                ax.errorbar(xs, ys, yerr=[lo, hi], color=colour, linestyle=style, linewidth=1.4, marker="o",
                            markersize=4, capsize=3, elinewidth=1, label=arm)
                fx = [x for x, f in zip(xs, failed) if f]
                fy = [y for y, f in zip(ys, failed) if f]
                if fx:
                    ax.plot(fx, fy, linestyle="none", marker="X", markersize=9, color=colour,
                            markeredgecolor="#222222", markeredgewidth=0.6, zorder=4)
                if first:
                    ax.axvline(float(first["value"]), color=colour, linestyle=":", linewidth=1.4)
                    ax.annotate(f"{arm} breaks at {float(first['value']):g}", xy=(float(first["value"]), 1.0),
                                xycoords=("data", "axes fraction"), xytext=(3, -10 - 11 * k),
                                textcoords="offset points", fontsize=7, color=ARM_TEXT.get(arm, "#333333"))
            _dose_axis(ax, values)
            ax.set_ylim(-0.03, 1.08)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_title(c["name"], loc="left")
            ax.set_xlabel(f"{dose.get('fault') or 'fault'}: {word}")
            ax.set_ylabel({"no_worse_than_incumbent": "error rate", "production_unaffected": "incumbent error rate",
                           "within_latency": "share over the bound"}.get(c["name"], "violation rate"))
            if series:
                ax.legend(loc="center right", fontsize=7)
            else:
                ax.text(0.5, 0.5, "no faulted requests", transform=ax.transAxes, ha="center", va="center",
                        color="#888888")

    return _draw("dose", "Dose-response: violation rate per arm and level", 10.5, 0.6 + 3.0 * rows, draw)


def all_plots(evidence: Evidence, arm: str = "candidate") -> list[dict]:
    """The report's five plots in order, each {key, title, svg, caption}."""
    return [
        {"key": "latency", "title": "Latency per arm", "svg": latency_plot(evidence),
         "caption": "Complete responses (5xx answers left out) and timeouts, at the moment the proxy "
                    "gave up, as the latency check counts them: a hanging arm cannot look fast. Left: "
                    "how latencies are spread; right: the tail, the share slower than x (a cliff is a "
                    f"timeout). Look for the {arm}'s curve right of the incumbent's, above all in the "
                    "tail (p99, p99.9)."},
        {"key": "scatter", "title": f"{arm.capitalize()} vs incumbent score", "svg": score_scatter(evidence, arm),
         "caption": "Each paired prediction (same input, both models) as a point; with many, colour "
                    "shows how many fall in each cell. On the dashed diagonal the models agree; look "
                    "for a cloud or a band away from it, and for red points where the predicted label "
                    "changed."},
        {"key": "difference", "title": "Score difference", "svg": difference_histogram(evidence, arm),
         "caption": f"{arm.capitalize()} score minus incumbent score. A tall narrow spike at 0 means the "
                    "models agree; look for a shift of the centre (a systematic bias) and for heavy "
                    "tails (a few inputs that changed a lot). With a baseline arm, its curve is the "
                    "noise floor to compare against."},
        {"key": "confusion", "title": "Label confusion matrix", "svg": confusion_matrix(evidence, arm),
         "caption": f"Rows: the incumbent's label; columns: the {arm}'s. The diagonal is agreement; "
                    "bold numbers off the diagonal are predictions whose label changed, and the cell "
                    "says from which class to which."},
        {"key": "errors", "title": "Errors over time", "svg": errors_over_time(evidence),
         "caption": "Share of each arm's exchanges that failed per time bin, stacked by kind (timeouts, "
                    "resets, shed copies, HTTP 5xx answers...). Look for errors in one arm only, "
                    "bursts that line up with a fault phase, and a rate that grows over the run."},
    ]


# ----------------------------------------------------------------------------------------
# Drawing beside other work

PARALLEL_MIN = 50_000  # exchanges: from here `PlotJob` draws in a forked child process


CHILD_TIMEOUT_S = 120.0  # far beyond the ~1 s the figures of 1M exchanges take


class PlotJob:
    """`reports.html.figures(evidence, arm)` (the plots and the numbers beside them), started
    here and collected by `result()`.

    For a large capture (`PARALLEL_MIN` exchanges, or `fork=True`) the figures are drawn in a
    forked child process while this one does other work (the judge runs the checks meanwhile:
    on two cores the two take about the same time). The child gets the evidence by fork, not by
    copy, and sends back the SVG strings. The figures are the same either way; if the child
    fails or dies they are drawn here, so an error is raised here as it would be without it.

        job = PlotJob(evidence)
        ...                      # other work
        drawn = job.result()     # what figures() returns
    """

    def __init__(self, evidence: Evidence, arm: str = "candidate", *, fork: bool | None = None):
        self.evidence, self.arm = evidence, arm
        self._process = self._conn = None
        if fork is None:
            fork = evidence.n_exchanges >= PARALLEL_MIN
        # Forking while another thread runs could copy a lock that thread holds (an import
        # lock, logging's) into a child that then waits for it forever: only a lone thread forks.
        if fork and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            try:
                receive, send = context.Pipe(duplex=False)
                process = context.Process(target=_draw_in_child, args=(send, evidence, arm), daemon=True,
                                          name="shadowline-plots")
                process.start()
            except OSError:  # no fork (out of processes or memory): drawn in result()
                return
            send.close()
            self._process, self._conn = process, receive

    def result(self) -> dict:
        from reports.html import figures

        if self._process is not None:
            try:
                # A child that neither answers nor dies in CHILD_TIMEOUT_S is given up on.
                drawn = self._conn.recv() if self._conn.poll(CHILD_TIMEOUT_S) else None
            except (EOFError, OSError):  # the child died
                drawn = None
            if drawn is None and self._process.is_alive():
                self._process.terminate()
            self._conn.close()
            self._process.join()  # it ends right after sending
            self._process = None
            if drawn is not None:
                return drawn
        return figures(self.evidence, self.arm)

    def close(self) -> None:
        """Stop the child, if any (result() does; call it when the result is not wanted)."""
        if self._process is not None:
            self._conn.close()
            if self._process.is_alive():
                self._process.terminate()
            self._process.join()
            self._process = None


def _draw_in_child(conn, evidence: Evidence, arm: str) -> None:
    try:
        from reports.html import figures

        drawn = figures(evidence, arm)
    except BaseException:  # drawn again in the parent, which then raises the error itself
        drawn = None
    try:
        conn.send(drawn)
    finally:
        conn.close()
