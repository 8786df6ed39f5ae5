"""HTTP ``Range`` for single byte ranges (RFC 9110 section 14)."""

from __future__ import annotations

import re

from hartonomous.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE | re.ASCII)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` for a satisfiable single range, ``None`` to send the whole body.

    Headers we do not understand (other units, multiple ranges) are ignored, as RFC 9110
    allows: the client gets the full representation with 200.
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(f"range {header!r} selects no bytes of a {size}-byte atom", size)
        return max(0, size - suffix), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last != "" and int(last) < start:
        return None  # syntactically invalid range: ignore it (RFC 9110 14.1.1)
    if start >= size:
        raise _unsatisfiable(f"range {header!r} starts past the end of a {size}-byte atom", size)
    return start, end


def _unsatisfiable(detail: str, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(detail, headers={"Content-Range": f"bytes */{size}"}, size=size)
