"""Small helpers the repositories share: rows into dataclasses, newest-first keyset pages."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa

R = TypeVar("R")


def record(cls: type[R], row: Any) -> R:
    """The dataclass ``cls`` from a row holding (at least) its fields."""
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})  # type: ignore[arg-type]


def newest_first(
    query: sa.Select[Any], table: sa.Table, time_column: str, after: tuple[datetime, str] | None
) -> sa.Select[Any]:
    """Newest first by (time, id), after a cursor's position: stable while rows are added."""
    at, key = table.c[time_column], table.c.id
    if after is not None:
        query = query.where(sa.or_(at < after[0], sa.and_(at == after[0], key < after[1])))
    return query.order_by(at.desc(), key.desc())
