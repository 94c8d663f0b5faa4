"""Contracts per fault: what is acceptable under each fault, judged per arm on the faulted
exchanges and reported side by side with the incumbent model under the same fault.

A scenario's `contracts` map a key (a fault or toxic label, `phase:<name>`, or `*`) to contracts
(`harness.scenario.CONTRACTS`). Each (key, contract, arm) becomes one `ContractCheck`, whose
result is a `CheckResult` named `contract:<label>:<contract>` (`[<arm>]` appended for an arm
other than the candidate). In a chaos run the proxy sends the same faulted copy to the candidate
and to the baseline (a second incumbent), so the incumbent model's side of a contract is the
**baseline** arm; without one the incumbent side is unknown and the candidate is judged alone.

    from harness.checks.contracts import Timeline, contract_checks, dose_response
    timeline = Timeline.from_phases(scenario.expanded_phases(), run_start)   # unix seconds
    results = contract_checks(scenario.contract_items(), evidence, timeline=timeline)
    curve = dose_response(evidence, scenario.contract_items(), levels, timeline=timeline,
                          parameter=scenario.sweep.parameter)

Decision rules (docs/contracts.md):

- exchange contracts (`clean_4xx`, `finite_prediction`, `no_5xx`, `no_hang`, `no_crash`) break on
  a counterexample: FAIL when the exact (Clopper-Pearson) interval of the violation rate lies
  above `tolerance` (default 0: any violation), at any n; PASS with at least `min_n` judged
  exchanges and no violation (or the whole interval within the tolerance); INCONCLUSIVE
  otherwise, with the sample size that would decide.
- rate contracts (`within_latency` with a quantile below 1, `no_worse_than_incumbent`,
  `production_unaffected`) are judged like the checks: with at least `min_n` exchanges, FAIL
  when the interval lies wholly beyond the bound, PASS when it lies wholly within it (or, for a
  zero bound, when no degradation at all was observed), INCONCLUSIVE otherwise.
- an arm that fails a contract the incumbent (baseline) also fails gives a non-critical FAIL
  ("the incumbent breaks this contract too"); otherwise the failure is critical (NO-GO).
- a fault that never fired for the arm (a sweep's level 0) makes the contract not applicable.

Pure: numpy and scipy on an `Evidence`, no I/O; bootstraps are seeded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats as sps

from harness.evidence import ArmColumns, Evidence, Pairs
from harness.verdict import FAIL, INCONCLUSIVE, PASS, CheckResult

from . import stats
from .base import BASELINE, CANDIDATE, INCUMBENT, client_error, plain_numbers, count_kinds, errors_of, kind_mask, none_mask, server_error
from .errors import _failed
from .latency import _bootstrap_log_ratio, _interval, _scale, _usable

EXCHANGE_CONTRACTS = ("clean_4xx", "finite_prediction", "no_5xx", "no_hang", "no_crash")
RATE_CONTRACTS = ("within_latency", "no_worse_than_incumbent", "production_unaffected")
CONTRACT_NAMES = EXCHANGE_CONTRACTS + RATE_CONTRACTS
# Ledger suffixes of a payload fault that fired but was not applied (docs/faults.md).
NOT_APPLIED = ("undecodable", "noop", "unrepresentable", "error")
# Not the arm's outcome: a shed copy was never sent, an internal error is the proxy's own.
EXCLUDED_KINDS = ("shed", "internal")
TRANSPORT_FAULTS = ("latency", "abort", "reset", "hang", "bandwidth", "truncate")

# What a contract's violation rate counts (the y axis of the dose-response curve).
MEASURES = {
    "clean_4xx": "share of faulted requests not refused with a clean 4xx",
    "finite_prediction": "share of faulted requests with a 2xx answer that is not decodable or not finite",
    "no_5xx": "share of faulted requests answered 5xx",
    "no_hang": "share of faulted requests that timed out (or answered later than within_s)",
    "no_crash": "share of exchanges from the fault on with a refused connection or a reset",
    "within_latency": "share of faulted requests slower than the bound",
    "no_worse_than_incumbent": "error rate (transport errors and 5xx) while the fault was on",
    "production_unaffected": "incumbent error rate while the fault was on",
}

TEST = {
    "exchange": "violations on the faulted exchanges: Clopper-Pearson exact interval of the violation rate "
    "vs the tolerance (one counterexample breaks a zero tolerance); side by side with the baseline",
    "within_latency": "quantile of latency on the faulted exchanges with a distribution-free order-statistic "
    "interval vs the bound (quantile 1: the maximum, exactly)",
    "no_worse_than_incumbent": "on the exchanges while the fault was on, paired against the reference arm: "
    "error-rate difference with Newcombe's hybrid score interval, latency quantile ratio with a paired "
    "bootstrap, label flip rate with a Clopper-Pearson interval",
    "production_unaffected": "the incumbent while the fault was on vs the steady-state phases (unpaired): "
    "error-rate difference with Newcombe's interval for independent proportions, latency quantile ratio "
    "with a bootstrap",
}

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


# ---------------------------------------------------------------------------------------------
# Time line: which exchanges ran while a fault, a toxic or a phase was on


@dataclass(frozen=True)
class Timeline:
    """When each fault, toxic and phase was on, in the evidence's clock (unix seconds).

    `windows`: key (a fault or toxic label as in the ledger, `phase:<name>`) -> [start, end)
    intervals; `phase_ends`: key -> end of the phase it belongs to (no_crash reads to there);
    `ledgerless`: keys with no per-request ledger (toxics, phases), whose faulted exchanges are
    every exchange in the window; `steady`: the steady-state phases; `specs`: label -> fault spec
    (for descriptions and fault types); `alive`: arm -> its liveness probe answered at the end.
    """

    windows: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    phase_ends: Mapping[str, float] = field(default_factory=dict)
    ledgerless: frozenset[str] = frozenset()
    steady: tuple[tuple[float, float], ...] = ()
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    alive: Mapping[str, bool] = field(default_factory=dict)

    @classmethod
    def from_phases(cls, phases: Iterable[Any], run_start: float, *, alive: Mapping[str, bool] | None = None) -> Timeline:
        """From `Scenario.expanded_phases()` and the unix time the load started (phase and
        fault windows are in seconds since then)."""
        windows: dict[str, list[tuple[float, float]]] = {}
        ends: dict[str, float] = {}
        ledgerless: set[str] = set()
        steady: list[tuple[float, float]] = []
        specs: dict[str, dict] = {}
        for p in phases:
            t0, t1 = run_start + float(p.start_s), run_start + float(p.start_s) + float(p.duration_s)
            key = f"phase:{p.name}"
            windows.setdefault(key, []).append((t0, t1))
            ends[key] = max(ends.get(key, t1), t1)
            ledgerless.add(key)
            for spec in p.faults:
                label = spec.get("label") or spec.get("type", "")
                w = spec.get("window") or (p.start_s, p.start_s + p.duration_s)
                windows.setdefault(label, []).append((run_start + float(w[0]), run_start + float(w[1])))
                ends[label] = max(ends.get(label, t1), t1)
                specs[label] = dict(spec)
            for toxic in p.toxics:
                label = p.toxic_label(toxic)
                windows.setdefault(label, []).append((t0, t1))
                ends[label] = max(ends.get(label, t1), t1)
                ledgerless.add(label)
                specs[label] = {"type": toxic.type, "toxic": True, **dict(toxic.attributes)}
            if p.steady_state:
                steady.append((t0, t1))
        return cls(
            windows={k: tuple(v) for k, v in windows.items()},
            phase_ends=ends,
            ledgerless=frozenset(ledgerless),
            steady=tuple(steady),
            specs=specs,
            alive=dict(alive or {}),
        )

    def matching(self, key: str) -> list[str]:
        """Window keys covered by `key` (a base label covers its sweep levels)."""
        return [k for k in self.windows if label_matches(k, key)]

    def window_mask(self, started_at: np.ndarray, key: str) -> np.ndarray | None:
        keys = self.matching(key)
        if not keys:
            return None
        t = np.asarray(started_at, dtype=np.float64)
        mask = np.zeros(len(t), dtype=bool)
        for k in keys:
            for a, b in self.windows[k]:
                mask |= (t >= a) & (t < b)
        return mask

    def span(self, key: str) -> tuple[float, float] | None:
        """(start of the window, end of its phase) for `key`."""
        keys = self.matching(key)
        if not keys:
            return None
        start = min(a for k in keys for a, _ in self.windows[k])
        end = max(max(self.phase_ends.get(k, b) for _, b in self.windows[k]) for k in keys)
        return start, end

    def is_ledgerless(self, key: str) -> bool:
        return key.startswith("phase:") or any(label_matches(k, key) for k in self.ledgerless)

    def steady_mask(self, started_at: np.ndarray) -> np.ndarray | None:
        if not self.steady:
            return None
        t = np.asarray(started_at, dtype=np.float64)
        mask = np.zeros(len(t), dtype=bool)
        for a, b in self.steady:
            mask |= (t >= a) & (t < b)
        return mask

    def labels(self) -> list[str]:
        """Fault and toxic labels with a window (not phases)."""
        return [k for k in self.windows if not k.startswith("phase:")]

    def spec_for(self, key: str) -> Mapping[str, Any] | None:
        if key in self.specs:
            return self.specs[key]
        for k in self.matching(key):
            if k in self.specs:
                return self.specs[k]
        return None


# ---------------------------------------------------------------------------------------------
# The ledger


def split_entry(entry: str) -> tuple[str, str]:
    """A ledger entry -> (label, state): state is `applied` or a NOT_APPLIED suffix."""
    for state in NOT_APPLIED:
        if entry.endswith(":" + state):
            return entry[: -len(state) - 1], state
    return entry, "applied"


def label_matches(label: str, key: str) -> bool:
    """A ledger label is covered by a contract key: the same label, a derived label of it
    (`nan` covers `nan:age`), or one of its sweep levels (`nan` covers `nan@0.05`)."""
    return label == key or label.startswith(key + ":") or ("@" not in key and label.startswith(key + "@"))


def base_label(label: str) -> str:
    return label.split("@", 1)[0]


_LEDGER_CACHE: dict[int, tuple[np.ndarray, np.ndarray, list[tuple[str, ...]]]] = {}


def _ledger_codes(faults: np.ndarray) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Each exchange's ledger tuple as a code into the list of distinct tuples (cached per array)."""
    hit = _LEDGER_CACHE.get(id(faults))
    if hit is not None and hit[0] is faults:
        return hit[1], hit[2]
    lookup: dict[tuple[str, ...], int] = {}
    codes = np.empty(len(faults), dtype=np.int64)
    for i, entries in enumerate(faults):
        key = tuple(entries) if entries else ()
        code = lookup.get(key)
        if code is None:
            code = lookup[key] = len(lookup)
        codes[i] = code
    if len(_LEDGER_CACHE) >= 16:
        _LEDGER_CACHE.clear()
    distinct = list(lookup)
    _LEDGER_CACHE[id(faults)] = (faults, codes, distinct)
    return codes, distinct


def ledger_states(cols: ArmColumns | None, key: str, n: int) -> dict[str, np.ndarray]:
    """Masks over exchanges: `applied` (the arm's ledger has the key applied) and one per
    NOT_APPLIED state (the key fired but every matching entry says it was not applied)."""
    out = {state: np.zeros(n, dtype=bool) for state in ("applied",) + NOT_APPLIED}
    if cols is None or cols.faults is None:
        return out
    codes, distinct = _ledger_codes(cols.faults)
    by_state: dict[str, list[int]] = {state: [] for state in out}
    for code, entries in enumerate(distinct):
        states = [s for label, s in map(split_entry, entries) if label_matches(label, key)]
        if states:
            by_state["applied" if "applied" in states else states[0]].append(code)
    for state, wanted in by_state.items():
        if wanted:
            out[state] = np.isin(codes, wanted)
    return out


def ledger_labels(evidence: Evidence) -> list[str]:
    """Every label in any arm's ledger (suffixes stripped), in order of first appearance."""
    seen: dict[str, None] = {}
    for cols in evidence.arms.values():
        if cols.faults is None:
            continue
        _, distinct = _ledger_codes(cols.faults)
        for entries in distinct:
            for entry in entries:
                seen.setdefault(split_entry(entry)[0], None)
    return list(seen)


def has_ledger(evidence: Evidence) -> bool:
    return any(cols.faults is not None for cols in evidence.arms.values())


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


def fault_type(label: str, spec: Mapping[str, Any] | None = None) -> str:
    if spec and spec.get("type"):
        return str(spec["type"])
    return base_label(label).partition(":")[0]


# ---------------------------------------------------------------------------------------------
# Small helpers


def _status_2xx(status: np.ndarray) -> np.ndarray:
    s = np.asarray(status)
    return ((s >= 200) & (s <= 299)) | (s == 0)  # 0: gRPC OK


def _answered(cols: ArmColumns) -> np.ndarray:
    """A response with a status: no error, or a 2xx the codec could not read (`protocol`)."""
    err = errors_of(cols)
    status = np.asarray(cols.status)
    return (status >= 0) & (none_mask(err) | kind_mask(err, "protocol"))


def _outcomes(cols: ArmColumns, mask: np.ndarray) -> dict[str, int]:
    """What the arm did on `mask`, most frequent first: status codes ('400', '500'), 2xx split
    into '200 non-finite' and '200 undecodable', and error kinds ('timeout', 'reset')."""
    err = errors_of(cols)
    status = np.asarray(cols.status)
    answered = mask & _answered(cols)
    out: dict[str, int] = {}
    is2 = answered & _status_2xx(status)
    decoded = np.asarray(cols.decoded, dtype=bool)
    finite = np.asarray(cols.finite, dtype=bool) if cols.finite is not None else decoded
    plain = answered & ~is2
    for code in np.unique(status[plain]):
        out[str(int(code))] = int((plain & (status == code)).sum())
    for code in np.unique(status[is2]):
        here = is2 & (status == code)
        good = int((here & decoded & finite).sum())
        nonfinite = int((here & decoded & ~finite).sum())
        undecodable = int((here & ~decoded).sum())
        named = ((str(int(code)), good), (f"{int(code)} non-finite", nonfinite), (f"{int(code)} undecodable", undecodable))
        for name, count in named:
            if count:
                out[name] = out.get(name, 0) + count
    for kind, count in count_kinds(err, mask & ~answered).items():
        out[kind] = out.get(kind, 0) + count
    no_status = int((mask & ~answered & none_mask(err)).sum())
    if no_status:
        out["no status"] = no_status
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def _statuses(cols: ArmColumns, mask: np.ndarray) -> dict[str, int]:
    status = np.asarray(cols.status)[mask]
    codes, counts = np.unique(status[status >= 0], return_counts=True)
    return {str(int(c)): int(k) for c, k in zip(codes, counts)}


def _pct(x: float | None) -> str:
    """A share as '100.0%', '3.5%', '0.05%'."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if x != 0 and abs(x) < 0.001:
        return stats.fmt_pct(x)
    return f"{x * 100:.1f}%"


def _outcome_text(outcomes: Mapping[str, int], n: int) -> str:
    items = list(outcomes.items())
    shown = items[:2]
    parts = [f"{name} on {_pct(count / n)}" for name, count in shown]
    rest = sum(count for _, count in items[2:])
    if rest:
        parts.append(f"other on {_pct(rest / n)}")
    return ", ".join(parts)


def _newcombe_independent(x1: float, n1: float, x2: float, n2: float, confidence: float) -> tuple[float, float, float]:
    """p1 - p2 of two independent proportions with Newcombe's hybrid score interval (method 10)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, -1.0, 1.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = stats.wilson(x1, n1, confidence)
    l2, u2 = stats.wilson(x2, n2, confidence)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, max(-1.0, lo), min(1.0, hi)


def _quantile_ci(sorted_x: np.ndarray, q: float, confidence: float) -> tuple[float, float]:
    """Distribution-free interval of the q-quantile from order statistics (binomial);
    -inf / inf where the sample is too small to bound that side."""
    n = len(sorted_x)
    if n == 0:
        return -math.inf, math.inf
    if q >= 1:
        return float(sorted_x[-1]), math.inf
    alpha = 1 - confidence
    lo_idx = int(sps.binom.ppf(alpha / 2, n, q))  # 1-based order statistic
    hi_idx = int(sps.binom.ppf(1 - alpha / 2, n, q)) + 1
    lo = float(sorted_x[lo_idx - 1]) if lo_idx >= 1 else -math.inf
    hi = float(sorted_x[hi_idx - 1]) if hi_idx <= n else math.inf
    return lo, hi


def _bootstrap_unpaired_log_ratio(a: np.ndarray, b: np.ndarray, q: float, n_resamples: int, seed: int,
                                  resample_size: int = 10_000) -> np.ndarray:
    """Bootstrap of log(quantile(b) / quantile(a)) with each sample resampled on its own
    (m-out-of-n above `resample_size`, each side's spread rescaled by sqrt(m / n))."""
    rng = np.random.default_rng(seed)
    logs = []
    for x in (a, b):
        n = len(x)
        m = min(n, resample_size)
        est = math.log(max(float(np.quantile(x, q)), 1e-12))
        out = np.empty(n_resamples)
        chunk = max(1, 1_000_000 // m)
        for start in range(0, n_resamples, chunk):
            c = min(chunk, n_resamples - start)
            idx = rng.integers(0, n, size=(c, m))
            out[start : start + c] = np.quantile(x[idx], q, axis=1)
        with np.errstate(divide="ignore"):
            lg = np.log(np.maximum(out, 1e-12))
        logs.append(est + math.sqrt(m / n) * (lg - est))
    return logs[1] - logs[0]


def _percentile(est: float, boot_log: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    fin = boot_log[np.isfinite(boot_log)]
    if not (math.isfinite(est) and est > 0) or fin.size < 0.5 * boot_log.size:
        return math.nan, math.nan
    lo, hi = np.quantile(fin, [alpha / 2, 1 - alpha / 2])
    return float(min(math.exp(lo), est)), float(max(math.exp(hi), est))


def _part_status(n: int, min_n: int, est: float, lo: float, hi: float, bound: float, neutral: float) -> str:
    """A rate part: FAIL when the interval lies wholly beyond the bound, PASS when wholly within
    it (or, for a bound at the neutral value, when no degradation was observed), with min_n."""
    if n < min_n or not all(math.isfinite(v) for v in (est, lo, hi)):
        return INCONCLUSIVE
    if lo > bound:
        return FAIL
    if hi <= bound or (bound == neutral and est <= neutral):
        return PASS
    return INCONCLUSIVE


def _params_dict(name: str, params: Any) -> dict:
    """A contract's parameters as a dict with the defaults filled in, validated by the
    scenario's contract model (ValueError naming the parameter)."""
    from harness.scenario.schema import CONTRACTS

    if name not in CONTRACTS:
        raise ValueError(f"unknown contract {name!r}; contracts: {', '.join(CONTRACTS)}")
    if params is None:
        params = {}
    if hasattr(params, "model_dump"):
        params = params.model_dump()
    if not isinstance(params, Mapping):
        raise ValueError(f"contract {name!r}: parameters must be a mapping, got {type(params).__name__}")
    params = dict(params)
    extra = {k: params.pop(k) for k in ("tolerance",) if k in params}
    try:
        model = CONTRACTS[name].model_validate(params, strict=False)
    except Exception as exc:  # pydantic.ValidationError: keep the message, not the type
        raise ValueError(f"contract {name!r}: {exc}") from None
    return {**model.model_dump(), **extra}


# ---------------------------------------------------------------------------------------------
# One side of a contract: what one arm did on its faulted exchanges


@dataclass
class _Side:
    arm: str
    n: int = 0  # judged exchanges
    violations: int = 0
    fired: int = 0  # exchanges where the fault reached this arm (applied or not)
    status: str | None = None  # PASS / FAIL / INCONCLUSIVE; None: nothing to judge
    required_n: int | None = None
    rate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    outcomes: dict = field(default_factory=dict)
    statuses: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)
    excluded: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    why: str = ""  # when n == 0: why

    def to_json(self) -> dict:
        out = {
            "status": self.status,
            "n": self.n,
            "violations": self.violations,
            "rate": self.rate,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "fired": self.fired,
            "outcomes": self.outcomes,
            "statuses": self.statuses,
            "errors": self.errors,
            "excluded": {k: v for k, v in self.excluded.items() if v},
        }
        if self.required_n is not None:
            out["required_n"] = self.required_n
        if self.why:
            out["why"] = self.why
        out.update(self.extra)
        return out


# ---------------------------------------------------------------------------------------------
# The check


@dataclass(frozen=True)
class ContractCheck:
    """One contract on one key for one arm, judged side by side with `reference`.

    `key`: a fault or toxic label (a sweep level `nan@0.05`, or a base label covering every
    level), `phase:<name>` or a label seen through `*`. `params`: the contract's parameters
    (a dict or the scenario's model; defaults filled in). `tolerance`: the violation rate an
    exchange contract accepts (default 0: none). `description`: the fault in words for messages
    ('NaN in `age`'); derived from the label or the timeline's spec when empty.
    """

    key: str
    contract: str
    params: Mapping[str, Any] = field(default_factory=dict)
    arm: str = CANDIDATE
    reference: str | None = BASELINE
    critical: bool = True
    tolerance: float = 0.0
    min_n: int = 20
    confidence: float = 0.95
    description: str = ""
    n_resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        params = _params_dict(self.contract, self.params)
        tolerance = float(params.pop("tolerance", self.tolerance))
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "tolerance", tolerance)
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"contract {self.contract!r}: tolerance must be in [0, 1), got {self.tolerance!r}")
        if not (isinstance(self.min_n, int) and self.min_n >= 1):
            raise ValueError(f"contract {self.contract!r}: min_n must be an integer >= 1, got {self.min_n!r}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"contract {self.contract!r}: confidence must be in (0, 1), got {self.confidence!r}")
        if self.contract == "production_unaffected":
            object.__setattr__(self, "arm", INCUMBENT)
            object.__setattr__(self, "reference", None)
        if self.reference == self.arm:
            object.__setattr__(self, "reference", None)

    @property
    def name(self) -> str:
        suffix = "" if self.arm in (CANDIDATE, INCUMBENT) else f"[{self.arm}]"
        return f"contract:{self.key}:{self.contract}{suffix}"

    # -- public -------------------------------------------------------------------------------

    def evaluate(self, evidence: Evidence, arm: str | None = None, *, timeline: Timeline | None = None,
                 steady_mask: np.ndarray | None = None) -> CheckResult:
        """Judge `arm` (default: the check's) on the exchanges the key covers."""
        check = self if arm is None or arm == self.arm else replace(self, arm=arm)
        timeline = timeline or Timeline()
        if check.contract == "production_unaffected":
            return check._production(evidence, timeline, steady_mask)
        if check.contract == "no_worse_than_incumbent":
            return check._no_worse(evidence, timeline)
        return check._exchange(evidence, timeline)

    # -- plumbing -----------------------------------------------------------------------------

    def _what(self, timeline: Timeline) -> str:
        desc = self.description or describe_fault(self.key, timeline.spec_for(self.key))
        return f"{desc} ({self.key})" if desc else self.key

    def _who(self, arm: str, as_reference: bool = False) -> str:
        if as_reference and arm == BASELINE:
            return "incumbent (baseline)"
        return arm

    def _result(self, status: str, message: str, *, critical: bool | None = None, **kw) -> CheckResult:
        kw = plain_numbers(kw)
        kw.setdefault("test", TEST.get(self.contract, TEST["exchange"]))
        details = {"key": self.key, "contract": self.contract, "arm": self.arm, "reference": self.reference,
                   "params": dict(self.params), **kw.pop("details", {})}
        return CheckResult(name=self.name, status=status, message=message,
                           critical=self.critical if critical is None else critical, details=details, **kw)

    def _not_applicable(self, why: str, timeline: Timeline, details: dict | None = None) -> CheckResult:
        return self._result(
            INCONCLUSIVE,
            f"{self._what(timeline)}: {why} — contract {self.contract}: not applicable",
            critical=False,
            details={"applicable": False, **(details or {})},
        )

    def _faulted(self, evidence: Evidence, arm: str, timeline: Timeline) -> tuple[np.ndarray, int, dict[str, int], str]:
        """The arm's faulted exchanges F (applied, sent, not shed or internal), how many
        exchanges the fault reached (applied or not), the exclusions, and why F is empty."""
        n = evidence.n_exchanges
        cols = evidence.arms.get(arm)
        if cols is None or not np.any(cols.present):
            return np.zeros(n, bool), 0, {}, f"no {arm} copies in this run"
        present = np.asarray(cols.present, dtype=bool)
        err = errors_of(cols)
        excluded: dict[str, int] = {}
        if timeline.is_ledgerless(self.key):
            window = timeline.window_mask(evidence.started_at, self.key)
            if window is None:
                return np.zeros(n, bool), 0, {}, f"no time line for {self.key} (its phase is unknown)"
            applied = window & present
            fired = int(applied.sum())
        else:
            if cols.faults is None:
                return np.zeros(n, bool), 0, {}, "the capture has no fault ledger"
            states = ledger_states(cols, self.key, n)
            applied = states["applied"] & present
            for state in NOT_APPLIED:
                excluded[state] = int((states[state] & present).sum())
            fired = int(applied.sum()) + sum(excluded.values())
        shed = applied & kind_mask(err, "shed")
        internal = applied & ~shed & kind_mask(err, "internal")
        excluded["shed"] = int(shed.sum())
        excluded["internal"] = int(internal.sum())
        mask = applied & ~shed & ~internal
        why = ""
        if not mask.any():
            if fired == 0:
                why = f"the fault never reached the {arm}"
            else:
                parts = ", ".join(f"{v:,} {k}" for k, v in excluded.items() if v)
                why = f"the fault reached the {arm} {fired:,} times but was never applied to a copy it answered ({parts})"
        return mask, fired, excluded, why

    def _window(self, evidence: Evidence, timeline: Timeline) -> np.ndarray:
        """X: exchanges that started while the fault was on (the time line's window; without
        one, from the first to the last exchange the fault reached in any arm)."""
        mask = timeline.window_mask(evidence.started_at, self.key)
        if mask is not None:
            return mask
        n = evidence.n_exchanges
        hit = np.zeros(n, dtype=bool)
        for cols in evidence.arms.values():
            states = ledger_states(cols, self.key, n)
            for m in states.values():
                hit |= m
        if not hit.any():
            return hit
        t = np.asarray(evidence.started_at, dtype=np.float64)
        lo, hi = t[hit].min(), t[hit].max()
        return (t >= lo) & (t <= hi)

    def _decide_rate(self, v: int, n: int) -> tuple[str, int | None, float, float]:
        """Exchange-contract rule on v violations of n: (status, required_n, ci_low, ci_high)."""
        lo, hi = stats.clopper_pearson(v, n, self.confidence)
        if n == 0:
            return INCONCLUSIVE, self.min_n, lo, hi
        if v > 0 and lo > self.tolerance:
            return FAIL, None, lo, hi
        rate = v / n
        if n < self.min_n:
            need = self.min_n
            if v > 0 and rate > self.tolerance:
                need = max(need, self._cp_required(rate, self.tolerance, n) or 0)
            return INCONCLUSIVE, need, lo, hi
        if v == 0 or hi <= self.tolerance:
            return PASS, None, lo, hi
        est = self._cp_required(rate, self.tolerance, n)
        return INCONCLUSIVE, (max(self.min_n, est) if est is not None else None), lo, hi

    def _cp_required(self, rate: float, bound: float, n: int) -> int | None:
        """n at which the Clopper-Pearson interval of `rate` would clear `bound`."""
        return stats.solve_required_n(lambda m: stats.clopper_pearson(rate * m, m, self.confidence), rate, bound, n)

    # -- exchange contracts and within_latency ------------------------------------------------

    def _violations(self, evidence: Evidence, arm: str, timeline: Timeline) -> _Side:
        side = _Side(arm)
        cols = evidence.arms.get(arm)
        mask, fired, excluded, why = self._faulted(evidence, arm, timeline)
        side.fired, side.excluded = fired, excluded
        if cols is None:
            side.why = why
            return side
        err = errors_of(cols)
        status = np.asarray(cols.status)
        p = self.params

        if self.contract == "no_crash":
            mask, why = self._crash_window(evidence, arm, timeline, mask, why)
        if not mask.any():
            side.why = why
            return side

        if self.contract == "clean_4xx":
            ok = none_mask(err) & client_error(status) & (status >= 0)
            message = getattr(cols, "has_message", None)
            if p.get("require_message"):
                if message is not None:
                    ok &= np.asarray(message, dtype=bool)
                    side.extra["message_checked"] = True
                else:
                    side.extra["message_checked"] = False
            bad = mask & ~ok
        elif self.contract == "finite_prediction":
            is2 = _answered(cols) & _status_2xx(status)
            decoded = np.asarray(cols.decoded, dtype=bool)
            good = decoded & (np.asarray(cols.finite, dtype=bool) if cols.finite is not None else True)
            bad = mask & is2 & ~good
            if p.get("require_2xx"):
                bad |= mask & ~is2
            side.extra["answered_2xx"] = int((mask & is2).sum())
            side.extra["finiteness_recorded"] = cols.finite is not None
        elif self.contract == "no_5xx":
            bad = mask & _answered(cols) & server_error(status)
        elif self.contract == "no_hang":
            bad = mask & kind_mask(err, "timeout")
            within = p.get("within_s")
            if within is not None:
                lat = np.asarray(cols.latency_s, dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    bad |= mask & np.isfinite(lat) & (lat > within)
        elif self.contract == "no_crash":
            injected = self._injected_resets(cols, evidence.n_exchanges, timeline)
            bad = mask & (kind_mask(err, "connect") | (kind_mask(err, "reset") & ~injected))
            side.excluded["injected_reset"] = int((mask & kind_mask(err, "reset") & injected).sum())
            mask = mask & ~(kind_mask(err, "reset") & injected)
            alive = timeline.alive.get(arm)
            side.extra["alive_at_end"] = alive
        elif self.contract == "within_latency":
            return self._latency_side(side, cols, mask)
        else:  # pragma: no cover - guarded by _params_dict
            raise ValueError(self.contract)

        n, v = int(mask.sum()), int(bad.sum())
        side.n, side.violations = n, v
        side.rate = v / n if n else None
        side.status, side.required_n, side.ci_low, side.ci_high = self._decide_rate(v, n)
        if self.contract == "no_crash" and side.extra.get("alive_at_end") is False:
            side.status, side.required_n = FAIL, None
        side.outcomes = _outcomes(cols, mask)
        side.statuses = _statuses(cols, mask)
        side.errors = count_kinds(err, mask)
        side.extra["violation_outcomes"] = _outcomes(cols, bad)
        return side

    def _crash_window(self, evidence: Evidence, arm: str, timeline: Timeline, faulted: np.ndarray,
                      why: str) -> tuple[np.ndarray, str]:
        """no_crash reads every exchange sent to the arm from the fault on: from the window's
        start (or the arm's first faulted exchange) to the end of its phase (or of the run)."""
        if not faulted.any():
            return faulted, why
        cols = evidence.arms[arm]
        t = np.asarray(evidence.started_at, dtype=np.float64)
        err = errors_of(cols)
        sent = np.asarray(cols.present, dtype=bool) & ~kind_mask(err, "shed") & ~kind_mask(err, "internal")
        first = float(t[faulted].min())
        span = timeline.span(self.key)
        if span is not None:
            start, end = min(span[0], first), span[1]
            return sent & (t >= start) & (t < end), why
        return sent & (t >= first), why

    def _injected_resets(self, cols: ArmColumns, n: int, timeline: Timeline) -> np.ndarray:
        """Exchanges whose copy got an injected `reset` fault (its reset is not a crash)."""
        out = np.zeros(n, dtype=bool)
        if cols.faults is None:
            return out
        codes, distinct = _ledger_codes(cols.faults)
        wanted = []
        for code, entries in enumerate(distinct):
            for entry in entries:
                label, state = split_entry(entry)
                if state == "applied" and fault_type(label, timeline.specs.get(label)) == "reset":
                    wanted.append(code)
                    break
        if wanted:
            out = np.isin(codes, wanted)
        return out

    def _latency_side(self, side: _Side, cols: ArmColumns, mask: np.ndarray) -> _Side:
        err = errors_of(cols)
        lat = np.asarray(cols.latency_s, dtype=np.float64)
        usable = mask & np.isfinite(lat) & (_answered(cols) | kind_mask(err, "timeout"))
        side.excluded["no_latency"] = int((mask & ~usable).sum())
        q, bound = float(self.params["quantile"]), float(self.params["ms"]) / 1000.0
        x = np.sort(lat[usable])
        n = len(x)
        side.n = n
        side.outcomes = _outcomes(cols, usable)
        side.statuses = _statuses(cols, usable)
        side.errors = count_kinds(err, usable)
        if n == 0:
            side.why = f"no faulted {side.arm} request has a latency"
            return side
        v = int((x > bound).sum())
        side.violations, side.rate = v, v / n
        side.ci_low, side.ci_high = stats.clopper_pearson(v, n, self.confidence)
        est = float(x[-1]) if q >= 1 else float(np.quantile(x, q))
        lo, hi = _quantile_ci(x, q, self.confidence)
        side.extra.update({"quantile": q, "quantile_s": est, "quantile_ci_low_s": lo if math.isfinite(lo) else None,
                           "quantile_ci_high_s": hi if math.isfinite(hi) else None, "bound_s": bound,
                           "timeouts": int((usable & kind_mask(err, "timeout")).sum())})
        tol = 1 - q
        estimate = None
        if tol > 0 and side.rate != tol:
            rate = side.rate
            estimate = self._cp_required(rate, tol, n)
        if q >= 1:  # the maximum, exactly: one request over the bound breaks it
            if v > 0:
                side.status = FAIL
            elif n < self.min_n:
                side.status, side.required_n = INCONCLUSIVE, self.min_n
            else:
                side.status = PASS
            return side
        if n < self.min_n:
            side.status, side.required_n = INCONCLUSIVE, max(self.min_n, estimate or 0)
        elif lo > bound:
            side.status = FAIL
        elif math.isfinite(hi) and hi <= bound:
            side.status = PASS
        else:
            side.status = INCONCLUSIVE
            side.required_n = max(self.min_n, estimate) if estimate is not None else None
        return side

    def _side_text(self, side: _Side, as_reference: bool, n_arm: int | None = None) -> str:
        who = self._who(side.arm, as_reference)
        if side.n == 0:
            return f"{who}: {side.why or 'nothing to judge'}"
        if self.contract == "within_latency":
            e = side.extra
            q = e["quantile"]
            qname = "max" if q >= 1 else f"p{q * 100:g}"
            ci = ""
            if q < 1:
                lo, hi = e.get("quantile_ci_low_s"), e.get("quantile_ci_high_s")
                ci = f" ({self.confidence * 100:g}% CI [{stats.fmt_ms(lo) if lo is not None else '0'}, " \
                     f"{stats.fmt_ms(hi) if hi is not None else 'unbounded'}])"
            of = f" of {side.n:,} requests" if not as_reference or side.n != n_arm else ""
            return f"{who} {qname} {stats.fmt_ms(e['quantile_s'])}{ci}{of}, {_pct(side.rate)} slower than the bound"
        of = f" of {side.n:,} requests" if not as_reference or side.n != n_arm else ""
        unit = " exchanges from the fault on" if self.contract == "no_crash" else ""
        if unit and of:
            of = f" of {side.n:,}{unit}"
        return f"{who} {_outcome_text(side.outcomes, side.n)}{of}"

    @staticmethod
    def _excluded_text(side: _Side) -> str:
        """' (100 more not applied: 100 undecodable)' for a side with exclusions."""
        skipped = {k: v for k, v in side.excluded.items() if v and k in NOT_APPLIED}
        other = {k: v for k, v in side.excluded.items() if v and k not in NOT_APPLIED}
        parts = []
        if skipped:
            parts.append(f"{sum(skipped.values()):,} more where the fault was not applied: "
                         + ", ".join(f"{v:,} {k}" for k, v in skipped.items()))
        if other:
            parts.append(", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in other.items()) + " left out")
        return f" ({'; '.join(parts)})" if parts else ""

    def _exchange(self, evidence: Evidence, timeline: Timeline) -> CheckResult:
        mine = self._violations(evidence, self.arm, timeline)
        what = self._what(timeline)
        details: dict[str, Any] = {"arms": {self.arm: mine.to_json()}}
        if mine.fired == 0 and not timeline.is_ledgerless(self.key) and has_ledger(evidence) and self.arm in evidence.arms \
                and np.any(evidence.arms[self.arm].present):
            return self._not_applicable(mine.why or f"the fault never reached the {self.arm}", timeline, details)

        ref: _Side | None = None
        ref_why = ""
        if self.reference is None:
            ref_why = "no reference arm"
        elif self.reference not in evidence.arms or not np.any(evidence.arms[self.reference].present):
            ref_why = f"no {self.reference} copies in this run"
        else:
            ref = self._violations(evidence, self.reference, timeline)
            details["arms"][self.reference] = ref.to_json()
            if ref.n == 0:
                ref_why = ref.why or f"the {self.reference} got no faulted copy"
        ref_ok = ref is not None and ref.n > 0

        left = self._side_text(mine, False) + (self._excluded_text(mine) if mine.n else "")
        if ref_ok:
            head = f"{what}: {left}, {self._side_text(ref, True, mine.n)}"
        elif self.reference is None and self.arm != CANDIDATE:
            head = f"{what}: {left}"  # the baseline or the incumbent judged on its own
        else:
            head = f"{what}: {left}, incumbent side unknown ({ref_why})"
        critical = self.critical
        if mine.n == 0:
            status = INCONCLUSIVE
            tail = "inconclusive, no faulted request to judge"
            required_n = self.min_n
        else:
            status, required_n = mine.status, mine.required_n
            tail = self._tail(mine, ref if ref_ok else None)
            if status == FAIL and ref_ok and ref.status == FAIL:
                critical = False
        details["reference_status"] = ref.status if ref_ok else None
        if not ref_ok:
            details["reference_unknown"] = ref_why
        message = f"{head} — contract {self.contract}: {tail}"
        unchecked = mine.extra.get("message_checked") is False
        if self.contract == "clean_4xx" and self.params.get("require_message") and unchecked:
            message += "; the error message was not checked (no response bodies in the evidence)"
        if required_n is not None:
            details["required_exchanges"] = self._in_exchanges(evidence, timeline, required_n, mine.n)
        threshold = self.tolerance
        effect, lo, hi = mine.rate, mine.ci_low, mine.ci_high
        if self.contract == "within_latency":
            threshold = 1 - float(self.params["quantile"])
        p_value = None
        if mine.n and threshold > 0:
            p_value = float(sps.binomtest(mine.violations, mine.n, threshold, alternative="greater").pvalue)
        return self._result(status, message, critical=critical, statistic=mine.violations, effect=effect,
                            ci_low=lo, ci_high=hi, p_value=p_value, n=mine.n, threshold=threshold,
                            required_n=required_n, details=details)

    def _tail(self, mine: _Side, ref: _Side | None) -> str:
        ci = stats.fmt_ci(mine.ci_low, mine.ci_high, _pct, self.confidence)
        ref_count = f"the incumbent on {ref.violations:,} of {ref.n:,}" if ref is not None else ""
        if mine.status == FAIL:
            if self.contract == "within_latency" and float(self.params["quantile"]) < 1:
                text = f"fail, {mine.arm} p{float(self.params['quantile']) * 100:g} is above {self.params['ms']:g} ms"
            else:
                text = f"fail, {mine.arm} violates it on {mine.violations:,} of {mine.n:,} ({_pct(mine.rate)}, {ci})"
            if self.contract == "no_crash" and mine.extra.get("alive_at_end") is False:
                text += f"; the {mine.arm} was not alive at the end"
            if ref is None:
                if self.arm != CANDIDATE:
                    return text
                return text + "; the incumbent side is unknown, the candidate is judged alone"
            if ref.status == FAIL:
                return text + f", {ref_count}: the incumbent breaks this contract too (not critical)"
            return text + f", {ref_count}" + (": the incumbent meets it" if ref.status == PASS else "")
        if mine.status == PASS:
            if mine.violations == 0:
                text = f"pass, no violation in {mine.n:,} (upper bound {_pct(mine.ci_high)})"
            else:
                text = f"pass, {mine.violations:,} violations ({_pct(mine.rate)}, {ci}) within the tolerance"
            return text + (f"; {ref_count}" if ref is not None else "")
        need = f"need about {mine.required_n:,}; have {mine.n:,}" if mine.required_n else f"have {mine.n:,}"
        return f"inconclusive, {mine.violations:,} violations ({_pct(mine.rate)}, {ci}): {need}"

    def _in_exchanges(self, evidence: Evidence, timeline: Timeline, required_n: int, n: int) -> int:
        """A need in faulted requests as requests through the proxy, at the window's rate."""
        window = int(self._window(evidence, timeline).sum())
        if n <= 0 or window <= 0:
            return int(required_n)
        return int(math.ceil(required_n * max(window / n, 1.0)))

    # -- no_worse_than_incumbent ---------------------------------------------------------------

    def _no_worse(self, evidence: Evidence, timeline: Timeline) -> CheckResult:
        p = self.params
        what = self._what(timeline)
        against = p.get("against", INCUMBENT)
        if against == self.arm:
            against = INCUMBENT
        who_ref = "incumbent (baseline)" if against == BASELINE else "incumbent"
        _, fired, excluded, why = self._faulted(evidence, self.arm, timeline)
        cols = evidence.arms.get(self.arm)
        ref = evidence.arms.get(against)
        base = {"against": against, "excluded": excluded, "fired": fired}
        if cols is None or not np.any(cols.present):
            return self._result(INCONCLUSIVE, f"{what}: no {self.arm} copies in this run — contract "
                                f"{self.contract}: inconclusive", required_n=self.min_n, details=base)
        if fired == 0 and not timeline.is_ledgerless(self.key) and has_ledger(evidence):
            return self._not_applicable(why or f"the fault never reached the {self.arm}", timeline, base)
        if ref is None or not np.any(ref.present):
            return self._result(INCONCLUSIVE, f"{what}: no {against} copies in this run, the incumbent side is "
                                f"unknown — contract {self.contract}: inconclusive", details=base)
        window = self._window(evidence, timeline)
        err_a, err_r = errors_of(cols), errors_of(ref)
        sent_a = np.asarray(cols.present, bool) & ~kind_mask(err_a, "shed") & ~kind_mask(err_a, "internal")
        sent_r = np.asarray(ref.present, bool) & ~kind_mask(err_r, "shed") & ~kind_mask(err_r, "internal")
        judged = window & sent_a & sent_r
        n = int(judged.sum())
        parts: dict[str, dict] = {}
        arms_json: dict[str, dict] = {}

        fail_a = _failed(cols, err_a) & judged
        fail_r = _failed(ref, err_r) & judged
        for arm_name, failed_mask, c in ((self.arm, fail_a, cols), (against, fail_r, ref)):
            v = int(failed_mask.sum())
            lo, hi = stats.clopper_pearson(v, n, self.confidence)
            arms_json[arm_name] = {"n": n, "violations": v, "rate": v / n if n else None, "ci_low": lo, "ci_high": hi,
                                   "outcomes": _outcomes(c, judged), "statuses": _statuses(c, judged),
                                   "errors": count_kinds(errors_of(c), judged)}
        if p.get("error_rate_margin") is not None:
            parts["error_rate"] = self._error_part(fail_a, fail_r, n, float(p["error_rate_margin"]))
        if p.get("latency_ratio") is not None:
            parts["latency"] = self._latency_part(cols, ref, judged, float(p["latency_ratio"]), float(p["quantile"]))
        if p.get("flip_margin") is not None:
            parts["flips"] = self._flip_part(evidence, against, judged, float(p["flip_margin"]))

        judged_parts = {k: v for k, v in parts.items() if v["status"] is not None}
        statuses = [v["status"] for v in judged_parts.values()]
        if not judged_parts:
            status = INCONCLUSIVE
        elif FAIL in statuses:
            status = FAIL
        elif all(s == PASS for s in statuses):
            status = PASS
        else:
            status = INCONCLUSIVE
        needs = [v.get("required_n") for v in judged_parts.values() if v["status"] == INCONCLUSIVE]
        required_n = None
        if status == INCONCLUSIVE:
            known = [x for x in needs if x is not None]
            required_n = max(known) if known else (self.min_n if n < self.min_n else None)
        lead = next((k for k, v in judged_parts.items() if v["status"] == FAIL), next(iter(judged_parts), None))
        texts = [v["text"] for v in parts.values()]
        rate_a, rate_r = arms_json[self.arm]["rate"], arms_json[against]["rate"]
        head = (f"{what}: {self.arm} error rate {_pct(rate_a)} vs {who_ref} {_pct(rate_r)} on {n:,} requests "
                f"while the fault was on")
        if status == FAIL:
            broke = ", ".join(k.replace("_", " ") for k, v in judged_parts.items() if v["status"] == FAIL)
            tail = f"fail ({broke})"
        elif status == INCONCLUSIVE:
            tail = "inconclusive" + (f", need about {required_n:,} requests; have {n:,}" if required_n else "")
        else:
            tail = "pass"
        message = f"{head}; " + "; ".join(texts) + f" — contract {self.contract}: {tail}"
        details = {**base, "arms": arms_json, "parts": parts, "window_exchanges": int(window.sum())}
        if required_n is not None:
            details["required_exchanges"] = int(required_n)
        led = parts.get(lead, {}) if lead else {}
        return self._result(status, message, statistic=led.get("estimate"), effect=led.get("estimate"),
                            ci_low=led.get("ci_low"), ci_high=led.get("ci_high"), n=n, threshold=led.get("bound"),
                            required_n=required_n, details=details)

    def _error_part(self, fail_a: np.ndarray, fail_r: np.ndarray, n: int, margin: float) -> dict:
        both = int((fail_a & fail_r).sum())
        only_a = int((fail_a & ~fail_r).sum())
        only_r = int((fail_r & ~fail_a).sum())
        cells = (both, only_a, only_r, n - both - only_a - only_r)
        if n == 0:
            return {"status": INCONCLUSIVE, "n": 0, "bound": margin, "estimate": None, "text": "error rate: no exchange"}
        diff, lo, hi = stats.newcombe_paired(*cells, self.confidence)
        status = _part_status(n, self.min_n, diff, lo, hi, margin, 0.0)
        req = None
        if status == INCONCLUSIVE:
            est = stats.solve_required_n(lambda m: stats.newcombe_paired(*(c * m / n for c in cells), self.confidence)[1:],
                                         diff, margin, n)
            req = max(self.min_n, est or 0) if (est is not None or n < self.min_n) else None
        text = (f"error rate difference {stats.fmt_pp(diff)}, {stats.fmt_ci(lo, hi, stats.fmt_pp, self.confidence)}, "
                f"margin {stats.fmt_pp(margin)}: {status}")
        return {"status": status, "n": n, "estimate": diff, "ci_low": lo, "ci_high": hi, "bound": margin,
                "paired": {"both_failed": both, "only_arm_failed": only_a, "only_reference_failed": only_r},
                "required_n": req, "text": text}

    def _latency_part(self, cols: ArmColumns, ref: ArmColumns, judged: np.ndarray, bound: float, q: float) -> dict:
        ok_a, to_a = _usable(cols)
        ok_r, to_r = _usable(ref)
        both = judged & (ok_a | to_a) & (ok_r | to_r)
        n = int(both.sum())
        qname = "max" if q >= 1 else f"p{q * 100:g}"
        if n == 0:
            return {"status": INCONCLUSIVE, "n": 0, "bound": bound, "estimate": None, "required_n": self.min_n,
                    "text": f"{qname} latency: no exchange both arms answered"}
        la = np.asarray(cols.latency_s, dtype=np.float64)[both]
        lr = np.asarray(ref.latency_s, dtype=np.float64)[both]
        qa, qr = float(np.quantile(la, q)), float(np.quantile(lr, q))
        ratio = qa / qr if qr > 0 else math.nan
        boot = _bootstrap_log_ratio(lr, la, (q,), self.n_resamples, 10_000, self.seed)
        lo, hi = _interval(ratio, boot[0], 1 - self.confidence, _scale(n, 10_000))
        status = _part_status(n, self.min_n, ratio, lo, hi, bound, 1.0)
        req = None
        if status == INCONCLUSIVE:
            req = stats.required_n_normal(n, ratio, lo, hi, bound, log=True) if math.isfinite(lo) else None
            req = max(self.min_n, req or 0) if (req is not None or n < self.min_n) else None
        text = (f"{qname} latency {stats.fmt_ms(qa)} vs {stats.fmt_ms(qr)}: ratio {stats.fmt_ratio(ratio)}, "
                f"{stats.fmt_ci(lo, hi, stats.fmt_ratio, self.confidence)}, bound {stats.fmt_ratio(bound)}: {status}")
        return {"status": status, "n": n, "estimate": ratio, "ci_low": lo, "ci_high": hi, "bound": bound,
                "arm_s": qa, "reference_s": qr, "required_n": req, "text": text}

    def _flip_part(self, evidence: Evidence, against: str, judged: np.ndarray, margin: float) -> dict:
        if evidence.task == "regression":
            return {"status": None, "n": 0, "bound": margin,
                    "text": "flip rate: not judged (regression outputs have no labels)"}
        a, b = _paired_labels(evidence, self.arm, against, judged)
        keep = (a >= 0) & (b >= 0)
        a, b = a[keep], b[keep]
        n = len(a)
        if n == 0:
            return {"status": INCONCLUSIVE, "n": 0, "bound": margin, "estimate": None, "required_n": self.min_n,
                    "text": "flip rate: no paired labelled predictions"}
        flips = int((a != b).sum())
        rate = flips / n
        lo, hi = stats.clopper_pearson(flips, n, self.confidence)
        status = _part_status(n, self.min_n, rate, lo, hi, margin, 0.0)
        req = None
        if status == INCONCLUSIVE:
            est = self._cp_required(rate, margin, n)
            req = max(self.min_n, est or 0) if (est is not None or n < self.min_n) else None
        text = (f"flip rate {_pct(rate)} ({flips:,} of {n:,} predictions), "
                f"{stats.fmt_ci(lo, hi, _pct, self.confidence)}, margin {_pct(margin)}: {status}")
        return {"status": status, "n": n, "estimate": rate, "ci_low": lo, "ci_high": hi, "bound": margin,
                "flips": flips, "required_n": req, "text": text}

    # -- production_unaffected ------------------------------------------------------------------

    def _production(self, evidence: Evidence, timeline: Timeline, steady_mask: np.ndarray | None) -> CheckResult:
        p = self.params
        what = self._what(timeline)
        inc = evidence.arms.get(INCUMBENT)
        steady = steady_mask if steady_mask is not None else timeline.steady_mask(evidence.started_at)
        window = self._window(evidence, timeline)
        fired_any = bool(window.any())
        if inc is None or not np.any(inc.present):
            return self._result(INCONCLUSIVE, f"{what}: no incumbent exchanges — contract {self.contract}: inconclusive")
        if not fired_any:
            if has_ledger(evidence) and not timeline.is_ledgerless(self.key):
                return self._not_applicable("the fault never fired", timeline)
            return self._result(INCONCLUSIVE, f"{what}: no exchange while the fault was on — contract "
                                f"{self.contract}: inconclusive", required_n=self.min_n)
        if steady is None or not np.any(steady):
            return self._result(INCONCLUSIVE, f"{what}: no steady-state exchanges to compare with — contract "
                                f"{self.contract}: inconclusive", details={"window_exchanges": int(window.sum())})
        steady = np.asarray(steady, dtype=bool)
        present = np.asarray(inc.present, dtype=bool)
        x_mask = window & present & ~steady
        s_mask = steady & present
        err = errors_of(inc)
        status_col = np.asarray(inc.status)
        failed = ~none_mask(err) | server_error(status_col) | (status_col < 0)
        nx, ns = int(x_mask.sum()), int(s_mask.sum())
        fx, fs = int((failed & x_mask).sum()), int((failed & s_mask).sum())
        margin = float(p["error_rate_margin"])
        parts: dict[str, dict] = {}
        diff, lo, hi = _newcombe_independent(fx, nx, fs, ns, self.confidence)
        st = _part_status(min(nx, ns), self.min_n, diff, lo, hi, margin, 0.0)
        req = None
        if st == INCONCLUSIVE and nx > 0 and ns > 0:
            est = stats.solve_required_n(
                lambda m: _newcombe_independent(fx * m / nx, m, fs * m / nx, ns * m / nx, self.confidence)[1:],
                diff, margin, nx)
            req = max(self.min_n, est or 0) if (est is not None or nx < self.min_n) else None
        elif st == INCONCLUSIVE:
            req = self.min_n
        parts["error_rate"] = {
            "status": st, "estimate": diff, "ci_low": lo, "ci_high": hi, "bound": margin, "required_n": req,
            "window": {"n": nx, "failed": fx}, "steady": {"n": ns, "failed": fs},
            "text": (f"incumbent error rate {_pct(fx / nx if nx else None)} of {nx:,} requests while the fault was on "
                     f"vs {_pct(fs / ns if ns else None)} of {ns:,} in steady state ({stats.fmt_pp(diff)}, "
                     f"{stats.fmt_ci(lo, hi, stats.fmt_pp, self.confidence)}, margin {stats.fmt_pp(margin)}): {st}"),
        }
        q, bound = float(p["quantile"]), float(p["latency_ratio"])
        ok, to = _usable(inc)
        lat = np.asarray(inc.latency_s, dtype=np.float64)
        lx, ls = lat[x_mask & (ok | to)], lat[s_mask & (ok | to)]
        qname = "max" if q >= 1 else f"p{q * 100:g}"
        if len(lx) and len(ls):
            qx, qs = float(np.quantile(lx, q)), float(np.quantile(ls, q))
            ratio = qx / qs if qs > 0 else math.nan
            boot = _bootstrap_unpaired_log_ratio(ls, lx, q, self.n_resamples, self.seed)
            rlo, rhi = _percentile(ratio, boot, self.confidence)
            st = _part_status(min(len(lx), len(ls)), self.min_n, ratio, rlo, rhi, bound, 1.0)
            req = None
            if st == INCONCLUSIVE:
                req = stats.required_n_normal(len(lx), ratio, rlo, rhi, bound, log=True) if math.isfinite(rlo) else None
                req = max(self.min_n, req or 0) if (req is not None or len(lx) < self.min_n) else None
            parts["latency"] = {
                "status": st, "estimate": ratio, "ci_low": rlo, "ci_high": rhi, "bound": bound, "required_n": req,
                "window_s": qx, "steady_s": qs,
                "text": (f"{qname} latency {stats.fmt_ms(qx)} vs {stats.fmt_ms(qs)}: ratio {stats.fmt_ratio(ratio)}, "
                         f"{stats.fmt_ci(rlo, rhi, stats.fmt_ratio, self.confidence)}, "
                         f"bound {stats.fmt_ratio(bound)}: {st}"),
            }
        else:
            parts["latency"] = {"status": INCONCLUSIVE, "bound": bound, "required_n": self.min_n,
                                "text": f"{qname} latency: no incumbent latencies to compare"}
        statuses = [v["status"] for v in parts.values()]
        status = FAIL if FAIL in statuses else PASS if all(s == PASS for s in statuses) else INCONCLUSIVE
        required_n = None
        if status == INCONCLUSIVE:
            known = [v.get("required_n") for v in parts.values() if v["status"] == INCONCLUSIVE and v.get("required_n")]
            required_n = max(known) if known else None
        lead = next((k for k, v in parts.items() if v["status"] == FAIL), "error_rate")
        led = parts[lead]
        broke = ", ".join(k.replace("_", " ") for k, v in parts.items() if v["status"] == FAIL)
        tail = f"fail ({broke})" if status == FAIL else status
        message = f"{what}: " + "; ".join(v["text"] for v in parts.values()) + f" — contract {self.contract}: {tail}"
        v_rate = fx / nx if nx else None
        c_lo, c_hi = stats.clopper_pearson(fx, nx, self.confidence)
        details = {"parts": parts, "window_exchanges": nx, "steady_exchanges": ns,
                   "arms": {INCUMBENT: {"n": nx, "violations": fx, "rate": v_rate, "ci_low": c_lo, "ci_high": c_hi,
                                        "status": status, "steady_rate": fs / ns if ns else None,
                                        "statuses": _statuses(inc, x_mask), "errors": count_kinds(err, x_mask)}}}
        if required_n is not None:
            details["required_exchanges"] = int(required_n)
        return self._result(status, message, statistic=led.get("estimate"), effect=led.get("estimate"),
                            ci_low=led.get("ci_low"), ci_high=led.get("ci_high"), n=nx, threshold=led.get("bound"),
                            required_n=required_n, details=details)


def _paired_labels(evidence: Evidence, arm: str, against: str, judged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of `arm` and `against` on the same input rows of the judged exchanges."""
    empty = np.zeros(0, dtype=np.int64)
    pa = evidence.pairs.get(arm)
    if pa is None or pa.n == 0:
        return empty, empty
    if against == INCUMBENT:
        rows = judged[pa.exchange]
        return np.asarray(pa.label_other)[rows], np.asarray(pa.label_incumbent)[rows]
    pb = evidence.pairs.get(against)
    if pb is None or pb.n == 0:
        return empty, empty
    ka, kb = _row_keys(pa), _row_keys(pb)
    _, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    rows = judged[pa.exchange[ia]]
    return np.asarray(pa.label_other)[ia][rows], np.asarray(pb.label_other)[ib][rows]


def _row_keys(p: Pairs) -> np.ndarray:
    """(exchange, row within the exchange) as one int64 per prediction row."""
    ex = np.asarray(p.exchange, dtype=np.int64)
    order = np.argsort(ex, kind="stable")
    sorted_ex = ex[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_ex)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ex)]))
    rank = np.empty(len(ex), dtype=np.int64)
    rank[order] = np.arange(len(ex)) - run_start
    return ex * (1 << 20) + rank


# ---------------------------------------------------------------------------------------------
# Building checks from a scenario's contracts


def _items(contracts: Any) -> list[tuple[str, str, Any]]:
    """(key, name, params) from `Scenario.contract_items()`, tuples, or `{key: [item, ...]}`."""
    out: list[tuple[str, str, Any]] = []
    if isinstance(contracts, Mapping):
        for key, items in contracts.items():
            for item in items:
                if isinstance(item, str):
                    out.append((key, item, {}))
                elif isinstance(item, Mapping) and len(item) == 1:
                    (name, params), = item.items()
                    out.append((key, name, params or {}))
                else:
                    raise ValueError(
                        f"contracts[{key!r}]: expected a contract name or {{name: {{parameters}}}}, got {item!r}")
        return out
    for item in contracts:
        if isinstance(item, ContractCheck):
            out.append((item.key, item.contract, {**item.params, "tolerance": item.tolerance}))
            continue
        key, name, params = (item.key, item.name, item.params) if hasattr(item, "key") else item
        out.append((key, name, params))
    return out


def _expand_key(key: str, evidence: Evidence, timeline: Timeline) -> list[str]:
    """The labels a contract key stands for, each judged on its own: `*` -> every fault and
    toxic label; a base label -> each of its sweep levels; `phase:<name>` -> the phase (each
    level of a swept phase)."""
    seen = ledger_labels(evidence)
    known = list(dict.fromkeys(seen + timeline.labels()))
    if key == "*":
        return known
    if key.startswith("phase:"):
        levels = [k for k in timeline.windows if k.startswith("phase:") and k != key and label_matches(k, key)]
        return levels or [key]
    if "@" not in key:
        levels = [k for k in known if k.startswith(key + "@")]
        if levels:
            return list(dict.fromkeys(base_label_level(k, key) for k in levels))
    return [key]


def base_label_level(label: str, key: str) -> str:
    """`nan@0.05:age`-style oddities aside, a level label is `<key>@<level>`."""
    rest = label[len(key) + 1:]
    return f"{key}@{rest.split(':', 1)[0]}"


def build_contract_checks(contracts: Any, evidence: Evidence, *, arm: str = CANDIDATE, reference: str | None = BASELINE,
                          timeline: Timeline | None = None, min_n: int = 20, confidence: float = 0.95,
                          seed: int = 0) -> list[ContractCheck]:
    """One ContractCheck per (label, contract, arm): a contract's `arms` (default `[arm]`), a
    `*` key expanded to every fault and toxic label, a base label to each sweep level.
    A contract given under an explicit label wins over the same contract through `*`."""
    timeline = timeline or Timeline()
    items = _items(contracts)
    checks: dict[str, ContractCheck] = {}
    for explicit in (True, False):
        for key, name, params in items:
            if (key == "*") == explicit:
                continue
            pdict = _params_dict(name, params)
            arms = [INCUMBENT] if name == "production_unaffected" else list(pdict.get("arms") or [arm])
            for label in _expand_key(key, evidence, timeline):
                for a in arms:
                    check = ContractCheck(key=label, contract=name, params=pdict, arm=a, reference=reference,
                                          min_n=min_n, confidence=confidence, seed=seed)
                    if check.name not in checks:
                        checks[check.name] = check
    return list(checks.values())


def contract_checks(contracts: Any, evidence: Evidence, *, arm: str = CANDIDATE, reference: str | None = BASELINE,
                    timeline: Timeline | None = None, steady_mask: np.ndarray | None = None, min_n: int = 20,
                    confidence: float = 0.95, seed: int = 0) -> list[CheckResult]:
    """Evaluate every contract (see build_contract_checks) on `evidence`."""
    timeline = timeline or Timeline()
    return [c.evaluate(evidence, timeline=timeline, steady_mask=steady_mask)
            for c in build_contract_checks(contracts, evidence, arm=arm, reference=reference, timeline=timeline,
                                           min_n=min_n, confidence=confidence, seed=seed)]


# ---------------------------------------------------------------------------------------------
# Dose-response


def dose_response(evidence: Evidence, contracts: Any, sweep_labels: Sequence[tuple[str, float]], *,
                  arm: str = CANDIDATE, reference: str | None = BASELINE, timeline: Timeline | None = None,
                  steady_mask: np.ndarray | None = None, parameter: str | None = None, fault: str | None = None,
                  min_n: int = 20, confidence: float = 0.95, seed: int = 0) -> dict:
    """Per sweep level (`[("nan@0.05", 0.05), ...]`) and arm, each contract's violation rate with
    its interval and n, and per arm the first level (lowest value) where the contract breaks.

    Contracts are those under the swept fault's base label (or `*`). The reference is the
    baseline (the incumbent model under the same fault); for no_worse_than_incumbent the
    reference curve is the compared arm's error rate, for production_unaffected the incumbent's.
    JSON-ready (numbers may be None).
    """
    timeline = timeline or Timeline()
    levels = [(str(label), float(value)) for label, value in sweep_labels]
    fault = fault or (base_label(levels[0][0]) if levels else "")
    ref_ok = reference is not None and reference in evidence.arms and bool(np.any(evidence.arms[reference].present))
    ref_arm = reference if ref_ok else None
    word = parameter or "level"

    chosen: dict[str, tuple[str, str, dict]] = {}
    for explicit in (True, False):
        for key, name, params in _items(contracts):
            wanted = key == fault if explicit else key == "*"
            if wanted and name not in chosen:
                chosen[name] = (key, name, _params_dict(name, params))

    level_rows = []
    for label, value in levels:
        level_rows.append({"label": label, "value": value,
                           "metrics": _level_metrics(evidence, label, timeline, [arm] + ([ref_arm] if ref_arm else []),
                                                     confidence)})

    out_contracts = []
    for name, (key, _, params) in chosen.items():
        if name == "production_unaffected":
            arms = [INCUMBENT]
        elif name == "no_worse_than_incumbent":
            against = params.get("against", INCUMBENT)
            arms = [arm, against] if (against in evidence.arms and np.any(evidence.arms[against].present)) else [arm]
        else:
            arms = [arm] + ([ref_arm] if ref_arm else [])
        points = []
        for label, value in levels:
            points.append({"label": label, "value": value,
                           "arms": _points(evidence, label, name, params, arms, timeline, steady_mask, min_n,
                                           confidence, seed)})
        first_break: dict[str, dict | None] = {}
        holds_up_to: dict[str, float | None] = {}
        for a in arms:
            judged = [(pt["value"], pt["label"], pt["arms"][a]["status"]) for pt in points]
            broken = sorted((v, lab) for v, lab, s in judged if s == FAIL)
            first_break[a] = {"label": broken[0][1], "value": broken[0][0]} if broken else None
            limit = broken[0][0] if broken else math.inf
            held = [v for v, _, s in judged if s == PASS and v < limit]
            holds_up_to[a] = max(held) if held else None
        out_contracts.append({
            "name": name,
            "key": key,
            "measure": MEASURES[name],
            "arms": arms,
            "points": points,
            "first_break": first_break,
            "holds_up_to": holds_up_to,
            "summary": _dose_summary(name, arms, first_break, holds_up_to, word, arm, ref_arm, points),
        })
    summary = [c["summary"] for c in out_contracts]
    if not levels:
        summary = ["no sweep levels: nothing to plot"]
    elif not out_contracts:
        summary = [f"no contract on {fault!r}: nothing judged per level"]
    return {
        "fault": fault,
        "parameter": parameter,
        "arm": arm,
        "reference": ref_arm,
        "levels": level_rows,
        "contracts": out_contracts,
        "summary": summary,
    }


def _points(evidence, label, name, params, arms, timeline, steady_mask, min_n, confidence, seed) -> dict:
    """Each arm's point at one level: status ('n/a' when not applicable, None when the arm is
    only the compared side), n, violations, rate and interval, and the check's message."""
    out: dict[str, dict] = {}
    for a in arms:
        if name == "no_worse_than_incumbent" and a != arms[0]:
            continue  # the compared arm's error rate comes with the judged arm's result
        res = ContractCheck(key=label, contract=name, params=params, arm=a, reference=None, min_n=min_n,
                            confidence=confidence, seed=seed).evaluate(evidence, timeline=timeline,
                                                                         steady_mask=steady_mask)
        applicable = res.details.get("applicable", True) is not False
        sides = res.details.get("arms") or {}
        for b in arms if name == "no_worse_than_incumbent" else [a]:
            side = sides.get(b) or {}
            n = int(side.get("n", 0) or 0)
            out[b] = {
                "status": (res.status if applicable else "n/a") if b == a else None,
                "n": n,
                "violations": int(side.get("violations", 0) or 0),
                "rate": side.get("rate") if n else None,
                "ci_low": side.get("ci_low") if n else None,
                "ci_high": side.get("ci_high") if n else None,
            }
            if b == a:
                out[b]["message"] = res.message
    return {a: out.get(a, {"status": None, "n": 0, "violations": 0, "rate": None, "ci_low": None, "ci_high": None})
            for a in arms}


def _who(a: str, ref_arm: str | None) -> str:
    if a == BASELINE:
        return "the incumbent (baseline)"
    return f"the {a}"


def _dose_summary(name, arms, first_break, holds_up_to, word, arm, ref_arm, points) -> str:
    parts = []
    for a in arms:
        if name == "no_worse_than_incumbent" and a != arms[0]:
            continue
        who = _who(a, ref_arm)
        fb = first_break.get(a)
        if fb is not None:
            text = f"{who} first breaks `{name}` at {word} {fb['value']:g}"
            if a == arms[0]:
                parts.append(text)
            else:
                parts.append(f"{who} first breaks it at {fb['value']:g}")
        else:
            up = holds_up_to.get(a)
            if up is not None:
                parts.append(f"{who} holds `{name}` up to {word} {up:g}" if a == arms[0] else f"{who} holds up to {up:g}")
            else:
                parts.append(f"{who}: no level decided `{name}`" if a == arms[0] else f"{who}: no level decided")
    if name not in ("no_worse_than_incumbent", "production_unaffected") and ref_arm is None and arm in arms:
        parts.append("the incumbent side is unknown (no baseline)")
    return "; ".join(parts)


def _level_metrics(evidence: Evidence, label: str, timeline: Timeline, arms: list[str], confidence: float) -> dict:
    """Per arm over the level's window: exchanges, faulted, error rate (transport errors and
    5xx), 4xx share, latency p50 and p99, and the flip rate against the incumbent."""
    probe = ContractCheck(key=label, contract="no_5xx", arm=arms[0] if arms else CANDIDATE, reference=None)
    window = probe._window(evidence, timeline)
    out: dict[str, dict] = {}
    for a in arms:
        cols = evidence.arms.get(a)
        if cols is None:
            continue
        err = errors_of(cols)
        sent = window & np.asarray(cols.present, bool) & ~kind_mask(err, "shed") & ~kind_mask(err, "internal")
        n = int(sent.sum())
        faulted, _, _, _ = replace(probe, arm=a)._faulted(evidence, a, timeline)
        row: dict[str, Any] = {"exchanges": n, "faulted": int(faulted.sum())}
        if n:
            status = np.asarray(cols.status)
            row["error_rate"] = float((_failed(cols, err) & sent).sum() / n)
            row["client_error_rate"] = float((sent & none_mask(err) & client_error(status) & (status >= 0)).sum() / n)
            ok, to = _usable(cols)
            lat = np.asarray(cols.latency_s, dtype=np.float64)[sent & (ok | to)]
            if len(lat):
                row["p50_s"], row["p99_s"] = (float(v) for v in np.quantile(lat, [0.5, 0.99]))
            labels = _paired_labels(evidence, a, INCUMBENT, sent) if a != INCUMBENT else (np.zeros(0), np.zeros(0))
            keep = (labels[0] >= 0) & (labels[1] >= 0)
            if keep.any():
                row["flip_rate"] = float(np.mean(labels[0][keep] != labels[1][keep]))
        out[a] = row
    return out


__all__ = [
    "CONTRACT_NAMES",
    "EXCHANGE_CONTRACTS",
    "MEASURES",
    "RATE_CONTRACTS",
    "ContractCheck",
    "Timeline",
    "build_contract_checks",
    "contract_checks",
    "describe_fault",
    "dose_response",
    "label_matches",
    "ledger_labels",
    "split_entry",
]
