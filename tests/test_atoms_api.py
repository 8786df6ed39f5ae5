"""The atoms API over the real app, the real SQLite store and the real local blob folder."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from fastapi.testclient import TestClient

from hartonomous.bootstrap import Platform
from hartonomous.services.maintenance import collect_blobs

PROBLEM = "application/problem+json"


def put(client: TestClient, who, data: bytes, **headers: str):
    return client.post(
        "/v1/atoms",
        content=data,
        headers={"Content-Type": "text/plain", **who.auth(), **headers},
    )


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    return body


def staging_files(platform: Platform) -> list:
    return list((platform.settings.resolved_blob_dir / "staging").iterdir())


def object_files(platform: Platform) -> list:
    return [p for p in (platform.settings.resolved_blob_dir / "objects").rglob("*") if p.is_file()]


# --- storing and dedup ---------------------------------------------------------------


def test_raw_upload_creates_an_atom(client, alice):
    r = put(client, alice, b"hello atoms", **{"X-Atom-Metadata": '{"source": "test"}'})
    assert r.status_code == 201
    body = r.json()
    assert body["sha256"] == hashlib.sha256(b"hello atoms").hexdigest()
    assert body["size"] == 11
    assert body["media_type"] == "text/plain"
    assert body["modality"] == "text"
    assert body["metadata"] == {"source": "test"}
    assert body["deduplicated"] is False
    assert r.headers["location"] == f"/v1/atoms/{body['id']}"
    assert (
        client.get(f"/v1/atoms/{body['id']}", headers=alice.auth("read")).json()["sha256"]
        == (body["sha256"])
    )


def test_same_bytes_twice_return_the_same_atom(client, platform, alice):
    first = put(client, alice, b"same bytes")
    second = put(client, alice, b"same bytes", **{"Content-Type": "application/octet-stream"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["deduplicated"] is True
    assert second.json()["media_type"] == "text/plain"  # the atom as first stored
    assert len(object_files(platform)) == 1
    assert staging_files(platform) == []


def test_dedup_is_per_tenant_and_bytes_are_stored_once(client, platform, alice, bob):
    a = put(client, alice, b"shared secret bytes")
    b = put(client, bob, b"shared secret bytes")
    # Bob cannot tell that Alice holds these bytes: a fresh atom, not deduplicated.
    assert (a.status_code, b.status_code) == (201, 201)
    assert b.json()["deduplicated"] is False
    assert a.json()["id"] != b.json()["id"]
    assert len(object_files(platform)) == 1


def test_multipart_upload_streams_the_file_part(client, alice):
    r = client.post(
        "/v1/atoms",
        files={"file": ("notes.md", b"# Title\n", "text/markdown")},
        data={"metadata": json.dumps({"lang": "en"})},
        headers=alice.auth(),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["media_type"] == "text/markdown"
    assert body["metadata"] == {"lang": "en", "filename": "notes.md"}
    assert body["sha256"] == hashlib.sha256(b"# Title\n").hexdigest()


def test_multipart_guesses_the_media_type_from_the_file_name(client, alice):
    r = client.post(
        "/v1/atoms",
        files={"file": ("page.html", b"<p>hi</p>", "application/octet-stream")},
        headers=alice.auth(),
    )
    assert r.status_code == 201
    assert r.json()["media_type"] == "text/html"


def test_multipart_without_a_file_part_is_a_400(client, platform, alice):
    r = client.post(
        "/v1/atoms", data={"metadata": "{}"}, headers=alice.auth(), files={"other": ("x", b"y")}
    )
    assert "unexpected form field" in assert_problem(r, 400)["detail"]
    r = client.post(
        "/v1/atoms",
        content=b'--b\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{}\r\n--b--\r\n',
        headers={**alice.auth(), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert "'file' part" in assert_problem(r, 400)["detail"]
    assert staging_files(platform) == []


def test_truncated_multipart_is_a_400_and_keeps_nothing(client, platform, alice):
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc'
    r = client.post(
        "/v1/atoms",
        content=body,
        headers={**alice.auth(), "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert_problem(r, 400)
    assert staging_files(platform) == [] and object_files(platform) == []


def test_bad_metadata_and_media_type_are_400s(client, platform, alice):
    assert (
        "not valid JSON"
        in assert_problem(put(client, alice, b"x", **{"X-Atom-Metadata": "{nope"}), 400)["detail"]
    )
    assert (
        "JSON object"
        in assert_problem(put(client, alice, b"x", **{"X-Atom-Metadata": "[1, 2]"}), 400)["detail"]
    )
    assert (
        "media type"
        in assert_problem(put(client, alice, b"x", **{"Content-Type": "not a media type"}), 400)[
            "detail"
        ]
    )
    assert staging_files(platform) == [] and object_files(platform) == []
    assert client.get("/v1/atoms", headers=alice.auth("read")).json()["items"] == []


def test_empty_body_is_refused_not_stored(client, platform, alice):
    """An empty POST is almost always a client that forgot the file (tests/test_bad_input.py
    covers multipart and the other upload routes)."""
    assert "empty" in assert_problem(put(client, alice, b""), 400)["detail"]
    assert staging_files(platform) == [] and object_files(platform) == []


# --- size limit --------------------------------------------------------------------------


def test_declared_oversize_body_is_a_413(client, platform, alice):
    limit = platform.settings.max_upload_bytes
    body = assert_problem(put(client, alice, b"x" * (limit + 1)), 413)
    assert body["limit_bytes"] == limit
    assert staging_files(platform) == [] and object_files(platform) == []


def test_streamed_oversize_body_without_length_is_a_413_and_keeps_nothing(client, platform, alice):
    limit = platform.settings.max_upload_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 4096 + 2):
            yield b"y" * 4096

    r = client.post(
        "/v1/atoms", content=chunks(), headers={**alice.auth(), "Content-Type": "text/plain"}
    )
    assert_problem(r, 413)
    assert staging_files(platform) == [] and object_files(platform) == []
    assert client.get("/v1/atoms", headers=alice.auth("read")).json()["items"] == []


def test_multipart_oversize_file_is_a_413(client, platform, alice):
    limit = platform.settings.max_upload_bytes
    r = client.post(
        "/v1/atoms", files={"file": ("big.bin", b"z" * (limit + 10))}, headers=alice.auth()
    )
    assert_problem(r, 413)
    assert staging_files(platform) == [] and object_files(platform) == []


def test_body_exactly_at_the_limit_is_accepted(client, platform, alice):
    assert put(client, alice, b"q" * platform.settings.max_upload_bytes).status_code == 201


# --- authentication, scopes, isolation -----------------------------------------------------


def test_missing_wrong_and_malformed_keys_are_401(client, alice):
    for headers in (
        {},
        {"Authorization": "Bearer hk_not-a-real-key"},
        {"Authorization": "Bearer sk_live_something"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        r = client.get("/v1/atoms", headers=headers)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"


def test_read_key_cannot_write_or_delete(client, alice):
    atom = put(client, alice, b"guarded").json()
    r = put(client, alice, b"nope", Authorization=f"Bearer {alice.read}")
    assert assert_problem(r, 403)["required_scope"] == "write"
    assert_problem(client.delete(f"/v1/atoms/{atom['id']}", headers=alice.auth("read")), 403)
    assert client.get(f"/v1/atoms/{atom['id']}", headers=alice.auth("read")).status_code == 200


def test_admin_key_may_do_everything(client, alice):
    r = put(client, alice, b"by admin", Authorization=f"Bearer {alice.admin}")
    assert r.status_code == 201
    assert client.get("/v1/me", headers=alice.auth("admin")).json() == {
        "tenant_id": alice.id,
        "tenant_name": "alice",
        "scope": "admin",
    }


def test_another_tenants_atom_is_a_404_everywhere(client, alice, bob):
    atom = put(client, alice, b"alice only").json()
    for method, path in (
        ("GET", f"/v1/atoms/{atom['id']}"),
        ("GET", f"/v1/atoms/{atom['id']}/content"),
        ("HEAD", f"/v1/atoms/{atom['id']}/content"),
        ("DELETE", f"/v1/atoms/{atom['id']}"),
    ):
        r = client.request(method, path, headers=bob.auth())
        assert r.status_code == 404, (method, path)
        if method != "HEAD":
            assert_problem(r, 404)
    assert client.get("/v1/atoms", headers=bob.auth()).json()["items"] == []
    # Still there for its owner, byte for byte.
    assert client.get(f"/v1/atoms/{atom['id']}/content", headers=alice.auth()).content == (
        b"alice only"
    )


def test_unknown_atom_is_a_404(client, alice):
    assert_problem(client.get("/v1/atoms/does-not-exist", headers=alice.auth()), 404)


# --- reading and ranges ------------------------------------------------------------------


def test_content_streams_with_etag_and_length(client, alice):
    data = bytes(range(256)) * 40
    atom = put(client, alice, data, **{"Content-Type": "application/octet-stream"}).json()
    r = client.get(f"/v1/atoms/{atom['id']}/content", headers=alice.auth("read"))
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["etag"] == f'"{atom["sha256"]}"'
    assert r.headers["content-length"] == str(len(data))
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/octet-stream"


def test_range_requests(client, alice):
    data = b"0123456789abcdef"
    atom_id = put(client, alice, data).json()["id"]
    url = f"/v1/atoms/{atom_id}/content"

    def ranged(value: str, **extra: str):
        return client.get(url, headers={**alice.auth("read"), "Range": value, **extra})

    r = ranged("bytes=2-5")
    assert (r.status_code, r.content, r.headers["content-range"]) == (206, b"2345", "bytes 2-5/16")
    assert r.headers["content-length"] == "4"
    r = ranged("bytes=10-")
    assert (r.status_code, r.content) == (206, b"abcdef")
    r = ranged("bytes=-3")
    assert (r.status_code, r.content, r.headers["content-range"]) == (206, b"def", "bytes 13-15/16")
    r = ranged("bytes=14-100")  # clamped to the end
    assert (r.status_code, r.content) == (206, b"ef")
    r = ranged("bytes=15-15")
    assert (r.status_code, r.content) == (206, b"f")
    # Multiple ranges and other units: ignored, the whole body with 200.
    assert ranged("bytes=0-1,4-5").status_code == 200
    assert ranged("items=0-1").content == data
    # If-Range with a stale validator: the whole body.
    assert ranged("bytes=0-1", **{"If-Range": '"stale"'}).status_code == 200
    etag = r.headers["etag"]
    assert ranged("bytes=0-1", **{"If-Range": etag}).content == b"01"


def test_unsatisfiable_range_is_a_416(client, alice):
    atom_id = put(client, alice, b"short").json()["id"]
    r = client.get(
        f"/v1/atoms/{atom_id}/content", headers={**alice.auth("read"), "Range": "bytes=5-"}
    )
    assert_problem(r, 416)
    assert r.headers["content-range"] == "bytes */5"
    r = client.get(
        f"/v1/atoms/{atom_id}/content", headers={**alice.auth("read"), "Range": "bytes=-0"}
    )
    assert_problem(r, 416)


def test_if_none_match_gives_304_and_head_gives_headers_only(client, alice):
    atom = put(client, alice, b"cache me").json()
    url = f"/v1/atoms/{atom['id']}/content"
    r = client.get(url, headers={**alice.auth("read"), "If-None-Match": f'"{atom["sha256"]}"'})
    assert r.status_code == 304 and r.content == b""
    r = client.head(url, headers=alice.auth("read"))
    assert r.status_code == 200
    assert r.headers["content-length"] == "8" and r.content == b""


# --- listing -------------------------------------------------------------------------------


def test_list_pages_with_a_cursor_and_filters(client, alice):
    ids = [put(client, alice, f"doc {i}".encode()).json()["id"] for i in range(5)]
    image = put(client, alice, b"\x89PNG...", **{"Content-Type": "image/png"}).json()["id"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/atoms", params=params, headers=alice.auth("read")).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [image, *reversed(ids)]  # newest first, each exactly once
    images = client.get("/v1/atoms?modality=image", headers=alice.auth("read")).json()["items"]
    assert [a["id"] for a in images] == [image]
    texts = client.get(
        "/v1/atoms", params={"media_type": "text/plain"}, headers=alice.auth("read")
    ).json()["items"]
    assert len(texts) == 5


def test_list_rejects_bad_parameters(client, alice):
    body = assert_problem(client.get("/v1/atoms?limit=5000", headers=alice.auth()), 422)
    assert body["errors"][0]["location"] == ["query", "limit"]
    assert_problem(client.get("/v1/atoms?modality=smell", headers=alice.auth()), 422)
    assert (
        "cursor"
        in assert_problem(client.get("/v1/atoms?cursor=garbage!!", headers=alice.auth()), 400)[
            "detail"
        ]
    )


# --- deleting ------------------------------------------------------------------------------


def test_delete_removes_bytes_only_when_no_tenant_references_them(client, platform, alice, bob):
    a = put(client, alice, b"refcounted").json()
    b = put(client, bob, b"refcounted").json()
    assert client.delete(f"/v1/atoms/{a['id']}", headers=alice.auth()).status_code == 204
    assert len(object_files(platform)) == 1  # Bob still needs them
    assert client.get(f"/v1/atoms/{b['id']}/content", headers=bob.auth()).content == b"refcounted"
    assert_problem(client.get(f"/v1/atoms/{a['id']}", headers=alice.auth()), 404)
    assert_problem(client.delete(f"/v1/atoms/{a['id']}", headers=alice.auth()), 404)
    assert client.delete(f"/v1/atoms/{b['id']}", headers=bob.auth()).status_code == 204
    assert len(object_files(platform)) == 1  # queued: deleted after the commit, by a sweep
    assert collect_blobs(platform.uow_factory, platform.blobs).deleted == 1
    assert object_files(platform) == []
    # The same bytes can come back afterwards.
    again = put(client, alice, b"refcounted")
    assert again.status_code == 201
    assert client.get(f"/v1/atoms/{again.json()['id']}/content", headers=alice.auth()).content == (
        b"refcounted"
    )


# --- errors in general ---------------------------------------------------------------------


def test_unknown_routes_and_methods_are_problems(client, alice):
    assert_problem(client.get("/v2/nothing"), 404)
    assert_problem(client.put("/v1/atoms", headers=alice.auth()), 405)


def test_openapi_describes_the_atoms_api(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/atoms", "/v1/atoms/{atom_id}", "/v1/atoms/{atom_id}/content"} <= set(spec["paths"])
    post = spec["paths"]["/v1/atoms"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert "413" in post["responses"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_recording_many_atoms_at_once_matches_one_by_one(platform, alice, bob):
    """record_many_in (a document's chunks in one transaction): repeated bytes give one
    atom, bytes the tenant holds are deduplicated, bytes another tenant holds are shared
    but not new, and every blob's reference count is exact."""
    atoms = platform.atoms
    held = atoms.store_bytes(tenant_id=alice.id, chunks=[b"held"], media_type="text/plain")
    atoms.store_bytes(tenant_id=bob.id, chunks=[b"bob's"], media_type="text/plain")
    pieces = [b"held", b"fresh", b"bob's", b"fresh"]
    staged = [atoms.stage(p) for p in pieces]
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        out = atoms.record_many_in(uow, alice.id, [(s, "text/plain", {"n": 1}) for s in staged])
        uow.commit()
    for s in staged:
        s.discard()
    assert out[0].atom.id == held.atom.id and out[0].deduplicated
    assert out[1].atom.id == out[3].atom.id and out[1].new_bytes and not out[1].deduplicated
    assert not out[2].new_bytes and not out[2].deduplicated
    for piece, stored in zip(pieces, out, strict=True):
        assert b"".join(atoms.read(stored.atom)) == piece
        assert atoms.get(tenant_id=alice.id, atom_id=stored.atom.id).metadata in ({}, {"n": 1})
    with platform.uow_factory(write=False) as uow:
        counts = dict(uow._conn.exec_driver_sql("SELECT sha256, refcount FROM blobs").fetchall())
    assert sorted(counts.values()) == [1, 1, 2]  # held, fresh; bob's shared by two tenants
