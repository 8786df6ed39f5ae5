"""Capability search end to end: documents and a model ingested by their real workflows
(local Durable host, MiniLM, SQLite FTS5), then ``POST /v1/capabilities/search``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from workflow_polling import finish

from conftest import TenantKeys, make_tenant
from functions import indexed_app, runtime
from hartonomous.agents.capabilities import BUILTIN_PROFILE, CapabilityService
from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.inference.types import BUILTIN_MODEL
from hartonomous.knowledge.embeddings import MiniLMEmbedder
from hartonomous.knowledge.search import Mode, SearchResult
from hartonomous.models.synthetic import write_synthetic_gguf
from hartonomous.settings import Settings

CHESS = """# Chess openings

The Sicilian Defence answers 1.e4 with 1...c5 and fights for the centre from the flank.
The Queen's Gambit offers a pawn on c4 to pull Black's d-pawn away from the centre.
A player who knows these openings plays the first moves of a chess game with a plan.
"""
COOKING = """# Baking bread

Bread dough needs flour, water, salt and yeast. Knead the dough until it is smooth and
elastic, then let it rise in a warm place until it doubles in size.
"""
BOBS_CHESS = """# Endgames in chess

King and pawn against king: the opposition decides whether the pawn promotes. Rooks belong
behind passed pawns. Checkmate with king and queen against a lone king in ten moves.
"""
SEARCH = "/v1/capabilities/search"


@dataclass
class World:
    api: TestClient
    platform: Platform
    service: CapabilityService
    alice: TenantKeys
    bob: TenantKeys
    chess: str  # alice's chess document
    cooking: str
    bobs_chess: str
    model: dict[str, Any]  # alice's model
    bobs_model: dict[str, Any]


def ingest(api: TestClient, who: TenantKeys, text: str, filename: str) -> str:
    headers = {**who.auth(), "Content-Type": "text/markdown",
               "X-Atom-Metadata": json.dumps({"filename": filename})}  # fmt: skip
    r = api.post("/v1/ingestions", content=text.encode(), headers=headers)
    assert r.status_code == 202, r.text
    assert finish(api, who, r.json())["runtimeStatus"] == "Completed"
    return str(r.json()["atom_id"])


def ingest_model(api: TestClient, who: TenantKeys, path: Path) -> dict[str, Any]:
    headers = {**who.auth(), "Content-Type": "application/octet-stream"}
    r = api.post("/v1/models", content=path.read_bytes(), headers=headers)
    assert r.status_code == 202, r.text
    assert finish(api, who, r.json())["runtimeStatus"] == "Completed"
    model = api.get(f"/v1/models/{r.json()['model_id']}", headers=who.auth("read")).json()
    assert model["status"] == "ready"
    return dict(model)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, embedder: MiniLMEmbedder) -> Iterator[World]:
    """One platform for the module (its tests only read): alice with a chess and a cooking
    document and a model described as a chess engine; bob with his own chess document and
    model."""
    tmp = tmp_path_factory.mktemp("capabilities")
    platform = bootstrap(
        Settings(data_dir=tmp / "data"), functions=indexed_app().get_functions(), embedder=embedder
    )
    runtime.use(platform)
    chess_engine = write_synthetic_gguf(
        tmp / "chess.gguf", name="Knight Rider",
        extra=lambda w: w.add_description("A chess engine that plays chess and suggests moves"),
    )  # fmt: skip
    bobs_engine = write_synthetic_gguf(
        tmp / "bob.gguf", name="Bob's grandmaster", seed=1,
        extra=lambda w: w.add_description("Plays chess at grandmaster strength"),
    )  # fmt: skip
    with TestClient(create_app(platform)) as api:
        alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
        yield World(
            api=api,
            platform=platform,
            service=platform.capabilities,
            alice=alice,
            bob=bob,
            chess=ingest(api, alice, CHESS, "chess.md"),
            cooking=ingest(api, alice, COOKING, "bread.md"),
            bobs_chess=ingest(api, bob, BOBS_CHESS, "endgames.md"),
            model=ingest_model(api, alice, chess_engine),
            bobs_model=ingest_model(api, bob, bobs_engine),
        )
    runtime.use(None)
    platform.close()


def find(world: World, body: dict[str, Any], who: TenantKeys | None = None) -> dict[str, Any]:
    r = world.api.post(SEARCH, json=body, headers=(who or world.alice).auth("read"))
    assert r.status_code == 200, r.text
    return dict(r.json())


def of(found: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in found["items"] if i["kind"] == kind]


def test_chess_capabilities_rank_the_chess_document_and_model_inside_the_tenant(world, embedder):
    found = find(world, {"query": "chess-playing capabilities", "k": 50})
    assert found["query"] == "chess-playing capabilities"
    assert found["kinds_unavailable"] == []
    scores = [i["score"] for i in found["items"]]
    assert scores == sorted(scores, reverse=True)
    assert {i["kind"] for i in found["items"]} == {"model", "knowledge", "tool"}

    knowledge = of(found, "knowledge")
    assert knowledge[0]["document_id"] == world.chess
    assert knowledge[0]["filename"] == knowledge[0]["title"] == "chess.md"
    assert "Sicilian" in knowledge[0]["why"]["passage"]
    assert {k["document_id"] for k in knowledge} == {world.chess, world.cooking}

    models = of(found, "model")
    assert [m["id"] for m in models] == [world.model["id"], BUILTIN_MODEL]
    mine = models[0]
    assert mine["title"] == "Knight Rider" and mine["status"] == "ready"
    assert "chess engine" in mine["why"]["passage"]
    assert mine["why"]["vector_score"] == pytest.approx(mine["score"])
    # The model's profile is a model, never knowledge.
    assert world.model["profile_atom_id"] not in {k["document_id"] for k in knowledge}

    # One scale for every kind: the cosine of the query's and the item's embeddings.
    query = embedder.embed(["chess-playing capabilities"])[0]
    builtin = next(m for m in models if m["id"] == BUILTIN_MODEL)
    assert builtin["score"] == pytest.approx(float(embedder.embed([BUILTIN_PROFILE])[0] @ query),
                                             abs=1e-3)  # fmt: skip
    chunk = embedder.embed([knowledge[0]["why"]["passage"]])[0]
    assert knowledge[0]["score"] == pytest.approx(float(chunk @ query), abs=1e-3)
    assert knowledge[0]["score"] > knowledge[-1]["score"]


def test_another_tenants_documents_and_models_never_appear(world):
    found = find(world, {"query": "chess endgames: king and pawn, checkmate", "k": 50})
    ids = {i["id"] for i in found["items"]} | {i["document_id"] for i in found["items"]}
    assert world.bobs_chess not in ids and world.bobs_model["id"] not in ids
    assert world.bobs_model["profile_atom_id"] not in ids
    bobs = find(world, {"query": "chess endgames: king and pawn, checkmate", "k": 50}, world.bob)
    assert of(bobs, "knowledge")[0]["document_id"] == world.bobs_chess
    assert of(bobs, "model")[0]["id"] == world.bobs_model["id"]
    seen = {i["id"] for i in bobs["items"]} | {i["document_id"] for i in bobs["items"]}
    assert not seen & {world.chess, world.cooking, world.model["id"]}


def test_a_query_about_searching_documents_finds_the_search_tool_first(world):
    found = find(world, {"query": "search the documents for relevant passages", "kinds": ["tool"]})
    tools = found["items"]
    assert tools and {t["kind"] for t in tools} == {"tool"}
    assert tools[0]["id"] == tools[0]["title"] == "search"
    assert tools[0]["callers"] == ["agent"] and tools[0]["requires_approval"] is False
    assert "search" in tools[0]["why"]["shared_words"]
    assert found["kinds_unavailable"] == []


def test_kinds_filter(world):
    knowledge = find(world, {"query": "how long should dough rise", "kinds": ["knowledge"]})
    assert knowledge["items"] and {i["kind"] for i in knowledge["items"]} == {"knowledge"}
    assert knowledge["items"][0]["document_id"] == world.cooking
    models = find(world, {"query": "a small chat model", "kinds": ["model", "concept"], "k": 1})
    assert len(models["items"]) == 1 and models["items"][0]["kind"] == "model"
    assert models["kinds_unavailable"] == []
    engine = find(world, {"query": "which model suggests moves", "kinds": ["model"]})["items"]
    assert engine[0]["id"] == world.model["id"]
    assert any("<mark>suggests</mark>" in h for h in engine[0]["why"]["highlights"])
    concepts = find(world, {"query": "anything", "kinds": ["concept"]})  # none discovered yet
    assert concepts == {"query": "anything", "items": [], "kinds_unavailable": []}
    assert len(find(world, {"query": "chess", "k": 3})["items"]) == 3


def test_a_keyword_only_hit_is_scored_from_its_stored_embedding(world, embedder):
    """A hit without a vector score (found by its words alone) gets its chunk's cosine."""
    from hartonomous.knowledge.runtime import Knowledge

    platform_knowledge: Knowledge = world.service.knowledge()
    hit = platform_knowledge.search.search(
        tenant_id=world.alice.id, query="Sicilian", k=1, mode=Mode.KEYWORD
    )[0]
    assert hit.vector_score is None
    query = embedder.embed(["Sicilian"])[0]
    scores = world.service._cosines(platform_knowledge, world.alice.id, query, [hit])
    expected = float(embedder.embed([hit.text])[0] @ query)
    assert scores[hit.atom_id] == pytest.approx(expected, abs=1e-3)
    stranger = SearchResult(hit.atom_id, 0.0, 1, hit.text, None, None, None, None, [])
    assert world.service._cosines(platform_knowledge, world.bob.id, query, [stranger]) == {
        hit.atom_id: 0.0
    }  # another tenant's chunk lends it no vector


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"query": ""},
        {"query": "x" * 2001},
        {"query": "chess", "k": 0},
        {"query": "chess", "k": 51},
        {"query": "chess", "k": True},
        {"query": "chess", "kinds": ["planet"]},
        {"query": "chess", "kinds": []},
        {"query": "chess", "kinds": ["tool", "tool"]},
        {"query": "chess", "kinds": "tool"},
        {"query": "chess", "mode": "hybrid"},
    ],
)
def test_bad_input_is_a_422_problem(world, body):
    r = world.api.post(SEARCH, json=body, headers=world.alice.auth("read"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def searches(world: World) -> int:
    world.platform.knowledge.flush()
    r = world.api.get("/v1/usage", headers=world.alice.auth("read"))
    return sum(line["quantity"] for line in r.json()["lines"] if line["kind"] == "search.queries")


def test_a_request_counts_as_one_search_and_its_retry_as_none(world):
    before = searches(world)
    headers = {**world.alice.auth("read"), "X-Request-Id": "capabilities-1"}
    for _ in range(2):
        r = world.api.post(SEARCH, json={"query": "chess openings", "k": 20}, headers=headers)
        assert r.status_code == 200
    assert searches(world) == before + 1


def test_a_key_is_needed(world):
    assert world.api.post(SEARCH, json={"query": "chess"}).status_code == 401
    assert np.isfinite(find(world, {"query": "chess"})["items"][0]["score"])
