"""API keys through the app: list (no secrets), create (shown once), revoke (401 at once, on
every instance), another tenant's key is a 404, the last admin key stays."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from conftest import TenantKeys
from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.domain.tenants import hash_api_key
from hartonomous.settings import Settings


def _keys(client: TestClient, tenant: TenantKeys, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/keys", headers=tenant.auth("admin"), params=params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def _key_id(client: TestClient, tenant: TenantKeys, secret: str) -> str:
    """The id of the key whose secret this is (by its display prefix: it is unique here)."""
    (found,) = [k for k in _keys(client, tenant) if secret.startswith(k["display_prefix"])]
    return str(found["id"])


def test_a_created_key_is_shown_once_and_works(client: TestClient, alice: TenantKeys) -> None:
    r = client.post("/v1/keys", json={"scope": "write"}, headers=alice.auth("admin"))
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["scope"] == "write" and created["revoked_at"] is None
    assert created["secret"].startswith(created["display_prefix"])
    assert r.headers["location"] == f"/v1/keys/{created['id']}"
    assert r.headers["cache-control"] == "no-store"
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {created['secret']}"})
    assert me.status_code == 200 and me.json()["scope"] == "write"

    listed = client.get("/v1/keys", headers=alice.auth("admin"))
    assert listed.status_code == 200
    # Neither the secret nor its hash is anywhere in the listing.
    assert created["secret"] not in listed.text
    assert hash_api_key(created["secret"]) not in listed.text
    items = listed.json()["items"]
    assert {k["id"] for k in items} >= {created["id"]} and len(items) == 4  # 3 from the fixture
    assert all(set(k) == {"id", "scope", "display_prefix", "created_at", "revoked_at"}
               for k in items)  # fmt: skip
    assert items[0]["id"] == created["id"]  # newest first


def test_the_listing_pages(client: TestClient, alice: TenantKeys) -> None:
    for _ in range(3):
        client.post("/v1/keys", json={"scope": "read"}, headers=alice.auth("admin"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/keys", params=params, headers=alice.auth("admin")).json()
        assert len(page["items"]) <= 2
        seen += [k["id"] for k in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    bad = client.get("/v1/keys", params={"cursor": "nope"}, headers=alice.auth("admin"))
    assert bad.status_code == 400


def test_a_revoked_key_is_refused_at_once_on_every_instance(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    # A second instance on the same store: what another Function App worker would be.
    other = bootstrap(Settings(data_dir=platform.settings.data_dir))
    try:
        with TestClient(create_app(other)) as there:
            key = alice.write
            assert there.get("/v1/me", headers=alice.auth("write")).status_code == 200
            assert client.get("/v1/me", headers=alice.auth("write")).status_code == 200
            key_id = _key_id(client, alice, key)
            r = client.delete(f"/v1/keys/{key_id}", headers=alice.auth("admin"))
            assert r.status_code == 204, r.text
            for app in (client, there):
                refused = app.get("/v1/me", headers=alice.auth("write"))
                assert refused.status_code == 401
                assert refused.headers["content-type"] == "application/problem+json"
            (listed,) = [k for k in _keys(there, alice) if k["id"] == key_id]
            assert listed["revoked_at"] is not None
            # Revoking it again changes nothing.
            again = client.delete(f"/v1/keys/{key_id}", headers=alice.auth("admin"))
            assert again.status_code == 204
            (relisted,) = [k for k in _keys(client, alice) if k["id"] == key_id]
            assert relisted["revoked_at"] == listed["revoked_at"]
    finally:
        other.close()


def test_another_tenants_key_is_not_found(
    client: TestClient, alice: TenantKeys, bob: TenantKeys
) -> None:
    bobs_key = _key_id(client, bob, bob.read)
    r = client.delete(f"/v1/keys/{bobs_key}", headers=alice.auth("admin"))
    assert r.status_code == 404
    assert client.get("/v1/me", headers=bob.auth("read")).status_code == 200
    assert bobs_key not in {k["id"] for k in _keys(client, alice)}
    unknown = client.delete("/v1/keys/no-such-key", headers=alice.auth("admin"))
    assert unknown.status_code == 404


def test_the_last_admin_key_is_not_revoked(client: TestClient, alice: TenantKeys) -> None:
    admin_id = _key_id(client, alice, alice.admin)
    r = client.delete(f"/v1/keys/{admin_id}", headers=alice.auth("admin"))
    assert r.status_code == 409
    assert "last active admin key" in r.json()["detail"]
    assert client.get("/v1/me", headers=alice.auth("admin")).status_code == 200

    # With a second admin key, the first may go, even revoking itself: this answer comes,
    # the next request with it is a 401.
    second = client.post("/v1/keys", json={"scope": "admin"}, headers=alice.auth("admin")).json()
    r = client.delete(f"/v1/keys/{admin_id}", headers=alice.auth("admin"))
    assert r.status_code == 204
    assert client.get("/v1/me", headers=alice.auth("admin")).status_code == 401
    # Now the second is the last one.
    own = {"Authorization": f"Bearer {second['secret']}"}
    assert client.delete(f"/v1/keys/{second['id']}", headers=own).status_code == 409


def test_keys_need_the_admin_scope(client: TestClient, alice: TenantKeys) -> None:
    admin_id = _key_id(client, alice, alice.admin)
    for scope in ("read", "write"):
        headers = alice.auth(scope)
        assert client.get("/v1/keys", headers=headers).status_code == 403
        assert client.post("/v1/keys", json={"scope": "read"}, headers=headers).status_code == 403
        assert client.delete(f"/v1/keys/{admin_id}", headers=headers).status_code == 403
    assert client.get("/v1/keys").status_code == 401
    bad = client.post("/v1/keys", json={"scope": "root"}, headers=alice.auth("admin"))
    assert bad.status_code == 422
    extra = client.post(
        "/v1/keys", json={"scope": "read", "secret": "hk_mine"}, headers=alice.auth("admin")
    )
    assert extra.status_code == 422
