"""The Function App, indexed by the azure-functions library and called without a host."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from functions_host import durable_binding

ROOT = Path(__file__).resolve().parent.parent
HOST_JSON = json.loads((ROOT / "host.json").read_text())

# Function name -> (trigger type, {binding type: direction}).
EXPECTED = {
    "http_api": (
        "httpTrigger",
        {"httpTrigger": "IN", "durableClient": "IN", "http": "OUT"},
    ),
    "diagnostics_fan_out": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "diagnostics_chain": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "diagnostics_noop": ("activityTrigger", {"activityTrigger": "IN"}),
    "sweep_staging": ("timerTrigger", {"timerTrigger": "IN"}),
    "collect_blobs": ("timerTrigger", {"timerTrigger": "IN"}),
    "relay_outbox": ("timerTrigger", {"timerTrigger": "IN"}),
    "ingest_document": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "ingest_plan": ("activityTrigger", {"activityTrigger": "IN"}),
    "ingest_embed_batch": ("activityTrigger", {"activityTrigger": "IN"}),
    "ingest_index": ("activityTrigger", {"activityTrigger": "IN"}),
    "complete_uploaded_blob": ("blobTrigger", {"blobTrigger": "IN", "durableClient": "IN"}),
    "sweep_upload_sessions": ("timerTrigger", {"timerTrigger": "IN"}),
    "ingest_model": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "model_plan": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_store_parts": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_finish": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_fail": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_profile": ("activityTrigger", {"activityTrigger": "IN"}),
    "workflow_record_failure": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_run": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "autonomy_schedule": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "autonomy_retry_dead_letter": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "autonomy_analyze": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_hypothesize": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_request_approvals": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_settle_approval": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_record_phase": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_baseline": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_act": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_dead_letter": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_resolve_dead_letter": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_learn": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_finish": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_schedule_policy": ("activityTrigger", {"activityTrigger": "IN"}),
    "autonomy_start_scheduled": ("activityTrigger", {"activityTrigger": "IN"}),
    "agent_run": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "agent_think": ("activityTrigger", {"activityTrigger": "IN"}),
    "agent_request_approval": ("activityTrigger", {"activityTrigger": "IN"}),
    "agent_settle_approval": ("activityTrigger", {"activityTrigger": "IN"}),
    "agent_tool": ("activityTrigger", {"activityTrigger": "IN"}),
    "agent_finish": ("activityTrigger", {"activityTrigger": "IN"}),
    "billing_stripe_event": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "billing_run": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "billing_bill_tenant": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "billing_apply_event": ("activityTrigger", {"activityTrigger": "IN"}),
    "billing_due": ("activityTrigger", {"activityTrigger": "IN"}),
    "billing_bill": ("activityTrigger", {"activityTrigger": "IN"}),
    "billing_reconcile": ("activityTrigger", {"activityTrigger": "IN"}),
    # The monthly run starts its orchestration: the timer binds a Durable client.
    "billing_monthly": ("timerTrigger", {"timerTrigger": "IN", "durableClient": "IN"}),
    "sweep_credit_holds": ("timerTrigger", {"timerTrigger": "IN"}),
    "concepts_discover": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "concepts_cluster": ("activityTrigger", {"activityTrigger": "IN"}),
    "concepts_bind": ("activityTrigger", {"activityTrigger": "IN"}),
    "concepts_finish": ("activityTrigger", {"activityTrigger": "IN"}),
    # The hourly discovery starts its orchestrations: the timer binds a Durable client.
    "concepts_hourly": ("timerTrigger", {"timerTrigger": "IN", "durableClient": "IN"}),
}


@pytest.fixture(scope="module")
def function_app():
    sys.path.insert(0, str(ROOT))
    try:
        import function_app as module

        # get_functions() validates and may run once per app: index here, share the result.
        yield module, module.app.get_functions()
    finally:
        sys.path.remove(str(ROOT))


def test_functions_are_indexed_with_unique_names_and_expected_bindings(function_app):
    _, functions = function_app
    names = [f.get_function_name() for f in functions]
    assert len(names) == len(set(names)), names
    assert set(names) == set(EXPECTED)
    for f in functions:
        trigger, bindings = EXPECTED[f.get_function_name()]
        assert f.get_trigger().type == trigger
        raw = [json.loads(b) for b in f.get_raw_bindings()]
        assert {b["type"]: b["direction"] for b in raw} == bindings


def _named(functions: list[Any], name: str) -> Any:
    return next(f for f in functions if f.get_function_name() == name)


def test_every_orchestrator_in_functions_is_indexed_and_runs_locally(function_app):
    """What Azure indexes is what the local host registers: the same names, one source."""
    from hartonomous.workflows.registry import Registry

    _, functions = function_app
    registry = Registry.from_functions(functions)
    indexed = {
        f.get_function_name(): f.get_trigger().type
        for f in functions
        if f.get_trigger().type in ("orchestrationTrigger", "activityTrigger")
    }
    assert {n for n, t in indexed.items() if t == "orchestrationTrigger"} == set(
        registry.orchestrators
    )
    assert {n for n, t in indexed.items() if t == "activityTrigger"} == set(registry.activities)
    for name in registry.orchestrators:  # each is the SDK's handler over a generator function
        handler = registry.orchestrators[name]
        assert callable(handler) and hasattr(handler, "orchestrator_function")


def test_the_catch_all_route_takes_every_path_and_method(function_app):
    _, functions = function_app
    api = _named(functions, "http_api")
    trigger = next(json.loads(b) for b in api.get_raw_bindings() if "route" in json.loads(b))
    assert trigger["route"] == "{*route}"
    assert trigger["authLevel"] == "ANONYMOUS"  # the API authenticates with its own keys
    assert {"GET", "POST", "DELETE", "HEAD"} <= set(trigger["methods"])


def test_host_json_routes_at_the_root_and_pins_the_bundle():
    assert HOST_JSON["version"] == "2.0"
    assert HOST_JSON["extensions"]["http"]["routePrefix"] == ""
    assert HOST_JSON["extensionBundle"]["version"] == "[4.*, 5.0.0)"


def test_host_json_configures_durable_task_on_the_durable_task_scheduler():
    durable = HOST_JSON["extensions"]["durableTask"]
    assert durable["hubName"] == "%TASKHUB_NAME%"
    assert durable["maxConcurrentActivityFunctions"] > 0
    assert durable["maxConcurrentOrchestratorFunctions"] > 0
    assert durable["storageProvider"] == {
        "type": "azureManaged",
        "connectionStringName": "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    }
    docs = (ROOT / "docs" / "workflows.md").read_text()
    assert "Durable Task Scheduler" in docs and "Azure Storage" in docs


def test_requirements_deploy_no_local_inference():
    lines = (ROOT / "requirements.txt").read_text().lower().splitlines()
    text = "\n".join(line.split("#", 1)[0] for line in lines)
    for heavy in ("torch", "llama", "sentence-transformers"):
        assert heavy not in text


async def _send_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    """Send a response the way the worker's server would: status, headers, then the body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response({"type": "http"}, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_the_worker_streams_the_http_function(function_app):
    """What the worker checks before it hands the function a fastapi Request (HTTP streams):
    a web extension is loaded, and the annotations are its request and response types."""
    import typing

    from azurefunctions.extensions.base import (
        HttpV2FeatureChecker,
        RequestTrackerMeta,
        ResponseTrackerMeta,
    )

    _, functions = function_app
    assert HttpV2FeatureChecker.http_v2_enabled()
    hints = typing.get_type_hints(_named(functions, "http_api").get_user_function())
    assert hints["client"] is str  # the Durable SDK's wrapper: the worker passes the JSON
    assert RequestTrackerMeta.check_type(hints["req"])
    assert ResponseTrackerMeta.check_type(hints["return"])


def test_calling_the_function_serves_the_fastapi_app(function_app, tmp_path, monkeypatch):
    """What the worker does: call the function with a fastapi Request and the client binding,
    then send the response it returned."""
    from fastapi import Request

    from functions import http_api as module
    from hartonomous.api.durable import durable_client

    monkeypatch.setenv("HARTONOMOUS_DATA_DIR", str(tmp_path / "data"))
    module._app.cache_clear()
    seen: list[object] = []

    original = module._app

    def spy():
        seen.append(durable_client.get())
        return original()

    monkeypatch.setattr(module, "_app", spy)
    _, functions = function_app
    api = _named(functions, "http_api")
    user_function = api.get_user_function()

    def call(path: str) -> tuple[int, dict[str, str], bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"localhost")],
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def invoke() -> tuple[int, dict[str, str], bytes]:
            request = Request(scope, receive)
            response = await user_function(req=request, client=durable_binding())
            return await _send_response(response)

        return asyncio.run(invoke())

    status, _, body = call("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    assert type(seen[0]).__name__ == "DurableOrchestrationClient"
    assert durable_client.get() is None  # reset after the request

    status, headers, _ = call("/v1/atoms")
    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    original.cache_clear()


def test_the_uploads_blob_trigger_is_the_event_grid_kind_flex_consumption_runs(function_app):
    _, functions = function_app
    raw = [json.loads(b) for b in _named(functions, "complete_uploaded_blob").get_raw_bindings()]
    trigger = next(b for b in raw if b["type"] == "blobTrigger")
    assert trigger["source"] == "EventGrid"
    assert trigger["path"] == "%HARTONOMOUS_BLOB_CONTAINER%/uploads/{tenant}/{upload}"
    assert trigger["connection"] == "HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING"


def test_the_blob_trigger_logs_what_it_cannot_complete(function_app, tmp_path, caplog):
    """A stray blob or a session it cannot complete does not get better on retry: the
    trigger logs it and returns (the SDK BlobClient is only asked its name)."""
    import logging
    from types import SimpleNamespace

    from functions import runtime
    from hartonomous.bootstrap import bootstrap
    from hartonomous.services import tenants
    from hartonomous.settings import Settings

    _, functions = function_app
    handler = _named(functions, "complete_uploaded_blob").get_user_function()
    platform = bootstrap(Settings(data_dir=tmp_path / "data"))
    runtime.use(platform)
    try:
        tenant = tenants.create_tenant(platform.uow_factory, name="alice")[0]
        for name, logged in (
            ("stray.md", "is not an upload session's"),
            (f"uploads/{tenant.id}/no-such-upload", "not completed: no upload session"),
        ):
            received = SimpleNamespace(blob_name=name)
            with caplog.at_level(logging.WARNING):
                asyncio.run(handler(received=received, client=durable_binding()))
            assert logged in caplog.text
        assert platform.atoms.list(tenant_id=tenant.id, limit=10, cursor=None).items == []
    finally:
        runtime.use(None)
        platform.close()
