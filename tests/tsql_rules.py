"""What a statement sent to Azure SQL must satisfy, short of a server: it parses as T-SQL
(sqlglot), calls only T-SQL built-ins or routines of ``sql/``, uses no LIMIT (nor OFFSET
without FETCH), executes only procedures that exist with the parameters they declare, and
binds at most 2,100 parameters. Shared by tests/test_sql.py and tests/test_tsql_statements.py.

sqlglot parses leniently (``SELECT DATE(x)`` and ``LIMIT 5`` are accepted for T-SQL), so the
calls are read from the tokens as written, not from its normalized tree: any name the parser
would take as a function (a plain name or a keyword such as DATE) followed by ``(``.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.dialects.tsql import TSQL
from sqlglot.tokens import Token, TokenType  # type: ignore[attr-defined]

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
MAX_PARAMETERS = 2100

# The built-ins the platform may call (a closed list: a new one is added here knowingly).
TSQL_BUILTINS = frozenset(
    """
    ABS AVG CAST COALESCE CONCAT CONTAINS CONTAINSTABLE CONVERT COUNT COUNT_BIG DATEADD
    FORMSOF FREETEXT FREETEXTTABLE GETUTCDATE ISJSON ISNULL JSON_QUERY JSON_VALUE LEN LOWER
    MAX MIN NULLIF OPENJSON REPLACE ROW_NUMBER SESSION_CONTEXT SUBSTRING SUM SYSUTCDATETIME
    TRANSLATE TRY_CAST TRY_CONVERT UPPER VECTOR_DISTANCE VECTOR_SEARCH
    """.split()  # noqa: SIM905 - a word list reads better than 40 quoted strings
)
# System procedures the platform executes: name -> (required, declared) parameter names.
SYSTEM_PROCEDURES = {
    "SP_SET_SESSION_CONTEXT": (("@KEY", "@VALUE"), ("@KEY", "@VALUE", "@READ_ONLY"))
}

TABLE_BEFORE = (TokenType.INTO, TokenType.TABLE, TokenType.ON, TokenType.REFERENCES)
# Keywords sqlglot may read as a function name that are syntax when T-SQL writes them with (.
STRUCTURAL = {
    TokenType.EXISTS, TokenType.UNION, TokenType.ALL, TokenType.ANY, TokenType.SOME,
    TokenType.TABLE, TokenType.INDEX, TokenType.INSERT, TokenType.MERGE, TokenType.WINDOW,
    TokenType.PRIMARY_KEY, TokenType.NEXT, TokenType.OFFSET, TokenType.FILTER,
}  # fmt: skip
NAMED = {TokenType.VAR, TokenType.IDENTIFIER} | set(TSQL.Parser.FUNC_TOKENS)
# Before a type, a name (a column, a parameter: keywords too, as a column named vector) or AS
# (CAST(x AS NVARCHAR(10))) makes it one; after SELECT, a comma or an operator it is a call.
TYPE_AFTER = {TokenType.ALIAS} | NAMED


def normalize(sql: str) -> str:
    """Two clauses of current Azure SQL sqlglot does not model yet, taken out before parsing:
    ``TOP (n) WITH APPROXIMATE`` and the alias inside ``VECTOR_SEARCH(TABLE = t AS a``."""
    sql = re.sub(r"\bWITH\s+APPROXIMATE\b", "", sql, flags=re.I)
    return re.sub(r"(\bTABLE\s*=\s*[\w.\[\]]+)\s+AS\s+\w+", r"\1", sql, flags=re.I)


def _sql_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(SQL_DIR.glob("*.sql")))


def our_routines() -> frozenset[str]:
    """Procedures and functions ``sql/`` creates (bare names, upper case)."""
    found = re.findall(r"CREATE\s+(?:OR\s+ALTER\s+)?(?:PROCEDURE|FUNCTION)\s+(?:\w+\.)?(\w+)",
                       _sql_text(), flags=re.I)  # fmt: skip
    return frozenset(name.upper() for name in found)


@cache
def our_procedures() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each procedure of ``sql/``: (required, declared) parameter names, upper case."""
    procedures = {}
    pattern = r"CREATE\s+(?:OR\s+ALTER\s+)?PROCEDURE\s+(?:\w+\.)?(\w+)(.*?)\bAS\b"
    for name, head in re.findall(pattern, _sql_text(), flags=re.I | re.S):
        declared = re.findall(r"(@\w+)[^,@]*", head)
        defaulted = set(re.findall(r"(@\w+)[^,@=]*=", head))
        names = tuple(p.upper() for p in declared)
        required = tuple(p.upper() for p in declared if p not in defaulted)
        procedures[name.upper()] = (required, names)
    return procedures


def _calls(tokens: list[Token]) -> set[str]:
    called = set()
    for i, (name, after) in enumerate(itertools.pairwise(tokens)):
        if after.token_type != TokenType.L_PAREN or name.token_type not in NAMED:
            continue
        if name.token_type in STRUCTURAL:
            continue
        before = tokens[i - 1].token_type if i else None
        if name.token_type in TSQL.Parser.TYPE_TOKENS and before in TYPE_AFTER:
            continue  # a type: @p VECTOR(384), a NVARCHAR(max), CAST(x AS VARCHAR(9))
        j = i - 1
        while j >= 1 and tokens[j].token_type == TokenType.DOT:
            j -= 2  # dbo.name: look before the schema
        if j >= 0 and tokens[j].token_type in TABLE_BEFORE:
            continue  # a table's column list
        called.add(name.text.upper())
    return called


def called_functions(sql: str) -> set[str]:
    """Names written as calls (a name, or a keyword sqlglot takes as a function, then ``(``),
    and the parsed tree's functions it knows no class for; not a table's column list, nor a
    type's length."""
    called = _calls(list(TSQL().tokenize(sql)))
    try:
        trees = sqlglot.parse(normalize(sql), read="tsql")
    except sqlglot.errors.SqlglotError:
        return called  # reported by ``problems`` as not T-SQL
    for tree in trees:
        if tree is not None:
            called |= {f.name.upper() for f in tree.find_all(exp.Anonymous)}
    return called


def paging_problems(sql: str) -> list[str]:
    """T-SQL has TOP and OFFSET ... FETCH, no LIMIT."""
    kinds = {t.token_type for t in TSQL().tokenize(sql)}
    found = []
    if TokenType.LIMIT in kinds:
        found.append("uses LIMIT (T-SQL has TOP or OFFSET ... FETCH)")
    if TokenType.OFFSET in kinds and TokenType.FETCH not in kinds:
        found.append("uses OFFSET without FETCH")
    return found


def execute_problems(sql: str) -> list[str]:
    """An ``EXEC`` names a procedure of ``sql/`` or a system one, with the parameters it
    declares (positional: as many as it requires at least, as it declares at most)."""
    match = re.match(r"\s*EXEC(?:UTE)?\s+(?:\[?\w+\]?\.)?\[?(\w+)\]?(.*)$", sql, re.I | re.S)
    if not match:
        return []
    name, rest = match.group(1).upper(), match.group(2).strip()
    known = {**SYSTEM_PROCEDURES, **our_procedures()}
    if name not in known:
        return [f"executes {name}, which neither sql/ nor SQL Server defines"]
    required, declared = known[name]
    args = [a.strip() for a in rest.split(",")] if rest else []
    named = [a.split("=", 1)[0].strip().upper() for a in args if re.match(r"@\w+\s*=", a)]
    if named and len(named) != len(args):
        return [f"executes {name} with positional and named parameters mixed"]
    if named:
        extra, missing = set(named) - set(declared), set(required) - set(named)
        if extra or missing:
            return [f"executes {name} with {sorted(named)}; it declares {list(declared)}"]
    elif not len(required) <= len(args) <= len(declared):
        return [f"executes {name} with {len(args)} parameters; it declares {list(declared)}"]
    return []


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
    found += paging_problems(sql) + execute_problems(sql)
    if parameters > MAX_PARAMETERS:
        found.append(f"binds {parameters} parameters (Azure SQL takes {MAX_PARAMETERS})")
    return found
