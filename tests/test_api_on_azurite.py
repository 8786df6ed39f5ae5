"""The atoms API end to end with ``blob_backend=azure``, its bytes in a real Azurite."""

from __future__ import annotations

import hashlib

import pytest

from hartonomous.services.maintenance import collect_blobs

pytestmark = pytest.mark.azurite


def test_atoms_round_trip_through_azure_blob_storage(azure, tenant_maker):
    client, platform = azure
    alice, bob = tenant_maker(platform, "alice"), tenant_maker(platform, "bob")
    data = bytes(range(256)) * 5000  # 1.25 MB: several read chunks
    created = client.post(
        "/v1/atoms", content=data, headers={**alice.auth(), "Content-Type": "application/pdf"}
    )
    assert created.status_code == 201, created.text
    atom = created.json()
    assert atom["sha256"] == hashlib.sha256(data).hexdigest()
    assert atom["modality"] == "document"
    again = client.post("/v1/atoms", content=data, headers=alice.auth())
    assert again.status_code == 200 and again.json()["id"] == atom["id"]

    url = f"/v1/atoms/{atom['id']}/content"
    assert client.get(url, headers=alice.auth("read")).content == data
    part = client.get(url, headers={**alice.auth("read"), "Range": "bytes=1048570-1048580"})
    assert part.status_code == 206 and part.content == data[1048570:1048581]
    assert client.get(url, headers=bob.auth()).status_code == 404

    bobs = client.post("/v1/atoms", content=data, headers=bob.auth()).json()
    assert client.delete(f"/v1/atoms/{atom['id']}", headers=alice.auth()).status_code == 204
    assert platform.blobs.exists(atom["sha256"])  # Bob still references the bytes
    assert client.delete(f"/v1/atoms/{bobs['id']}", headers=bob.auth()).status_code == 204
    assert platform.blobs.exists(atom["sha256"])  # queued: deleted by the lifecycle sweep
    assert collect_blobs(platform.uow_factory, platform.blobs).deleted == 1
    assert not platform.blobs.exists(atom["sha256"])
