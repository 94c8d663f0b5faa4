"""The fault plan: which faults fire for each request, and what the faulted request is.

Determinism: whether fault i fires for request `seq` is a pure function of (seed, seq, i): a
counter-based hash (SplitMix64's finaliser) of the three, compared with the probability. So the
same scenario and seed give the same plan whatever the timing, the order requests are decided
in, or which other faults fired; only the time window (a property of the scenario) gates it.
A hash costs well under a microsecond in Python, where building a numpy Generator per request
costs several; the payload faults, which decode and re-encode a body anyway, get a numpy
Generator (Philox, keyed by the seed, counter (seq, i)), which is just as pure.

The proxy calls `decide` once per request, `apply_payload` once if `decision.payload` is
non-empty (the faulted body goes to every arm in `decision.payload_arms`), executes
`decision.actions_for(arm)` on each arm's copy, and records `decision.faults_for(arm)`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from harness.codecs.base import Codec, DecodeError, Features
from harness.codecs.v1 import V1Codec
from harness.codecs.v2 import V2Codec

from .base import Action, Fault, PayloadFault, TransportFault

log = logging.getLogger(__name__)

_M64 = (1 << 64) - 1
_PAYLOAD, _PLAIN, _TERMINAL = "payload", "plain", "terminal"  # roles of a fault in `decide`
_TO_UNIT = 2.0**-53  # 53 high bits of a 64-bit hash -> a uniform float in [0, 1)
_DRAW_STREAM = 0x5851F42D4C957F2D  # a second, independent hash for a fault's own draw (jitter)

UNDECODABLE = "undecodable"  # the body could not be decoded (or parsed): the fault was skipped
NOOP = "noop"  # the fault fired but found nothing to change (no selected field, no eligible row)
ERROR = "error"  # the fault failed on this body (a bug; logged); the body was sent without it
# The faulted value cannot be written in the request's format (text into a protobuf number
# field): the codec refused it, which is not a bug; the body was sent without the fault.
UNREPRESENTABLE = "unrepresentable"


def _mix(x: int) -> int:
    """SplitMix64's finaliser: a bijective 64-bit hash with good avalanche."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(slots=True, eq=False)
class Decision:
    """What the plan decided for one request.

    `payload`: indices (in the plan) of the payload faults that fired, in plan order; they all
    target `payload_arms`. `labels`: their ledger labels, suffixed `:undecodable`, `:noop`,
    `:unrepresentable` or `:error` by `apply_payload` when one could not be applied. `transport`: per arm, the actions
    to execute, in the order to execute them (delays and throttles, then at most one terminal).
    """

    seq: int
    payload: tuple[int, ...] = ()
    payload_arms: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    transport: Mapping[str, tuple[Action, ...]] | None = None

    @property
    def fired(self) -> bool:
        return bool(self.payload or self.transport)

    def actions_for(self, arm: str) -> tuple[Action, ...]:
        return self.transport.get(arm, ()) if self.transport else ()

    def faults_for(self, arm: str) -> tuple[str, ...]:
        """The ledger for one arm's copy: payload labels, then transport labels."""
        payload = self.labels if arm in self.payload_arms else ()
        actions = self.transport.get(arm) if self.transport else None
        return payload + tuple(a.label for a in actions) if actions else payload


class FaultPlan:
    """Faults in scenario order, a seed, and the codec that decodes requests for payload faults
    (None: try v2, then v1, per body)."""

    def __init__(self, faults: Sequence[Fault], seed: int, codec: Codec | None = None):
        self.faults = tuple(faults)
        for fault in self.faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"a fault plan holds Fault instances, got {type(fault).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"fault plan: seed must be an integer, got {seed!r}")
        self.seed = seed
        self.codec = codec
        self._codecs = (codec,) if codec is not None else (V2Codec(), V1Codec())

        payload_arms = {f.arms for f in self.faults if isinstance(f, PayloadFault)}
        if len(payload_arms) > 1:
            # One faulted body goes to every payload arm, so that candidate and baseline are
            # compared on identical inputs; differing arm sets would need several bodies.
            raise ValueError("payload faults in one plan must target the same arms (the faulted request is "
                             f"shared by them); got {' and '.join(map(str, sorted(payload_arms)))}")
        self.payload_arms: tuple[str, ...] = payload_arms.pop() if payload_arms else ()

        folded = seed % (1 << 128)  # any int, negative or big, to 128 bits
        self._salt = _mix(_mix(folded & _M64) ^ (folded >> 64))
        self._philox_key = (self._salt << 64) | _mix(self._salt ^ 0x9E3779B97F4A7C15)
        # Per fault: (index, fault, probability, window, hash key, role, constant action).
        self._entries = []
        for i, fault in enumerate(self.faults):
            key = _mix(self._salt ^ _mix(i + 1))
            role, static = _PAYLOAD, None
            if isinstance(fault, TransportFault):
                sample = fault.action(0.0)
                role = _TERMINAL if sample.terminal else _PLAIN
                static = None if fault.uses_draw else sample  # the same every time: build it once
            self._entries.append((i, fault, fault.probability, fault.window, key, role, static))

    @classmethod
    def from_specs(cls, specs: Sequence[Mapping], seed: int, codec: Codec | None = None) -> FaultPlan:
        """A plan from scenario mappings (`{"type": "nan", "fields": ["age"]}`, ...)."""
        from . import make_fault

        return cls([make_fault(spec) for spec in specs], seed, codec)

    def __len__(self) -> int:
        return len(self.faults)

    # -- deciding --------------------------------------------------------------------------

    def decide(self, seq: int, elapsed_s: float = 0.0) -> Decision:
        """The faults for request number `seq` (0-based arrival order at the proxy), arriving
        `elapsed_s` seconds after the run started."""
        if not self._entries:
            return Decision(seq)
        h = _mix((seq & _M64) ^ self._salt)
        payload = []
        transport: dict[str, list] | None = None  # arm -> [plain actions, first terminal action]
        for i, fault, p, window, key, role, static in self._entries:
            if window is not None and not window[0] <= elapsed_s < window[1]:
                continue
            if p < 1.0 and (_mix(h ^ key) >> 11) * _TO_UNIT >= p:
                continue
            if role is _PAYLOAD:
                payload.append(i)
                continue
            action = static if static is not None else fault.action((_mix(h ^ key ^ _DRAW_STREAM) >> 11) * _TO_UNIT)
            if transport is None:
                transport = {}
            for arm in fault.arms:
                slot = transport.get(arm)
                if slot is None:
                    slot = transport[arm] = [[], None]
                if role is _PLAIN:
                    slot[0].append(action)
                elif slot[1] is None:  # a later terminal action is not executed, so not recorded
                    slot[1] = action
        if not payload and transport is None:
            return Decision(seq)
        return Decision(
            seq,
            payload=tuple(payload),
            payload_arms=self.payload_arms if payload else (),
            labels=tuple([self.faults[i].ledger_label for i in payload]),
            # Per arm: delays and throttles in plan order, then at most one terminal action.
            transport={arm: (*plain, terminal) if terminal else tuple(plain)
                       for arm, (plain, terminal) in transport.items()} if transport else None,
        )

    # -- applying --------------------------------------------------------------------------

    def rng(self, seq: int, index: int) -> np.random.Generator:
        """The generator payload fault `index` uses on request `seq`: a pure function of
        (seed, seq, index), so one fault's draws never depend on another's."""
        return np.random.Generator(np.random.Philox(key=self._philox_key, counter=[0, 0, seq & _M64, index]))

    def apply_payload(self, decision: Decision, body: bytes) -> bytes | None:
        """The faulted body for `decision.payload_arms`, or None when no payload fault changed it.

        Feature-level faults run first, in plan order, on the body decoded by the codec, and
        are encoded back into the body's layout; byte-level faults then run on the result.
        Never raises: a fault that cannot be applied is skipped and its label suffixed.
        """
        if not decision.payload:
            return None
        outcome: dict[int, str] = {}  # fault index -> suffix, for faults not applied
        features_idx = [i for i in decision.payload if not self.faults[i].on_bytes]
        bytes_idx = [i for i in decision.payload if self.faults[i].on_bytes]
        out = body
        if features_idx:
            out = self._apply_features(decision.seq, features_idx, body, outcome)
        for i in bytes_idx:
            fault = self.faults[i]
            try:
                new = fault.apply_bytes(out, self.rng(decision.seq, i))
            except DecodeError:
                outcome[i] = UNDECODABLE
                continue
            except Exception:
                _log_failure(fault)
                outcome[i] = ERROR
                continue
            if new is out:
                outcome[i] = NOOP
            out = new
        if outcome:
            decision.labels = tuple(
                f"{self.faults[i].ledger_label}:{outcome[i]}" if i in outcome else self.faults[i].ledger_label
                for i in decision.payload
            )
        return None if out is body else out

    def _apply_features(self, seq: int, indices: list[int], body: bytes, outcome: dict[int, str]) -> bytes:
        codec, features = _decode(self._codecs, body)
        if features is None:
            outcome.update(dict.fromkeys(indices, UNDECODABLE))
            return body
        current = features
        applied = []
        for i in indices:
            fault = self.faults[i]
            try:
                new = fault.apply(current, self.rng(seq, i))
            except Exception:
                _log_failure(fault)
                outcome[i] = ERROR
                continue
            if new is current:
                outcome[i] = NOOP
            else:
                applied.append(i)
                current = new
        if current is features:
            return body
        try:
            return codec.encode_request(current, body)
        except DecodeError:  # the codec's own refusal of a value (named in its message): not a bug
            outcome.update(dict.fromkeys(applied, UNREPRESENTABLE))
            return body
        except Exception:
            log.exception("fault plan: the %s codec could not encode faulted features", codec.name)
            outcome.update(dict.fromkeys(applied, ERROR))
            return body

    # -- describing ------------------------------------------------------------------------

    def describe(self) -> list[dict]:
        """Each fault's type, kind, ledger label and parameters (for the run directory);
        `make_fault` rebuilds a fault from its entry."""
        return [{"type": f.name, "kind": f.kind, **f.params(), "label": f.ledger_label} for f in self.faults]


def _decode(codecs: tuple[Codec, ...], body: bytes) -> tuple[Codec | None, Features | None]:
    for codec in codecs:
        try:
            return codec, codec.decode_request(body)
        except DecodeError:
            continue
        except Exception:  # a codec bug must not reach the proxy either
            log.exception("fault plan: the %s codec failed on a request body", codec.name)
    return None, None


_logged: set[str] = set()


def _log_failure(fault: Fault) -> None:
    """Log a fault's failure once per label, with the traceback: it is a bug, but the proxy
    must keep mirroring, and the ledger already marks each occurrence."""
    if fault.ledger_label not in _logged:
        _logged.add(fault.ledger_label)
        log.exception("fault %s failed on a request body; it is skipped (ledger: ':error')", fault.ledger_label)
