"""Admission over HTTP: the request limit on every authenticated request (not /healthz, not an
unauthenticated flood), 429 problems with Retry-After and the RateLimit fields, the plan set
with the CLI, and GET /v1/billing/plan. Real app, real SQLite, real CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TenantKeys
from hartonomous.admission.plans import FRESH_S
from hartonomous.bootstrap import Platform
from hartonomous.cli.main import app as cli
from hartonomous.settings import Settings

BURST = 3


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A default plan that refills slowly (one request per 10 s), so a test sees the edge."""
    return Settings(
        data_dir=tmp_path / "data",
        max_upload_bytes=64 * 1024,
        plan_requests_per_second=0.1,
        plan_burst=BURST,
    )


def exhaust(client: TestClient, tenant: TenantKeys) -> None:
    for left in range(BURST - 1, -1, -1):
        response = client.get("/v1/me", headers=tenant.auth("read"))
        assert response.status_code == 200
        assert response.headers["RateLimit-Policy"] == f'"requests";q={BURST};w=30'
        assert response.headers["RateLimit"].startswith(f'"requests";r={left};t=')


def test_over_the_limit_is_a_429_problem_and_nothing_is_written(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    exhaust(client, alice)
    response = client.post(
        "/v1/atoms", headers=alice.auth(), files={"file": ("a.txt", b"hello", "text/plain")}
    )
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["limit"] == "requests_per_second"
    assert response.headers["Retry-After"] == "10"
    assert response.headers["RateLimit"].startswith('"requests";r=0;t=')
    assert response.headers["RateLimit-Policy"] == f'"requests";q={BURST};w=30'
    with platform.uow_factory(write=False) as uow:
        assert uow.atoms.count() == 0


def test_one_tenants_exhaustion_leaves_another_served(
    client: TestClient, alice: TenantKeys, bob: TenantKeys
) -> None:
    exhaust(client, alice)
    assert client.get("/v1/me", headers=alice.auth("read")).status_code == 429
    exhaust(client, bob)


def test_health_and_unauthenticated_requests_are_not_charged(
    client: TestClient, alice: TenantKeys
) -> None:
    for _ in range(2 * BURST):
        health = client.get("/healthz")
        assert health.status_code == 200 and "RateLimit" not in health.headers
        wrong = client.get("/v1/me", headers={"Authorization": "Bearer hk_wrong"})
        assert wrong.status_code == 401 and "RateLimit" not in wrong.headers
    exhaust(client, alice)


def test_a_streamed_response_carries_the_ratelimit_fields(
    client: TestClient, platform: Platform, alice: TenantKeys
) -> None:
    platform.admission.plans.set(alice.id, {"burst": 10})
    stored = client.post(
        "/v1/atoms", headers=alice.auth(), files={"file": ("a.txt", b"hello", "text/plain")}
    )
    assert stored.status_code == 201, stored.text
    content = client.get(f"/v1/atoms/{stored.json()['id']}/content", headers=alice.auth("read"))
    assert content.status_code == 200 and content.content == b"hello"
    assert content.headers["RateLimit"].startswith('"requests";r=8;')


def test_the_plan_set_with_the_cli_holds_and_billing_shows_it(
    client: TestClient, settings: Settings, alice: TenantKeys
) -> None:
    plan = client.get("/v1/billing/plan", headers=alice.auth("read"))
    assert plan.status_code == 200
    assert plan.json() == {
        "requests_per_second": 0.1,
        "burst": BURST,
        "concurrent_generations": settings.plan_concurrent_generations,
        "tokens_per_minute": settings.plan_tokens_per_minute,
        "defaults": ["burst", "concurrent_generations", "requests_per_second",
                     "tokens_per_minute"],
    }  # fmt: skip
    data_dir = ["--data-dir", str(settings.data_dir)]
    runner = CliRunner()
    done = runner.invoke(cli, ["plan", "set", "alice", "--burst", "8", *data_dir])
    assert done.exit_code == 0, done.output
    assert "burst" in done.output and "8" in done.output
    refused = runner.invoke(cli, ["plan", "set", "alice", "--burst", "0", *data_dir])
    assert refused.exit_code != 0
    assert "burst must be >= 1 and <= 1000000 (got 0)" in str(refused.exception)
    shown = runner.invoke(cli, ["plan", "show", "alice", *data_dir])
    assert shown.exit_code == 0 and "set" in shown.output, shown.output
    time.sleep(FRESH_S)  # another process set it: this one reads it within FRESH_S
    plan = client.get("/v1/billing/plan", headers=alice.auth("read"))
    assert plan.json()["burst"] == 8 and "burst" not in plan.json()["defaults"]
    for _ in range(6):  # 2 requests spent above, 6 of the new 8 left
        assert client.get("/v1/me", headers=alice.auth("read")).status_code == 200
    after = client.get("/v1/billing/plan", headers=alice.auth("read"))
    assert after.status_code == 429  # the 9th in a row
    assert after.headers["RateLimit-Policy"] == '"requests";q=8;w=80'
