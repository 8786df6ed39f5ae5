"""Azure SQL cannot run here, so every statement the repositories issue is checked the way
it would reach it: the shared repository code runs on SQLite while an event captures each
statement, which is then compiled for ``mssql`` and must parse as T-SQL, call only T-SQL
built-ins or routines of ``sql/``, and bind at most 2,100 parameters. Inputs are large
(5,000 ids) so a missing batch shows. The Azure-only adapters' statements are built by their
statement functions and checked the same way; their JSON columns round-trip. Driver SQL
(``exec_driver_sql``) is checked too: an ``EXEC`` must name a procedure of ``sql/`` (or a
system one) with the parameters it declares."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from knowledge_corpus import sha
from sqlalchemy.dialects.mssql.pyodbc import MSDialect_pyodbc
from tsql_rules import problems

from conftest import TenantKeys
from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRunRecord,
    StepRecord,
    VersionRecord,
    ViolationRecord,
)
from hartonomous.agents.store import AgentRepository
from hartonomous.autonomy.records import (
    ActionRecord,
    ApprovalRecord,
    DeadLetterRecord,
    PhaseRecord,
    RunRecord,
)
from hartonomous.autonomy.store import AutonomyRepository
from hartonomous.bootstrap import Platform
from hartonomous.concepts.store import (
    ACTIVE,
    BOUND_KINDS,
    BROAD,
    COMPLETED,
    FINE,
    MERGED,
    RETIRED,
    RUNNING,
    ConceptRepository,
    ConceptRow,
    GraphEdge,
    RunRow,
)
from hartonomous.domain.atoms import CONCEPT_MEDIA_TYPE, Atom, Modality
from hartonomous.domain.tenants import Scope
from hartonomous.domain.uploads import Purpose, Status, UploadSession
from hartonomous.domain.workflows import WorkflowRun
from hartonomous.errors import Conflict
from hartonomous.generation.store import ReceiptRow
from hartonomous.knowledge.keyword_mssql import keyword_statement
from hartonomous.knowledge.keyword_sqlite import Fts5KeywordIndex
from hartonomous.knowledge.sql_vectors import SqlVectorIndex, filtered_statement
from hartonomous.knowledge.store import HAS_CHUNK, SearchFilter, allowed_chunks_query
from hartonomous.metering.ledger import Usage
from hartonomous.services.clock import new_id
from hartonomous.store.dialects import StoreAdapters, no_session_setup, tenant_session_context
from hartonomous.store.repositories import AtomFilter, PagePosition, WriteConflict
from hartonomous.store.schema import atoms, metadata, models, outbox, receipts
from hartonomous.store.unit_of_work import UnitOfWork
from hartonomous.store.upsert import PortableInsertOrIgnore

AT = datetime(2026, 11, 21, tzinfo=UTC)
MANY = 5000
AZURE = MSDialect_pyodbc(paramstyle="qmark")  # as pyodbc connects it
LOCAL_ONLY = {name for name, t in metadata.tables.items() if t.info.get("local_only")}
FULL_FILTER = SearchFilter(
    modality="text", media_type="text/plain", document_id="d", concept_id="c",
    metadata={"team": "red", "year": 2**62, "draft": False}, created_after=AT,
    created_before=AT + timedelta(1),
)  # fmt: skip


def azure_sql(element: Any, rows: list[dict[str, Any]]) -> tuple[str, int]:
    """The statement as SQL Server would get it, and the parameters it binds."""
    keys = list(rows[0]) if rows and rows[0] else None
    postcompile = True
    if keys and isinstance(element, sa.Select | sa.CompoundSelect):
        element, keys = element.params(rows[0]), None  # a prepared statement's values
    elif keys and isinstance(element, sa.Update) and not set(keys) & set(element.table.c.keys()):
        # Its values are bound by name (billing/credits.py), none a column, none an IN list.
        keys, postcompile = None, False
    compiled = element.compile(
        dialect=AZURE, column_keys=keys, compile_kwargs={"render_postcompile": postcompile}
    )
    return str(compiled), len(compiled.positiontup or ())


def check(element: Any, rows: list[Any] | None = None) -> list[str]:
    if isinstance(element, str):  # driver SQL: sent as written, one ? per parameter
        sql, parameters = element, element.count("?")
        sent = {len(row) for row in rows or [()]}
        if sent != {parameters}:
            return [f"binds {sorted(sent)} parameters for {parameters} markers:\n{sql[:300]}"]
    else:
        sql, parameters = azure_sql(element, rows or [{}])
    return [f"{p}:\n{sql[:300]}" for p in problems(sql, parameters)]


class DriverRecorder:
    """A connection that records what an Azure-only adapter sends and answers no rows."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, list[Any]]] = []

    def exec_driver_sql(self, sql: str, parameters: Any = ()) -> list[Any]:
        rows = parameters if isinstance(parameters, list) else [parameters]
        self.sent.append((sql, rows))
        return []

    def execute(self, element: Any, parameters: Any = None) -> list[Any]:
        self.sent.append((element, [parameters or {}]))
        return []

    def within(self, work: Any) -> Any:  # uow.knowledge.within
        return work(self)

    def __call__(self, **_: Any) -> Any:  # the unit-of-work factory
        return self

    def __enter__(self) -> Any:
        return type("Uow", (), {"knowledge": self})()

    def __exit__(self, *_: object) -> None:
        return None


@pytest.fixture
def captured(platform: Platform) -> Iterator[list[tuple[Any, list[dict[str, Any]]]]]:
    seen: list[tuple[Any, list[dict[str, Any]]]] = []

    def capture(conn: Any, element: Any, multiparams: Any, params: Any, options: Any) -> None:
        if type(element).__name__.endswith("SavepointClause"):
            return  # SAVE TRANSACTION is the dialect's own, not ours
        if conn.info.get(IN_SQLITE_ADAPTER) or element in SQLITE_ENGINE_SQL:
            return  # driver SQL of the SQLite keyword adapter and engine (not Azure's)
        if not isinstance(element, str) and {
            **element.get_execution_options(),
            **options,
        }.get("sqlite_only"):
            return  # the SQLite adapters' Core statements
        tables = {t.name for t in getattr(element, "_from_objects", ())}
        tables |= {getattr(getattr(element, "table", None), "name", None)} - {None}
        if tables & LOCAL_ONLY:
            return  # the local Durable host's own tables never reach Azure SQL
        if isinstance(element, str):  # exec_driver_sql: one tuple, or a list of them
            many = isinstance(multiparams[0], list) if multiparams else False
            seen.append((element, multiparams[0] if many else list(multiparams or [()])))
            return
        if multiparams and isinstance(multiparams[0], list):
            rows = multiparams[0]
        elif multiparams and isinstance(multiparams[0], dict):
            rows = list(multiparams)
        else:
            rows = [params or {}]
        seen.append((element, rows))

    engines = {platform.engines.write, platform.engines.read}
    for engine in engines:
        sa.event.listen(engine, "before_execute", capture)
    yield seen
    for engine in engines:
        sa.event.remove(engine, "before_execute", capture)


IN_SQLITE_ADAPTER = "test_in_sqlite_adapter"
SQLITE_ENGINE_SQL = {"BEGIN", "BEGIN IMMEDIATE"}  # store/engine.py's SQLite transactions


class MarkedFts5(Fts5KeywordIndex):
    """The SQLite keyword adapter, its driver SQL (FTS5) marked as never reaching Azure SQL."""

    def add(self, conn: sa.Connection, *args: Any) -> None:
        conn.info[IN_SQLITE_ADAPTER] = True
        try:
            super().add(conn, *args)
        finally:
            conn.info.pop(IN_SQLITE_ADAPTER)

    def remove(self, conn: sa.Connection, *args: Any) -> None:
        conn.info[IN_SQLITE_ADAPTER] = True
        try:
            super().remove(conn, *args)
        finally:
            conn.info.pop(IN_SQLITE_ADAPTER)

    def search(self, conn: sa.Connection, *args: Any, **kw: Any) -> Any:
        conn.info[IN_SQLITE_ADAPTER] = True
        try:
            return super().search(conn, *args, **kw)
        finally:
            conn.info.pop(IN_SQLITE_ADAPTER)


def drive_every_repository(platform: Platform, tenant: str) -> None:
    """Each repository method the platform calls, with inputs larger than any IN list."""
    shas = [sha(f"{tenant}{i}") for i in range(MANY)]
    ids = [new_id() for _ in range(MANY)]
    items = [Atom(ids[i], tenant, shas[i], 3, "text/plain", Modality.TEXT, AT,
                  {"team": "red", "n": i}) for i in range(MANY)]  # fmt: skip
    # The repositories with Azure SQL's insert-or-ignore (portable: it runs here too).
    adapters = StoreAdapters(no_session_setup, PortableInsertOrIgnore(), MarkedFts5())
    with UnitOfWork(platform.engines, adapters, write=True, tenant_id=tenant) as uow:
        uow.tenants.get(tenant)
        uow.tenants.get_by_name("alice")
        uow.tenants.count()
        uow.api_keys.find_active_by_hash("0" * 64)
        uow.api_keys.get(ids[0], tenant)
        uow.api_keys.get(ids[0], None)
        uow.api_keys.list(tenant, 21, (AT, ids[0]))
        uow.api_keys.count_active(tenant)
        uow.api_keys.count_active(tenant, Scope.ADMIN)
        uow.api_keys.hold_tenant(tenant)
        uow.api_keys.revoke(tenant, ids[0], AT)
        uow.blobs.acquire_many({s: 3 for s in shas}, AT)
        uow.blobs.acquire(shas[0], 3, AT)
        uow.atoms.add_many(items)
        uow.atoms.find_many_by_sha256(tenant, shas)
        uow.atoms.get(tenant, ids[0])
        uow.atoms.get_many(tenant, ids)
        uow.atoms.find_by_sha256(tenant, shas[0])
        uow.atoms.list(tenant, AtomFilter("text", "text/plain"), 50, PagePosition(AT, ids[0]))
        uow.atoms.count()
        k = uow.knowledge
        k.add_chunks(tenant, [(ids[i], shas[i], f"chunk {i}", 2) for i in range(1, MANY)])
        k.add_edges([{"tenant_id": tenant, "kind": HAS_CHUNK, "src_id": ids[0], "dst_id": ids[i],
                      "ordinal": i, "created_at": AT} for i in range(1, MANY)])  # fmt: skip
        k.record_document(tenant, ids[0], "m", MANY - 1, 10, AT)
        k.add_embeddings(tenant, "m", 3, [(shas[1], np.ones(3, np.float32).tobytes())], AT)
        k.missing_embeddings(tenant, shas, "m")
        k.chunk_atom_ids(tenant, shas)
        k.vectors_since(tenant, "m", 0)
        k.chunk_embeddings(tenant, "m", ids)
        k.document_chunk_vectors(tenant, "m", ids)
        k.document(tenant, ids[0])
        k.describe(tenant, ids, {ids[0]})
        k.describe(tenant, ids, None)
        k.allowed_chunks(tenant, FULL_FILTER)
        k.allowed_chunks(tenant, SearchFilter(metadata={"team": "red"}))
        k.keyword_search(tenant, "chunk", 10, SearchFilter(metadata={"team": "red"}))
        k.record_gap(tenant, "q", "hybrid", 0.1, AT)
        k.gaps(tenant)
        lineage_ids = ids[:MANY]
        uow.lineage.step(tenant, lineage_ids, "up")
        uow.lineage.step(tenant, lineage_ids, "down")
        uow.lineage.describe(tenant, lineage_ids)
        receipt = ReceiptRow(new_id(), tenant, ids[1], ids[2], "mdl", "0" * 64, 3, 4,
                             {"retrieved": [{"atom_id": ids[3], "score": 0.5}]}, AT)  # fmt: skip
        uow.receipts.add(receipt, [("USED_IN_GENERATION", ids[3], ids[2], 1)])
        uow.receipts.get(tenant, receipt.id)
        uow.receipts.for_atom(tenant, ids[2])
        uow.usage.record(tenant, "r", [Usage("search.queries", 1, "queries")], AT)
        uow.usage.record(tenant, "r", [Usage("search.queries", 1, "queries")], AT)
        uow.usage.totals(tenant, AT - timedelta(1), AT + timedelta(1))
        for i in range(MANY // 2):
            uow.outbox.add(tenant, "t", f"k{i}", {"i": i}, AT)
        pending = uow.outbox.pending(MANY)
        uow.outbox.mark_published([e.id for e in pending], AT)
        uow.workflow_runs.add(WorkflowRun("wf-1", tenant, "ingest", AT))
        uow.workflow_runs.get(tenant, "wf-1")
        uow.workflow_runs.delete(tenant, "wf-1")
        uow.models.get(tenant, "no-such-model")
        uow.models.references(tenant, ids[1])
        uow.models.profiled(tenant)
        for i in range(MANY - 3, MANY):  # chunks no receipt holds
            k.forget_atom(tenant, ids[i])
            uow.atoms.delete(tenant, ids[i])
            uow.blobs.release(shas[i], AT)
        # The blob lifecycle's sweeper (services/blob_lifecycle.py).
        uow.blobs.queued_deletions(MANY)
        uow.blobs.referenced(shas)
        uow.blobs.claim(shas[-1], AT)
        uow.blobs.claim(sha("never stored"), AT)
        uow.blobs.settle(shas[-1])
        uow.blobs.settle(shas[-2], dequeue=False)
        uow.blobs.totals()
        # Upload sessions (services/upload_sessions.py).
        sessions = uow.upload_sessions
        upload = UploadSession(ids[4], tenant, Purpose.DOCUMENT, 10, "text/plain", {"a": 1},
                               Status.PENDING, AT, AT + timedelta(1))  # fmt: skip
        sessions.add(upload, "0" * 64)
        sessions.get(tenant, upload.id)
        sessions.get_with_token(upload.id)
        sessions.claim(tenant, upload.id, "claim", AT, AT + timedelta(minutes=5))
        sessions.settle(tenant, upload.id, "claim", Status.STORED, atom_id=ids[5],
                        deduplicated=False)  # fmt: skip
        sessions.settle(tenant, upload.id, "claim", Status.COMPLETING)
        sessions.live_ids(ids, AT)
        sessions.delete_expired_before(AT - timedelta(7))
        drive_autonomy(uow.autonomy, tenant, ids)
        drive_agent_names(uow.agents, tenant)
        drive_agent_runs(uow.agents, tenant, ids)
        drive_effects(uow, tenant, ids)
        uow.plans.get(tenant)
        uow.plans.set(tenant, {"burst": 5}, AT)  # inserts
        uow.plans.set(tenant, {"requests_per_second": 2.5, "burst": None}, AT)  # updates
        drive_billing(uow, tenant)
        drive_concepts(uow, tenant, ids)
        uow.commit()


def drive_billing(uow: UnitOfWork, tenant: str) -> None:
    """Credits (holds, settlement, grants, expiry, the ledger's pages) and invoices and
    Stripe's events (billing/), each insert-or-ignore twice."""
    c = uow.credits
    for _ in range(2):
        c.ensure_account(tenant, AT)
    c.balance(tenant, AT)
    c.hold(tenant, "receipt:t", 1000, AT, timedelta(hours=1))
    c.hold(tenant, "receipt:t", 1000, AT, timedelta(hours=1))  # the same key: held once
    c.settle(tenant, "receipt:t", 2500, {"generation.prompt_tokens": 0.0025}, AT)
    c.close_hold(tenant, "receipt:gone", "released", AT)
    c.expired_holds(tenant, AT)
    for _ in range(2):
        c.grant(tenant, 10**6, kind="paid", source="payment", source_ref="payment:pi_1", at=AT,
                expires_at=AT + timedelta(30))  # fmt: skip
    c.grants(tenant)
    c.expire(tenant, AT + timedelta(31))
    c.set_mode(tenant, "postpaid", 10**9, AT)
    c.set_customer(tenant, "cus_1", AT)
    c.account(tenant)
    c.entries(tenant, 21)
    c.entries(tenant, 21, (AT, 5))
    c.unbilled(tenant, AT + timedelta(1))
    c.pay_owed(tenant, 5, AT)
    c.accounts_holding()
    c.postpaid_accounts()
    b = uow.billing
    for _ in range(2):
        invoice = b.open_invoice(tenant, "2026-11", AT - timedelta(30), AT, "usd", AT)
    c.mark_billed(tenant, invoice.id, AT + timedelta(1))
    c.billed_total(tenant, invoice.id)
    b.update_invoice(invoice.id, AT, status="paid", stripe_invoice_id="in_1")
    b.invoices(tenant)
    for _ in range(2):
        b.record_event("evt_1", "payment_intent.succeeded", tenant, "queued", AT)
    b.event("evt_1")
    b.finish_event("evt_1", "done", AT)


def drive_concepts(uow: UnitOfWork, tenant: str, ids: list[str]) -> None:
    """Concepts (concepts/store.py): discovery runs (one running per tenant and modality: a
    second start is a 409), schedules, what discovery reads, the concepts, their members and
    their graph, and search's concept filter; IN lists and member inserts past one batch.
    Each method of the repository is called (a new one fails here until it is driven)."""
    c = Calls(uow.concepts)
    # Two concepts' description atoms and their group's (modality concept), as discovery
    # records them.
    described = [sha(f"{tenant}concept{j}") for j in range(3)]
    uow.blobs.acquire_many({s: 3 for s in described}, AT)
    atom_ids = [new_id() for _ in described]
    uow.atoms.add_many([Atom(atom_ids[j], tenant, described[j], 3, CONCEPT_MEDIA_TYPE,
                             Modality.CONCEPT, AT, {"kind": "concept"})
                        for j in range(3)])  # fmt: skip
    run = RunRow(new_id(), tenant, "text", "concepts-x", "api", RUNNING, None, 7, None, None, AT,
                 None)  # fmt: skip
    c.start_run(run)
    with pytest.raises(Conflict):  # one running discovery per tenant and modality
        c.start_run(replace(run, id=new_id(), instance_id="concepts-y", k_requested=4))
    assert c.run(tenant, run.id) is not None
    assert c.running(tenant, "text") == c.run(tenant, run.id)
    assert c.run_by_instance(tenant, "concepts-x") == c.run(tenant, run.id)
    c.runs(tenant, 20)
    c.set_schedule(tenant, "text", True, 8, AT)  # inserts
    c.set_schedule(tenant, "text", True, None, AT)  # updates
    assert c.schedules(tenant) == [{"modality": "text", "enabled": True, "k": None}]
    assert (tenant, "text", None) in [tuple(r) for r in c.enabled_schedules(None, 100)]
    c.enabled_schedules((tenant, "text"), 100)
    # What discovery reads.
    c.count_chunks(tenant, "text", "m")
    c.count_chunks(tenant, "text", "m", at_most=10)
    c.count_all_chunks(tenant)
    c.vectors(tenant, "text", "m", 100_000)
    c.unassigned(tenant, "text", "m", 100_000)
    c.vectors_of(tenant, ids, "m")
    c.texts(tenant, ids)
    centroid = np.ones(384, np.float32).tobytes()
    broad = ConceptRow(new_id(), tenant, "text", atom_ids[2], ACTIVE, "group", ["a"], 20,
                       centroid, run.id, AT, AT, BROAD)  # fmt: skip
    rows = [ConceptRow(new_id(), tenant, "text", atom_ids[j], ACTIVE, f"concept {j}", ["a", "b"],
                       10, centroid, run.id, AT, AT, FINE, broad.id) for j in range(2)]  # fmt: skip
    for row in [broad, *rows]:  # inserts
        c.upsert(row)
    c.upsert(replace(rows[0], size=11, updated_at=AT + timedelta(1)))  # updates
    members = [(ids[i], atom_ids[i % 2], i / MANY) for i in range(1, MANY - 3)]
    c.add_members(tenant, members, AT)
    c.memberships(tenant, "text")
    assert c.count_members(tenant, "text") == len(members)
    c.unassigned(tenant, "text", "m", 100_000)
    c.grow(tenant, {rows[0].id: 2, rows[1].id: 1}, AT)
    # The concepts and their members, as the routes read them.
    assert [r.id for r in c.active(tenant, "text")] == sorted(r.id for r in rows)
    assert [r.id for r in c.active(tenant, "text", BROAD)] == [broad.id]
    assert {r.id for r in c.narrower(tenant, broad.id)} == {r.id for r in rows}
    c.all_active(tenant)
    c.any_active(tenant)
    c.active_keys(tenant, "text")
    c.modality_ids(tenant, "text")
    c.get(tenant, rows[0].id)
    c.get_many(tenant, [*(r.id for r in rows), *ids])
    c.page(tenant, 51, None, None, None)
    c.page(tenant, 51, (AT, rows[0].id), "text", ACTIVE, BROAD)
    assert c.is_described_by(tenant, atom_ids[0]) == rows[0].id
    c.members(tenant, [atom_ids[0]], 51, None)
    c.members(tenant, atom_ids[:2], 51, (0.5, ids[MANY // 2]))
    c.of_atom(tenant, ids[1])
    assert list(c.windows(tenant, "text"))  # the document's chunks are a window
    # Search restricted to a concept's members.
    uow.knowledge.allowed_chunks(tenant, SearchFilter(concept_id=rows[0].id))
    uow.knowledge.allowed_chunks(tenant, SearchFilter(concept_id=broad.id))
    uow.knowledge.allowed_chunks(tenant, SearchFilter(modality="text", concept_id=rows[1].id,
                                                      metadata={"team": "red"}))  # fmt: skip
    # The concepts' graph: binding's edges and discovery's lineage.
    graph = [GraphEdge(rows[1].id, "IS_A", rows[0].id, 0.9, {"together": 3}, run.id),
             GraphEdge(rows[0].id, "RELATED", rows[1].id, 0.4, {"together": 3}, run.id),
             GraphEdge(rows[1].id, "SPLIT_FROM", rows[0].id, 0.5, {"member_share": 0.5},
                       run.id)]  # fmt: skip
    c.add_graph_edges(tenant, graph, AT)
    c.add_graph_edges(tenant, [], AT)  # sends nothing
    assert len(c.graph_edges(tenant, BOUND_KINDS)) == 2
    c.graph_edges(tenant, ("IS_A", "RELATED", "SPLIT_FROM", "MERGED_INTO"), rows[0].id)
    c.drop_graph_edges(tenant, graph[:2])
    # A re-run: the old members go, concepts no cluster took retire or merge.
    c.drop_members(tenant, [*atom_ids, *ids])
    c.retire(tenant, [rows[1].id, *ids], RETIRED, AT)
    c.retire(tenant, [rows[0].id], MERGED, AT)
    c.set_summary(tenant, run.id, {"clustered": {"chunks": 1, "k": 2}})
    assert c.finish_run(tenant, run.id, COMPLETED, AT, {"clustered": {"k": 2}})
    assert not c.finish_run(tenant, run.id, "failed", AT, error="replayed")  # it had ended
    assert c.running(tenant, "text") is None
    assert c.called == public_methods(ConceptRepository)


class Calls:
    """A repository whose method calls are recorded by name."""

    def __init__(self, repository: Any) -> None:
        self._repository, self.called = repository, set[str]()

    def __getattr__(self, name: str) -> Any:
        self.called.add(name)
        return getattr(self._repository, name)


def public_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


def drive_effects(uow: UnitOfWork, tenant: str, ids: list[str]) -> None:
    """What the loop's actions write and search reads: associations, duplicate links, the
    answer cache, recorded workflow failures; IN lists past one batch."""
    s = uow.associations
    row = {"id": new_id(), "tenant_id": tenant, "action_id": ids[10], "query": "q", "model": "m",
           "query_vector": np.ones(3, np.float32).tobytes(), "query_atom_id": ids[1],
           "atom_id": ids[2], "created_at": AT}  # fmt: skip
    for _ in range(2):
        s.add_association(row)
        s.add_duplicates(tenant, [(ids[3], ids[4]), (ids[5], ids[4])], ids[11], AT)
    s.association_for_action(tenant, ids[10])
    s.search_signals(tenant, "m", ids[1:41], allowed_chunks_query(tenant, FULL_FILTER))
    s.search_signals(tenant, "m", ids[1:600])
    s.search_signals(tenant, "m", ids[1:41], allowed_chunks_query(tenant, FULL_FILTER), ids[2:5],
                     ("1", None))  # fmt: skip
    s.associations(tenant, "m")
    s.allowed_among(allowed_chunks_query(tenant, FULL_FILTER), ids)
    s.duplicate_links(tenant, ids)
    s.chunk_ids(tenant, ids)
    s.association_count(tenant)
    s.gap_queries(tenant, AT, 200)
    s.gap_queries(tenant, None, 200)
    s.atom_in_use(tenant, ids[1])
    s.chunk_vectors(tenant, ids, "m")
    s.recent_chunk_vectors(tenant, "m", 2000)
    s.remove_duplicates(tenant, ids[11])
    s.remove_association(tenant, ids[10])
    s.forget_atom(tenant, ids[2])
    c = uow.answer_cache
    entry = {"id": new_id(), "tenant_id": tenant, "action_id": ids[12], "cache_key": "0" * 64,
             "prompt": "p", "model_sha256": "0" * 64, "atom_ids": ids[3:5],
             "receipt_id": ids[13], "output_atom_id": ids[2], "created_at": AT}  # fmt: skip
    for _ in range(2):
        c.add(entry)
    c.lookup(tenant, "0" * 64)
    c.for_action(tenant, ids[12])
    c.keys(tenant)
    c.receipts_since(tenant, AT - timedelta(1))
    c.remove(tenant, ids[12])
    f = uow.workflow_failures
    for _ in range(2):
        f.record("wf-failed", tenant, "ingest_document", {"document_id": ids[0]}, "boom", AT)
    f.get(tenant, "wf-failed")
    f.open(tenant, 10)
    f.open_count(tenant)
    f.failed_retries(tenant)
    for _ in range(2):
        f.mark_retried(tenant, "wf-failed", "wf-failed-retry-1")


def drive_autonomy(a: AutonomyRepository, tenant: str, ids: list[str]) -> None:
    """The loop's repository (autonomy/store.py): each method, and each insert-or-ignore
    and compare-and-set twice (the second finds the row there, or the state moved on)."""
    a.policy(tenant)
    for _ in range(2):  # insert, then update
        a.put_policy(tenant, {"budget": {"credits": 1.0}}, "key:k", AT)
    run = RunRecord(ids[6], tenant, "autonomy-x", "api", "running", 5.0, 60, 3, 0, 0.0, None,
                    None, AT, None)  # fmt: skip
    a.add_run(run)
    with pytest.raises(WriteConflict):  # one active run per tenant
        a.add_run(replace(run, id=ids[7]))
    a.run(tenant, run.id)
    a.active_run(tenant)
    a.runs(tenant, 20, (AT, ids[0]))
    a.update_run(tenant, run.id, iterations=1)
    phase = PhaseRecord(tenant, run.id, 1, "analyze", "done", {}, {}, None, None, 0.1, 2.0,
                        AT, AT)  # fmt: skip
    for _ in range(2):
        a.record_phase(phase)
    a.phase(tenant, run.id, 1, "analyze")
    a.phases(tenant, run.id)
    action = ActionRecord(ids[8], tenant, run.id, 1, "cache_answer", 1, {}, "model",
                          "awaiting_approval", None, None, None, None, 0, AT, AT, None,
                          None)  # fmt: skip
    for _ in range(2):
        a.add_actions([action])
    a.action(tenant, action.id)
    a.actions(tenant, run_id=run.id, name="cache_answer", statuses=["approved", "planned"])
    a.update_action(tenant, action.id, AT, attempts=1)
    approval = ApprovalRecord(ids[9], tenant, run.id, action.id, run.instance_id, "pending", AT,
                              AT + timedelta(1), None, None, None)  # fmt: skip
    for _ in range(2):
        a.add_approval(approval)
    a.approval(tenant, approval.id)
    a.approval_for_action(tenant, action.id)
    a.approvals(tenant, "pending", 20, (AT, ids[0]))
    a.pending_until(tenant, run.id)
    for _ in range(2):
        a.decide(tenant, approval.id, "approved", "key:k", AT, "note")
        a.transition(tenant, action.id, ["awaiting_approval"], "approved", AT, decided_by="k")
    letter = DeadLetterRecord(ids[10], tenant, run.id, action.id, "cache_answer", {}, "boom", 5,
                              "parked", AT, AT, None)  # fmt: skip
    for _ in range(2):  # parks, then adds the attempts of a retry that failed again
        a.park(letter)
    a.dead_letter(tenant, letter.id)
    a.dead_letters(tenant, "parked", 20, (AT, ids[0]))
    for _ in range(2):
        a.transition_dead_letter(tenant, letter.id, ["parked"], "retrying", AT, "key:k")
    a.transition_dead_letter(tenant, letter.id, ["retrying"], "parked", AT, updated_at=AT)
    for _ in range(2):
        a.end_run(tenant, run.id, "completed", AT, summary={"iterations": 1}, error=None)


def drive_agent_names(a: AgentRepository, tenant: str) -> None:
    """Agents' names and versions (agents/service.py): each insert-or-ignore twice (the
    second finds the row), each compare-and-set twice (the second finds it moved on)."""
    version = VersionRecord(tenant, "e" * 64, "helper", {"format": "hartonomous.agent/1"},
                            "gemma-3-270m", "0" * 64, 2**40, AT, "key:k")  # fmt: skip
    for _ in range(2):
        a.add_version(version)
        a.point(tenant, "helper", version.id, AT)  # created, then re-pointed
    a.version(tenant, version.id)
    a.versions(tenant, "helper", 21)
    a.versions(tenant, "helper", 21, (AT, version.id))
    a.agent(tenant, "helper")
    a.agents(tenant, 21)
    a.agents(tenant, 21, "helper", retired=True)
    a.pin(tenant, "helper", version.id, AT)
    a.pin(tenant, "helper", None, AT)
    for _ in range(2):
        a.retire(tenant, "helper", AT)


def drive_agent_runs(a: AgentRepository, tenant: str, ids: list[str]) -> None:
    """Agents' runs, steps, violations and approvals (agents/runs.py, the approvals API):
    each insert-or-ignore and compare-and-set twice."""
    run = AgentRunRecord(ids[20], tenant, "helper", "e" * 64, "agent-x", "running", "q", 7, 1.0,
                         6, 600, 0, 0.0, None, None, None, None, AT, None)  # fmt: skip
    a.add_run(run)
    a.run(tenant, run.id)
    a.runs(tenant, 21)
    a.runs(tenant, 21, (AT, ids[0]), "helper")
    a.running(tenant, 16)
    step = StepRecord(ids[21], tenant, run.id, 1, "tool", "save_note", {"text": "t"},
                      "awaiting_approval", None, None, None, 0.0, AT, None)  # fmt: skip
    for _ in range(2):
        a.add_step(step)
    a.add_cost(tenant, run.id, 0.1, 1)
    a.step(tenant, step.id)
    a.steps(tenant, run.id)
    for _ in range(2):
        a.add_violation(ViolationRecord(tenant, run.id, 1, "require_approval", "d", "approval",
                                        AT))  # fmt: skip
    a.violations(tenant, run.id)
    approval = AgentApprovalRecord(ids[22], tenant, run.id, step.id, run.instance_id, "r",
                                   "pending", AT, AT + timedelta(1), None, None, None)  # fmt: skip
    for _ in range(2):
        a.add_approval(approval)
    a.approval(tenant, approval.id)
    a.approvals(tenant, "pending", 21, (AT, ids[0]))
    a.approvals(tenant, None, 21)
    a.run_approvals(tenant, run.id)
    for _ in range(2):
        a.decide(tenant, approval.id, "approved", "key:k", AT, "note")
        a.update_step(tenant, step.id, ["awaiting_approval"], status="approved", decided_by="k")
    for _ in range(2):
        a.end_run(tenant, run.id, "cancelled", AT, error="cancelled by key:k")
    a.update_run(tenant, run.id, receipt={"status": "cancelled"})


def drive_the_azure_only_adapters(tenant: str) -> list[tuple[Any, list[Any]]]:
    """What the Azure world's session setup and vector search send, to a recorder."""
    recorder = DriverRecorder()
    tenant_session_context(recorder, tenant)  # type: ignore[arg-type]
    tenant_session_context(recorder, None)  # type: ignore[arg-type]
    index = SqlVectorIndex(recorder, "m", 384, exact_below=10_000)
    query = np.ones(384, dtype=np.float32)
    index.search(tenant, query, 10)
    index.search(tenant, query, 10, FULL_FILTER)
    return recorder.sent


def test_every_repository_statement_would_run_on_azure_sql(
    platform: Platform, alice: TenantKeys, captured: list[tuple[Any, list[dict[str, Any]]]]
) -> None:
    drive_every_repository(platform, alice.id)
    assert len(captured) > 60
    touched = {getattr(getattr(e, "table", None), "name", None) for e, _ in captured}
    assert {"upload_sessions", "blob_deletions", "blobs"} <= touched
    assert {"learned_associations", "answer_cache", "workflow_failures", "edges"} <= touched
    assert {"autonomy_policies", "autonomy_runs", "autonomy_phases", "autonomy_actions",
            "autonomy_approvals", "autonomy_dead_letters"} <= touched  # fmt: skip
    assert {"agents", "agent_versions"} <= touched
    assert "tenant_plans" in touched
    assert {"credit_accounts", "credit_grants", "credit_holds", "credit_entries", "invoices",
            "stripe_events"} <= touched  # fmt: skip
    assert {"agent_runs", "agent_steps", "agent_violations", "agent_approvals"} <= touched
    assert {"concepts", "concept_runs", "concept_edges", "concept_schedules"} <= touched
    found = [p for element, rows in captured for p in check(element, rows)]
    assert found == []


def test_the_azure_only_driver_sql_names_procedures_that_exist() -> None:
    sent = drive_the_azure_only_adapters("t")
    driver = [sql for sql, _ in sent if isinstance(sql, str)]
    assert any("sp_set_session_context" in sql for sql in driver)
    assert any("search_chunks_by_vector" in sql for sql in driver)
    assert [p for element, rows in sent for p in check(element, rows)] == []


def test_the_contract_catches_what_azure_sql_would_refuse() -> None:
    """The check fails on the filter this code used to send (json_extract), and on one
    unbatched IN list."""
    old_filter = sa.select(atoms.c.id).where(
        sa.func.json_extract(atoms.c.metadata, '$."team"') == "red"
    )
    assert any("JSON_EXTRACT" in p for p in check(old_filter))
    unbatched = sa.select(atoms.c.id).where(atoms.c.id.in_([str(i) for i in range(2101)]))
    assert any("2101 parameters" in p for p in check(unbatched))
    assert check("EXEC dbo.search_chunks_by_vector ?, ?, ?, ?, ?", [(1, 2, 3, 4, 5)]) == []
    assert any("declares" in p for p in check("EXEC dbo.search_chunks_by_vector ?, ?, ?, ?",
                                              [(1, 2, 3, 4)]))  # fmt: skip
    assert any("neither" in p for p in check("EXEC dbo.no_such_procedure ?", [(1,)]))
    assert any("markers" in p for p in check("EXEC dbo.search_chunks_by_vector ?, ?, ?, ?, ?",
                                             [(1, 2)]))  # fmt: skip


def test_the_azure_only_statements_would_run_on_azure_sql() -> None:
    allowed = allowed_chunks_query("t", FULL_FILTER)
    for words in (["mars"], [f"w{i}" for i in range(200)]):
        assert check(keyword_statement("0f0e-ab", words, 40, None)) == []
        assert check(keyword_statement("0f0e-ab", words, 40, allowed)) == []
    query = np.ones(384, dtype=np.float32) / np.sqrt(384)
    statement = filtered_statement("t", "m", query, 48, allowed)
    assert check(statement) == []
    sql, _ = azure_sql(statement, [{}])
    assert "VECTOR_DISTANCE(" in sql
    assert "CAST(? AS VECTOR(384))" in sql and "JSON_VALUE(doc.metadata, ?)" in sql
    assert "TRY_CAST(j.[value] AS FLOAT) FROM OPENJSON(doc.metadata)" in sql  # year: a number


@pytest.mark.parametrize(
    ("table", "column"),
    [(atoms, "metadata"), (outbox, "payload"), (receipts, "body"), (models, "quantization")],
)
def test_json_columns_round_trip_through_the_azure_sql_driver(table: sa.Table, column: str) -> None:
    """What pyodbc would be given and would give back: JSON text both ways."""
    value = {"filename": "naïve ☃.md", "n": 2**70, "nested": {"list": [1, 2.5, None, True]}}
    impl = table.c[column].type.dialect_impl(AZURE)
    bind, result = impl.bind_processor(AZURE), impl.result_processor(AZURE, None)
    assert bind is not None and result is not None
    sent = bind(value)
    assert isinstance(sent, str)
    assert result(sent) == value
    ddl = str(sa.schema.CreateTable(table).compile(dialect=AZURE))
    assert f"{column} NVARCHAR(max)" in ddl
