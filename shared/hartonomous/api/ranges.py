"""HTTP ``Range`` for single byte ranges (RFC 9110 section 14), and responses that use it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from hartonomous.api.problems import PROBLEM_JSON, Problem
from hartonomous.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE | re.ASCII)


# OpenAPI for routes answered by ``content_response``.
CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    206: {"description": "The requested byte range"},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    416: {"model": Problem, "content": {PROBLEM_JSON: {}}, "description": "Bad range"},
}


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


def content_response(
    request: Request,
    *,
    size: int,
    sha256: str,
    media_type: str,
    body: Callable[[int, int], Iterator[bytes]],
    range_header: str | None,
    if_range: str | None,
    if_none_match: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Immutable content-addressed bytes: ``ETag`` is the sha256, ``If-None-Match`` gives
    304, a single ``Range`` 206 (``If-Range`` with a stale tag: everything), ``HEAD`` the
    headers alone. ``body(start, end)`` streams the bytes."""
    etag = f'"{sha256}"'
    out = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, immutable"}
    out |= headers or {}
    if if_none_match and etag in {t.strip() for t in if_none_match.split(",")} | {"*"}:
        return Response(status_code=304, headers=out)
    if if_range and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: send everything
    span = parse_range(range_header, size)
    start, end, status = 0, size, 200
    if span is not None:
        start, end = span
        status = 206
        out["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    out["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=out, media_type=media_type)
    return StreamingResponse(
        body(start, end), status_code=status, headers=out, media_type=media_type
    )
