"""Equality on one scalar of a JSON column, answered the same on SQLite and Azure SQL.

``json_equals(column, key, value)`` compares by the filter value's JSON type: a number as a
number (``1.0`` finds a stored ``1``, ``1e20`` a stored ``1e+20``), a string as the stored
string's text, a boolean as JSON true/false. The expressions differ per dialect and live in
the compile hooks below (``JSON_VALUE`` and ``OPENJSON`` on Azure SQL, ``json_extract`` on
SQLite), as SQLAlchemy's own types keep theirs; repositories build one expression for both
worlds. The key is checked by the one definition of the filter rules (domain/metadata.py)
before it becomes a path, and the path is bound, never spliced into SQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from hartonomous.domain.metadata import check_filter_key, check_filter_value


def json_path(key: str) -> str:
    """``$."key"`` for a key the filter rules allow; anything else is refused (422)."""
    return f'$."{check_filter_key(key)}"'


class json_text(FunctionElement[str]):  # noqa: N801 - reads as the SQL function it is
    """``json_text(column, key)``: a string or boolean under ``key`` as JSON_VALUE gives it
    (``true``/``false`` for booleans); NULL for objects, arrays, JSON null, missing keys."""

    type = sa.Unicode()
    inherit_cache = True
    name = "json_text"

    def __init__(self, column: Any, key: str) -> None:
        super().__init__(column, sa.bindparam(None, json_path(key), type_=sa.String()))


class json_number(FunctionElement[float]):  # noqa: N801
    """``json_number(column, key)``: the JSON number under ``key`` as a float; NULL for any
    other JSON type (a string "1" is not the number 1, in either world)."""

    type = sa.Float()
    inherit_cache = True
    name = "json_number"

    def __init__(self, column: Any, key: str) -> None:
        path = sa.bindparam(None, json_path(key), type_=sa.String())
        super().__init__(column, path, sa.bindparam(None, key, type_=sa.Unicode()))


def json_equals(column: Any, key: str, value: object) -> sa.ColumnElement[bool]:
    """``column``'s ``key`` equals ``value`` (a filter value), compared by its JSON type."""
    value = check_filter_value(value)
    if isinstance(value, bool):
        return json_text(column, key) == ("true" if value else "false")
    if isinstance(value, int | float):
        return json_number(column, key) == sa.literal(float(value), sa.Float())
    return json_text(column, key) == value


@compiles(json_text, "mssql")
def _json_value(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    column, path = element.clauses
    return f"JSON_VALUE({compiler.process(column, **kw)}, {compiler.process(path, **kw)})"


@compiles(json_text, "sqlite")
def _sqlite_json_text(element: json_text, compiler: SQLCompiler, **kw: Any) -> str:
    # ->> gives a string's text; booleans as JSON_VALUE writes them.
    column, path = element.clauses
    c, p = compiler.process(column, **kw), compiler.process(path, **kw)
    return (
        f"CASE json_type({c}, {p}) WHEN 'text' THEN {c} ->> {p} "
        f"WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' END"
    )


@compiles(json_number, "mssql")
def _mssql_json_number(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    # JSON_VALUE cannot tell the number 1 from the string "1"; OPENJSON's type can (2).
    column, _, key = element.clauses
    c, k = compiler.process(column, **kw), compiler.process(key, **kw)
    return (
        f"(SELECT TRY_CAST(j.[value] AS FLOAT) FROM OPENJSON({c}) AS j "  # noqa: S608 - bound
        f"WHERE j.[key] = {k} AND j.[type] = 2)"
    )


@compiles(json_number, "sqlite")
def _sqlite_json_number(element: json_number, compiler: SQLCompiler, **kw: Any) -> str:
    column, path, _ = element.clauses
    c, p = compiler.process(column, **kw), compiler.process(path, **kw)
    return (
        f"CASE WHEN json_type({c}, {p}) IN ('integer', 'real') "
        f"THEN CAST(json_extract({c}, {p}) AS REAL) END"
    )
