"""The catch-all HTTP function on Azure Functions HTTP streams, driven as the worker drives it.

With HTTP streams the Python worker serves the host's request on uvicorn with the extension's
``WebApp``, a catch-all route hands the ``fastapi.Request`` to the invocation (its own task,
started from the gRPC loop: a fresh context), and the route returns what the function
returned. ``worker`` below is that, on a real uvicorn on loopback, with the function as the
azure-functions library indexes it and the Durable client binding as the host sends it.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa
from fastapi import Request
from functions_host import durable_binding
from live_server import serving

from functions import runtime
from hartonomous.api.durable import durable_client
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.inference.types import Completion
from hartonomous.settings import Settings
from hartonomous.store.schema import receipts

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
BIG = 512 * MiB
RSS_BOUND = 100 * MiB


@pytest.fixture(scope="module")
def http_api() -> Any:
    """The user function of ``http_api`` as the worker loads it from the indexed app. The
    module is loaded afresh: an app's ``get_functions()`` runs once, and other tests index
    ``function_app`` too."""
    spec = importlib.util.spec_from_file_location("function_app_streamed", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = module.app.get_functions()
    return next(f for f in functions if f.get_function_name() == "http_api").get_user_function()


@contextmanager
def worker(user_function: Any) -> Iterator[str]:
    """The worker's HTTP-streams server around one function; yields its base URL."""
    from azurefunctions.extensions.http.fastapi import RequestSynchronizer, WebApp

    web = WebApp()

    @web.route
    async def catch_all(request: Request) -> Any:
        RequestSynchronizer().sync_route_params(request, {"route": request.url.path[1:]})
        invocation = asyncio.get_running_loop().create_task(
            user_function(req=request, client=durable_binding()), context=contextvars.Context()
        )
        return await invocation

    with serving(web.get_app()) as base:
        yield base


@pytest.fixture
def streams_platform(tmp_path: Path) -> Iterator[Platform]:
    p = bootstrap(Settings(data_dir=tmp_path / "data"))
    runtime.use(p)
    yield p
    runtime.use(None)
    p.close()


@pytest.fixture
def durable_seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str | None]]]:
    """(ASGI message type, Durable client type) at each message the app sends."""
    from functions import http_api as module

    seen: list[tuple[str, str | None]] = []
    module._app.cache_clear()
    app = module._app

    async def spying(scope: Any, receive: Any, send: Any) -> None:
        async def spy_send(message: Any) -> None:
            client = durable_client.get()
            seen.append((message["type"], None if client is None else type(client).__name__))
            await send(message)

        await app()(scope, receive, spy_send)

    monkeypatch.setattr(module, "_app", lambda: spying)
    yield seen
    app.cache_clear()


class PeakRss:
    """The process's peak RSS above its level at start, sampled every 10 ms."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.base = self._process.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.base


def body(size: int, block: bytes, digest: Any) -> Iterator[bytes]:
    for _ in range(size // len(block)):
        digest.update(block)
        yield block


def test_a_large_upload_and_download_stream_with_flat_memory(
    http_api, streams_platform, tenant_maker, durable_seen
):
    alice = tenant_maker(streams_platform, "alice")
    with worker(http_api) as base, httpx.Client(base_url=base, timeout=120) as http:
        assert http.get("/healthz").json()["status"] == "ok"  # the app is built: not measured
        block, sent = os.urandom(MiB), hashlib.sha256()
        rss = PeakRss()
        started = time.perf_counter()
        stored = http.post(
            "/v1/atoms",
            content=body(BIG, block, sent),  # chunked: no Content-Length, never whole
            headers={**alice.auth(), "Content-Type": "application/octet-stream"},
        )
        upload_s = time.perf_counter() - started
        upload_rss = rss.stop()
        assert stored.status_code == 201, stored.text
        atom = stored.json()
        assert atom["size"] == BIG and atom["sha256"] == sent.hexdigest()

        rss, got, chunks = PeakRss(), hashlib.sha256(), 0
        started = time.perf_counter()
        with http.stream("GET", f"/v1/atoms/{atom['id']}/content", headers=alice.auth("read")) as r:
            assert r.status_code == 200 and int(r.headers["content-length"]) == BIG
            for chunk in r.iter_raw():
                got.update(chunk)
                chunks += 1
        download_s = time.perf_counter() - started
        download_rss = rss.stop()
    assert got.hexdigest() == sent.hexdigest() and chunks > 100
    print(
        f"512 MiB through the function: upload {BIG / MiB / upload_s:.0f} MiB/s "
        f"(+{upload_rss / MiB:.0f} MiB RSS), download {BIG / MiB / download_s:.0f} MiB/s "
        f"(+{download_rss / MiB:.0f} MiB RSS)"
    )
    assert upload_rss < RSS_BOUND and download_rss < RSS_BOUND
    # The Durable client was the app's at every message, the body's last chunk included,
    # although the function had returned long before.
    bodies = [client for kind, client in durable_seen if kind == "http.response.body"]
    assert len(bodies) > 100
    assert set(bodies) == {"DurableOrchestrationClient"}


class GatedInference:
    """The real engine, held after its first piece until the client has read that piece:
    a response that is buffered never gets it, and the gate reports that it timed out."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.client_saw_first_piece = threading.Event()
        self.timed_out = False

    def complete(self, model: Any, request: Any) -> Completion:
        raise AssertionError("a streamed generation asks for a stream")

    def stream(self, model: Any, request: Any) -> Iterator[str | Completion]:
        for i, piece in enumerate(self.engine.stream(model, request)):
            yield piece
            if i == 0 and not self.client_saw_first_piece.wait(30):
                self.timed_out = True


def test_generate_sends_sse_events_before_the_generation_ends(
    http_api, tmp_path, llama, tenant_maker
):
    gate = GatedInference(llama)
    p = bootstrap(
        Settings(data_dir=tmp_path / "data", inference_context_tokens=1024), inference=gate
    )
    runtime.use(p)
    try:
        from functions import http_api as module

        module._app.cache_clear()
        alice = tenant_maker(p, "alice")
        ask = {"prompt": "Name the planets of the solar system.", "k": 0, "max_tokens": 24}
        events: list[tuple[str, dict[str, Any]]] = []
        receipts_at_first_event = -1
        stream = {"json": {**ask, "stream": True}, "headers": alice.auth()}
        with (
            worker(http_api) as base,
            httpx.Client(base_url=base, timeout=120) as http,
            http.stream("POST", "/v1/generate", **stream) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            buffer = ""
            for text in r.iter_text():
                buffer += text
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    kind, data = block.split("\n", 1)
                    events.append((kind.removeprefix("event: "), json.loads(data[6:])))
                    if len(events) == 1:
                        receipts_at_first_event = _count(p, receipts)
                        gate.client_saw_first_piece.set()
        assert not gate.timed_out, "the first token reached the client only at the end"
        assert receipts_at_first_event == 0  # the generation was still running
        assert events[0][0] == "token" and events[-1][0] == "receipt"
        assert [kind for kind, _ in events[:-1]] == ["token"] * (len(events) - 1)
        assert _count(p, receipts) == 1
    finally:
        runtime.use(None)
        module._app.cache_clear()
        p.close()


def _count(p: Platform, table: sa.Table) -> int:
    with p.engines.read.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# The relay's edges, on small ASGI apps.


def _run(app: Any, path: str = "/") -> Callable[[], Any]:
    from functions.asgi_relay import relay

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "route": "the worker's",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def call() -> tuple[list[Any], BaseException | None]:
        response = await relay(app, Request(scope, receive))
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        try:
            await response(scope, receive, send)
        except Exception as exc:
            return sent, exc
        return sent, None

    return lambda: asyncio.run(call())


def test_the_relay_passes_the_apps_status_headers_and_chunks():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "route" not in scope and scope["root_path"] == "" and scope["extensions"] == {}
        headers = [(b"x-a", b"1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        await send({"type": "http.response.start", "status": 206, "headers": headers})
        for i in range(10):
            await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})

    sent, error = _run(app)()
    assert error is None
    assert sent[0]["status"] == 206
    assert sent[0]["headers"] == [(b"x-a", b"1"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"0123456789end"
    assert sent[-1].get("more_body", False) is False


def test_an_app_failing_mid_body_breaks_the_response_instead_of_ending_it():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise OSError("disk gone")

    sent, error = _run(app)()
    assert isinstance(error, RuntimeError)
    assert all(m.get("more_body", True) for m in sent[1:])  # no end of body was sent


def test_an_app_failing_before_its_response_fails_the_invocation():
    from functions.asgi_relay import relay

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("broken before the start")

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    with pytest.raises(ValueError, match="broken before the start"):
        asyncio.run(relay(app, Request(scope, receive)))
