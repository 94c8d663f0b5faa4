"""Plain words for the messages: a fault ('NaN in `age`'), a share ('3.5%'), a quantile ('p99'),
and the most frequent outcomes of an arm ('500 on 100.0%')."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .. import stats
from .ledger import base_label

TRANSPORT_FAULTS = ("latency", "abort", "reset", "hang", "bandwidth", "truncate")

_FAULT_WORDS = {
    "nan": "NaN in {fields}",
    "null": "null in {fields}",
    "inf": "Infinity in {fields}",
    "missing_field": "missing {fields}",
    "wrong_type": "wrong type in {fields}",
    "out_of_range": "out-of-range {fields}",
    "noise": "noise on {fields}",
    "swap_fields": "swapped {fields}",
    "category_shift": "unseen category in {fields}",
    "broken_chars": "broken characters in {fields}",
    "empty_tensor": "empty tensor",
    "shape_mismatch": "shape mismatch",
    "oversize": "oversize body",
    "malformed_json": "malformed JSON",
    "latency": "added latency",
    "abort": "aborted copy",
    "reset": "connection reset",
    "hang": "hang",
    "bandwidth": "throttled upload",
    "truncate": "truncated body",
}


def describe_fault(label: str, spec: Mapping[str, Any] | None = None) -> str:
    """Plain words for a fault: 'NaN in `age`', 'latency 200 ms', 'toxic latency'; '' if unknown."""
    if label.startswith("phase:"):
        return f"phase {label[len('phase:'):]}"
    kind = (spec or {}).get("type")
    fields = (spec or {}).get("fields")
    if kind is None:  # a derived ledger label: `nan:age`, `latency:100ms`, `abort:503`
        head, _, rest = base_label(label).partition(":")
        if head not in _FAULT_WORDS:
            return ""
        kind = head
        if rest and kind not in TRANSPORT_FAULTS:
            fields = rest.split(",")
        elif rest:
            return f"{_FAULT_WORDS[kind]} {rest}"
    if (spec or {}).get("toxic"):
        return f"{kind} toxic on the feature store"
    words = _FAULT_WORDS.get(str(kind))
    if words is None:
        return str(kind)
    names = ", ".join(f"`{f}`" for f in fields) if fields else "the features"
    text = words.format(fields=names)
    if kind == "latency" and spec and "ms" in spec:
        text = f"latency {spec['ms']:g} ms"
    elif kind == "abort" and spec and "status" in spec:
        text = f"abort {spec['status']}"
    return text


def pct(x: float | None) -> str:
    """A share as '100.0%', '3.5%', '0.05%'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    # Below 0.1% one decimal would read 0.0%: there stats' significant digits show the size.
    if x != 0 and abs(x) < 0.001:
        return stats.fmt_pct(x)
    return f"{x * 100:.1f}%"


def quantile_name(q: float) -> str:
    """'p99' for 0.99, 'max' for 1."""
    return "max" if q >= 1 else f"p{q * 100:g}"


def outcome_text(outcomes: Mapping[str, int], n: int) -> str:
    """The two most frequent outcomes and the rest: '500 on 98.0%, timeout on 1.5%, other on 0.5%'."""
    items = list(outcomes.items())
    shown = items[:2]
    parts = [f"{name} on {pct(count / n)}" for name, count in shown]
    rest = sum(count for _, count in items[2:])
    if rest:
        parts.append(f"other on {pct(rest / n)}")
    return ", ".join(parts)
