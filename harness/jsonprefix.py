"""Where a JSON text can be cut without splitting a token: shared by the capture reader (which
strips the prefix every body of an arm shares) and the bulk decoder (which scans the rest)."""

from __future__ import annotations


def structural_cut(data: bytes) -> int:
    """The length of the longest prefix of `data` ending just after `{ [ , :` outside any
    string; the scan stops at a control byte or 0xFF (never part of a prefix the judge strips)."""
    cut, inside, escaped = 0, False, False
    for i, byte in enumerate(data):
        if byte < 32 or byte == 255:
            break
        if inside:
            if escaped:
                escaped = False
            elif byte == 92:  # backslash
                escaped = True
            elif byte == 34:  # closing quote
                inside = False
        elif byte == 34:
            inside = True
        elif byte in b"{[,:":
            cut = i + 1
    return cut
