"""What a statement sent to Azure SQL must satisfy, short of a server: it parses as T-SQL
(sqlglot), calls only T-SQL built-ins or routines of ``sql/``, binds at most 2,100
parameters. Shared by tests/test_sql.py and tests/test_tsql_statements.py."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import sqlglot
from sqlglot.dialects.tsql import TSQL
from sqlglot.tokens import TokenType  # type: ignore[attr-defined]

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MAX_PARAMETERS = 2100

# The built-ins the platform may call (a closed list: a new one is added here knowingly).
TSQL_BUILTINS = frozenset(
    """
    ABS AVG CAST COALESCE CONCAT CONTAINS CONTAINSTABLE CONVERT COUNT COUNT_BIG DATEADD
    FORMSOF FREETEXT FREETEXTTABLE GETUTCDATE ISJSON ISNULL JSON_QUERY JSON_VALUE LEN LOWER
    MAX MIN NULLIF OPENJSON REPLACE ROW_NUMBER SESSION_CONTEXT SUBSTRING SUM SYSUTCDATETIME
    TRY_CAST TRY_CONVERT UPPER VECTOR_DISTANCE VECTOR_SEARCH
    """.split()  # noqa: SIM905 - a word list reads better than 40 quoted strings
)


TABLE_BEFORE = (TokenType.INTO, TokenType.TABLE, TokenType.ON, TokenType.REFERENCES)


def normalize(sql: str) -> str:
    """Two clauses of current Azure SQL sqlglot does not model yet, taken out before parsing:
    ``TOP (n) WITH APPROXIMATE`` and the alias inside ``VECTOR_SEARCH(TABLE = t AS a``."""
    sql = re.sub(r"\bWITH\s+APPROXIMATE\b", "", sql, flags=re.I)
    return re.sub(r"(\bTABLE\s*=\s*[\w.\[\]]+)\s+AS\s+\w+", r"\1", sql, flags=re.I)


def our_routines() -> frozenset[str]:
    """Procedures and functions ``sql/`` creates (bare names, upper case)."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in SQL_DIR.glob("*.sql"))
    found = re.findall(r"CREATE\s+(?:OR\s+ALTER\s+)?(?:PROCEDURE|FUNCTION)\s+(?:\w+\.)?(\w+)",
                       text, flags=re.I)  # fmt: skip
    return frozenset(name.upper() for name in found)


def called_functions(sql: str) -> set[str]:
    """Names written as calls (a name then ``(``), except a table's column list (after INTO,
    TABLE, ON, REFERENCES; a schema prefix skipped)."""
    tokens = TSQL().tokenize(sql)
    called = set()
    for i, (name, after) in enumerate(itertools.pairwise(tokens)):
        if after.token_type != TokenType.L_PAREN or name.token_type != TokenType.VAR:
            continue
        j = i - 1
        while j >= 1 and tokens[j].token_type == TokenType.DOT:
            j -= 2  # dbo.name: look before the schema
        if j >= 0 and tokens[j].token_type in TABLE_BEFORE:
            continue
        called.add(name.text.upper())
    return called


def problems(sql: str, parameters: int) -> list[str]:
    """Why ``sql`` would fail on Azure SQL (empty: it would not, as far as we can tell)."""
    found = []
    try:
        sqlglot.parse(normalize(sql), read="tsql", error_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        found.append(f"does not parse as T-SQL: {str(exc)[:200]}")
    unknown = called_functions(sql) - TSQL_BUILTINS - our_routines()
    if unknown:
        found.append(f"calls what T-SQL lacks: {sorted(unknown)}")
    if parameters > MAX_PARAMETERS:
        found.append(f"binds {parameters} parameters (Azure SQL takes {MAX_PARAMETERS})")
    return found
