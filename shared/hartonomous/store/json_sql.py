"""One JSON scalar of a JSON column, as text, the same on SQLite and Azure SQL.

``json_text(column, key)`` compiles to ``JSON_VALUE(column, '$."key"')`` on Azure SQL and to
an expression giving the same text on SQLite (whose ``json_extract`` returns typed values:
``true`` as 1, numbers as numbers). The difference lives in the two compile hooks below, as
SQLAlchemy's own types keep theirs; repositories build one expression for both worlds. A key
is checked against a strict charset before it becomes a path (the path is bound, never
spliced into SQL), and a filter value is compared as the text JSON_VALUE returns for it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from hartonomous.errors import UnprocessableContent

# Letters, digits and a few separators: nothing that could end the quoted path segment.
KEY = re.compile(r"[\w\-.:@/ ]{1,128}")
MAX_TEXT = 4000  # JSON_VALUE returns NVARCHAR(4000) at most (lax mode: NULL past that)


class json_text(FunctionElement[str]):  # noqa: N801 - reads as the SQL function it is
    """``json_text(column, key)``: the scalar under ``key`` as text; NULL for objects,
    arrays, JSON null and missing keys (JSON_VALUE's lax mode)."""

    type = sa.Unicode()
    inherit_cache = True
    name = "json_text"

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, sa.bindparam(None, json_path(key), type_=sa.String()))


def json_path(key: str) -> str:
    """``$."key"`` for a key of the strict charset; anything else is refused (422)."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise UnprocessableContent(
            "metadata filter keys are 1-128 letters, digits, spaces or - _ . : @ /",
            key=str(key)[:128],
        )
    return f'$."{key}"'


def scalar_text(value: object) -> str:
    """A filter value as the text JSON_VALUE gives for it; bounded, never an overflow."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = json.dumps(value)
    elif isinstance(value, str):
        text = value
    else:
        raise UnprocessableContent("metadata filter values are strings, numbers or booleans")
    if len(text) > MAX_TEXT:
        raise UnprocessableContent(f"a metadata filter value is over {MAX_TEXT} characters")
    return text


@compiles(json_text, "mssql")
def _json_value(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = element.clauses
    return f"JSON_VALUE({compiler.process(column, **kw)}, {compiler.process(path, **kw)})"


@compiles(json_text, "sqlite")
def _sqlite_json_text(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    # ->> gives a string's text, -> a number's or boolean's as written (as JSON_VALUE does).
    column, path = element.clauses
    c, p = compiler.process(column, **kw), compiler.process(path, **kw)
    return (
        f"CASE json_type({c}, {p}) WHEN 'text' THEN {c} ->> {p} "
        f"WHEN 'integer' THEN {c} -> {p} WHEN 'real' THEN {c} -> {p} "
        f"WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END"
    )
