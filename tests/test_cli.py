"""The command line, run as a user would: real processes, a real server on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hartonomous.store import migrate

BIN = Path(sys.executable).parent / "hartonomous"


def cli(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", **env},
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    return str(tmp_path / "store")


def test_tenant_create_prints_the_key_last_and_refuses_duplicates(data_dir):
    key = last_line(cli("tenant", "create", "acme", "--data-dir", data_dir))
    assert key.startswith("hk_") and len(key) > 40
    again = cli("tenant", "create", "acme", "--data-dir", data_dir, check=False)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    bad = cli("tenant", "create", "no spaces!", "--data-dir", data_dir, check=False)
    assert bad.returncode == 1 and "tenant name" in bad.stderr


def test_key_create_takes_a_scope_and_the_tenant_by_name(data_dir):
    cli("tenant", "create", "acme", "--data-dir", data_dir)
    key = last_line(cli("key", "create", "acme", "--scope", "read", "--data-dir", data_dir))
    assert key.startswith("hk_")
    missing = cli("key", "create", "nobody", "--data-dir", data_dir, check=False)
    assert missing.returncode == 1 and "no tenant" in missing.stderr
    bad_scope = cli("key", "create", "acme", "--scope", "root", "--data-dir", data_dir, check=False)
    assert bad_scope.returncode != 0


def test_key_list_and_revoke(data_dir):
    admin = last_line(cli("tenant", "create", "acme", "--data-dir", data_dir))
    cli("key", "create", "acme", "--scope", "write", "--data-dir", data_dir)
    listed = cli("key", "list", "acme", "--data-dir", data_dir).stdout
    rows = [
        line.split() for line in listed.splitlines() if line.split()[1:2] in (["write"], ["admin"])
    ]
    ids = {row[1]: row[0] for row in rows}
    assert set(ids) == {"write", "admin"} and admin not in listed  # no secret is listed
    assert admin.startswith(next(row[2] for row in rows if row[1] == "admin"))

    # The tenant's last admin key stays unless forced (a leaked one must be revocable).
    last = cli("key", "revoke", ids["admin"], "--data-dir", data_dir, check=False)
    assert last.returncode == 1 and "last active admin key" in last.stderr
    done = cli("key", "revoke", ids["write"], "--data-dir", data_dir)
    assert f"API key {ids['write']} (write scope) revoked" in done.stdout
    relisted = cli("key", "list", "acme", "--data-dir", data_dir).stdout
    (write_row,) = [line.split() for line in relisted.splitlines() if ids["write"] in line]
    assert len(write_row) == 5  # the revoked column is filled
    cli("key", "revoke", ids["admin"], "--force", "--data-dir", data_dir)
    unknown = cli("key", "revoke", "nope", "--data-dir", data_dir, check=False)
    assert unknown.returncode == 1 and "no API key" in unknown.stderr


def test_a_key_revoked_by_the_operator_is_refused_by_a_running_server(server, data_dir):
    url, admin = server
    created = httpx.post(
        f"{url}/v1/keys", json={"scope": "read"}, headers={"Authorization": f"Bearer {admin}"}
    ).json()
    me = {"Authorization": f"Bearer {created['secret']}"}
    assert httpx.get(f"{url}/v1/me", headers=me).status_code == 200
    cli("key", "revoke", created["id"], "--data-dir", data_dir)
    assert httpx.get(f"{url}/v1/me", headers=me).status_code == 401


def test_the_worker_refuses_to_start_without_its_key(data_dir):
    env = {k: v for k, v in os.environ.items() if k != "HARTONOMOUS_WORKER_KEY"}
    refused = subprocess.run(
        [str(BIN), "worker", "--port", str(free_port()), "--data-dir", data_dir],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "HARTONOMOUS_WORKER_KEY" in refused.stderr and "--insecure" in refused.stderr

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "worker", "--insecure", "--port", str(port), "--data-dir", data_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the insecure worker did not start"
            time.sleep(0.2)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models")  # no key asked
        assert models.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_worker_app_needs_its_key(tmp_path):
    from hartonomous.settings import Settings
    from hartonomous.worker.app import MissingWorkerKey, create_worker_app

    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(MissingWorkerKey, match="HARTONOMOUS_WORKER_KEY"):
        create_worker_app(settings, engine=object(), embedder=object())  # type: ignore[arg-type]


def test_init_creates_the_demo_tenant_once(data_dir):
    first = cli("init", "--data-dir", data_dir, "--demo-tenant", "demo")
    assert last_line(first).startswith("hk_")
    second = cli("init", "--data-dir", data_dir, "--demo-tenant", "demo")
    assert "hk_" not in second.stdout
    assert "exists" in second.stdout


@pytest.fixture
def server(data_dir) -> Iterator[tuple[str, str]]:
    key = last_line(cli("tenant", "create", "acme", "--data-dir", data_dir))
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), "--data-dir", data_dir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url, key
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_put_and_get_through_a_real_server(server, data_dir, tmp_path):
    url, key = server
    source = tmp_path / "notes.txt"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    put = cli("atoms", "put", str(source), "--url", url, "--api-key", key)
    atom = json.loads(put.stdout)
    assert atom["size"] == source.stat().st_size
    assert atom["media_type"] == "text/plain"
    assert atom["metadata"] == {"filename": "notes.txt"}

    out = tmp_path / "copy.bin"
    cli("atoms", "get", atom["id"], "-o", str(out), "--url", url, HARTONOMOUS_API_KEY=key)
    assert out.read_bytes() == source.read_bytes()

    again = json.loads(cli("atoms", "put", str(source), "--url", url, "--api-key", key).stdout)
    assert again["id"] == atom["id"] and again["deduplicated"] is True

    # serve runs the local Durable host: workflow routes answer (404 here), not 503.
    unknown = httpx.get(f"{url}/v1/workflows/nope", headers={"Authorization": f"Bearer {key}"})
    assert unknown.status_code == 404, unknown.text

    missing = cli("atoms", "get", "nope", "--url", url, "--api-key", key, check=False)
    assert missing.returncode == 1 and "404" in missing.stderr

    status = cli("status", "--data-dir", data_dir).stdout
    head = migrate.head_revision()
    assert f"{head} (head {head})" in status
    assert any(line.split()[:2] == ["atoms", "1"] for line in status.splitlines())


def test_ingest_a_folder_and_search_through_a_real_server(server, tmp_path):
    url, key = server
    docs = tmp_path / "docs"
    (docs / "nested").mkdir(parents=True)
    (docs / "rivers.md").write_text("The Nile is the longest river in Africa.\n")
    (docs / "nested" / "trees.txt").write_text("Oak trees can live for a thousand years.\n")
    (docs / "photo.png").write_bytes(b"\x89PNG not a document")  # skipped: not ingestible
    (docs / ".hidden.md").write_text("secret")  # skipped: hidden
    result = cli("ingest", str(docs), "--url", url, "--api-key", key)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(Path(line["path"]).name for line in lines) == ["rivers.md", "trees.txt"]
    assert all(line["status"] == "Completed" for line in lines), lines

    found = json.loads(
        cli("search", "how old do oaks get", "--json", "--url", url, "--api-key", key).stdout
    )
    assert "Oak trees" in found["results"][0]["text"]
    table = cli("search", "longest river", "--url", url, "--api-key", key).stdout
    assert "Nile" in table


def test_models_add_list_and_export_through_a_real_server(server, tmp_path):
    from hartonomous.models.synthetic import write_synthetic_gguf

    url, key = server
    path = write_synthetic_gguf(tmp_path / "tiny.gguf", blocks=2, name="Tiny")
    added = json.loads(cli("models", "add", str(path), "--url", url, "--api-key", key).stdout)
    assert added["status"] == "ready" and added["name"] == "Tiny"
    assert added["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    table = cli("models", "list", "--url", url, "--api-key", key).stdout
    assert "Tiny" in table and "llama" in table
    out = tmp_path / "back.gguf"
    cli("models", "export", added["id"], str(out), "--url", url, "--api-key", key)
    assert out.read_bytes() == path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF but nothing after")
    failed = cli("models", "add", str(bad), "--url", url, "--api-key", key, check=False)
    assert failed.returncode != 0 and "GGUF" in failed.stderr
