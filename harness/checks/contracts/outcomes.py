"""What an arm did on a set of exchanges: which copies were sent and answered, and the tallies
(status codes, 2xx split by decodable and finite, error kinds) that messages and details report."""

from __future__ import annotations

import numpy as np

from harness.evidence import ArmColumns

from ..base import client_error, count_kinds, errors_of, kind_mask, none_mask
from ..errors import EXCLUDED_KINDS  # not the arm's outcome: shed (never sent), internal (the proxy's own)


def sent(cols: ArmColumns) -> np.ndarray:
    """Copies the arm was sent and could answer: present, not shed, not an internal error."""
    err = errors_of(cols)
    mask = np.asarray(cols.present, dtype=bool)
    for kind in EXCLUDED_KINDS:
        mask = mask & ~kind_mask(err, kind)
    return mask


def status_2xx(status: np.ndarray) -> np.ndarray:
    s = np.asarray(status)
    return ((s >= 200) & (s <= 299)) | (s == 0)  # 0: gRPC OK


def answered(cols: ArmColumns) -> np.ndarray:
    """A response with a status: no error, or a 2xx the codec could not read (`protocol`)."""
    err = errors_of(cols)
    status = np.asarray(cols.status)
    return (status >= 0) & (none_mask(err) | kind_mask(err, "protocol"))


def clean_refusal(err: np.ndarray, status: np.ndarray) -> np.ndarray:
    """A clean 4xx: a client-error status with no transport error."""
    return none_mask(err) & client_error(status) & (status >= 0)


def outcomes(cols: ArmColumns, mask: np.ndarray) -> dict[str, int]:
    """What the arm did on `mask`, most frequent first: status codes ('400', '500'), 2xx split
    into '200 non-finite' and '200 undecodable', and error kinds ('timeout', 'reset')."""
    err = errors_of(cols)
    status = np.asarray(cols.status)
    got = mask & answered(cols)
    out: dict[str, int] = {}
    is2 = got & status_2xx(status)
    decoded = np.asarray(cols.decoded, dtype=bool)
    finite = np.asarray(cols.finite, dtype=bool) if cols.finite is not None else decoded
    plain = got & ~is2
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
    for kind, count in count_kinds(err, mask & ~got).items():
        out[kind] = out.get(kind, 0) + count
    no_status = int((mask & ~got & none_mask(err)).sum())
    if no_status:
        out["no status"] = no_status
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def statuses(cols: ArmColumns, mask: np.ndarray) -> dict[str, int]:
    """Counts of each status code on `mask` (exchanges without a status left out)."""
    status = np.asarray(cols.status)[mask]
    codes, counts = np.unique(status[status >= 0], return_counts=True)
    return {str(int(c)): int(k) for c, k in zip(codes, counts)}
