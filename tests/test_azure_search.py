"""The Azure SQL side of search, short of a server: the VECTOR type's conversions, the
vector procedure call matching sql/knowledge.sql, and the statements the Azure adapters
build (tenant term, filter inside the query)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy.dialects import mssql, sqlite

from hartonomous.knowledge.keyword_mssql import contains_condition, tenant_term
from hartonomous.knowledge.sql_vectors import PROCEDURE, SqlVectorIndex
from hartonomous.knowledge.store import SearchFilter
from hartonomous.store.schema import Vector

SQL = (Path(__file__).parent.parent / "sql" / "knowledge.sql").read_text()


def procedure_parameters(name: str) -> list[str]:
    body = SQL[SQL.index(f"CREATE PROCEDURE dbo.{name}") :]
    return re.findall(r"(@\w+) [A-Z]", body[: body.index("\nAS\n")])


class RecordingConnection:
    """What an adapter sends to SQL Server, with canned rows back."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.dialect = mssql.dialect()
        self.sent: list[tuple[Any, Any]] = []
        self._rows = rows

    def exec_driver_sql(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self.sent.append((sql, params))
        return self._rows

    def execute(self, statement: Any) -> list[tuple[Any, ...]]:
        self.sent.append((statement, None))
        return self._rows


def sql_index(conn: RecordingConnection) -> SqlVectorIndex:
    @contextmanager
    def uow_factory(*, write: bool, tenant_id: str | None = None) -> Iterator[Any]:
        def within(query: Callable[[Any], Any]) -> Any:
            return query(conn)

        yield SimpleNamespace(knowledge=SimpleNamespace(within=within))

    return SqlVectorIndex(uow_factory, "model-x", 2, exact_below=50_000)  # type: ignore[arg-type]


def test_vectors_travel_to_azure_sql_as_json_and_come_back_as_float32_bytes() -> None:
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    column = Vector(3)
    sent = column.process_bind_param(vector.tobytes(), mssql.dialect())
    assert sent == "[0.25, -1.5, 3.0]"
    back = column.process_result_value(sent, mssql.dialect())
    assert back is not None
    assert np.array_equal(np.frombuffer(back, dtype=np.float32), vector)
    # SQLite keeps the raw bytes.
    assert column.process_bind_param(vector.tobytes(), sqlite.dialect()) == vector.tobytes()


def test_unfiltered_vector_search_calls_the_procedure_with_its_threshold() -> None:
    conn = RecordingConnection([("atom-1", 0.5)])
    index = sql_index(conn)
    assert index.search("t1", np.array([0.5, 1.0]), 7) == [("atom-1", 0.5)]
    assert index.refresh("t1") == 0
    ((sql, args),) = conn.sent
    assert sql == PROCEDURE and sql.startswith("EXEC dbo.search_chunks_by_vector ")
    assert sql.count("?") == len(args)
    expected = {"@tenant_id": "t1", "@query": "[0.5, 1.0]", "@model": "model-x", "@k": 7,
                "@exact_below": 50_000}  # fmt: skip
    params = procedure_parameters("search_chunks_by_vector")
    assert dict(zip(params, args, strict=True)) == expected


def test_the_vector_procedure_is_exact_below_the_threshold_and_diskann_above() -> None:
    body = SQL[SQL.index("CREATE PROCEDURE dbo.search_chunks_by_vector") :]
    exact, approximate = body.split("\n    ELSE\n")
    assert "IF @vectors < @exact_below" in exact and "ORDER BY VECTOR_DISTANCE('cosine'" in exact
    assert "WITH APPROXIMATE" in approximate and "VECTOR_SEARCH(" in approximate
    assert "TABLE = dbo.embeddings AS e" in approximate and "METRIC = 'cosine'" in approximate
    assert "WHERE e.tenant_id = @tenant_id" in approximate  # filtered during the search


def test_a_filtered_vector_search_is_one_statement_with_the_filter_inside() -> None:
    conn = RecordingConnection([("atom-9", 0.1)])
    found = sql_index(conn).search("t1", np.array([0.6, 0.8]), 3,
                                   SearchFilter(metadata={"team": "red"}))  # fmt: skip
    assert found == [("atom-9", 0.1)]
    ((statement, _),) = conn.sent
    sql = str(statement.compile(dialect=mssql.dialect(),
                                compile_kwargs={"render_postcompile": True}))  # fmt: skip
    assert (
        "VECTOR_DISTANCE('cosine', embeddings.vector, CAST(" in sql
        and "IN (SELECT edges.dst_id" in sql
    )
    assert "JSON_VALUE(doc.metadata" in sql and "TOP 3" in sql


def test_full_text_queries_carry_the_tenant_term_and_quote_user_words() -> None:
    assert tenant_term("0F0E-AB12") == "tntgfgeabhi"
    condition = contains_condition("0f0e-ab12", ["mars", "or", "near"])
    assert condition == (
        '"tntgfgeabhi" AND (FORMSOF(INFLECTIONAL, "mars") OR FORMSOF(INFLECTIONAL, "or") '
        'OR FORMSOF(INFLECTIONAL, "near"))'
    )
    with pytest.raises(ValueError):
        tenant_term('x" OR "y')
    # The computed column of sql/knowledge.sql makes the same term.
    assert (
        "CONCAT(N'tnt', TRANSLATE(LOWER(REPLACE(tenant_id, '-', '')), '0123456789', "
        "'ghijklmnop'), N' ', text)" in SQL
    )
    # Letters only: one token for any word breaker, whatever the tenant id's digits.
    assert tenant_term("01234567-89ab-cdef-0123-456789abcdef").isalpha()
