"""Pages of newest-first lists behind opaque cursors (runs, approvals, dead letters)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from hartonomous.services.atoms import decode_cursor, encode_position

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def position_after(cursor: str | None) -> tuple[datetime, str] | None:
    """The (time, id) a cursor stands for; 400 when it is not one this API returned."""
    if not cursor:
        return None
    position = decode_cursor(cursor)
    return position.created_at, position.id


def page_of(items: list[T], limit: int, position: Callable[[T], tuple[datetime, str]]) -> Page[T]:
    """A page of ``limit`` from ``limit + 1`` rows: the extra row says there is more."""
    more = len(items) > limit
    items = items[:limit]
    return Page(items, encode_position(*position(items[-1])) if more else None)
