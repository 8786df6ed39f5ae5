"""``sql/`` is generated from the table definitions, stays current, and parses as T-SQL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from tsql_rules import TSQL_BUILTINS, called_functions, normalize, our_routines, problems

from hartonomous.store.schema import metadata
from hartonomous.store.sqlgen import revision_scripts

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
# Statements sqlglot does not model; it keeps them whole as a Command. Each is checked below.
OPAQUE = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*CREATE\s+(SECURITY\s+POLICY|FULLTEXT\s+(CATALOG|INDEX)|VECTOR\s+INDEX)\b",
    re.IGNORECASE | re.DOTALL,
)


def batches(text: str) -> list[str]:
    """T-SQL batches, split on GO lines as sqlcmd and SSMS do."""
    return [b for b in re.split(r"^\s*GO\s*$", text, flags=re.M | re.I) if b.strip()]


def test_sql_folder_matches_the_migrations():
    expected = revision_scripts()
    for name, text in expected.items():
        path = SQL_DIR / name
        assert path.exists(), f"sql/{name} is missing: run `make sql`"
        assert path.read_text(encoding="utf-8") == text, f"sql/{name} is stale: run `make sql`"
    generated = {p.name for p in SQL_DIR.glob("[0-9]*.sql")}
    assert generated == set(expected), "sql/ holds scripts of no migration"


@pytest.mark.parametrize("path", sorted(SQL_DIR.glob("*.sql")), ids=lambda p: p.name)
def test_every_script_parses_as_tsql(path: Path):
    statements = 0
    for batch in batches(path.read_text(encoding="utf-8")):
        for tree in sqlglot.parse(
            normalize(batch), read="tsql", error_level=sqlglot.ErrorLevel.RAISE
        ):
            if tree is None:
                continue
            statements += 1
            if isinstance(tree, exp.Command):
                assert OPAQUE.match(tree.sql(dialect="tsql")), (
                    f"{path.name}: sqlglot could not model {tree.sql()[:80]!r}"
                )
            else:  # nothing inside a procedure left unparsed, so nothing unchecked
                assert not list(tree.find_all(exp.Command)), f"{path.name}: opaque statement"
        unknown = called_functions(batch) - TSQL_BUILTINS - our_routines()
        assert not unknown, f"{path.name} calls what T-SQL lacks: {unknown}"
    assert statements > 0


def test_generated_schema_creates_every_table():
    text = "\n".join(revision_scripts().values())
    created = {
        table.name
        for batch in batches(text)
        for t in sqlglot.parse(batch, read="tsql")
        if isinstance(t, exp.Create) and t.kind == "TABLE" and (table := t.find(exp.Table))
    }
    azure_tables = {name for name, t in metadata.tables.items() if not t.info.get("local_only")}
    assert azure_tables <= created
    assert not {name for name, t in metadata.tables.items() if t.info.get("local_only")} & created


def test_row_level_security_covers_every_tenant_owned_table():
    text = (SQL_DIR / "rls.sql").read_text(encoding="utf-8")
    tenant_tables = {t.name for t in metadata.sorted_tables if "tenant_id" in t.c}
    # Tables that must be readable before the tenant is known, or that hold shared rows.
    # Stripe's events are recorded before the event's tenant is known (it is in the event).
    exempt = {"api_keys", "stripe_events"}
    # The outbox publisher reads every tenant's events, upload sessions are found by id before
    # their tenant is known (and swept across tenants), credit accounts are listed across
    # tenants by the hold sweep and the billing run, discovery schedules by the hourly timer;
    # writes are still blocked across tenants.
    unfiltered = {"outbox", "upload_sessions", "credit_accounts", "concept_schedules"}
    for table in tenant_tables - exempt:
        for predicate in ("FILTER PREDICATE", "BLOCK PREDICATE"):
            if predicate == "FILTER PREDICATE" and table in unfiltered:
                assert (
                    f"FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.{table}"
                    not in text
                )
                continue
            assert re.search(
                rf"ADD {predicate} security\.fn_tenant_access\(tenant_id\) ON dbo\.{table}\b",
                text,
            ), f"rls.sql: no {predicate} on {table}"
    assert "SESSION_CONTEXT(N'tenant_id')" in text


def test_knowledge_sql_searches_with_vector_distance_diskann_and_full_text():
    text = (SQL_DIR / "knowledge.sql").read_text(encoding="utf-8")
    assert "VECTOR_DISTANCE('cosine'" in text and "TYPE = 'diskann'" in text
    assert "FROM VECTOR_SEARCH(" in text  # the DiskANN index is used, not only built
    assert "CREATE FULLTEXT INDEX ON dbo.chunks (search_text" in text
    assert "FREETEXTTABLE" not in text  # no ranking of every tenant's rows
    generated = "\n".join(revision_scripts().values())
    assert "vector VECTOR(384) NOT NULL" in generated


def test_migrations_build_exactly_the_declared_schema(tmp_path):
    """Autogenerate finds nothing to do after upgrading a fresh database: no drift."""
    import sqlalchemy as sa
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from hartonomous.store import migrate
    from hartonomous.store.engine import create_engines

    engines = create_engines(f"sqlite:///{tmp_path / 'drift.db'}")
    migrate.upgrade(engines)
    with engines.read.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engines.dispose()
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name.startswith("chunks_fts"))]
    assert diff == [], diff
    assert "chunks_fts" in tables


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT DATE(x) FROM t",
        "SELECT DATETIME(x) FROM t",
        "SELECT TIMESTAMP(x) FROM t",
        "SELECT a, date(x) FROM t",
        "SELECT x FROM t LIMIT 5",
        "SELECT x FROM t ORDER BY x OFFSET 5 ROWS",
        "SELECT json_extract(m, '$.a') FROM t",
        "EXEC dbo.no_such_procedure 1",
        "EXEC sp_set_session_context @key=N'tenant_id', @nope=1",
    ],
)
def test_the_checker_refuses_what_azure_sql_would(sql: str) -> None:
    """sqlglot parses all of these for T-SQL; none runs on Azure SQL."""
    assert problems(sql, 0)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT TOP (5) JSON_VALUE(m, ?) AS v, CAST(x AS NVARCHAR(10)) FROM t WHERE a IN (?, ?)",
        "SELECT x FROM t ORDER BY x OFFSET 5 ROWS FETCH NEXT 5 ROWS ONLY",
        "SELECT COUNT_BIG(*), SYSUTCDATETIME() FROM t WHERE EXISTS (SELECT 1 FROM u)",
        "CREATE TABLE t (vector VECTOR(384) NOT NULL, d DATETIME2(6), PRIMARY KEY (vector))",
        "EXEC sp_set_session_context @key=N'tenant_id', @value=?",
        "EXEC dbo.search_chunks_by_vector ?, ?, ?, ?, ?",
    ],
)
def test_the_checker_passes_tsql(sql: str) -> None:
    assert problems(sql, 0) == []
