"""Load shapes: the target request rate over time, as plain data and pure functions.

No Locust here (this module is imported by the parent process and by the locustfile alike).
A shape is a JSON-able dict with a `type`:

    {"type": "constant", "rate": 50}                      50 requests/s
    {"type": "constant", "users": 8}                      8 users, each at `per_user_rate` req/s
    {"type": "ramp", "from_rate": 10, "to_rate": 100, "over_s": 30}
    {"type": "step", "steps": [{"rate": 10, "duration_s": 5}, {"rate": 40, "duration_s": 5}]}
    {"type": "spike", "base_rate": 20, "peak_rate": 200, "at_s": 10, "for_s": 3}
    {"type": "custom", "class": "my_shapes:Wave"}         a Locust LoadTestShape of your own

Optional keys, on every built-in shape:

- `users`: the number of Locust users (the pool of concurrent senders) for the whole run;
  default: the LoadSpec's `users`. Each user sends its next request only after the previous
  one is answered, so a pool of `users` sustains at most `users / latency` requests/s: size
  it for the peak rate and the slowest expected response.
- `duration_s`: total run time. Defaults: `constant` and `spike` take the LoadSpec's
  `duration_s`; `ramp` ends at `over_s` (a longer `duration_s` holds `to_rate` after the ramp);
  `step` ends after its last step (a longer `duration_s` holds the last step's rate).
- `per_user_rate` (`constant` with `users` and no `rate`; `custom`): requests/s of each user;
  default the LoadSpec's `rate / users`.

Rates are requests/s over all users, >= 0 (0 pauses the load; the run must still send
something). Time is seconds since the start of the run; every shape is 0 outside
`[0, duration_s)`.

`custom`: `class` is "module:Class" naming a subclass of `locust.LoadTestShape`. It is
imported *inside the Locust process* (never in ours: importing locust monkey-patches the
interpreter), so the module must be importable there: the Locust process has the project
root, the caller's PYTHONPATH and the shape's optional `pythonpath` directory on its path
(its working directory is the run's output directory, not the caller's). Its `tick()` sets
the user count; each user sends `per_user_rate` requests/s; the run is cut off at
`duration_s` (default the LoadSpec's) whatever `tick()` says, so it stays bounded.

Pacing (how the locustfile turns a rate shape into requests): the run's k-th request
(k = 0, 1, 2, ...) is due when the cumulative target count (the integral of the rate,
`Schedule.count_at`) reaches k + 1/2. With a pool of U users, user i
takes the slots i, i+U, i+2U, ..., so the users interleave into one evenly spread stream
that follows the shape exactly while they keep up; a user that falls behind skips the slots
it missed (no catch-up bursts) and sends its latest due one at once.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from pathlib import Path

SHAPE_TYPES = ("constant", "ramp", "step", "spike", "custom")
_CLASS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")

# Keys each type accepts (beyond "type"); anything else is a typo we report.
_KEYS = {
    "constant": {"rate", "users", "per_user_rate", "duration_s"},
    "ramp": {"from_rate", "to_rate", "over_s", "users", "duration_s"},
    "step": {"steps", "users", "duration_s"},
    "spike": {"base_rate", "peak_rate", "at_s", "for_s", "users", "duration_s"},
    "custom": {"class", "per_user_rate", "duration_s", "pythonpath"},
}


# -- validation ---------------------------------------------------------------------------


def _number(value, field: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{field} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{field} must be >= {minimum:g}, got {value!r}")
    return float(value)


def _count(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a whole number >= 1, got {value!r}")
    return value


def validate_shape(shape: Mapping, field: str = "shape") -> dict:
    """A checked copy of `shape` (defaults not filled in); ValueError naming the bad field.

    Relative `pythonpath` (custom) is resolved against the current directory, so the copy
    means the same thing in the Locust process, whose working directory differs.
    """
    if not isinstance(shape, Mapping):
        raise ValueError(f"{field} must be a mapping with a 'type', got {type(shape).__name__}")
    kind = shape.get("type")
    if kind not in SHAPE_TYPES:
        raise ValueError(f"{field}.type must be one of {', '.join(SHAPE_TYPES)}, got {kind!r}")
    unknown = sorted(set(shape) - _KEYS[kind] - {"type"})
    if unknown:
        raise ValueError(
            f"{field}: unknown key(s) {', '.join(map(repr, unknown))} for a {kind} shape; "
            f"expected {', '.join(sorted(_KEYS[kind]))}"
        )
    out: dict = {"type": kind}
    if "users" in shape:
        out["users"] = _count(shape["users"], f"{field}.users")
    if "duration_s" in shape:
        out["duration_s"] = _number(shape["duration_s"], f"{field}.duration_s", positive=True)
    if "per_user_rate" in shape:
        out["per_user_rate"] = _number(shape["per_user_rate"], f"{field}.per_user_rate", positive=True)

    if kind == "constant":
        if "rate" in shape:
            out["rate"] = _number(shape["rate"], f"{field}.rate", positive=True)
            if "per_user_rate" in shape:
                raise ValueError(f"{field}: give rate or per_user_rate, not both")
        elif "users" not in shape:
            raise ValueError(f"{field}: a constant shape needs rate (requests/s) or users")
    elif kind == "ramp":
        for key in ("from_rate", "to_rate"):
            if key not in shape:
                raise ValueError(f"{field}.{key} is required for a ramp shape")
            out[key] = _number(shape[key], f"{field}.{key}", minimum=0)
        if "over_s" not in shape:
            raise ValueError(f"{field}.over_s is required for a ramp shape")
        out["over_s"] = _number(shape["over_s"], f"{field}.over_s", positive=True)
        if out.get("duration_s", out["over_s"]) < out["over_s"]:
            raise ValueError(f"{field}.duration_s ({out['duration_s']:g}) must be >= over_s ({out['over_s']:g})")
        if out["from_rate"] == 0 and out["to_rate"] == 0:
            raise ValueError(f"{field}: from_rate and to_rate are both 0, so the run would send nothing")
    elif kind == "step":
        steps = shape.get("steps")
        if not isinstance(steps, (list, tuple)) or not steps:
            raise ValueError(f"{field}.steps must be a non-empty list of {{rate, duration_s}}")
        out["steps"] = []
        for i, step in enumerate(steps):
            where = f"{field}.steps[{i}]"
            if not isinstance(step, Mapping):
                raise ValueError(f"{where} must be a mapping {{rate, duration_s}}, got {step!r}")
            extra = sorted(set(step) - {"rate", "duration_s"})
            if extra or "rate" not in step or "duration_s" not in step:
                raise ValueError(f"{where} must have exactly the keys rate and duration_s, got {sorted(step)}")
            out["steps"].append({
                "rate": _number(step["rate"], f"{where}.rate", minimum=0),
                "duration_s": _number(step["duration_s"], f"{where}.duration_s", positive=True),
            })
        natural = sum(s["duration_s"] for s in out["steps"])
        if out.get("duration_s", natural) < natural - 1e-9:
            raise ValueError(f"{field}.duration_s ({out['duration_s']:g}) must be >= the steps' total ({natural:g})")
        if all(s["rate"] == 0 for s in out["steps"]):
            raise ValueError(f"{field}: every step has rate 0, so the run would send nothing")
    elif kind == "spike":
        for key in ("base_rate", "peak_rate", "at_s"):
            if key not in shape:
                raise ValueError(f"{field}.{key} is required for a spike shape")
            out[key] = _number(shape[key], f"{field}.{key}", minimum=0)
        if "for_s" not in shape:
            raise ValueError(f"{field}.for_s is required for a spike shape")
        out["for_s"] = _number(shape["for_s"], f"{field}.for_s", positive=True)
        if out["peak_rate"] == 0 and out["base_rate"] == 0:
            raise ValueError(f"{field}: base_rate and peak_rate are both 0, so the run would send nothing")
        if "duration_s" in out and out["duration_s"] < out["at_s"] + out["for_s"]:
            raise ValueError(
                f"{field}.duration_s ({out['duration_s']:g}) must cover the spike: "
                f"at_s + for_s = {out['at_s'] + out['for_s']:g}"
            )
    else:  # custom
        cls = shape.get("class")
        if not isinstance(cls, str) or not _CLASS_RE.fullmatch(cls):
            raise ValueError(f"{field}.class must be 'module.path:ClassName' (a locust.LoadTestShape), got {cls!r}")
        out["class"] = cls
        if "pythonpath" in shape:
            p = shape["pythonpath"]
            if not isinstance(p, (str, Path)) or not Path(p).is_dir():
                raise ValueError(f"{field}.pythonpath must be an existing directory, got {p!r}")
            out["pythonpath"] = str(Path(p).resolve())
    return out


def resolve_shape(shape: Mapping, *, rate: float, users: int, duration_s: float) -> dict:
    """Fill in the defaults from the LoadSpec: `users`, `duration_s`, `per_user_rate`.

    The result is what the Locust process receives; every function below expects it (they
    also accept an unresolved shape, treating a missing `duration_s` as no end).
    """
    out = validate_shape(shape)
    kind = out["type"]
    if kind != "custom":
        out.setdefault("users", users)
    if kind in ("constant", "custom") and "rate" not in out:
        out.setdefault("per_user_rate", rate / users)
    if kind == "spike" and "duration_s" not in out and duration_s < out["at_s"] + out["for_s"]:
        raise ValueError(
            f"shape: the spike ends at at_s + for_s = {out['at_s'] + out['for_s']:g} s, after duration_s "
            f"({duration_s:g} s); give the shape a duration_s"
        )
    out.setdefault("duration_s", total_duration(out, default_s=duration_s))
    return out


# -- the shape as time segments -----------------------------------------------------------


def total_duration(shape: Mapping, default_s: float = math.inf) -> float:
    """Seconds the shape runs (`default_s` where the shape leaves it to the LoadSpec)."""
    if "duration_s" in shape:
        return float(shape["duration_s"])
    kind = shape["type"]
    if kind == "ramp":
        return float(shape["over_s"])
    if kind == "step":
        return float(sum(s["duration_s"] for s in shape["steps"]))
    return float(default_s)


def _segments(shape: Mapping) -> list[tuple[float, float, float, float]]:
    """(start, end, rate at start, rate at end) pieces, linear in between, covering [0, total)."""
    kind = shape["type"]
    end = total_duration(shape)
    if kind == "constant":
        rate = shape["rate"] if "rate" in shape else shape["users"] * shape["per_user_rate"]
        pieces = [(0.0, end, rate, rate)]
    elif kind == "ramp":
        over, r0, r1 = shape["over_s"], shape["from_rate"], shape["to_rate"]
        pieces = [(0.0, over, r0, r1), (over, end, r1, r1)]
    elif kind == "step":
        pieces, t = [], 0.0
        for s in shape["steps"]:
            pieces.append((t, t + s["duration_s"], s["rate"], s["rate"]))
            t += s["duration_s"]
        last = shape["steps"][-1]["rate"]
        pieces.append((t, end, last, last))
    elif kind == "spike":
        at, until, base, peak = shape["at_s"], shape["at_s"] + shape["for_s"], shape["base_rate"], shape["peak_rate"]
        pieces = [(0.0, at, base, base), (at, until, peak, peak), (until, end, base, base)]
    else:
        raise ValueError("a custom shape's rate is set by its own tick(); it has no rate function here")
    return [(a, min(b, end), ra, rb if b <= end else ra + (rb - ra) * (end - a) / (b - a))
            for a, b, ra, rb in pieces if a < end and b > a]


def rate_at(shape: Mapping, t: float) -> float:
    """Target requests/s at `t` seconds into the run; 0 before the start and from the end on."""
    for a, b, ra, rb in _segments(shape):
        if a <= t < b:
            return ra if ra == rb else ra + (rb - ra) * (t - a) / (b - a)
    return 0.0


def users_at(shape: Mapping, t: float, default_users: int = 1) -> int:
    """Locust users to run at `t`: the shape's pool (`users`, else `default_users`); 0 after the end."""
    if shape["type"] == "custom":
        raise ValueError("a custom shape's users are set by its own tick()")
    if not 0 <= t < total_duration(shape):
        return 0
    return int(shape.get("users", default_users))


class Schedule:
    """The cumulative target count of a (resolved) shape and its inverse, precomputed.

    `count_at(t)` = integral of the rate over [0, t]; `due_time(k)` = the first t with
    count_at(t) >= k (inf when the run ends first). Request k is due at due_time(k).
    """

    def __init__(self, shape: Mapping) -> None:
        self.shape = dict(shape)
        self.duration_s = total_duration(shape)
        self.segments = _segments(shape)
        self._starts = [a for a, *_ in self.segments]
        self._cum = [0.0]  # count at the start of each segment, then at the end of the last
        for a, b, ra, rb in self.segments:
            self._cum.append(self._cum[-1] + (ra + rb) / 2 * (b - a) if math.isfinite(b) else math.inf)
        self.total = self._cum[-1]  # expected requests over the whole run

    def rate_at(self, t: float) -> float:
        return rate_at(self.shape, t)

    def count_at(self, t: float) -> float:
        if t <= 0:
            return 0.0
        i = bisect.bisect_right(self._starts, t) - 1
        a, b, ra, rb = self.segments[i]
        if t >= b:
            return self._cum[i + 1]
        tau = t - a
        slope = 0.0 if ra == rb else (rb - ra) / (b - a)
        return self._cum[i] + ra * tau + slope * tau * tau / 2

    def due_time(self, k: float) -> float:
        if k <= 0:
            return 0.0
        if not k < self.total:
            return math.inf
        i = bisect.bisect_left(self._cum, k) - 1  # _cum[i] < k <= _cum[i + 1]
        a, b, ra, rb = self.segments[i]
        rest = k - self._cum[i]
        slope = 0.0 if ra == rb else (rb - ra) / (b - a)
        if slope == 0.0:
            # A zero-rate segment adds no count, so k falls in it only when it is endless.
            return a + rest / ra if ra > 0 else math.inf
        # ra*tau + slope*tau^2/2 = rest, in the form that stays accurate when slope is tiny
        disc = max(ra * ra + 2 * slope * rest, 0.0)
        return min(a + 2 * rest / (ra + math.sqrt(disc)), b)


class Pacer:
    """When one user of a pool sends: user `index` of `stride` takes slots index, index+stride, ...

    Slot k is due when the cumulative target count reaches k + 1/2 (the middle of its unit,
    so a step or the end of the run never gets an extra request on its boundary). Pure
    bookkeeping over a `Schedule`; the caller supplies the time (seconds since the run
    started). `start(t)` picks the first slot not yet due at t; after each send, `sent(t)`
    moves to the next slot, or, when the user fell behind, to its latest slot already due
    (the missed ones are skipped, not fired in a burst).
    """

    def __init__(self, schedule: Schedule, index: int, stride: int) -> None:
        if stride < 1 or not 0 <= index < stride:
            raise ValueError(f"need 0 <= index < stride, got index={index}, stride={stride}")
        self.schedule = schedule
        self.index = index
        self.stride = stride
        self.slot = index
        self.skipped = 0

    def start(self, t: float) -> None:
        n = self.schedule.count_at(t) - 0.5  # slots <= n are already due
        j = max(0, math.ceil((n - self.index) / self.stride - 1e-9))
        self.slot = self.index + j * self.stride

    @property
    def due(self) -> float:
        return self.schedule.due_time(self.slot + 0.5)

    def sent(self, t: float) -> None:
        nxt = self.slot + self.stride
        n = self.schedule.count_at(t) - 0.5
        latest = self.index + math.floor((n - self.index) / self.stride + 1e-9) * self.stride
        if latest > nxt:
            self.skipped += (latest - nxt) // self.stride
            nxt = latest
        self.slot = nxt
