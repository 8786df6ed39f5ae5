"""Serving generations to many clients: the per-model queue (503 when full), the tenant's
concurrent generations (429), cancellation when a client goes, and cheap routes answering
while generations wait. Real uvicorn on loopback (a client that really goes away), real
Gemma 3 270M in llama.cpp (the session's), real SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
from live_server import serving
from pydantic import SecretStr

from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.inference.llama_engine import LlamaEngine
from hartonomous.inference.model_files import builtin_model
from hartonomous.inference.openai_http import WorkerInference
from hartonomous.inference.types import Completion, CompletionRequest, Control, ModelRef
from hartonomous.settings import Settings
from hartonomous.store.schema import receipts, usage_ledger
from hartonomous.worker import create_worker_app

PROMPT = "Name the planets of the solar system."
ASK = {"prompt": PROMPT, "k": 0, "max_tokens": 2}
LONG = {**ASK, "max_tokens": 300, "stop": ["never"]}  # about 4 s on 2 cores: cut short


def served(tmp_path: Path, llama: LlamaEngine, **settings: Any) -> Platform:
    return bootstrap(
        Settings(
            data_dir=tmp_path / "data", inference_context_tokens=1024,
            plan_requests_per_second=1000, plan_burst=1000, **settings,
        ),
        inference=llama,
    )  # fmt: skip


@pytest.fixture
def held(llama: LlamaEngine) -> Iterator[Callable[[], None]]:
    """The model's lock taken by the test: a generation that starts waits on it, as behind
    a long one. Yields ``release``."""
    _, lock = llama.loaded(builtin_model())
    lock.acquire()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            lock.release()

    yield release
    release()


def rows(p: Platform, table: sa.Table, tenant_id: str | None = None) -> list[Any]:
    query = sa.select(table)
    if tenant_id is not None:
        query = query.where(table.c.tenant_id == tenant_id)
    with p.engines.read.connect() as c:
        return list(c.execute(query))


def until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


async def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


def waiting(p: Platform) -> int:
    return p.generation.queue.waiting(builtin_model().sha256)


def started(p: Platform) -> int:
    return p.generation.queue.running(builtin_model().sha256)


def send_and_leave(url: str, body: dict[str, Any], key: str) -> socket.socket:
    """A POST /v1/generate sent on a raw socket, for the test to close unanswered."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/generate HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.sendall(head.encode() + data)
    return sock


def test_a_full_queue_refuses_at_once_and_writes_nothing(tmp_path, llama, held, tenant_maker):
    p = served(tmp_path, llama, generation_queue_depth=1, plan_concurrent_generations=5)
    alice = tenant_maker(p, "alice")

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            post = lambda: http.post("/v1/generate", json=ASK, headers=alice.auth())  # noqa: E731
            running = asyncio.ensure_future(post())
            await wait_for(lambda: started(p) == 1, "the first did not start")
            queued = asyncio.ensure_future(post())
            await wait_for(lambda: waiting(p) == 1, "the second did not queue")
            refused = await post()
            assert refused.status_code == 503, refused.text
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert int(refused.headers["retry-after"]) >= 1
            assert rows(p, receipts) == [] and rows(p, usage_ledger) == []
            held()
            assert [(await r).status_code for r in (running, queued)] == [200, 200]
        assert len(rows(p, receipts)) == 2  # the refused one left nothing

    try:
        with serving(create_app(p)) as url:
            asyncio.run(scenario(url))
    finally:
        p.close()


def test_a_tenant_over_its_concurrent_generations_gets_a_429(tmp_path, llama, held, tenant_maker):
    p = served(tmp_path, llama, plan_concurrent_generations=1)
    alice, bob = tenant_maker(p, "alice"), tenant_maker(p, "bob")

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            first = asyncio.ensure_future(http.post("/v1/generate", json=ASK, headers=alice.auth()))
            await wait_for(lambda: started(p) == 1, "alice's generation did not start")
            over = await http.post("/v1/generate", json=ASK, headers=alice.auth())
            assert over.status_code == 429, over.text
            assert int(over.headers["retry-after"]) >= 1
            other = asyncio.ensure_future(http.post("/v1/generate", json=ASK, headers=bob.auth()))
            await wait_for(lambda: waiting(p) == 1, "bob's generation did not queue")
            held()
            assert [(await r).status_code for r in (first, other)] == [200, 200]

    try:
        with serving(create_app(p)) as url:
            asyncio.run(scenario(url))
    finally:
        p.close()


def test_a_client_leaving_a_stream_stops_it_and_pays_only_what_ran(tmp_path, llama, tenant_maker):
    p = served(tmp_path, llama, plan_concurrent_generations=1)
    alice = tenant_maker(p, "alice")
    try:
        with serving(create_app(p)) as url, httpx.Client(base_url=url, timeout=60) as http:
            body = {**LONG, "stream": True}
            with http.stream("POST", "/v1/generate", json=body, headers=alice.auth()) as r:
                assert r.status_code == 200
                assert next(r.iter_lines()) == "event: token"
            until(lambda: len(rows(p, usage_ledger)) == 2, "the cancelled one was not billed")
            billed = {row.kind: row.quantity for row in rows(p, usage_ledger)}
            assert 1 <= billed["generation.completion_tokens"] < LONG["max_tokens"]
            assert billed["generation.prompt_tokens"] > 0
            assert rows(p, receipts) == []  # no receipt for an answer nobody received
            # The model and the tenant's one concurrent generation are free again.
            again = http.post("/v1/generate", json=ASK, headers=alice.auth())
            assert again.status_code == 200, again.text
            assert again.json()["receipt"]["components"][-1]["finish_reason"] in ("stop", "length")
    finally:
        p.close()


def test_a_client_leaving_a_waiting_or_running_request_cancels_it(
    tmp_path, llama, held, tenant_maker
):
    """Waiting when its client goes: dropped, no cost, no rows. Running (not streamed): it
    stops at its next token and pays for what ran."""
    p = served(tmp_path, llama, plan_concurrent_generations=1)
    alice, bob = tenant_maker(p, "alice"), tenant_maker(p, "bob")
    try:
        with serving(create_app(p)) as url:
            running = send_and_leave(url, LONG, alice.write)
            until(lambda: started(p) == 1, "alice's generation did not start")
            queued = send_and_leave(url, ASK, bob.write)
            until(lambda: waiting(p) == 1, "bob's generation did not queue")
            queued.close()
            until(lambda: waiting(p) == 0, "the abandoned request still waits")
            held()
            time.sleep(0.5)  # alice's generation runs
            running.close()
            until(lambda: len(rows(p, usage_ledger, alice.id)) == 2, "alice's was not billed")
            billed = {row.kind: row.quantity for row in rows(p, usage_ledger, alice.id)}
            assert billed["generation.completion_tokens"] < LONG["max_tokens"]
            assert rows(p, usage_ledger, bob.id) == [] and rows(p, receipts) == []
            with httpx.Client(base_url=url, timeout=60) as http:  # both permits came back
                for who in (alice, bob):
                    r = http.post("/v1/generate", json=ASK, headers=who.auth())
                    assert r.status_code == 200, r.text
    finally:
        p.close()


def test_cheap_routes_answer_while_generations_wait(
    tmp_path, llama, held, tenant_maker, monkeypatch
):
    """More waiting generations than the server's shared thread pool has threads (40): had
    each parked a thread, authentication would wait for the model."""
    p = served(tmp_path, llama, generation_queue_depth=60, plan_concurrent_generations=100)
    alice, bob = tenant_maker(p, "alice"), tenant_maker(p, "bob")
    cancelled: list[Control] = []
    cancel = Control.cancel

    def counted(control: Control) -> None:
        cancelled.append(control)
        cancel(control)

    monkeypatch.setattr(Control, "cancel", counted)

    async def scenario(url: str) -> None:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
            flood = [
                asyncio.ensure_future(http.post("/v1/generate", json=ASK, headers=alice.auth()))
                for _ in range(50)
            ]
            await wait_for(lambda: waiting(p) == 49, "the flood did not queue")
            me = await asyncio.wait_for(http.get("/v1/me", headers=bob.auth("read")), 20)
            assert me.status_code == 200
            health = await asyncio.wait_for(http.get("/healthz"), 20)
            assert health.status_code == 200
            for request in flood:
                request.cancel()
            await asyncio.gather(*flood, return_exceptions=True)
        await wait_for(lambda: waiting(p) == 0, "the abandoned flood still waits")
        # Each handler looks for its client every POLL_S, the running one's too: the model is
        # released once all 50 saw theirs leave (before, the running one could miss it).
        await wait_for(lambda: len({id(c) for c in cancelled}) == 50, "a request missed its client")
        held()
        await wait_for(lambda: started(p) == 0, "the abandoned running one did not end")

    try:
        with serving(create_app(p)) as url:
            asyncio.run(scenario(url))
        # The one that held a thread (on the model's lock) saw its cancel once it had the
        # model, before it ran: like the 49 that waited, it cost nothing.
        assert rows(p, receipts) == [] and rows(p, usage_ledger) == []
    finally:
        p.close()


def test_closing_the_stream_from_the_gpu_worker_stops_its_generation(tmp_path, llama, monkeypatch):
    """The platform's adapter closes the worker's stream when its generation is cancelled;
    the worker sees its client gone and stops the engine at its next token."""
    pieces_run: list[int] = []
    real = llama.stream

    def counted(model: ModelRef, request: CompletionRequest) -> Iterator[str | Completion]:
        n = 0
        try:
            for piece in real(model, request):
                n += isinstance(piece, str)
                yield piece
        finally:
            pieces_run.append(n)

    monkeypatch.setattr(llama, "stream", counted)
    settings = Settings(data_dir=tmp_path / "data", worker_key=SecretStr("k"))
    app = create_worker_app(settings, engine=llama, embedder=SimpleNamespace(model_name="none"))
    with serving(app) as url:
        control = Control()
        asked = CompletionRequest(PROMPT, max_tokens=300, stop=(), control=control)
        stream = WorkerInference(url, "k").stream(builtin_model(), asked)
        assert isinstance(next(stream), str)
        control.cancel()
        done = list(stream)[-1]
        assert isinstance(done, Completion) and done.finish_reason == "cancelled"
        until(lambda: pieces_run != [], "the worker's generation did not end")
    assert pieces_run[0] < 150  # of 300: it stopped, it did not run to the end
    # Billed for what ran: the prompt (its count came on the first chunk) and the chunks.
    assert done.prompt_tokens == llama.complete(builtin_model(), CompletionRequest(
        PROMPT, max_tokens=1)).prompt_tokens  # fmt: skip
    assert done.prompt_tokens > 0 and done.completion_tokens >= 1
    assert control.counted >= done.prompt_tokens + 1


def test_the_openapi_documents_what_generate_may_answer(client):
    """A full queue's 503 with its Retry-After, a model not ready (409), and the 499 logged
    for a client that went away, besides the plan's 429."""
    responses = client.get("/openapi.json").json()["paths"]["/v1/generate"]["post"]["responses"]
    assert {"409", "429", "499", "503"} <= set(responses)
    assert "Retry-After" in responses["503"]["headers"]
    assert "application/problem+json" in responses["503"]["content"]


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread nice values: Linux")
def test_generations_run_at_a_lower_cpu_priority_than_the_server():
    # The kernel serves the event loop and other tenants' cheap requests first when the cores
    # are contended: the queue's threads (and llama.cpp's, which inherit it) are niced.
    from hartonomous.generation.queue import GenerationQueue, shape

    assert shape(Settings()).niceness == Settings().generation_niceness == 10

    async def run(niceness: int) -> int:
        queue = GenerationQueue(2, niceness=niceness)
        try:
            ticket = queue.submit(
                "model",
                lambda _: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                Control(),
            )
            done = await ticket.next()
            return int(done.value)
        finally:
            queue.close()

    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert asyncio.run(run(5)) == min(here + 5, 19)
    assert asyncio.run(run(0)) == here
