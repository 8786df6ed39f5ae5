"""The four actions' effects on the real platform: SQLite, MiniLM, llama.cpp, the local
Durable host. Lift and collapse in search, the answer cache in generation, recorded workflow
failures; each executor idempotent, reversible where it says so, tenant-scoped, measured."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from hashlib import sha256

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.autonomy.actions import build_executors
from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor
from hartonomous.autonomy.records import ActionRecord, RunRecord
from hartonomous.bootstrap import Platform
from hartonomous.errors import Conflict, NotFound, UnprocessableContent
from hartonomous.generation.answer_cache import repeated_prompts
from hartonomous.generation.service import GenerateRequest
from hartonomous.knowledge.associations import DUPLICATE_OF, LEARNED_ASSOCIATION
from hartonomous.knowledge.duplicates import find_near_duplicates
from hartonomous.knowledge.search import LIFT_THRESHOLD, Mode
from hartonomous.knowledge.store import SearchFilter
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.schema import (
    answer_cache,
    atoms,
    blobs,
    edges,
    knowledge_gaps,
    learned_associations,
    outbox,
    receipts,
    usage_ledger,
    workflow_failures,
    workflow_runs,
)

VENUS = (
    "Venus has a thick atmosphere of carbon dioxide that traps heat, making it the hottest planet."
)
MARS = "Mars is a cold desert world with the largest volcano in the solar system, Olympus Mons."
BREAD = "Bread dough needs flour, water, salt and yeast. Knead the dough until it is smooth."
MERCURY = "Mercury is the smallest planet and the closest to the Sun."
MERCURY_TOO = "Mercury is the smallest planet, and it is the closest one to the Sun."
GAP = "which planet is the hottest"
PARAPHRASE = "what is the hottest planet in the solar system"


@pytest.fixture
def ap(pipeline_platform: Platform) -> Platform:
    return pipeline_platform


@pytest.fixture
def api(ap: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(ap)) as c:
        yield c


@pytest.fixture
def executors(ap: Platform) -> dict[str, ActionExecutor]:
    return build_executors(
        ap.uow_factory,
        ap.atoms,
        lambda: ap.knowledge.get().search,
        lambda: ap.knowledge.get().embedder,
        lambda: ap.generation,
        lambda: ap.concepts,
    )


def ingest(api: TestClient, who, text: str, media_type: str = "text/plain") -> dict:
    r = api.post("/v1/ingestions", content=text.encode(), headers={**who.auth(),
                 "Content-Type": media_type})  # fmt: skip
    assert r.status_code == 202, r.text
    return {**r.json(), "status": finish(api, who, r.json())}


def chunk_of(ap: Platform, tenant_id: str, document_id: str) -> str:
    """The one chunk of a one-chunk document."""
    with ap.engines.read.connect() as conn:
        return str(
            conn.execute(
                sa.select(edges.c.dst_id).where(
                    edges.c.tenant_id == tenant_id, edges.c.src_id == document_id,
                    edges.c.kind == "HAS_CHUNK",
                )
            ).scalar_one()
        )  # fmt: skip


def count(ap: Platform, table, *where) -> int:
    with ap.engines.read.connect() as conn:
        query = sa.select(sa.func.count()).select_from(table)
        return int(conn.execute(query.where(*where) if where else query).scalar_one())


def search(ap: Platform, tenant_id: str, query: str, **kw):
    return ap.knowledge.get().search.search(tenant_id=tenant_id, query=query, **kw)


def ctx(tenant_id: str, parameters: dict, action_id: str | None = None, purpose="after"):
    return ActionContext(tenant_id, "run-1", action_id or new_id(), parameters, purpose)


def record_gap(ap: Platform, tenant_id: str, query: str, at=None) -> None:
    """A knowledge gap as a search records it."""
    with ap.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.knowledge.record_gap(tenant_id, query, "hybrid", 0.2, at or utcnow())
        uow.commit()


def add_action(ap: Platform, tenant_id: str, name: str, parameters: dict) -> ActionContext:
    """The action's row, as Hypothesize records it (its created_at freezes what it measures)."""
    now, run_id = utcnow(), new_id()
    with ap.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.autonomy.add_run(RunRecord(run_id, tenant_id, f"run-{run_id}", "api", "running", 5.0,
                                       3600, 3, 1, 0.0, None, None, now, None))  # fmt: skip
        action = ActionRecord(new_id(), tenant_id, run_id, 1, name, 1, parameters,
                              "deterministic", "approved", None, None, None, None, 0, now, now,
                              None, None)  # fmt: skip
        uow.autonomy.add_actions([action])
        uow.commit()
    return ActionContext(tenant_id, run_id, action.id, parameters, "before")


def again(action: ActionContext, purpose: str = "after") -> ActionContext:
    return ActionContext(action.tenant_id, action.run_id, action.action_id, action.parameters,
                         purpose)  # fmt: skip


@pytest.fixture
def corpus(api: TestClient, ap: Platform, tenant_maker) -> dict:
    """alice and bob, each with the same one-chunk documents."""
    out: dict = {}
    for name in ("alice", "bob"):
        who = tenant_maker(ap, name)
        docs = {key: ingest(api, who, text)["atom_id"] for key, text in
                {"venus": VENUS, "mars": MARS, "bread": BREAD}.items()}  # fmt: skip
        out[name] = (who, {k: chunk_of(ap, who.id, d) for k, d in docs.items()}, docs)
    return out


def test_a_learned_association_lifts_its_atom_for_close_queries_only(ap, corpus, executors):
    (alice, chunks, docs), (bob, bob_chunks, _) = corpus["alice"], corpus["bob"]
    embedder = ap.knowledge.get().embedder
    v = embedder.embed([GAP, PARAPHRASE])
    assert float(v[0] @ v[1]) >= LIFT_THRESHOLD  # the premise: a close paraphrase
    assert search(ap, alice.id, PARAPHRASE, k=3)[0].atom_id == chunks["venus"]
    learn = executors["learn_association"]
    record_gap(ap, alice.id, GAP)
    action = ctx(alice.id, {"query": GAP, "atom_id": chunks["mars"]})
    before = learn.measure(ActionContext(alice.id, "run-1", action.action_id, action.parameters,
                                         "before"))  # fmt: skip
    learn.check(action)
    result = learn.apply(action)
    assert learn.apply(action) == result  # twice is once
    assert count(ap, learned_associations) == 1
    assert count(ap, edges, edges.c.kind == LEARNED_ASSOCIATION) == 1

    lifted = search(ap, alice.id, PARAPHRASE, k=3)
    assert lifted[0].atom_id == chunks["mars"] and lifted[0].rank == 1
    assert lifted[0].lifted_by == result["association_id"]
    assert [r.rank for r in lifted] == [1, 2, 3] and lifted[1].atom_id == chunks["venus"]
    assert all(r.lifted_by is None for r in search(ap, alice.id, "knead the bread dough", k=3))
    # Keyword mode has no query vector: the same words, any case and punctuation, lift.
    words = search(ap, alice.id, "Which planet is the HOTTEST?", k=3, mode=Mode.KEYWORD)
    assert words[0].atom_id == chunks["mars"] and words[0].lifted_by
    # A filter the atom does not pass: not lifted.
    only_venus = search(ap, alice.id, PARAPHRASE, k=3, flt=SearchFilter(document_id=docs["venus"]))
    assert [r.atom_id for r in only_venus] == [chunks["venus"]]
    assert only_venus[0].lifted_by is None
    # bob holds the same texts: alice's association changes nothing for him.
    theirs = search(ap, bob.id, PARAPHRASE, k=3)
    assert theirs[0].atom_id == bob_chunks["venus"] and all(r.lifted_by is None for r in theirs)

    after = learn.measure(action)
    assert after.value == 1.0 and after.value > before.value
    assert after.details["queries"][0] == GAP

    learn.revert(action, result)
    learn.revert(action, result)  # idempotent
    assert count(ap, learned_associations) == 0
    assert count(ap, edges, edges.c.kind == LEARNED_ASSOCIATION) == 0
    assert search(ap, alice.id, PARAPHRASE, k=3)[0].atom_id == chunks["venus"]
    # The query atom went with it (not listed, its bytes released); the chunk stays.
    assert count(ap, atoms, atoms.c.id == result["query_atom_id"]) == 0
    assert count(ap, atoms, atoms.c.id == chunks["mars"]) == 1
    held = sa.select(blobs.c.refcount).where(
        blobs.c.sha256 == sha256(GAP.encode()).hexdigest(), blobs.c.refcount > 0
    )
    with ap.engines.read.connect() as conn:
        assert not conn.execute(held).first()


def test_a_reverted_association_keeps_a_query_atom_something_else_names(ap, corpus, executors):
    alice, chunks, _ = corpus["alice"]
    record_gap(ap, alice.id, GAP)
    learn = executors["learn_association"]
    one = ctx(alice.id, {"query": GAP, "atom_id": chunks["mars"]})
    two = ctx(alice.id, {"query": GAP, "atom_id": chunks["bread"]})
    first, second = learn.apply(one), learn.apply(two)
    assert first["query_atom_id"] == second["query_atom_id"]  # the same bytes: one atom
    learn.revert(one, first)
    assert count(ap, atoms, atoms.c.id == first["query_atom_id"]) == 1  # two still names it
    learn.revert(two, second)
    assert count(ap, atoms, atoms.c.id == first["query_atom_id"]) == 0


def test_learn_association_refuses_a_query_that_is_not_a_recorded_gap(ap, corpus, executors):
    """A plan cannot invent the query its association is measured on."""
    alice, chunks, _ = corpus["alice"]
    learn = executors["learn_association"]
    planted = ctx(alice.id, {"query": "how long should I knead bread dough",
                             "atom_id": chunks["mars"]})  # fmt: skip
    with pytest.raises(UnprocessableContent, match="not a recorded knowledge gap"):
        learn.check(planted)
    record_gap(ap, alice.id, GAP)  # a gap on another topic does not make it one
    with pytest.raises(UnprocessableContent, match="not a recorded knowledge gap"):
        learn.apply(planted)
    assert count(ap, learned_associations) == 0
    learn.check(ctx(alice.id, {"query": "Which planet is the HOTTEST?",
                               "atom_id": chunks["venus"]}))  # fmt: skip
    learn.check(ctx(alice.id, {"query": PARAPHRASE, "atom_id": chunks["venus"]}))  # close


def test_learn_association_measures_recorded_gaps_frozen_at_its_creation(ap, corpus, executors):
    """Before and after replay the same recorded queries: not the plan's wording, not gaps
    recorded after the action was planned."""
    alice, chunks, _ = corpus["alice"]
    learn = executors["learn_association"]
    record_gap(ap, alice.id, GAP, utcnow() - timedelta(minutes=1))
    record_gap(ap, alice.id, "zyzzyva quux", utcnow() - timedelta(minutes=1))  # unrelated
    action = add_action(ap, alice.id, "learn_association",
                        {"query": PARAPHRASE, "atom_id": chunks["mars"]})  # fmt: skip
    before = learn.measure(action)
    assert before.details["queries"] == [GAP]  # recorded, not the action's own wording
    assert before.details["cost_credits"] == 0.01  # one search
    record_gap(ap, alice.id, "what is the hottest planet", utcnow() + timedelta(seconds=1))
    learn.apply(again(action, "act"))
    after = learn.measure(again(action))
    assert after.details["queries"] == before.details["queries"]
    assert after.value == 1.0 > before.value


def test_learn_association_refuses_another_tenants_atom(ap, corpus, executors):
    alice, bob_chunks = corpus["alice"][0], corpus["bob"][1]
    action = ctx(alice.id, {"query": GAP, "atom_id": bob_chunks["mars"]})
    with pytest.raises(NotFound):
        executors["learn_association"].check(action)
    with pytest.raises(NotFound):
        executors["learn_association"].apply(action)
    assert count(ap, learned_associations) == 0


def test_duplicates_are_found_marked_collapsed_and_restored(api, ap, corpus, executors):
    (alice, chunks, _), (bob, bob_chunks, _) = corpus["alice"], corpus["bob"]
    first = chunk_of(ap, alice.id, ingest(api, alice, MERCURY)["atom_id"])
    second = chunk_of(ap, alice.id, ingest(api, alice, MERCURY_TOO)["atom_id"])
    model = ap.knowledge.get().embedder.model_name
    found = find_near_duplicates(ap.uow_factory, alice.id, model)
    assert [(d, c) for d, c, _ in found] == [(second, first)]  # the newer is the duplicate
    assert found[0][2] >= 0.95

    shown = {r.atom_id for r in search(ap, alice.id, "the smallest planet", k=5)}
    assert {first, second} <= shown
    mark = executors["mark_duplicates"]
    action = ctx(alice.id, {"pairs": [{"duplicate_id": second, "canonical_id": first}]})
    before = mark.measure(ActionContext(alice.id, "run-1", action.action_id, action.parameters,
                                        "before"))  # fmt: skip
    result = mark.apply(action)
    assert mark.apply(action) == result
    assert count(ap, edges, edges.c.kind == DUPLICATE_OF) == 1
    assert find_near_duplicates(ap.uow_factory, alice.id, model) == []  # linked: not again

    collapsed = [r.atom_id for r in search(ap, alice.id, "the smallest planet", k=5)]
    assert len({first, second} & set(collapsed)) == 1
    assert [r.rank for r in search(ap, alice.id, "the smallest planet", k=5)] == list(
        range(1, len(collapsed) + 1)
    )
    after = mark.measure(action)
    assert before.value < 1.0 and after.value == 1.0
    assert after.details["probes"] == 1 and after.details["cost_credits"] == 0.01  # one search

    mark.revert(action, result)
    mark.revert(action, result)
    assert count(ap, edges, edges.c.kind == DUPLICATE_OF) == 0
    assert {first, second} <= {r.atom_id for r in search(ap, alice.id, "the smallest planet", k=5)}

    # The platform re-checks the planner: not near-duplicates, or not the tenant's chunks.
    with pytest.raises(UnprocessableContent, match="cosine"):
        mark.check(ctx(alice.id, {"pairs": [{"duplicate_id": chunks["mars"],
                                             "canonical_id": chunks["venus"]}]}))  # fmt: skip
    with pytest.raises(NotFound):
        mark.apply(ctx(alice.id, {"pairs": [{"duplicate_id": bob_chunks["mars"],
                                             "canonical_id": first}]}))  # fmt: skip
    assert count(ap, edges, edges.c.kind == DUPLICATE_OF) == 0
    assert bob  # bob's search is untouched by alice's links (edges are per tenant)


def test_collapsing_duplicates_still_shows_k_results(api, ap, corpus):
    """15 chunks, 10 of them duplicates of one: k=5 still shows 5 (the indexes are asked
    deeper, the groups span everything retrieved), in every mode."""
    alice = corpus["alice"][0]
    for i in range(12):
        ingest(api, alice, f"Planet fact {i}: the planet Venus is very hot, note {i * 7919}.")
    ids = [r.atom_id for r in search(ap, alice.id, "Venus is very hot", k=15, mode=Mode.VECTOR)]
    assert len(ids) == 15
    words = search(ap, alice.id, "Venus is very hot", k=15, mode=Mode.KEYWORD)
    with ap.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.associations.add_duplicates(alice.id, [(d, ids[0]) for d in ids[1:11]], "x", utcnow())
        uow.commit()
    # Keyword matches are fewer (every word must appear): as many as their groups.
    groups = {ids[0] if r.atom_id in ids[:11] else r.atom_id for r in words}
    for mode, expected in [(Mode.VECTOR, 5), (Mode.HYBRID, 5), (Mode.KEYWORD, len(groups))]:
        shown = search(ap, alice.id, "Venus is very hot", k=5, mode=mode)
        assert [r.rank for r in shown] == list(range(1, min(expected, 5) + 1)), mode
        assert len(set(ids[:11]) & {r.atom_id for r in shown}) == 1, mode
    assert {r.atom_id for r in search(ap, alice.id, "Venus is very hot", k=5,
                                      mode=Mode.VECTOR)} == {ids[0], *ids[11:]}  # fmt: skip


def test_a_failed_ingestion_is_recorded_and_retried_once(api, ap, tenant_maker, executors):
    alice, bob = tenant_maker(ap, "alice"), tenant_maker(ap, "bob")
    started = ingest(api, alice, " \n\t\n")  # no text: the ingestion fails
    assert started["status"]["runtimeStatus"] == "Failed"
    assert "the document has no text" in started["status"]["error"]
    instance_id = started["instance_id"]
    with ap.uow_factory(write=False, tenant_id=alice.id) as uow:
        (failure,) = uow.workflow_failures.open(alice.id)
    assert failure.instance_id == instance_id and failure.tenant_id == alice.id
    assert failure.name == "ingest_document" and "no text" in failure.error
    assert failure.input == {"tenant_id": alice.id, "document_id": started["atom_id"]}

    retry = executors["retry_failed_workflow"]
    action = ctx(alice.id, {"instance_id": instance_id})
    assert retry.measure(action).value == 0.0  # before: the workflow had failed
    with pytest.raises(NotFound):
        retry.check(ctx(bob.id, {"instance_id": instance_id}))
    retry.check(action)
    result = retry.apply(action)
    assert retry.apply(action) == result  # twice is once
    assert result["instance_id"] == f"{instance_id}-retry-{action.action_id[:8]}"
    assert (result["name"], result["input"]) == ("ingest_document", failure.input)
    assert count(ap, workflow_runs, workflow_runs.c.instance_id == result["instance_id"],
                 workflow_runs.c.tenant_id == alice.id) == 1  # fmt: skip
    # The retry ended without failing: recovered, though another workflow fails meanwhile.
    assert ingest(api, alice, " ")["status"]["runtimeStatus"] == "Failed"
    assert retry.measure(action).value == 1.0
    assert retry.measure(ctx(alice.id, {"instance_id": instance_id})).value == 0.0  # not its own
    with pytest.raises(Conflict):
        retry.check(ctx(alice.id, {"instance_id": instance_id}))  # another action: retried
    # The retry failing in turn counts against it.
    with ap.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.workflow_failures.record(result["instance_id"], alice.id, "ingest_document",
                                     failure.input, "again", utcnow())  # fmt: skip
        uow.commit()
    assert retry.measure(action).value == 0.0
    assert count(ap, workflow_failures) == 3


def generate(ap: Platform, tenant_id: str, **kw):
    request = GenerateRequest(**{"prompt": "Which planet is the hottest?", "k": 2,
                                 "max_tokens": 12, **kw})  # fmt: skip
    return ap.generation.generate(tenant_id, request)


def test_a_cached_answer_costs_nothing_and_is_the_same_text(ap, corpus, executors):
    (alice, _, _), (bob, _, _) = corpus["alice"], corpus["bob"]
    first = generate(ap, alice.id)
    assert first.receipt["tokens"]["completion"] > 0 and "cache" not in first.receipt
    prompt = first.receipt["question"]
    cache = executors["cache_answer"]
    action = ctx(alice.id, {"prompt": prompt, "receipt_id": first.receipt["id"]})
    before = cache.measure(action)
    assert before.value < 0 and not before.details["hit"]
    with pytest.raises(NotFound):
        cache.check(ctx(bob.id, action.parameters))
    with pytest.raises(UnprocessableContent, match="another prompt"):
        cache.check(ctx(alice.id, {**action.parameters, "prompt": "something else"}))
    sampled = generate(ap, alice.id, temperature=0.8, seed=1)
    with pytest.raises(UnprocessableContent, match="sampled"):
        cache.check(ctx(alice.id, {"prompt": prompt, "receipt_id": sampled.receipt["id"]}))

    result = cache.apply(action)
    assert cache.apply(action) == result and count(ap, answer_cache) == 1

    hit = generate(ap, alice.id)
    assert hit.text == first.text
    assert hit.receipt["cache"] == {"hit": True, "source_receipt_id": first.receipt["id"]}
    assert hit.receipt["tokens"] == {"prompt": 0, "completion": 0, "total": 0}
    assert hit.receipt["cost"]["credits"] == 0
    with ap.engines.read.connect() as conn:
        used = conn.execute(
            sa.select(usage_ledger.c.kind, usage_ledger.c.quantity).where(
                usage_ledger.c.key == f"receipt:{hit.receipt['id']}"
            )
        ).all()
    assert dict(used) == {"generation.prompt_tokens": 0, "generation.completion_tokens": 0}
    pieces = list(ap.generation.stream(alice.id, GenerateRequest(prompt=prompt, k=2,
                                                                  max_tokens=12)))  # fmt: skip
    assert pieces[0] == first.text and pieces[1].receipt["cache"]["hit"]  # one piece

    assert "cache" not in generate(ap, alice.id, temperature=0.8, seed=1).receipt
    assert "cache" not in generate(ap, alice.id, k=1).receipt  # other atoms retrieved: a miss
    assert "cache" not in generate(ap, alice.id, max_tokens=11).receipt
    assert "cache" not in generate(ap, bob.id).receipt  # bob's own cache is empty

    after = cache.measure(action)
    assert after.value == 0.0 and after.details["hit"] and after.value > before.value

    cache.revert(action, result)
    cache.revert(action, result)
    assert count(ap, answer_cache) == 0
    assert "cache" not in generate(ap, alice.id).receipt


def test_measuring_a_cached_answer_records_nothing_but_the_runs_usage(ap, corpus, executors):
    """A replay is no generation of the customer's: no receipt, event, gap or repeat."""
    alice = corpus["alice"][0]
    since = utcnow() - timedelta(minutes=5)
    first = generate(ap, alice.id, prompt="zxqv blorp frobnicate?")  # a knowledge gap
    writes = ap.knowledge.get().search.writes
    writes.flush()
    cache = executors["cache_answer"]
    action = ctx(alice.id, {"prompt": first.receipt["question"],
                            "receipt_id": first.receipt["id"]})  # fmt: skip
    held = [count(ap, t) for t in (receipts, outbox, knowledge_gaps, atoms)]
    measured = [cache.measure(action), cache.measure(action)]
    writes.flush()
    assert [count(ap, t) for t in (receipts, outbox, knowledge_gaps, atoms)] == held
    assert repeated_prompts(ap.uow_factory, alice.id, since, min_count=1)[0].count == 1
    key = f"autonomy:run-1:{action.action_id}:after:0"
    with ap.engines.read.connect() as conn:
        used = conn.execute(
            sa.select(usage_ledger.c.key, usage_ledger.c.kind, usage_ledger.c.quantity).where(
                usage_ledger.c.key.in_([key, f"search:{key}"])
            )
        ).all()
    tokens = first.receipt["tokens"]  # measured twice, counted once: the same key
    assert sorted(used) == sorted(
        [(key, "generation.prompt_tokens", tokens["prompt"]),
         (key, "generation.completion_tokens", tokens["completion"]),
         (f"search:{key}", "search.queries", 1)]
    )  # fmt: skip
    credits = first.receipt["cost"]["credits"]
    assert measured[0].value == -credits and measured[0].details["credits"] == credits
    assert measured[0].details["cost_credits"] == round(credits + 0.01, 6)


def test_receipts_record_their_filters_and_a_replay_uses_them(ap, corpus, executors):
    alice, chunks, docs = corpus["alice"]
    since = utcnow() - timedelta(1)
    first = generate(ap, alice.id, filters=SearchFilter(document_id=docs["venus"],
                                                        created_after=since))  # fmt: skip
    filters = first.receipt["parameters"]["filters"]
    assert filters == {"document_id": docs["venus"], "created_after": since.isoformat()}
    assert [c["atom_id"] for c in first.receipt["components"] if c["role"] == "retrieved"] == [
        chunks["venus"]
    ]
    assert generate(ap, alice.id).receipt["parameters"]["filters"] == {}
    cache = executors["cache_answer"]
    action = ctx(alice.id, {"prompt": first.receipt["question"],
                            "receipt_id": first.receipt["id"]})  # fmt: skip
    before = cache.measure(again(action, "before"))
    assert before.details["atom_ids"] == [chunks["venus"]] and not before.details["hit"]
    cache.apply(action)
    after = cache.measure(action)
    assert after.details["hit"] and after.value == 0.0 > before.value


def test_repeated_prompts_groups_by_the_whole_request(ap, corpus):
    """The same question with another token limit or filter is another request: one cache
    entry would not serve them all."""
    alice, _, docs = corpus["alice"]
    since = utcnow() - timedelta(minutes=5)
    for _ in range(3):
        latest = generate(ap, alice.id, k=0, max_tokens=4).receipt
    for _ in range(2):
        generate(ap, alice.id, k=0, max_tokens=5)
    generate(ap, alice.id, k=0, max_tokens=4, filters=SearchFilter(document_id=docs["mars"]))
    (found,) = repeated_prompts(ap.uow_factory, alice.id, since)
    assert (found.count, found.latest_receipt_id) == (3, latest["id"])
    assert len(repeated_prompts(ap.uow_factory, alice.id, since, min_count=1)) == 3


def test_repeated_prompts_lists_greedy_questions_not_yet_cached(ap, corpus, executors):
    alice = corpus["alice"][0]
    since = utcnow() - timedelta(minutes=5)
    made = [generate(ap, alice.id, k=0, max_tokens=4).receipt for _ in range(3)]
    generate(ap, alice.id, prompt="Asked once", k=0, max_tokens=4)
    (found,) = repeated_prompts(ap.uow_factory, alice.id, since)
    assert (found.prompt, found.count) == ("Which planet is the hottest?", 3)
    assert found.latest_receipt_id == made[-1]["id"] and found.mean_credits > 0
    assert repeated_prompts(ap.uow_factory, corpus["bob"][0].id, since) == []
    executors["cache_answer"].apply(
        ctx(alice.id, {"prompt": found.prompt, "receipt_id": found.latest_receipt_id})
    )
    assert repeated_prompts(ap.uow_factory, alice.id, since) == []


def test_chunk_ids_asks_for_the_tenants_chunks_only(ap, tenant_maker):
    """The tenant is in the statement (another tenant's rows are never read), not a filter
    in Python, and the atom ids' unique index still leads (not the tenant's whole index)."""
    alice = tenant_maker(ap, "alice")
    seen: list[tuple[str, tuple]] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    sa.event.listen(ap.engines.read, "before_cursor_execute", listen)
    try:
        with ap.uow_factory(write=False, tenant_id=alice.id) as uow:
            assert uow.associations.chunk_ids(alice.id, [f"a{i}" for i in range(60)]) == set()
    finally:
        sa.event.remove(ap.engines.read, "before_cursor_execute", listen)
    ((select, parameters),) = [(s, p) for s, p in seen if "FROM chunks" in s]
    assert "chunks.tenant_id" in select.split("WHERE")[1] and alice.id in parameters
    with ap.engines.read.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {select}", parameters).all()
    assert "(atom_id=?)" in str(plan), plan


def test_associations_are_capped_per_tenant(ap, corpus):
    """Every search reads them: a tenant at autonomy_max_associations is refused more."""
    alice, chunks, _ = corpus["alice"]
    assert ap.settings.autonomy_max_associations == 1000  # the default
    learn = build_executors(
        ap.uow_factory, ap.atoms, lambda: ap.knowledge.get().search,
        lambda: ap.knowledge.get().embedder, lambda: ap.generation, lambda: ap.concepts,
        max_associations=1,
    )["learn_association"]  # fmt: skip
    record_gap(ap, alice.id, GAP)
    first = ctx(alice.id, {"query": GAP, "atom_id": chunks["mars"]})
    learn.apply(first)
    learn.apply(first)  # its own replay is no new association
    with pytest.raises(Conflict, match="autonomy_max_associations = 1") as refused:
        learn.check(ctx(alice.id, {"query": GAP, "atom_id": chunks["bread"]}))
    assert refused.value.status == 409
    assert count(ap, learned_associations) == 1
    learn.revert(first, {})
    learn.check(ctx(alice.id, {"query": GAP, "atom_id": chunks["bread"]}))


def test_search_reads_a_tenants_associations_once_while_they_are_unchanged(ap, corpus, executors):
    """Held in process by their version: a search reads their rows only after a change."""
    alice, chunks, _ = corpus["alice"]
    record_gap(ap, alice.id, GAP)
    learn = executors["learn_association"]
    action = ctx(alice.id, {"query": GAP, "atom_id": chunks["mars"]})
    result = learn.apply(action)
    seen: list[str] = []

    def listen(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    def rows_read(query: str) -> tuple[int, str]:
        seen.clear()
        top = search(ap, alice.id, query, k=3)[0].atom_id
        return sum("query_vector" in s for s in seen), top

    sa.event.listen(ap.engines.read, "before_cursor_execute", listen)
    try:
        assert rows_read(PARAPHRASE) == (1, chunks["mars"])  # the first search reads them
        assert rows_read(PARAPHRASE) == (0, chunks["mars"])  # then only their version
        assert rows_read("knead the bread dough") == (0, chunks["bread"])
        learn.revert(action, result)
        assert rows_read(PARAPHRASE) == (1, chunks["venus"])  # changed: read again
        assert rows_read(PARAPHRASE) == (0, chunks["venus"])
    finally:
        sa.event.remove(ap.engines.read, "before_cursor_execute", listen)
