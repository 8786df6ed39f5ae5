"""User metadata and metadata filters, validated before anything is written or queried.

Metadata is stored in a JSON column and read back by every listing of the tenant's atoms, so
whatever a reader cannot take back (a lone surrogate that UTF-8 cannot encode, ``NaN``, a
nesting deeper than a recursive reader goes) is refused at the door: once stored it would
break ``GET /v1/atoms`` for the whole tenant. Filters become JSON paths and SQL parameters:
their keys, values and number are bounded so that no filter is a 500 or a CPU sink. These are
the only filter rules: the API's model, ``SearchFilter`` (CLI, generation) and the JSON path
of ``store/json_sql.py`` all check them here, so every door refuses the same filters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from hartonomous.errors import InvalidInput, UnprocessableContent

MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUE_CHARS = 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A filter key becomes a quoted JSON path member ($."key") in SQLite and T-SQL: no quote,
# backslash or control character can reach it. Checked with fullmatch (a pattern ending in
# ``$`` would let a trailing newline through); anchored for the OpenAPI's pattern.
_FILTER_KEY_BODY = r"[A-Za-z0-9_][A-Za-z0-9_.:\- ]{0,63}"
FILTER_KEY_PATTERN = f"^{_FILTER_KEY_BODY}$"
_FILTER_KEY = re.compile(_FILTER_KEY_BODY)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_metadata(raw: str | bytes | None) -> dict[str, Any]:
    """User metadata: a JSON object of at most 16 KiB that can be stored and read back."""
    if raw is None or raw == "" or raw == b"":
        return {}
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise InvalidInput(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN, an int of 4,300+ digits
        raise InvalidInput(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object")
    check_metadata(value)
    return value


def check_metadata(value: Mapping[str, Any]) -> None:
    """Refuse metadata that a JSON column cannot hold and give back (any caller's dict)."""
    _check_depth(value)
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(
            "metadata must be valid Unicode: it holds a lone surrogate (e.g. \\ud800)"
        ) from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metadata must be plain JSON: {exc}") from exc


def _check_depth(value: Any) -> None:
    """Iterative, so a deep value is refused here and never recursed into."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInput(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def check_filter(metadata: Mapping[str, Any]) -> None:
    """Equality filters on metadata: few keys of a safe charset, scalar values in range
    (422: the request is well formed, the filter is not one we run)."""
    if not isinstance(metadata, Mapping):
        raise UnprocessableContent("a metadata filter is a JSON object")
    if len(metadata) > MAX_FILTER_KEYS:
        raise UnprocessableContent(f"at most {MAX_FILTER_KEYS} metadata filter keys")
    for key, value in metadata.items():
        check_filter_key(key)
        check_filter_value(value)


def check_filter_key(key: Any) -> str:
    """A key of the safe charset, whole (fullmatch), returned as is."""
    if not isinstance(key, str) or not _FILTER_KEY.fullmatch(key):
        raise UnprocessableContent(
            f"metadata filter key {str(key)[:80]!r} must match {FILTER_KEY_PATTERN}"
        )
    return key


def check_filter_value(value: Any) -> Any:
    """A string, boolean, 64-bit integer or finite number; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise UnprocessableContent("a metadata filter integer must fit in 64 bits")
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise UnprocessableContent("a metadata filter number must be finite")
        return value
    if isinstance(value, str):
        if len(value) > MAX_FILTER_VALUE_CHARS:
            raise UnprocessableContent(
                f"a metadata filter string is at most {MAX_FILTER_VALUE_CHARS} characters"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnprocessableContent("a metadata filter string must be valid Unicode") from exc
        return value
    raise UnprocessableContent("a metadata filter value is a string, boolean or number")
