"""Generation end to end on the real parts: MiniLM retrieval, Gemma 3 270M in llama.cpp,
receipts, lineage, usage and the outbox in SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform
from hartonomous.events.outbox import Event
from hartonomous.inference.llama_engine import open_llama
from hartonomous.inference.model_files import builtin_model
from hartonomous.inference.types import CompletionRequest
from hartonomous.metering.ledger import Usage
from hartonomous.services.clock import utcnow
from hartonomous.store.schema import atoms, edges, outbox, receipts, usage_ledger

SOLAR = """# The planets

Mercury is the smallest planet and the closest to the Sun. It has almost no atmosphere, so
its surface swings from scorching days to freezing nights, and craters cover it like the Moon.

Venus has a thick atmosphere of carbon dioxide that traps heat: it is the hottest planet.
Sulphuric acid clouds hide its surface, which radar maps show to be volcanic plains.

Earth is the only planet known to support life. Liquid water covers most of its surface and
its atmosphere of nitrogen and oxygen shields it from harmful radiation.

Mars is a cold desert world. Its volcano Olympus Mons is the largest in the solar system,
about two and a half times the height of Mount Everest, and its canyons dwarf the Grand Canyon.

Jupiter is a gas giant, the largest planet, with a storm called the Great Red Spot that has
raged for centuries. Dozens of moons orbit it, among them Ganymede, larger than Mercury.

Saturn is famous for its rings of ice and rock. It is so light for its size that it would
float in a bathtub large enough to hold it, and its moon Titan has lakes of methane.

Uranus spins on its side, probably knocked over by an ancient collision, so each pole has
decades of continuous daylight followed by decades of darkness.

Neptune is the windiest planet, with winds faster than the speed of sound. It was found by
mathematics before anyone saw it through a telescope.
"""
QUESTION = "Which planet has the volcano Olympus Mons?"


@pytest.fixture
def gp(pipeline_platform: Platform) -> Platform:
    return pipeline_platform


@pytest.fixture
def api(gp: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(gp)) as c:
        yield c


def ingest(api: TestClient, who, text: str) -> str:
    r = api.post(
        "/v1/ingestions",
        content=text.encode(),
        headers={**who.auth(), "Content-Type": "text/markdown"},
    )
    assert r.status_code == 202, r.text
    assert finish(api, who, r.json())["runtimeStatus"] == "Completed"
    return str(r.json()["atom_id"])


def content(api: TestClient, who, atom_id: str) -> str:
    r = api.get(f"/v1/atoms/{atom_id}/content", headers=who.auth("read"))
    assert r.status_code == 200
    return r.content.decode()


def count(p: Platform, table) -> int:
    with p.engines.read.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_generate_answers_from_retrieved_passages_with_a_receipt(api, gp, llama, tenant_maker):
    alice = tenant_maker(gp, "alice")
    document = ingest(api, alice, SOLAR)
    published: list[Event] = []
    gp.events.subscribe(published.append)

    r = api.post("/v1/generate", json={"prompt": QUESTION, "max_tokens": 12, "k": 3},
                 headers=alice.auth())  # fmt: skip
    assert r.status_code == 200, r.text
    text, receipt = r.json()["text"], r.json()["receipt"]
    roles = [c["role"] for c in receipt["components"]]
    assert roles[0] == "prompt" and roles[-2:] == ["model", "output"]
    retrieved = [c for c in receipt["components"] if c["role"] == "retrieved"]
    assert [c["rank"] for c in retrieved] == list(range(1, len(retrieved) + 1))
    assert retrieved and all(c["document_id"] == document for c in retrieved)
    model = receipt["components"][-2]
    assert model["model_id"] == "gemma-3-270m" and model["sha256"] == builtin_model().sha256
    output = receipt["components"][-1]
    assert content(api, alice, output["atom_id"]) == text

    # Exactly what produced it: the prompt atom, run again on the same model, gives the text.
    prompt = content(api, alice, receipt["components"][0]["atom_id"])
    assert "Olympus Mons" in prompt and prompt.endswith(f"Question: {QUESTION}\nAnswer:")
    again = llama.complete(
        builtin_model(),
        CompletionRequest(prompt, max_tokens=12, stop=tuple(receipt["parameters"]["stop"])),
    )
    assert again.text == text
    assert receipt["tokens"] == {
        "prompt": again.prompt_tokens,
        "completion": again.completion_tokens,
        "total": again.prompt_tokens + again.completion_tokens,
    }
    assert receipt["cost"]["credits"] > 0
    assert set(receipt["timings_ms"]) == {"search_ms", "prompt_ms", "generation_ms", "total_ms"}

    stored = api.get(f"/v1/receipts/{receipt['id']}", headers=alice.auth("read"))
    assert stored.status_code == 200 and stored.json() == receipt

    used = api.get("/v1/usage", headers=alice.auth("read")).json()
    lines = {line["kind"]: line["quantity"] for line in used["lines"]}
    assert lines["generation.prompt_tokens"] == again.prompt_tokens
    assert lines["generation.completion_tokens"] == again.completion_tokens

    gp.outbox.drain()
    assert [(e.topic, e.key) for e in published] == [("generation.completed", receipt["id"])]
    assert published[0].payload == receipt


def test_lineage_walks_from_an_output_to_its_sources_and_back(api, gp, tenant_maker):
    alice = tenant_maker(gp, "alice")
    document = ingest(api, alice, SOLAR)
    receipt = api.post(
        "/v1/generate", json={"prompt": QUESTION, "max_tokens": 4, "k": 2}, headers=alice.auth()
    ).json()["receipt"]
    output = receipt["components"][-1]["atom_id"]
    chunks = {c["atom_id"] for c in receipt["components"] if c["role"] == "retrieved"}

    up = api.get(f"/v1/atoms/{output}/lineage?direction=up&depth=2", headers=alice.auth("read"))
    assert up.status_code == 200, up.text
    nodes = {n["atom_id"]: n for n in up.json()["nodes"]}
    assert chunks <= set(nodes) and document in nodes and nodes[document]["distance"] == 2
    assert receipt["components"][0]["atom_id"] in nodes  # the prompt
    assert nodes[receipt["components"][-2]["card_atom_id"]]["kind"] == "model-card"
    kinds = {e["kind"] for e in up.json()["edges"]}
    assert kinds == {"USED_IN_GENERATION", "GENERATED", "DERIVED_FROM", "HAS_CHUNK"}
    assert all(
        e["receipt_id"] == receipt["id"] for e in up.json()["edges"] if e["kind"] != "HAS_CHUNK"
    )

    # What deleting the document would touch: its chunks, and the output they went into.
    down = api.get(
        f"/v1/atoms/{document}/lineage?direction=down&depth=2", headers=alice.auth("read")
    )
    reached = {n["atom_id"]: n["distance"] for n in down.json()["nodes"]}
    assert reached[output] == 2 and chunks <= set(reached)
    one = api.get(
        f"/v1/atoms/{document}/lineage?direction=down&depth=1", headers=alice.auth("read")
    )
    assert output not in {n["atom_id"] for n in one.json()["nodes"]}


def test_streaming_sends_tokens_then_the_receipt(api, gp, tenant_maker):
    alice = tenant_maker(gp, "alice")
    ingest(api, alice, SOLAR)
    body = {"prompt": QUESTION, "max_tokens": 10, "stream": True}
    with api.stream("POST", "/v1/generate", json=body, headers=alice.auth()) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [block for block in r.read().decode().split("\n\n") if block]
    parsed = [
        (b.split("\n")[0].removeprefix("event: "), json.loads(b.split("\n")[1][6:])) for b in events
    ]
    assert [kind for kind, _ in parsed[:-1]] == ["token"] * (len(parsed) - 1)
    kind, receipt = parsed[-1]
    assert kind == "receipt"
    text = "".join(data["text"] for _, data in parsed[:-1])
    assert content(api, alice, receipt["components"][-1]["atom_id"]) == text


def test_generation_errors_are_problems_and_tenants_stay_apart(api, gp, tenant_maker):
    alice, bob = tenant_maker(gp, "alice"), tenant_maker(gp, "bob")
    receipt = api.post(
        "/v1/generate", json={"prompt": QUESTION, "max_tokens": 2, "k": 0}, headers=alice.auth()
    ).json()["receipt"]
    assert [c["role"] for c in receipt["components"]] == ["prompt", "model", "output"]
    output = receipt["components"][-1]["atom_id"]
    for path in (f"/v1/receipts/{receipt['id']}", f"/v1/atoms/{output}/lineage"):
        r = api.get(path, headers=bob.auth("read"))
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert api.get("/v1/usage", headers=bob.auth("read")).json()["lines"] == []

    for body, status in (
        ({"prompt": QUESTION, "model_id": "no-such-model"}, 404),
        ({"prompt": QUESTION, "model_id": "no-such-model", "stream": True}, 404),
        ({"prompt": ""}, 422),
        ({"prompt": QUESTION, "max_tokens": 5000}, 400),  # over generation_max_tokens
        ({"prompt": QUESTION, "temperature": 3}, 422),
        ({"prompt": QUESTION, "surprise": 1}, 422),
        ({"prompt": "word " * 3000, "k": 0}, 422),  # does not fit the model's context
    ):
        r = api.post("/v1/generate", json=body, headers=alice.auth())
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    assert (
        api.post("/v1/generate", json={"prompt": QUESTION}, headers=alice.auth("read")).status_code
        == 403
    )
    for query, status in (
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 400),  # an empty interval
        ("from=2026-01-01T00:00:00", 422),  # no offset: the schema's date-time refuses it
    ):
        r = api.get(f"/v1/usage?{query}", headers=alice.auth("read"))
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert count(gp, receipts) == 1


def test_a_receipt_is_all_or_nothing(api, gp, tenant_maker, monkeypatch):
    """When any part of the receipt's transaction fails, none of it stays: no receipt, no
    output atom, no edges, no generation usage, no event."""
    from hartonomous.events import outbox as outbox_module

    alice = tenant_maker(gp, "alice")
    ingest(api, alice, SOLAR)
    tables = (atoms, edges, receipts, outbox)

    def state() -> tuple[dict[str, int], int]:
        with gp.engines.read.connect() as conn:
            generation_usage = conn.execute(
                sa.select(sa.func.count())
                .select_from(usage_ledger)
                .where(usage_ledger.c.kind.like("generation.%"))
            ).scalar_one()
        return {t.name: count(gp, t) for t in tables}, generation_usage

    before = state()

    def broken(*args, **kwargs):
        raise RuntimeError("the outbox is down")

    monkeypatch.setattr(outbox_module.OutboxRepository, "add", broken)
    with pytest.raises(RuntimeError, match="outbox is down"):
        api.post("/v1/generate", json={"prompt": QUESTION, "max_tokens": 3}, headers=alice.auth())
    assert state() == before  # the search it ran is still metered, as a search


def test_usage_keys_count_once(gp, tenant_maker):
    alice = tenant_maker(gp, "alice")
    items = [Usage("embedding.texts", 7, "texts")]
    with gp.uow_factory(write=True, tenant_id=alice.id) as uow:
        assert uow.usage.record(alice.id, "embed:doc:1", items, utcnow()) == 1
        assert uow.usage.record(alice.id, "embed:doc:1", items, utcnow()) == 0  # a replay
        uow.commit()
    with gp.uow_factory(write=False, tenant_id=alice.id) as uow:
        (total,) = uow.usage.totals(alice.id, None, None)
    assert (total.kind, total.quantity, total.events) == ("embedding.texts", 7, 1)


def test_searches_and_embedding_batches_are_metered_once(api, gp, tenant_maker):
    alice = tenant_maker(gp, "alice")
    ingest(api, alice, SOLAR)
    with gp.uow_factory(write=False, tenant_id=alice.id) as uow:
        chunk_count = uow.knowledge.document(alice.id, ingest(api, alice, SOLAR)).chunk_count
    headers = {**alice.auth("read"), "X-Request-Id": "retry-me.1"}
    for _ in range(2):  # a retried request with the same id
        assert api.post("/v1/search", json={"query": "volcano"}, headers=headers).status_code == 200
    assert (
        api.post("/v1/search", json={"query": "rings"}, headers=alice.auth("read")).status_code
        == 200
    )
    bad = api.post(
        "/v1/search", json={"query": "x"}, headers={**headers, "X-Request-Id": "no spaces"}
    )
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    gp.knowledge.get().search.writes.flush()
    lines = {x["kind"]: x for x in api.get("/v1/usage", headers=alice.auth("read")).json()["lines"]}
    assert lines["search.queries"]["quantity"] == 2  # the retry counted once
    assert lines["embedding.texts"]["quantity"] == chunk_count  # re-ingesting embedded nothing
    assert lines["search.queries"]["credits"] > 0
    window = "from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z"
    assert api.get(f"/v1/usage?{window}", headers=alice.auth("read")).json()["lines"] == []


def test_a_generations_prompt_and_output_cannot_be_deleted(api, gp, tenant_maker):
    alice = tenant_maker(gp, "alice")
    document = ingest(api, alice, SOLAR)
    receipt = api.post(
        "/v1/generate", json={"prompt": QUESTION, "max_tokens": 2}, headers=alice.auth()
    ).json()["receipt"]
    for component in (receipt["components"][0], receipt["components"][-1]):
        r = api.delete(f"/v1/atoms/{component['atom_id']}", headers=alice.auth())
        assert r.status_code == 409 and receipt["id"] in r.json()["detail"], r.text
    # A source may go: its edges go with it, the receipt keeps naming what was used.
    assert api.delete(f"/v1/atoms/{document}", headers=alice.auth()).status_code == 204
    assert api.get(f"/v1/receipts/{receipt['id']}", headers=alice.auth("read")).json() == receipt


def test_the_engine_counts_exactly_the_tokens_it_samples(llama, gemma):
    """The count comes from llama-cpp-python's per-token callback (less its one final call):
    held here against its own usage on a generation that runs to max_tokens."""
    model = builtin_model()
    prompt = "The capital of France is Paris. The capital of Italy is"
    done = llama.complete(model, CompletionRequest(prompt, max_tokens=7, stop=()))
    raw = open_llama(str(gemma), n_ctx=256, n_threads=2, verbose=False)  # the engine's kernels
    out: dict = raw.create_completion(prompt, max_tokens=7, temperature=0)
    assert done.finish_reason == "length" and done.completion_tokens == 7
    assert out["usage"]["completion_tokens"] == 7 and out["choices"][0]["text"] == done.text
    assert done.prompt_tokens == out["usage"]["prompt_tokens"]
    assert 0 < done.prompt_ms <= done.generation_ms


def test_a_client_leaving_mid_stream_frees_the_model_and_keeps_no_output(gp, llama, tenant_maker):
    """On a real server: a client that goes away must not leave the model's lock held (the
    server would hang the next generation) nor an output without its receipt."""
    import httpx
    from live_server import serving

    alice = tenant_maker(gp, "alice")
    # 600 tokens take this CPU over 10 s: the lock must come back well before they could.
    body = {"prompt": QUESTION, "max_tokens": 600, "k": 0, "stop": ["never"], "stream": True}
    with serving(create_app(gp)) as url, httpx.Client(base_url=url, timeout=60) as client:
        with client.stream("POST", "/v1/generate", json=body, headers=alice.auth()) as r:
            assert r.status_code == 200
            assert next(r.iter_lines()) == "event: token"
        _, lock = llama.loaded(builtin_model())
        assert lock.acquire(timeout=3), "the abandoned stream still holds the model"
        lock.release()
        assert count(gp, receipts) == 0  # no output without its receipt
        r = client.post(
            "/v1/generate", json={**body, "stream": False, "max_tokens": 2}, headers=alice.auth()
        )
        assert r.status_code == 200 and count(gp, receipts) == 1


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_llama_cpp_is_built_without_openmp():
    """torch ships libgomp.so.1 too: an OpenMP llama.cpp would share torch's runtime and
    slow down once torch's thread pools exist (the Makefile builds it without OpenMP)."""
    import subprocess
    import sys

    code = "import llama_cpp; print(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "libllama" in maps.stdout and "libgomp" not in maps.stdout
