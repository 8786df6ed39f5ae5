"""``/v1/workflows`` over the real app with the local Durable host running behind it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import workflow_app
from fastapi.testclient import TestClient

from hartonomous.api.app import create_app
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.services.workflows import WorkflowService
from hartonomous.settings import Settings

PROBLEM = "application/problem+json"


@pytest.fixture
def wf_platform(tmp_path: Path) -> Iterator[Platform]:
    p = bootstrap(Settings(data_dir=tmp_path / "data"), functions=workflow_app.functions())
    yield p
    p.close()


@pytest.fixture
def api(wf_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(wf_platform)) as c:  # the lifespan starts the host
        yield c


def start(platform: Platform, tenant_id: str, name: str, data=None) -> str:
    assert platform.workflows is not None
    service, client = WorkflowService(platform.uow_factory), platform.workflows.client

    async def go() -> str:
        return await service.start(client, tenant_id=tenant_id, name=name, input=data)

    return anyio.run(go)


def wait_status(api: TestClient, who, iid: str, until, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/v1/workflows/{iid}", headers=who.auth("read")).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    return response.json()


def test_status_events_and_isolation(api, wf_platform, tenant_maker):
    alice, bob = tenant_maker(wf_platform, "alice"), tenant_maker(wf_platform, "bob")
    iid = start(wf_platform, alice.id, "approval", 30)
    body = wait_status(api, alice, iid, lambda b: b["customStatus"] == {"waiting_for": "approve"})
    assert body["runtimeStatus"] == "Running"
    assert body["name"] == "approval" and body["input"] == 30 and body["error"] is None
    assert body["createdTime"] and body["lastUpdatedTime"]

    url = f"/v1/workflows/{iid}"
    problem(api.get(url, headers=bob.auth()), 404)  # another tenant's instance
    problem(api.post(f"{url}/events/approve", json="mallory", headers=bob.auth()), 404)
    problem(api.post(f"{url}/terminate", headers=bob.auth()), 404)
    problem(api.get("/v1/workflows/nope", headers=alice.auth()), 404)
    problem(api.post(f"{url}/events/approve", json="x", headers=alice.auth("read")), 403)
    assert (  # the pattern is in the OpenAPI: a validation error
        "path.name"
        in problem(api.post(f"{url}/events/9lives", json="x", headers=alice.auth()), 422)["detail"]
    )
    assert (
        "not valid JSON"
        in problem(api.post(f"{url}/events/approve", content=b"{nope", headers=alice.auth()), 400)[
            "detail"
        ]
    )
    problem(api.post(f"{url}/events/approve", content=b"1" * 70000, headers=alice.auth()), 413)

    assert api.post(f"{url}/events/approve", json="ada", headers=alice.auth()).status_code == 202
    done = wait_status(api, alice, iid, lambda b: b["runtimeStatus"] == "Completed")
    assert done["output"] == {"approved_by": "ada"}
    assert (
        "accepts no events"
        in problem(api.post(f"{url}/events/approve", json="late", headers=alice.auth()), 409)[
            "detail"
        ]
    )
    problem(api.post(f"{url}/terminate", headers=alice.auth()), 409)


def test_terminate_through_the_api(api, wf_platform, tenant_maker):
    alice = tenant_maker(wf_platform, "alice")
    iid = start(wf_platform, alice.id, "sleeper", 60)
    wait_status(api, alice, iid, lambda b: b["runtimeStatus"] == "Running")
    r = api.post(
        f"/v1/workflows/{iid}/terminate", json={"reason": "no longer needed"}, headers=alice.auth()
    )
    assert r.status_code == 202
    body = wait_status(api, alice, iid, lambda b: b["runtimeStatus"] == "Terminated")
    assert body["output"] == "no longer needed"


def test_a_failed_workflow_reports_its_error(api, wf_platform, tenant_maker):
    alice = tenant_maker(wf_platform, "alice")
    spec = {"key": "api-fails", "failures": 9, "first_ms": 10, "attempts": 2}
    iid = start(wf_platform, alice.id, "with_retry", spec)
    body = wait_status(api, alice, iid, lambda b: b["runtimeStatus"] == "Failed")
    assert body["output"] is None
    assert "api-fails attempt 2 failed" in body["error"]


def test_starting_an_unknown_workflow_records_no_owner(wf_platform, tenant_maker):
    alice = tenant_maker(wf_platform, "alice")
    with pytest.raises(Exception, match="no orchestrator function named 'ghost'"):
        start(wf_platform, alice.id, "ghost")
    with wf_platform.uow_factory(write=False) as uow:
        assert uow.workflow_runs.get(alice.id, "ghost") is None


def test_without_a_durable_client_workflows_are_503(client, alice):
    body = problem(client.get("/v1/workflows/anything", headers=alice.auth()), 503)
    assert "hartonomous serve" in body["detail"]


def test_openapi_lists_the_workflow_routes(api):
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    assert {
        "/v1/workflows/{instance_id}",
        "/v1/workflows/{instance_id}/events/{name}",
        "/v1/workflows/{instance_id}/terminate",
    } <= set(paths)
    fields = spec["components"]["schemas"]["WorkflowStatusOut"]["properties"]
    assert {"runtimeStatus", "customStatus", "createdTime", "lastUpdatedTime", "error"} <= set(
        fields
    )
