"""Templated batch decoding: response bodies that differ only in their numbers, decoded once.

A model server writes every response through the same few lines of code, so a capture's bodies
share a handful of layouts and differ only in the numbers: `{"outputs":[{"name":"label",
"shape":[1],"datatype":"INT64","data":[0]}, ...]}` and its millions of siblings. Parsing each
one in Python costs microseconds; here the whole batch is scanned with numpy instead:

1. Every JSON number token outside strings is a *hole*. A body with its holes replaced by a
   one-byte placeholder (one for integer tokens, another for the rest) is its *skeleton*. Two
   bodies with the same skeleton parse to the same JSON tree except for those numbers. Each
   token is checked against the JSON number grammar and converted to the float `json` would
   make of it: exactly (Clinger's fast path: an integer mantissa below 2**53 over an exact power
   of ten, one correctly rounded division), else by `float` itself.
2. For each new skeleton, one representative body goes through the codec for real, and again
   with its holes replaced by out-of-range *trace* values (two different sets). Comparing the
   three results says which holes the predictions copy and where (a label, a probability), which
   holes change nothing, and which are *structural* (a shape, a value the codec checks): those
   are found by bisection and must then equal the representative's values bit for bit for a
   body to use that plan; other values get a plan of their own.
3. A plan turns the group's hole values (a numpy matrix) into the predictions directly.

Anything unusual takes the codec's own per-body path and gets exactly its result: control
characters, a bad number token, an integer token beyond 15 digits, a body the
representative's decode or tracing cannot vouch for, layouts that do not repeat. So the batch
from `decode_templated` is identical, field for field and error message for error message, to
`Codec.decode_responses(bodies, templated=False)`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.codecs.base import Codec, DecodeError, PredictionBatch, parse_json, rows_of
from harness.jsonprefix import structural_cut

MIN_BODIES = 2048  # below this, the per-body path is as fast
_CHUNK = 32768  # bodies scanned at a time (a few MB of numpy temporaries)
_MAX_INT_DIGITS = 15  # integer tokens up to here are exact as float64 (< 2**53)
_MAX_PLANS = 64  # plans per skeleton (one per distinct value of its structural holes)
_MIN_GROUP = 4  # bodies of one new layout in a chunk worth tracing it for
_MAX_TRIALS = 400  # codec calls spent tracing one plan before giving up on it
_MAX_HOLES = 20_000  # a body with more numbers than this is decoded the ordinary way

# Byte classes of the characters in JSON numbers (everything else is class 0).
_OTHER, _ZERO, _DIGIT, _MINUS, _PLUS, _DOT, _EXP = range(7)
_CLASS = np.zeros(256, dtype=np.uint8)
_CLASS[ord("0")] = _ZERO
_CLASS[ord("1"): ord("9") + 1] = _DIGIT
_CLASS[ord("-")] = _MINUS
_CLASS[ord("+")] = _PLUS
_CLASS[ord(".")] = _DOT
_CLASS[ord("e")] = _CLASS[ord("E")] = _EXP
_INT_HOLE, _FLOAT_HOLE = 1, 2  # placeholders in skeletons (control characters: never in JSON text)

# The JSON number grammar, -?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?, as a DFA over byte classes.
# States: 0 start, 1 after '-', 2 a leading 0, 3 integer digits, 4 after '.', 5 fraction digits,
# 6 after 'e', 7 after the exponent's sign, 8 exponent digits, 9 dead.
_STEP = np.full((10, 7), 9, dtype=np.int64)
for _state, _cls, _next in [(0, _MINUS, 1), (0, _ZERO, 2), (0, _DIGIT, 3), (1, _ZERO, 2), (1, _DIGIT, 3),
                            (2, _DOT, 4), (2, _EXP, 6), (3, _ZERO, 3), (3, _DIGIT, 3), (3, _DOT, 4),
                            (3, _EXP, 6), (4, _ZERO, 5), (4, _DIGIT, 5), (5, _ZERO, 5), (5, _DIGIT, 5),
                            (5, _EXP, 6), (6, _PLUS, 7), (6, _MINUS, 7), (6, _ZERO, 8), (6, _DIGIT, 8),
                            (7, _ZERO, 8), (7, _DIGIT, 8), (8, _ZERO, 8), (8, _DIGIT, 8)]:
    _STEP[_state, _cls] = _next
# The same over raw bytes, for a scan that reads past a token's end: a byte that is not a number
# character (as `_Scan` counts them: digits - . e E; a '+' ends a token, so "1e+5" is left to the
# codec) moves state s to "ended" s + 10, where it stays. Indexed by 256 * state + byte.
_NUMBER_BYTE = np.zeros(256, dtype=bool)
_NUMBER_BYTE[list(b"0123456789-.eE")] = True
_BYTE_STEP = np.empty((20, 256), dtype=np.int32)
for _state in range(10):
    for _byte in range(256):
        _BYTE_STEP[_state, _byte] = _STEP[_state, _CLASS[_byte]] if _NUMBER_BYTE[_byte] else _state + 10
_BYTE_STEP[10:] = np.arange(10, 20)[:, None]
_BYTE_STEP = (_BYTE_STEP * 256).ravel()  # holding 256 * next state
_WIDE = 32  # longer number tokens are left to the codec

# Trace values: far outside anything a model answers, exact in float64, distinct per hole, and
# of the hole's own JSON type (an integer token stays an integer).
_TRACE_INT = (10**12, -(3 * 10**12))
_TRACE_FLOAT = (2.0e12 + 0.25, -(4.0e12 + 0.75))


def number_tokens(tokens: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, is_float, value) of each token as the scan judges and parses number tokens (for tests).

    Every token must consist of the scan's number characters (0-9 - . e E) and start with '-' or
    a digit.
    """
    buf = b"\x00".join(tokens) + b"\x00"
    hl = np.array([len(t) for t in tokens], dtype=np.int64)
    he = np.cumsum(hl + 1) - 1
    return _numbers(np.frombuffer(buf, dtype=np.uint8), buf, he - hl, he)


# ---------------------------------------------------------------------------------------------
# Scanning a chunk of bodies


def _spans(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The positions start..end-1 of every span, concatenated (no Python loop)."""
    n = ends - starts
    return np.repeat(starts - (np.cumsum(n) - n), n) + np.arange(int(n.sum()), dtype=np.int64)


_POW10 = 10.0 ** np.arange(23)  # exact


def _numbers(a: np.ndarray, buf: bytes, hs: np.ndarray, he: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, is_float, value) of the number tokens a[hs:he]; invalid ones have value 0.

    One-character tokens are digits (or a lone '-'); longer ones go through `_long_numbers`."""
    nh = len(hs)
    valid = np.ones(nh, dtype=bool)
    is_float = np.zeros(nh, dtype=bool)
    values = np.zeros(nh, dtype=np.float64)
    single = (he - hs) == 1
    ch = a[hs[single]]
    valid[single] = ch != 45
    values[single] = ch.astype(np.float64) - 48.0
    longer = np.flatnonzero(~single)
    if len(longer):
        valid[longer], is_float[longer], values[longer] = _long_numbers(a, buf, hs[longer], he[longer])
    return valid, is_float, values


def _long_numbers(a: np.ndarray, buf: bytes, hs: np.ndarray, he: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid, is_float, value) of the number tokens a[hs:he], each at least 2 characters long
    and followed by a byte that is not a number character (the scan's runs are maximal).

    Validity by the DFA `_BYTE_STEP`. Values: Clinger's fast path (an integer mantissa below 2**53
    divided by an exact power of ten: one correctly rounded operation) when it applies; other
    float tokens (exponents, long mantissas) go through `float`, which is what `json` calls."""
    n = len(hs)
    hl = he - hs
    width = int(min(hl.max(), _WIDE)) + 1  # + the byte that ends the token
    rows = np.arange(width, dtype=np.int64)[:, None]
    at = hs + rows  # (width, n): byte j of every token in row j
    np.minimum(at, len(a) - 1, out=at)
    chars = a[at]
    state = np.zeros(n, dtype=np.int32)
    mantissa = np.zeros(n, dtype=np.int64)
    frac = np.zeros(n, dtype=np.int64)
    for j in range(width):
        c = chars[j]
        state = _BYTE_STEP[state + c]
        digit = (c - np.uint8(48)) < 10
        digit &= state < 256 * 10  # still inside the token
        mantissa = np.where(digit, mantissa * 10 + (c - np.uint8(48)), mantissa)
        frac += state == 256 * 5
    final = state // 256 - 10  # the state at the token's end; negative if it did not end (too wide)
    is_float = (final == 5) | (final == 8)
    valid = (final == 2) | (final == 3) | is_float
    negative = chars[0] == 45
    n_digits = hl - negative - (final == 5)  # tokens without an exponent: all but '-' and '.'
    fast = valid & (final != 8) & (n_digits <= 18) & (mantissa < 2**53) & (frac <= 22)
    value = mantissa / _POW10[np.minimum(frac, 22)]
    value[negative] *= -1.0
    value[~is_float] += 0.0  # an integer token "-0" is the int 0, not the float -0.0
    slow = np.flatnonzero(valid & ~fast & is_float)
    if len(slow):
        value[slow] = [float(buf[s:e]) for s, e in zip(hs[slow].tolist(), he[slow].tolist())]
    valid &= is_float | (n_digits <= _MAX_INT_DIGITS)  # longer integers: not exact here, left to the codec
    return valid, is_float, value


class _Scan:
    """Holes, hole values and skeletons of a chunk of bodies laid out as `buf`: each body
    followed by a NUL byte (never in JSON text), `lens[i]` bytes for body i.

    `code[i]`: which of `skeletons` body i has, -1 for a body the scan cannot vouch for
    (control characters other than whitespace, an unbalanced quote, a number token that is not
    JSON or an integer too long to be exact as float64)."""

    def __init__(self, buf: bytes, lens: np.ndarray, prefixed: np.ndarray | None = None):
        m = len(lens)
        a = np.frombuffer(buf, dtype=np.uint8)
        size = len(a)
        ends = np.cumsum(lens + 1) - 1  # each body's NUL
        starts = ends - lens
        bad = lens == 0
        nul_inside = False
        if np.count_nonzero(a < 32) != m:  # more than the NULs: newlines, tabs, or worse
            low = np.flatnonzero(a < 32)
            where = np.searchsorted(ends, low)
            odd = (low != ends[where]) & (a[low] != 9) & (a[low] != 10) & (a[low] != 13)
            bad[where[odd]] = True
            nul_inside = bool((a[low[low != ends[where]]] == 0).any())
        has_ff = bool((a == 255).any())  # 0xFF: the skeleton's deletion mark (never in UTF-8)
        if has_ff:
            bad[np.searchsorted(ends, np.flatnonzero(a == 255))] = True
        # Inside a string: an odd number of unescaped quotes so far in the body.
        quote = a == 34
        if (a == 92).any():  # a backslash escapes the next byte, unless it is itself escaped
            slash = np.flatnonzero(a == 92)
            run_start = np.ones(len(slash), dtype=bool)
            run_start[1:] = slash[1:] != slash[:-1] + 1
            first_of_run = np.maximum.accumulate(np.where(run_start, np.arange(len(slash)), 0))
            escaping = slash[(np.arange(len(slash)) - first_of_run) % 2 == 0]
            quote[escaping + 1] = False  # (a body never ends in a backslash and stays valid)
        parity = np.bitwise_xor.accumulate(quote.view(np.uint8))
        before = np.zeros(m, dtype=np.uint8)
        before[1:] = parity[ends[:-1]]
        unbalanced = before != parity[ends]
        if unbalanced.any():  # an unbalanced body shifts every later one: realign
            bad |= unbalanced
            parity ^= np.repeat(before, lens + 1)
        num = (((a - np.uint8(45)) < 13) & (a != 47)) | ((a | 32) == 101)  # 0-9 - . e E
        num &= parity == 0

        # Runs of number characters (the NULs keep them within bodies); a run starting with
        # '-' or a digit is a number token, a hole; others (the 'e' of true) stay literal.
        edges = np.flatnonzero(num[1:] != num[:-1]) + 1
        if size and num[0]:
            edges = np.concatenate([[0], edges])
        rs, re_ = edges[0::2], edges[1::2]
        first = a[rs]
        is_hole = ((first - np.uint8(48)) < 10) | (first == 45)
        hs, he = rs[is_hole], re_[is_hole]
        in_hole = num
        if not is_hole.all():
            in_hole = num.copy()
            in_hole[_spans(rs[~is_hole], re_[~is_hole])] = False
        holes = np.diff(np.searchsorted(hs, ends), prepend=0)  # per body
        hole_body = np.repeat(np.arange(m), holes)
        valid, is_float, values = _numbers(a, buf, hs, he)
        bad[hole_body[~valid]] = True

        # Skeletons: hole characters marked 0xFF and deleted, but the first, which becomes the
        # placeholder of the token's type.
        marked = a | (in_hole.view(np.uint8) * np.uint8(255))
        marked[hs] = np.where(is_float, _FLOAT_HOLE, _INT_HOLE)
        skeleton = marked.tobytes().translate(None, b"\xff")
        if has_ff:  # those bytes are deleted too: count what is left of each body
            kept = lens - np.bincount(np.searchsorted(ends, np.flatnonzero(marked == 255)), minlength=m)
        else:
            kept = lens - (np.bincount(hole_body, weights=he - hs - 1, minlength=m).astype(np.int64) if len(hs) else 0)
        sk_ends = np.cumsum(kept + 1) - 1
        self.code, self.skeletons = _group(skeleton, sk_ends - kept, sk_ends, bad, nul_inside, prefixed)
        self.starts, self.lens, self.prefixed = starts, lens, prefixed
        self.hole_start, self.hole_end = hs, he
        self.hole_float = is_float
        self.values = values
        self.holes = holes
        self.first_hole = np.cumsum(holes) - holes


def _group(skeleton: bytes, starts: np.ndarray, ends: np.ndarray, bad: np.ndarray, careful: bool,
           prefixed: np.ndarray | None = None) -> tuple[np.ndarray, list]:
    """(code per body, skeletons): bodies with equal skeletons (and equally prefixed) share a
    code; -1 where `bad`. A skeleton key starts with b"+" for a body that lost its prefix."""
    m = len(starts)
    lengths = ends - starts
    code = np.full(m, -1, dtype=np.int64)
    good = np.flatnonzero(~bad)
    if not len(good):
        return code, []
    if prefixed is None:
        prefixed = np.zeros(m, dtype=bool)
    mixed = bool(prefixed[good].any()) and not bool(prefixed[good].all())
    mark = b"+" if prefixed[good[0]] else b"-"
    keys: list = []
    if not careful and (lengths == lengths[0]).all():
        # One length (the usual case: one layout): compare all skeletons with the first at once.
        rows = np.frombuffer(skeleton, dtype=np.uint8).reshape(m, int(lengths[0]) + 1)
        first = good[0]
        same = (rows == rows[first]).all(axis=1) & ~bad & (prefixed == prefixed[first])
        code[same] = 0
        keys.append(skeleton[int(starts[first]): int(ends[first])])
        good = np.flatnonzero(~same & ~bad)
        if not len(good):
            return code, [mark + keys[0]]
    if careful:  # a NUL inside a body: cut by lengths
        pieces = [skeleton[s:e] for s, e in zip(starts[good].tolist(), ends[good].tolist())]
    else:
        pieces = skeleton.split(b"\x00")
        pieces = [pieces[i] for i in good.tolist()] if len(good) < m else pieces[:m]
    if mixed:  # (rare) tell the two kinds apart body by body
        flags = prefixed[good].tolist()
        pieces = [(b"+" if f else b"-") + p for f, p in zip(flags, pieces)]
        keys = [(b"+" if prefixed[code == 0][0] else b"-") + k for k in keys]
    ids = {k: i for i, k in enumerate(keys)}
    code[good] = np.fromiter((ids.setdefault(k, len(ids)) for k in pieces), dtype=np.int64, count=len(pieces))
    return code, list(ids) if mixed else [mark + k for k in ids]


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass
class _Field:
    """One output list of a plan: constants, with some positions copied from holes."""

    constant: np.ndarray  # the representative's values (int64 or float64)
    position: np.ndarray  # int64: positions filled from holes
    hole: np.ndarray  # int64: which hole fills each of those positions


@dataclass
class _Plan:
    structural: np.ndarray  # int64 hole indices whose values must match
    bits: np.ndarray  # int64: their float64 bit patterns
    error: str | None = None  # every matching body fails to decode with this message
    n: int = 0
    labels: _Field | None = None
    probabilities: _Field | None = None
    k: int = 0
    values: _Field | None = None


class _Failed(Exception):
    pass


def _same(a: Any, b: Any) -> bool:
    """Identical JSON values as the codec returned them: type, value, and sign of zero."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return (a == b and math.copysign(1.0, a) == math.copysign(1.0, b)) or (a != a and b != b)
    return a == b


class _Tracer:
    """Builds plans for one skeleton from a representative body."""

    def __init__(self, codec: Codec, segments: list[bytes], tokens: list[bytes], is_float: list[bool],
                 values: np.ndarray):
        self.codec = codec
        self.segments = segments
        self.tokens = tokens
        self.is_float = is_float
        self.values = values  # float64 per hole, as the scan parsed them
        self.real = [float(t) if f else int(t) for t, f in zip(tokens, is_float)]
        self.trials = 0
        self.trace_text = []
        self.trace_of: list[dict] = []
        for side in (0, 1):
            texts, lookup = [], {}
            for j, f in enumerate(is_float):
                v = (_TRACE_FLOAT[side] + j) if f else (_TRACE_INT[side] + j)
                texts.append(repr(v).encode())
                lookup[(type(v), v)] = j
            self.trace_text.append(texts)
            self.trace_of.append(lookup)

    def decode(self, texts: list[bytes]):
        """The codec's RawPrediction for the body with these tokens; DecodeError as raised."""
        self.trials += 1
        if self.trials > _MAX_TRIALS:
            raise _Failed
        parts = [self.segments[0]]
        for t, s in zip(texts, self.segments[1:]):
            parts.append(t)
            parts.append(s)
        body = b"".join(parts)
        try:
            obj = parse_json(body)
        except DecodeError:
            raise _Failed from None  # not JSON: the message would depend on token lengths
        try:
            return tuple(self.codec._extract_response(obj))
        except RecursionError:
            raise _Failed from None

    def plan(self) -> _Plan:
        h = len(self.tokens)
        try:
            real = self.decode(self.tokens)
        except DecodeError as exc:  # parsed but no prediction: the message is a function of the values
            return _Plan(np.arange(h), self.values.view(np.int64).copy(), error=str(exc))
        self.real_result = real
        structural = self._structural(list(range(h)))
        rest = [j for j in range(h) if j not in set(structural)]
        mapping = self._consistent(rest)
        if mapping is None:
            raise _Failed
        n, labels, probabilities, k, values = real
        fields = []
        for f, (items, dtype) in enumerate(((labels, np.int64), (probabilities, np.float64), (values, np.float64))):
            if items is None:
                fields.append(None)
                continue
            positions = sorted(p for (g, p) in mapping if g == f)
            fields.append(_Field(np.array(items, dtype=dtype), np.array(positions, dtype=np.int64),
                                 np.array([mapping[(f, p)] for p in positions], dtype=np.int64)))
        s = np.array(sorted(structural), dtype=np.int64)
        return _Plan(s, self.values[s].view(np.int64).copy(), None, n, fields[0], fields[1], k, fields[2])

    def _structural(self, holes: list[int]) -> list[int]:
        """Holes that cannot be traced, by bisection (few: shapes and the like)."""
        if not holes or self._consistent(holes) is not None:
            return []
        if len(holes) == 1:
            return holes
        half = len(holes) // 2
        return self._structural(holes[:half]) + self._structural(holes[half:])

    def _consistent(self, traced: list[int]) -> dict | None:
        """With `traced` holes at trace values: {(field, position): hole} if every output is
        either the representative's own value or a trace copied unchanged, the same way for both
        trace sets; None otherwise."""
        results = []
        for side in (0, 1):
            texts = list(self.tokens)
            for j in traced:
                texts[j] = self.trace_text[side][j]
            try:
                results.append(self.decode(texts))
            except DecodeError:
                return None
        real = self.real_result
        a, b = results
        if a[0] != real[0] or b[0] != real[0] or a[3] != real[3] or b[3] != real[3]:
            return None
        traced_set = set(traced)
        mapping = {}
        for f, slot in enumerate((1, 2, 4)):
            r, x, y = real[slot], a[slot], b[slot]
            if r is None or x is None or y is None:
                if not (r is None and x is None and y is None):
                    return None
                continue
            if len(r) != len(x) or len(r) != len(y):
                return None
            for p, (rv, xv, yv) in enumerate(zip(r, x, y)):
                j = self.trace_of[0].get((type(xv), xv))
                if j is not None:
                    if (j not in traced_set or self.trace_of[1].get((type(yv), yv)) != j
                            or not _same(rv, self.real[j])):
                        return None
                    mapping[(f, p)] = j
                elif not (_same(rv, xv) and _same(rv, yv)):
                    return None
        return mapping


@dataclass
class _Skeleton:
    plans: list
    failed: bool = False  # no plan can be trusted: every body takes the ordinary path


# ---------------------------------------------------------------------------------------------
# Decoding


class _Blocks:
    """Per-body results gathered chunk by chunk, assembled into one PredictionBatch at the end."""

    def __init__(self, m: int):
        self.rows = np.zeros(m, dtype=np.int64)
        self.has_labels = np.zeros(m, dtype=bool)
        self.k = np.zeros(m, dtype=np.int64)  # probability columns as decoded (1 = P(class 1))
        self.has_values = np.zeros(m, dtype=bool)
        self.errors: dict[int, str] = {}
        self.blocks: list = []  # (bodies, labels (g, n) | None, probabilities (g, n*k) | None, values | None)

    def add(self, bodies: np.ndarray, plan: _Plan, V: np.ndarray) -> None:
        if plan.error is not None:
            for i in bodies.tolist():
                self.errors[i] = plan.error
            return
        self.rows[bodies] = plan.n
        out = []
        for field in (plan.labels, plan.probabilities, plan.values):
            if field is None:
                out.append(None)
                continue
            block = np.empty((len(bodies), len(field.constant)), dtype=field.constant.dtype)
            block[:] = field.constant
            if len(field.position):
                block[:, field.position] = V[:, field.hole]
            out.append(block)
        if plan.labels is not None:
            self.has_labels[bodies] = True
        if plan.probabilities is not None:
            self.k[bodies] = plan.k
        if plan.values is not None:
            self.has_values[bodies] = True
        self.blocks.append(("plan", bodies, *out))

    def add_batch(self, bodies: np.ndarray, batch: PredictionBatch, which: np.ndarray) -> None:
        """Bodies decoded the ordinary way: body `bodies[i]` is `batch` body `which[i]`."""
        for i, w in enumerate(which.tolist()):
            message = batch.errors.get(w)
            if message is not None:
                self.errors[int(bodies[i])] = message
        self.rows[bodies] = batch.rows[which]
        self.has_labels[bodies] = batch.has_labels[which]
        self.has_values[bodies] = batch.has_values[which]
        self.k[bodies] = batch.n_classes[which]  # already max(k, 2): the same columns either way
        self.blocks.append(("batch", bodies, batch, which))

    def finish(self) -> PredictionBatch:
        m = len(self.rows)
        decoded = np.ones(m, dtype=bool)
        errors = dict(sorted(self.errors.items()))
        if errors:
            decoded[list(errors)] = False
        rows = self.rows
        offsets = np.zeros(m + 1, dtype=np.int64)
        np.cumsum(rows, out=offsets[1:])
        total = int(offsets[-1])
        labels = np.zeros(total, dtype=np.int64)
        values = np.full(total, np.nan)
        n_classes = np.where(self.k > 0, np.maximum(self.k, 2), 0)
        width = int(n_classes.max()) if m else 0
        probabilities = np.full((total, width), np.nan)
        for block in self.blocks:
            if block[0] == "batch":
                _, bodies, batch, which = block
                at = rows_of(bodies, offsets, rows)
                src = rows_of(which, batch.offsets, batch.rows)
                labels[at] = batch.labels[src]
                values[at] = batch.values[src]
                probabilities[at, : batch.probabilities.shape[1]] = batch.probabilities[src]
                continue
            _, bodies, lab, prob, val = block
            at = rows_of(bodies, offsets, rows)
            if lab is not None:
                labels[at] = lab.ravel()
            if val is not None:
                values[at] = val.ravel()
            if prob is not None:
                k = int(self.k[bodies[0]])
                flat = prob.reshape(-1, k)
                if k == 1:  # P(class 1) alone, as `_finish` stores it
                    probabilities[at, 0] = 1.0 - flat[:, 0]
                    probabilities[at, 1] = flat[:, 0]
                else:
                    probabilities[at, :k] = flat
        return PredictionBatch(decoded, offsets, self.has_labels.copy(), n_classes, self.has_values.copy(),
                               labels, probabilities, values, errors)


def decode_templated(codec: Codec, bodies: Sequence[bytes | None]) -> PredictionBatch:
    """`codec.decode_responses(bodies)`, identical, faster when bodies share layouts."""
    m = len(bodies)

    def chunks():
        for lo in range(0, m, _CHUNK):
            chunk = bodies[lo: lo + _CHUNK]
            if set(map(type, chunk)) != {bytes}:  # None (or str): read as empty, decoded the ordinary way
                chunk = [b if type(b) is bytes else b"" for b in chunk]
            lens = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
            yield lo, b"\x00".join(chunk) + b"\x00", lens, None

    return _decode(codec, m, chunks(), lambda i: bodies[i], b"")


def decode_buffer(codec: Codec, buf: bytes, lengths: np.ndarray, *, templated: bool | None = None,
                  prefix: bytes = b"", prefixed: np.ndarray | None = None) -> PredictionBatch:
    """Decode bodies laid out as `buf` (each followed by a NUL byte, `lengths[i]` bytes for body i),
    as `codec.decode_responses` would decode them as a list; `templated` as there. Body i is
    `prefix` + its bytes where `prefixed[i]` (see `CaptureReader.judge_read`)."""
    m = len(lengths)
    ends = np.cumsum(lengths + 1) - 1
    starts = ends - lengths
    if prefixed is None or not prefix or not prefixed.any():
        prefix, prefixed = b"", None
    if templated is None:
        templated = codec.templated and m >= MIN_BODIES
    if not templated or not _scannable_prefix(prefix):
        bodies = _slices(buf, starts, ends)
        if prefixed is not None:
            bodies = [prefix + b if p else b for b, p in zip(bodies, prefixed.tolist())]
        return codec.decode_responses(bodies, templated=False)

    def chunks():
        for lo in range(0, m, _CHUNK):
            hi = min(lo + _CHUNK, m)
            yield lo, buf[starts[lo]: ends[hi - 1] + 1], lengths[lo:hi], None if prefixed is None else prefixed[lo:hi]

    def body(i: int) -> bytes:
        piece = buf[starts[i]: ends[i]]
        return prefix + piece if prefixed is not None and prefixed[i] else piece

    return _decode(codec, m, chunks(), body, prefix)


def _scannable_prefix(prefix: bytes) -> bool:
    """Whether the rest of a body can be scanned without its prefix: the prefix ends outside any
    string, after `{ [ , :` (no token is cut), and holds nothing the scan sets apart."""
    return not prefix or structural_cut(prefix) == len(prefix)


def _slices(buf: bytes, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
    return [buf[s:e] for s, e in zip(starts.tolist(), ends.tolist())]


def _decode(codec: Codec, m: int, chunks, body, prefix: bytes) -> PredictionBatch:
    out = _Blocks(m)
    tracer_codec = copy.deepcopy(codec)  # traces may fill a codec's layout cache with junk: not the real one's
    skeletons: dict[bytes, _Skeleton] = {}
    slow: list[np.ndarray] = []
    templating = True
    for lo, buf, lens, prefixed in chunks:
        index = np.arange(lo, lo + len(lens), dtype=np.int64)
        if not templating:
            slow.append(index)
            continue
        scan = _Scan(buf, lens, prefixed)
        chunk_slow = len(slow)
        code = scan.code
        code[scan.holes > _MAX_HOLES] = -1
        slow.append(index[code < 0])
        key_list = scan.skeletons
        if len(key_list) == 1 and (code == 0).all():
            order, sorted_code, bounds = np.arange(len(code)), code, np.array([0, len(code)])
        else:
            order = np.argsort(code, kind="stable")
            sorted_code = code[order]
            bounds = np.flatnonzero(np.diff(sorted_code, prepend=-2, append=len(key_list) + 1))
        for g0, g1 in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            if sorted_code[g0] < 0:
                continue
            members = order[g0:g1]
            key = key_list[int(sorted_code[g0])]
            entry = skeletons.get(key)
            if entry is None:
                if len(members) < _MIN_GROUP:  # a rare layout: not worth tracing (yet)
                    slow.append(index[members])
                    continue
                entry = skeletons[key] = _Skeleton([])
            if entry.failed:
                slow.append(index[members])
                continue
            h = int(scan.holes[members[0]])
            V = scan.values[scan.first_hole[members][:, None] + np.arange(h)]
            bits = V.view(np.int64)
            left = np.ones(len(members), dtype=bool)
            plans = entry.plans
            p = 0
            while left.any():
                if p == len(plans):
                    if len(plans) >= _MAX_PLANS:
                        break
                    r = int(members[np.argmax(left)])
                    try:
                        plans.append(_trace(tracer_codec, buf, scan, r, prefix))
                    except _Failed:
                        entry.failed = True
                        break
                plan = plans[p]
                p += 1
                match = left & (bits[:, plan.structural] == plan.bits).all(axis=1)
                if match.any():
                    out.add(index[members[match]], plan, V[match])
                    left &= ~match
            if left.any():
                slow.append(index[members[left]])
        # Layouts that do not repeat (an id in every body, say): stop paying for the scan.
        if sum(len(x) for x in slow[chunk_slow:]) > len(lens) // 2:
            templating = False
    rest = np.sort(np.concatenate(slow)) if slow else np.zeros(0, dtype=np.int64)
    if len(rest):
        # The ordinary path, once per distinct body (bodies that do not template often repeat).
        distinct: dict = {}
        which = np.fromiter((distinct.setdefault(body(i), len(distinct)) for i in rest.tolist()),
                            dtype=np.int64, count=len(rest))
        batch = codec.decode_responses(list(distinct), templated=False)
        out.add_batch(rest, batch, which)
    return out.finish()


def _trace(codec: Codec, buf: bytes, scan: _Scan, r: int, prefix: bytes) -> _Plan:
    """A plan from body `r` of a scanned chunk (with `prefix` put back if it lost it)."""
    lo = int(scan.first_hole[r])
    h = int(scan.holes[r])
    base = int(scan.starts[r])
    body = buf[base: base + int(scan.lens[r])]
    if scan.prefixed is not None and scan.prefixed[r]:
        body, base = prefix + body, base - len(prefix)
    hs = (scan.hole_start[lo: lo + h] - base).tolist()
    he = (scan.hole_end[lo: lo + h] - base).tolist()
    segments = [body[: hs[0]] if h else body]
    tokens = []
    for j in range(h):
        tokens.append(body[hs[j]: he[j]])
        segments.append(body[he[j]: hs[j + 1] if j + 1 < h else len(body)])
    tracer = _Tracer(codec, segments, tokens, scan.hole_float[lo: lo + h].tolist(), scan.values[lo: lo + h])
    return tracer.plan()
