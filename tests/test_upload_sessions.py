"""Upload sessions end to end: declared, sent to their url (the app's PUT here, a SAS URL on
Azurite), completed once, and every way they can go wrong."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from workflow_polling import finish

from hartonomous.api.app import create_app
from hartonomous.blobs.upload_staging import RECEIVED_PREFIX, SEALED_PREFIX
from hartonomous.bootstrap import Platform
from hartonomous.errors import Conflict
from hartonomous.models.synthetic import write_synthetic_gguf
from hartonomous.services import upload_sessions as sessions_module
from hartonomous.services.clock import utcnow

DATA = os.urandom(200_000)  # past the test app's 64 KiB request limit: sessions are not bound


def open_session(client: TestClient, who, size: int = len(DATA), **fields) -> dict:
    body = {"size": size, "media_type": "application/pdf", "metadata": {"k": "v"}, **fields}
    r = client.post("/v1/uploads", json=body, headers=who.auth())
    assert r.status_code == 201, r.text
    return r.json()


def send(client: TestClient, opened: dict, data: bytes = DATA) -> Any:
    """As any client would: the answer's method, url and headers, nothing else."""
    return client.request(opened["method"], opened["url"], headers=opened["headers"], content=data)


def complete(client: TestClient, who, opened: dict) -> Any:
    return client.post(f"/v1/uploads/{opened['upload_id']}/complete", headers=who.auth())


def test_an_atom_through_a_session_on_the_local_folder(client, platform, alice):
    opened = open_session(client, alice)
    assert opened["method"] == "PUT" and "token=" in opened["url"]
    assert send(client, opened).status_code == 204
    done = complete(client, alice, opened)
    assert done.status_code == 201, done.text
    atom = done.json()
    assert atom["sha256"] == hashlib.sha256(DATA).hexdigest() and atom["size"] == len(DATA)
    assert atom["media_type"] == "application/pdf" and atom["metadata"] == {"k": "v"}
    got = client.get(f"/v1/atoms/{atom['id']}/content", headers=alice.auth("read"))
    assert got.content == DATA
    again = complete(client, alice, opened)  # idempotent: the same answer
    assert again.status_code == 201 and again.json() == atom
    status = client.get(f"/v1/uploads/{opened['upload_id']}", headers=alice.auth()).json()
    assert status["status"] == "completed" and status["atom_id"] == atom["id"]
    staging = platform.blobs.root / "uploads"
    assert list(staging.iterdir()) == []  # published by a rename, nothing left behind
    # The same bytes in another session: the atom the tenant holds (200).
    second = open_session(client, alice)
    assert send(client, second).status_code == 204
    dup = complete(client, alice, second)
    assert dup.status_code == 200 and dup.json()["id"] == atom["id"]


def test_the_put_takes_an_api_key_of_the_tenant_instead_of_the_token(client, alice, bob):
    opened = open_session(client, alice)
    bare = opened["url"].split("?")[0]
    assert client.put(bare, content=DATA).status_code == 401
    assert client.put(bare, content=DATA, headers=bob.auth()).status_code == 404
    assert client.put(bare, content=DATA, headers=alice.auth("read")).status_code == 403
    assert client.put(f"{bare}?token=forged", content=DATA).status_code == 404
    assert client.put(bare, content=DATA, headers=alice.auth()).status_code == 204
    assert complete(client, alice, opened).status_code == 201


def test_what_a_session_refuses(client, platform, alice, bob):
    def problem(r: Any, status: int) -> dict:
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        return r.json()

    def post(body: dict) -> Any:  # json.dumps escapes a lone surrogate; httpx would refuse it
        headers = {**alice.auth(), "Content-Type": "application/json"}
        return client.post("/v1/uploads", content=json.dumps(body), headers=headers)

    problem(post({"size": 64 * 1024**3 + 1}), 413)
    problem(post({"size": 0}), 422)
    problem(post({"size": 10, "purpose": "thing"}), 422)
    problem(post({"size": 10, "metadata": {"a": "\ud800"}}), 400)
    problem(post({"size": 10, "metadata": {"a": "x" * 20_000}}), 400)
    problem(post({"size": 10, "media_type": "not a type"}), 422)
    problem(post({"size": 10, "purpose": "document", "media_type": "image/png"}), 422)
    problem(
        post({"size": 64 * 1024**2 + 1, "purpose": "document", "media_type": "text/plain"}), 413
    )

    opened = open_session(client, alice)
    upload = f"/v1/uploads/{opened['upload_id']}"
    assert "no bytes" in problem(complete(client, alice, opened), 409)["detail"]
    chunked = iter([DATA[:-1]])  # no Content-Length: counted as it streams
    short = problem(client.put(opened["url"], headers=opened["headers"], content=chunked), 422)
    assert short["received"] == len(DATA) - 1 and short["declared"] == len(DATA)
    problem(send(client, opened, DATA + b"!"), 422)
    problem(client.put(opened["url"], headers=opened["headers"], content=iter([DATA, b"!"])), 422)
    bad_length = {**opened["headers"], "Content-Length": "5"}
    problem(client.put(opened["url"], headers=bad_length, content=b"12345"), 422)
    assert list((platform.blobs.root / "uploads").iterdir()) == []  # nothing was kept
    problem(complete(client, alice, opened), 409)
    # Another tenant's session does not exist for bob.
    problem(client.get(upload, headers=bob.auth()), 404)
    problem(complete(client, bob, opened), 404)
    assert send(client, opened).status_code == 204
    assert complete(client, alice, opened).status_code == 201
    problem(send(client, opened), 409)  # completed: takes no more bytes
    assert platform.atoms.list(tenant_id=bob.id, limit=10, cursor=None).items == []


def test_an_expired_session_is_gone_and_swept(client, platform, alice, monkeypatch):
    expired = open_session(client, alice)
    assert send(client, expired).status_code == 204
    late = utcnow() + timedelta(seconds=platform.settings.upload_session_ttl_s + 1)
    monkeypatch.setattr(sessions_module, "utcnow", lambda: late)
    assert complete(client, alice, expired).status_code == 410
    assert send(client, expired).status_code == 410
    live = open_session(client, alice)  # opened "now": live
    assert send(client, live).status_code == 204
    staging = platform.blobs.root / "uploads"
    stale = staging / f"{uuid.uuid4()}.{uuid.uuid4().hex}.tmp"  # a PUT a crash cut short
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    objects, rows = platform.uploads.sweep()
    assert objects == 2 and rows == 0  # the expired session's bytes, the stale PUT
    assert [p.name for p in staging.iterdir()] == [live["upload_id"]]
    assert complete(client, alice, live).status_code == 201
    week = (
        late
        + sessions_module.KEEP_ROWS_FOR
        + timedelta(seconds=platform.settings.upload_session_ttl_s + 1)
    )
    monkeypatch.setattr(sessions_module, "utcnow", lambda: week)
    assert platform.uploads.sweep()[1] == 2  # both rows, a week after their expiry
    assert client.get(f"/v1/uploads/{live['upload_id']}", headers=alice.auth()).status_code == 404


def test_one_completion_at_a_time_and_a_dead_claim_runs_out(client, platform, alice, monkeypatch):
    opened = open_session(client, alice)
    assert send(client, opened).status_code == 204
    first = platform.uploads.claim(alice.id, opened["upload_id"])
    assert first.claim_id is not None
    with pytest.raises(Conflict) as busy:
        platform.uploads.claim(alice.id, opened["upload_id"])
    assert busy.value.headers["Retry-After"]
    r = complete(client, alice, opened)
    assert r.status_code == 409 and r.headers["Retry-After"]
    # The first completer died mid-way (after sealing); its claim runs out and the next
    # completion takes up the sealed bytes.
    staged = platform.uploads._staging().seal(alice.id, opened["upload_id"])
    assert staged is not None
    later = utcnow() + sessions_module.CLAIM_FOR + timedelta(seconds=1)
    monkeypatch.setattr(sessions_module, "utcnow", lambda: later)
    done = complete(client, alice, opened)
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == hashlib.sha256(DATA).hexdigest()


def test_a_completer_that_died_after_the_expiry_leaves_a_reclaimable_session(
    client, platform, alice, monkeypatch
):
    """Its claim ran out after the session's own expiry: a COMPLETING session is still
    taken up (it used to answer 410 forever), and completes from the sealed bytes."""
    opened = open_session(client, alice)
    assert send(client, opened).status_code == 204
    first = platform.uploads.claim(alice.id, opened["upload_id"])
    assert first.claim_id is not None
    assert platform.uploads._staging().seal(alice.id, opened["upload_id"]) is not None
    later = first.session.expires_at + sessions_module.CLAIM_FOR + timedelta(seconds=1)
    monkeypatch.setattr(sessions_module, "utcnow", lambda: later)
    done = complete(client, alice, opened)
    assert done.status_code == 201, done.text
    assert done.json()["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert complete(client, alice, opened).status_code == 201  # replayed, not 410


# -- documents and models: their workflows start -------------------------------------------------


@pytest.fixture
def api(pipeline_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(pipeline_platform)) as c:
        yield c


def test_a_document_and_a_model_through_sessions_start_their_workflows(
    api, pipeline_platform, tenant_maker, tmp_path
):
    alice = tenant_maker(pipeline_platform, "alice")
    text = b"# Mars\n\nOlympus Mons is the tallest volcano in the solar system.\n"
    doc = open_session(
        api, alice, len(text), purpose="document", media_type="text/markdown",
        metadata={"filename": "mars.md"},
    )  # fmt: skip
    assert send(api, doc, text).status_code == 204
    started = complete(api, alice, doc)
    assert started.status_code == 202, started.text
    assert finish(api, alice, started.json())["runtimeStatus"] == "Completed"
    assert complete(api, alice, doc).json() == started.json()  # idempotent
    hits = api.post(
        "/v1/search", json={"query": "Olympus Mons", "mode": "keyword"}, headers=alice.auth()
    ).json()["results"]
    assert hits and hits[0]["document_id"] == started.json()["atom_id"]

    gguf = write_synthetic_gguf(tmp_path / "tiny.gguf", blocks=2, name="Tiny")
    data = gguf.read_bytes()
    model = open_session(api, alice, len(data), purpose="model", metadata={"name": "mine"})
    assert send(api, model, data).status_code == 204
    started = complete(api, alice, model)
    assert started.status_code == 202, started.text
    assert finish(api, alice, started.json())["runtimeStatus"] == "Completed"
    got = api.get(f"/v1/models/{started.json()['model_id']}", headers=alice.auth()).json()
    assert got["name"] == "mine" and got["sha256"] == hashlib.sha256(data).hexdigest()
    # Bytes that are no GGUF: 422, and completing again says the same.
    bad = open_session(api, alice, 5, purpose="model")
    assert send(api, bad, b"12345").status_code == 204
    assert complete(api, alice, bad).status_code == 422
    again = complete(api, alice, bad)
    assert again.status_code == 422 and "GGUF" in again.json()["detail"]


def test_a_document_session_without_workflows_waits_for_them(client, platform, alice):
    doc = open_session(client, alice, 5, purpose="document", media_type="text/plain")
    assert send(client, doc, b"hello").status_code == 204
    r = complete(client, alice, doc)
    assert r.status_code == 503, r.text
    status = client.get(f"/v1/uploads/{doc['upload_id']}", headers=alice.auth()).json()
    assert status["status"] == "stored" and status["atom_id"]  # a later completion resumes


# -- Azure: SAS URLs on Azurite, and the Event Grid blob trigger --------------------------------


@pytest.mark.azurite
def test_an_atom_through_a_sas_url_on_azurite(azure, tenant_maker):
    from azure.storage.blob import BlobClient

    client, platform = azure
    alice, bob = tenant_maker(platform, "alice"), tenant_maker(platform, "bob")
    data = os.urandom(9 * 1024 * 1024 + 7)  # several blocks and hash ranges
    opened = open_session(client, alice, len(data))
    assert "sig=" in opened["url"] and opened["headers"]["x-ms-blob-type"] == "BlockBlob"
    # The official client, given only the URL: it cuts the upload into blocks itself.
    sas_blob = BlobClient.from_blob_url(opened["url"], max_single_put_size=4 * 1024 * 1024)
    sas_blob.upload_blob(data, overwrite=True, max_concurrency=2)
    with pytest.raises(Exception, match=r"AuthorizationPermissionMismatch|403"):
        sas_blob.download_blob()  # the SAS writes that one blob, nothing else
    assert complete(client, bob, opened).status_code == 404
    done = complete(client, alice, opened)
    assert done.status_code == 201, done.text
    atom = done.json()
    assert atom["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(f"/v1/atoms/{atom['id']}/content", headers=alice.auth()).content == data
    assert complete(client, alice, opened).json() == atom
    names = [b.name for b in platform.blobs.container.list_blobs()]
    assert not [n for n in names if n.startswith((RECEIVED_PREFIX, SEALED_PREFIX))]
    # A short upload through plain HTTP with the answer's method and headers: 422, deleted.
    short = open_session(client, alice, 10)
    sent = httpx.request(short["method"], short["url"], headers=short["headers"], content=b"123")
    assert sent.status_code == 201, sent.text
    assert complete(client, alice, short).status_code == 422
    assert platform.uploads._staging().received(alice.id, short["upload_id"]) is None


@pytest.mark.azurite
def test_the_event_grid_blob_trigger_completes_the_upload(azure, tenant_maker, monkeypatch):
    """Driven as the worker would: the SDK-type binding's converter turns the host's
    model-binding data into a BlobClient; no bytes pass through the binding."""
    from azurefunctions.extensions.base import Datum
    from azurefunctions.extensions.bindings.blob import BlobClient, BlobClientConverter

    from functions import indexed_app, runtime

    client, platform = azure
    alice = tenant_maker(platform, "alice")
    data = os.urandom(300_000)
    opened = open_session(client, alice, len(data))
    assert httpx.put(opened["url"], headers=opened["headers"], content=data).status_code == 201
    monkeypatch.setenv(
        "HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING",
        platform.settings.azure_storage_connection_string.get_secret_value(),
    )
    content = {
        "Connection": "HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING",
        "ContainerName": platform.settings.blob_container,
        "BlobName": f"{RECEIVED_PREFIX}{alice.id}/{opened['upload_id']}",
    }
    # The worker's Datum holds the host's ModelBindingData message: these four fields.
    binding_data = SimpleNamespace(
        version="1.0",
        source="AzureStorageBlobs",
        content_type="application/json",
        content=json.dumps(content),
    )
    datum = Datum(type="model_binding_data", value=binding_data)
    received = BlobClientConverter.decode(datum, trigger_metadata=None, pytype=BlobClient)
    runtime.use(platform)
    try:
        indexed = indexed_app().get_functions()
        trigger = next(f for f in indexed if f.get_function_name() == "complete_uploaded_blob")
        binding = next(json.loads(b) for b in trigger.get_raw_bindings() if "blobTrigger" in b)
        assert binding["source"] == "EventGrid" and binding["path"].endswith("{tenant}/{upload}")
        handler = trigger.get_user_function()
        durable = json.dumps(  # the Durable client binding's payload (an atom starts none)
            {
                "taskHubName": "Hartonomous",
                "creationUrls": {},
                "managementUrls": {},
                "baseUrl": "http://127.0.0.1:9/runtime/webhooks/durabletask",
                "requiredQueryStringParameters": "code=test",
            }
        )
        asyncio.run(handler(received=received, client=durable))
        asyncio.run(handler(received=received, client=durable))  # a redelivery: no change
    finally:
        runtime.use(None)
    status = client.get(f"/v1/uploads/{opened['upload_id']}", headers=alice.auth()).json()
    assert status["status"] == "completed"
    atom = client.get(f"/v1/atoms/{status['atom_id']}", headers=alice.auth()).json()
    assert atom["sha256"] == hashlib.sha256(data).hexdigest()
    assert complete(client, alice, opened).json()["id"] == atom["id"]


# -- the CLI past its threshold -----------------------------------------------------------------


def _cli_put(url: str, who, path: Path) -> dict:
    from typer.testing import CliRunner

    from hartonomous.cli.main import app

    args = ["atoms", "put", str(path), "--url", url, "--api-key", who.write]
    result = CliRunner().invoke(app, [*args, "--session-threshold", "1000"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_the_cli_sends_large_files_through_a_session(platform, alice, tmp_path):
    from live_server import serving

    path = tmp_path / "big.bin"
    path.write_bytes(DATA)  # 200 KB: over the 64 KiB request limit, over the threshold
    with serving(create_app(platform)) as url:
        atom = _cli_put(url, alice, path)
    assert atom["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert atom["metadata"] == {"filename": "big.bin"}


@pytest.mark.azurite
def test_the_cli_sends_large_files_to_blob_storage_on_azurite(azure, tenant_maker, tmp_path):
    from live_server import serving

    _, platform = azure
    alice = tenant_maker(platform, "alice")
    path = tmp_path / "big.bin"
    path.write_bytes(DATA)
    with serving(create_app(platform)) as url:
        atom = _cli_put(url, alice, path)
    assert atom["sha256"] == hashlib.sha256(DATA).hexdigest()


def test_a_store_signed_in_with_entra_id_hands_out_user_delegation_sas(monkeypatch):
    """No Azure here: the delegation key the service would issue is made up, the signing is
    azure-storage-blob's own. One key serves the sessions it outlives."""
    from azure.core.credentials import AccessToken
    from azure.storage.blob import BlobServiceClient, ContainerClient, UserDelegationKey

    from hartonomous.blobs.azure import AzureBlobStore
    from hartonomous.blobs.upload_staging import AzureUploadStaging

    class Token:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            return AccessToken("t", 2**31)

    issued: list[object] = []

    def delegation_key(self: Any, start: Any, expiry: Any, **kwargs: Any) -> UserDelegationKey:
        key = UserDelegationKey()
        key.signed_oid, key.signed_tid = "oid", "tid"
        key.signed_start = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_expiry = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
        key.signed_service, key.signed_version, key.value = "b", "2020-02-10", "a2V5"
        issued.append(key)
        return key

    monkeypatch.setattr(BlobServiceClient, "get_user_delegation_key", delegation_key)
    container = ContainerClient("https://acct.blob.core.windows.net", "atoms", credential=Token())
    store = AzureBlobStore(container)
    monkeypatch.setattr(store, "ensure_container", lambda: None)
    staging = AzureUploadStaging(store)
    for hours in (1, 6):
        target = staging.direct_target("t1", "u1", 10, utcnow() + timedelta(hours=hours))
        assert target is not None
        assert target.url.startswith("https://acct.blob.core.windows.net/atoms/uploads/t1/u1?")
        assert "skoid=oid" in target.url and "sp=cw" in target.url and "sig=" in target.url
    assert len(issued) == 1
