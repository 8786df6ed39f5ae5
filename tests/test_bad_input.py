"""Bad input, as fuzzing and probing found it: every case answers problem+json with its status
and leaves nothing behind (no atom, no bytes, no staging file, no read that breaks after)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from functions import indexed_app
from hartonomous.api.app import create_app
from hartonomous.api.http_protocol import MAX_HEAD_BYTES, ProblemH11Protocol, problem_protocol
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.domain.metadata import MAX_FILTER_KEYS, MAX_METADATA_DEPTH
from hartonomous.settings import Settings

PROBLEM = "application/problem+json"
JSON_LIMIT = 64 * 1024


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["type"]
    return body


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", max_upload_bytes=1024 * 1024, max_json_body_bytes=JSON_LIMIT
    )


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    """With the local workflow host: the ingestion and model routes need its client."""
    p = bootstrap(settings, functions=indexed_app().get_functions())
    yield p
    p.close()


def nothing_stored(client: TestClient, platform: Platform, who: Any) -> None:
    """No atom, no object, no staging file; and listing the tenant's atoms still works."""
    blobs = platform.settings.resolved_blob_dir
    assert [p for p in (blobs / "objects").rglob("*") if p.is_file()] == []
    staging = blobs / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []
    r = client.get("/v1/atoms", headers=who.auth("read"))
    assert r.status_code == 200 and r.json()["items"] == []


class Chunks:
    """A chunked body (no Content-Length) that counts how much of it was pulled."""

    def __init__(self, chunk: bytes, count: int, head: bytes = b"") -> None:
        self.chunk, self.count, self.head, self.pulled = chunk, count, head, 0

    def __iter__(self) -> Iterator[bytes]:
        if self.head:
            self.pulled += len(self.head)
            yield self.head
        for _ in range(self.count):
            self.pulled += len(self.chunk)
            yield self.chunk


# --- every body that is read whole is bounded ----------------------------------------------


def test_a_declared_json_body_past_the_limit_is_413_unread(client, alice):
    body = b'{"query": "' + b"x" * (JSON_LIMIT + 10) + b'"}'
    r = client.post(
        "/v1/search",
        content=body,
        headers={**alice.auth("read"), "Content-Type": "application/json"},
    )
    problem = assert_problem(r, 413)
    assert problem["limit_bytes"] == JSON_LIMIT
    assert r.headers["connection"] == "close"


def asgi_post(app: Any, path: str, headers: dict[str, str], body: Chunks) -> tuple[int, dict]:
    """The app called as a server would: the body in chunks, no Content-Length. (The
    TestClient reads a streamed body whole before calling the app: it cannot show this.)"""
    pieces = iter(body)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        piece = next(pieces, None)
        if piece is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "server": ("testserver", 80), "client": ("127.0.0.1", 1),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert dict(start["headers"])[b"content-type"] == PROBLEM.encode()
    return start["status"], json.loads(payload)


@pytest.mark.parametrize(
    ("path", "content_type", "scope"),
    [
        ("/v1/search", "application/json", "read"),
        ("/v1/search", "text/plain", "read"),  # read whole too, whatever it says it is
        ("/v1/generate", "application/json", "write"),
        ("/v1/models", "application/json", "write"),  # the {"atom_id": ...} branch
        ("/v1/workflows/x/events/y", "application/json", "write"),
    ],
)
def test_a_chunked_body_is_cut_at_the_limit(platform, alice, path, content_type, scope):
    body = Chunks(b"x" * 4096, count=300 * 256, head=b'{"query": "')  # 300 MiB offered
    headers = {**alice.auth(scope), "Content-Type": content_type}
    status, problem = asgi_post(create_app(platform), path, headers, body)
    assert status == 413 and problem["limit_bytes"] == JSON_LIMIT
    assert body.pulled <= JSON_LIMIT + 4096  # read up to the limit, not one chunk more


def test_streaming_uploads_are_not_bound_by_the_json_limit(client, alice):
    """A JSON document is an atom like any other: its own upload limit applies."""
    document = json.dumps({"items": ["x" * 100] * 2000}).encode()
    assert JSON_LIMIT < len(document) < 1024 * 1024
    r = client.post(
        "/v1/atoms",
        content=Chunks(document, 1),
        headers={**alice.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["size"] == len(document)


# --- metadata filters ----------------------------------------------------------------------


def search(client: TestClient, who: Any, metadata: Any, raw: bytes | None = None) -> Any:
    body = (
        raw
        or json.dumps({"query": "x", "mode": "keyword", "filters": {"metadata": metadata}}).encode()
    )
    return client.post(
        "/v1/search", content=body, headers={**who.auth("read"), "Content-Type": "application/json"}
    )


def test_a_valid_metadata_filter_is_served(client, alice):
    r = search(client, alice, {"lang": "en", "year": 2024, "draft": False, "score": 0.5})
    assert r.status_code == 200, r.text


def test_too_many_filter_keys_are_refused_at_once(tmp_path, client, alice, tenant_maker):
    # 100,000 keys fit in the default JSON limit (1 MiB): refused before any query runs.
    platform = bootstrap(Settings(data_dir=tmp_path / "default"))
    try:
        bob = tenant_maker(platform, "bob")
        with TestClient(create_app(platform)) as default:
            raw = json.dumps(
                {
                    "query": "x",
                    "mode": "keyword",
                    "filters": {"metadata": {str(i): 0 for i in range(100_000)}},
                },
                separators=(",", ":"),
            ).encode()
            assert len(raw) < platform.settings.max_json_body_bytes
            started = time.perf_counter()
            assert_problem(search(default, bob, None, raw=raw), 422)
            assert time.perf_counter() - started < 10  # was 40 s of CPU, then a 500
    finally:
        platform.close()
    assert_problem(search(client, alice, {f"k{i}": 0 for i in range(MAX_FILTER_KEYS + 1)}), 422)
    assert search(client, alice, {f"k{i}": 0 for i in range(MAX_FILTER_KEYS)}).status_code == 200


@pytest.mark.parametrize(
    "metadata",
    [
        {'a"b': 1},
        {"a'b": 1},
        {"": 1},
        {"k" * 65: 1},
        {"a\\b": 1},
        {"a\nb": 1},
        {"k": 2**70},
        {"k": -(2**70)},
        {"k": [1]},
        {"k": {"a": 1}},
        {"k": None},
        {"k": "v" * 1025},
    ],
)
def test_bad_filter_keys_and_values_are_422(client, alice, metadata):
    assert_problem(search(client, alice, metadata), 422)


@pytest.mark.parametrize(
    "raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"\\ud800"', b"9" * 5000]
)
def test_non_finite_huge_or_broken_filter_values_are_422(client, alice, raw):
    body = b'{"query": "x", "mode": "keyword", "filters": {"metadata": {"k": ' + raw + b"}}}"
    r = search(client, alice, None, raw=body)
    assert r.status_code in (400, 422), r.text
    assert r.headers["content-type"] == PROBLEM


# --- atom metadata -------------------------------------------------------------------------


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    "metadata",
    [
        '{"a": "\\ud800"}',  # a lone surrogate: UTF-8 cannot encode it
        '{"\\udfff": 1}',
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": ' + "9" * 5000 + "}",  # past Python's int digits limit
        nested(2_500),
        nested(MAX_METADATA_DEPTH + 1),
        "[1]",
    ],
)
def test_bad_metadata_header_writes_nothing(client, platform, alice, metadata):
    r = client.post(
        "/v1/atoms",
        content=b"some bytes",
        headers={**alice.auth(), "Content-Type": "text/plain", "X-Atom-Metadata": metadata},
    )
    assert_problem(r, 400)
    nothing_stored(client, platform, alice)


def test_metadata_as_deep_as_allowed_is_stored(client, alice):
    r = client.post(
        "/v1/atoms",
        content=b"deep",
        headers={**alice.auth(), "X-Atom-Metadata": nested(MAX_METADATA_DEPTH - 1)},
    )
    assert r.status_code == 201, r.text
    assert client.get("/v1/atoms", headers=alice.auth("read")).status_code == 200


@pytest.mark.parametrize(
    "part", [b'{"a": "\\ud800"}', b'{"a": "\xff\xfe"}', nested(2_500).encode(), b"{"]
)
def test_bad_multipart_metadata_writes_nothing(client, platform, alice, part):
    r = client.post(
        "/v1/atoms",
        files={"file": ("a.txt", b"hello", "text/plain"), "metadata": (None, part)},
        headers=alice.auth(),
    )
    assert_problem(r, 400)
    nothing_stored(client, platform, alice)


# --- malformed and empty bodies ------------------------------------------------------------

UPLOAD_ROUTES = ["/v1/atoms", "/v1/ingestions", "/v1/models"]


@pytest.mark.parametrize("path", UPLOAD_ROUTES)
def test_malformed_multipart_is_400(client, platform, alice, path):
    r = client.post(
        path,
        content=b"--b\r\nx--b--",
        headers={**alice.auth(), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_problem(r, 400)
    nothing_stored(client, platform, alice)


@pytest.mark.parametrize(
    "extra",
    [
        b"X-Pad: " + b"p" * 5000 + b"\r\n",  # one line past python-multipart's 4 KiB
        b"".join(b"X-%d: v\r\n" % i for i in range(9)),  # past its 8 headers
        b"".join(b"X-%d: " % i + b"p" * 3000 + b"\r\n" for i in range(6)),  # ours: 16 KiB
    ],
    ids=["line", "count", "total"],
)
@pytest.mark.parametrize("path", UPLOAD_ROUTES)
def test_multipart_part_headers_past_the_caps_are_400(client, platform, alice, path, extra):
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
        + extra + b"\r\nhello\r\n--b--\r\n"
    )  # fmt: skip
    r = client.post(
        path,
        content=body,
        headers={**alice.auth(), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert "header" in assert_problem(r, 400)["detail"]
    nothing_stored(client, platform, alice)


@pytest.mark.parametrize("path", UPLOAD_ROUTES)
def test_an_empty_body_is_400_not_an_empty_atom(client, platform, alice, path):
    r = client.post(path, headers={**alice.auth(), "Content-Type": "text/plain"})
    assert "empty" in assert_problem(r, 400)["detail"]
    r = client.post(path, files={"file": ("a.txt", b"", "text/plain")}, headers=alice.auth())
    assert "empty" in assert_problem(r, 400)["detail"]
    nothing_stored(client, platform, alice)


def test_a_malformed_media_type_filter_is_refused(client, alice):
    assert_problem(client.get("/v1/atoms?media_type=foo", headers=alice.auth("read")), 422)
    r = client.get("/v1/atoms?media_type=text/plain", headers=alice.auth("read"))
    assert r.status_code == 200


# --- the protocol: 405s, the OpenAPI, uvicorn's own 400s -----------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/atoms/abc", "DELETE, GET"),
        ("DELETE", "/v1/atoms", "GET, POST"),
        ("POST", "/v1/models/abc", "GET"),
        ("POST", "/v1/atoms/abc/content", "GET, HEAD"),
    ],
)
def test_a_405_names_every_method_of_the_path(client, alice, method, path, allowed):
    r = client.request(method, path, headers=alice.auth())
    assert_problem(r, 405)
    assert r.headers["allow"] == allowed


def test_the_openapi_tells_the_configured_max_tokens(tmp_path):
    platform = bootstrap(Settings(data_dir=tmp_path / "d", generation_max_tokens=777))
    try:
        schema = create_app(platform).openapi()
    finally:
        platform.close()
    assert (
        schema["components"]["schemas"]["GenerateIn"]["properties"]["max_tokens"]["maximum"] == 777
    )


def _raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _serving(app: Any, protocol: type) -> Any:
    from live_server import serving

    return serving(app, log_level="critical", http=protocol)


@pytest.mark.parametrize("protocol", [problem_protocol(), ProblemH11Protocol])
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_uvicorns_own_400s_are_problems(platform, protocol, request_bytes):
    with _serving(create_app(platform), protocol) as base:
        status, headers, body = _raw_exchange(base, request_bytes)
    assert status == 400
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["status"] == 400 and problem["type"].endswith("/invalid-input")


@pytest.mark.parametrize(
    ("protocol", "limit"), [(problem_protocol(), MAX_HEAD_BYTES), (ProblemH11Protocol, 16 * 1024)]
)
def test_a_head_past_the_limit_is_a_problem(platform, protocol, limit):
    """One byte past the limit, never finished: refused without waiting for the rest (a
    head of 20 MB was served before)."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    request = head + b"a" * (limit + 1 - len(head))
    with _serving(create_app(platform), protocol) as base:
        status, headers, body = _raw_exchange(base, request)
    assert status == 400 and headers["content-type"] == PROBLEM
    assert json.loads(body)["status"] == 400


# --- a ready model that llama.cpp cannot load ----------------------------------------------


@pytest.fixture
def served_platform(tmp_path: Path, embedder: Any) -> Iterator[Platform]:
    """As `hartonomous serve` builds it: llama.cpp in process, reading the model registry."""
    from functions import runtime

    p = bootstrap(
        Settings(data_dir=tmp_path / "served", inference_context_tokens=1024),
        functions=indexed_app().get_functions(),
        embedder=embedder,
    )
    runtime.use(p)
    yield p
    runtime.use(None)
    p.close()


def test_a_ready_model_llama_cpp_cannot_load_is_a_422(served_platform, tenant_maker, tmp_path):
    """A synthetic GGUF passes ingestion's header checks (it is ready) but has no vocabulary:
    llama.cpp refuses to load it. Asking it to generate says so, streamed or not."""
    from workflow_polling import finish

    from hartonomous.models.synthetic import write_synthetic_gguf

    alice = tenant_maker(served_platform, "alice")
    gguf = write_synthetic_gguf(tmp_path / "tiny.gguf", blocks=1, name="Tiny")
    with TestClient(create_app(served_platform)) as api:
        started = api.post("/v1/models", content=gguf.read_bytes(), headers=alice.auth())
        assert started.status_code == 202, started.text
        assert finish(api, alice, started.json())["runtimeStatus"] == "Completed"
        model_id = started.json()["model_id"]
        assert api.get(f"/v1/models/{model_id}", headers=alice.auth("read")).json()["status"] == (
            "ready"
        )
        for stream in (False, True):
            r = api.post(
                "/v1/generate",
                json={"prompt": "hi", "model_id": model_id, "k": 0, "stream": stream},
                headers=alice.auth(),
            )
            assert "cannot be loaded by llama.cpp" in assert_problem(r, 422)["detail"]
