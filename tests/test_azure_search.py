"""The Azure SQL side of search, short of a server: the VECTOR type's conversions, the
procedure calls matching sql/knowledge.sql, and the SQL vector adapter's filtering."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy.dialects import mssql, sqlite

from hartonomous.knowledge.sql_vectors import FILTER_OVERFETCH, SqlVectorIndex
from hartonomous.knowledge.store import KnowledgeRepository
from hartonomous.store.schema import Vector

SQL = (Path(__file__).parent.parent / "sql" / "knowledge.sql").read_text()


def procedure_parameters(name: str) -> list[str]:
    body = SQL[SQL.index(f"CREATE PROCEDURE dbo.{name}") :]
    return re.findall(r"(@\w+) [A-Z]", body[: body.index("\nAS\n")])


class RecordingConnection:
    """What a repository sends to SQL Server, with canned rows back."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.dialect = mssql.dialect()
        self.sent: list[tuple[str, tuple[Any, ...]]] = []
        self._rows = rows

    def exec_driver_sql(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        self.sent.append((sql, params))
        return self._rows


def test_vectors_travel_to_azure_sql_as_json_and_come_back_as_float32_bytes():
    vector = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    column = Vector(3)
    sent = column.process_bind_param(vector.tobytes(), mssql.dialect())
    assert sent == "[0.25, -1.5, 3.0]"
    back = column.process_result_value(sent, mssql.dialect())
    assert back is not None
    assert np.array_equal(np.frombuffer(back, dtype=np.float32), vector)
    # SQLite keeps the raw bytes.
    assert column.process_bind_param(vector.tobytes(), sqlite.dialect()) == vector.tobytes()


def test_keyword_and_vector_calls_match_the_procedures():
    conn = RecordingConnection([("atom-1", 0.5)])
    repo = KnowledgeRepository(conn)  # type: ignore[arg-type]
    assert repo.keyword_search("t1", "hot planets", 5)[0].atom_id == "atom-1"
    assert repo.vector_search("t1", "model-x", np.array([0.5, 1.0]), 7) == [("atom-1", 0.5)]
    (keyword_sql, keyword_args), (vector_sql, vector_args) = conn.sent
    for sql, args, name, expected in (
        (keyword_sql, keyword_args, "search_chunks_by_keywords",
         {"@tenant_id": "t1", "@query": "hot planets", "@k": 5}),
        (vector_sql, vector_args, "search_chunks_by_vector",
         {"@tenant_id": "t1", "@query": "[0.5, 1.0]", "@model": "model-x", "@k": 7}),
    ):  # fmt: skip
        assert sql.startswith(f"EXEC dbo.{name} ")
        assert sql.count("?") == len(args)
        assert dict(zip(procedure_parameters(name), args, strict=True)) == expected


def test_the_sql_adapter_overfetches_for_filters_and_keeps_only_allowed_atoms():
    asked: list[int] = []
    ranked = [(f"a{i}", 1 - i / 100) for i in range(50)]

    def vector_search(tenant_id: str, model: str, query: Any, k: int) -> list[Any]:
        asked.append(k)
        return ranked[:k]

    @contextmanager
    def uow_factory(*, write: bool, tenant_id: str | None = None) -> Iterator[Any]:
        yield SimpleNamespace(knowledge=SimpleNamespace(vector_search=vector_search))

    index = SqlVectorIndex(uow_factory, "m", 2)  # type: ignore[arg-type]
    query = np.zeros(2, dtype=np.float32)
    assert index.search("t", query, 3) == ranked[:3]
    assert index.search("t", query, 3, allowed={"a4", "a9", "a40"}) == [ranked[4], ranked[9]]
    assert asked == [3, 3 * FILTER_OVERFETCH]
    assert index.refresh("t") == 0
