"""The Function App, indexed by the azure-functions library and called without a host."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

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
    "relay_outbox": ("timerTrigger", {"timerTrigger": "IN"}),
    "ingest_document": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "ingest_plan": ("activityTrigger", {"activityTrigger": "IN"}),
    "ingest_embed_batch": ("activityTrigger", {"activityTrigger": "IN"}),
    "ingest_index": ("activityTrigger", {"activityTrigger": "IN"}),
    "ingest_uploaded_blob": ("blobTrigger", {"blobTrigger": "IN", "durableClient": "IN"}),
    "ingest_model": ("orchestrationTrigger", {"orchestrationTrigger": "IN"}),
    "model_plan": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_store_parts": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_finish": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_fail": ("activityTrigger", {"activityTrigger": "IN"}),
    "model_profile": ("activityTrigger", {"activityTrigger": "IN"}),
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


def _durable_client_binding() -> str:
    base = "http://127.0.0.1:17071/runtime/webhooks/durabletask"
    return json.dumps(
        {
            "taskHubName": "Hartonomous",
            "creationUrls": {},
            "managementUrls": {},
            "baseUrl": base,
            "requiredQueryStringParameters": "code=test",
            "rpcBaseUrl": base + "/",
            "httpBaseUrl": base,
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        }
    )


class _Context:
    invocation_id = "test-invocation"
    function_name = "http_api"
    function_directory = str(ROOT)
    trace_context = None
    retry_context = None


def test_calling_the_function_serves_the_fastapi_app(function_app, tmp_path, monkeypatch):
    """What the host would do: call the function with a request and the client binding."""
    from functions import http_api as module
    from hartonomous.api.durable import durable_client

    monkeypatch.setenv("HARTONOMOUS_DATA_DIR", str(tmp_path / "data"))
    module._asgi.cache_clear()
    seen: list[object] = []

    original = module._asgi

    def spy():
        seen.append(durable_client.get())
        return original()

    monkeypatch.setattr(module, "_asgi", spy)
    _, functions = function_app
    api = _named(functions, "http_api")
    user_function = api.get_user_function()

    def call(path: str) -> func.HttpResponse:
        return asyncio.run(
            user_function(
                req=func.HttpRequest(method="GET", url=f"http://localhost{path}", body=b""),
                context=_Context(),
                client=_durable_client_binding(),
            )
        )

    health = call("/healthz")
    assert health.status_code == 200
    assert json.loads(health.get_body())["status"] == "ok"
    assert type(seen[0]).__name__ == "DurableOrchestrationClient"
    assert durable_client.get() is None  # reset after the request

    unauthenticated = call("/v1/atoms")
    assert unauthenticated.status_code == 401
    assert unauthenticated.mimetype == "application/problem+json"
    original.cache_clear()


def test_the_uploads_blob_trigger_watches_the_uploads_container(function_app):
    _, functions = function_app
    raw = [json.loads(b) for b in _named(functions, "ingest_uploaded_blob").get_raw_bindings()]
    trigger = next(b for b in raw if b["type"] == "blobTrigger")
    assert trigger["path"] == "uploads/{name}" and trigger["connection"] == "AzureWebJobsStorage"


def test_the_blob_trigger_logs_bad_uploads_instead_of_retrying_them(function_app, tmp_path, caplog):
    """Bad bytes do not get better on retry: the trigger logs them and returns."""
    import io
    import logging

    from functions import runtime
    from hartonomous.bootstrap import bootstrap
    from hartonomous.services import tenants
    from hartonomous.settings import Settings

    class Blob(io.BytesIO):
        name = ""

    _, functions = function_app
    handler = _named(functions, "ingest_uploaded_blob").get_user_function()
    platform = bootstrap(Settings(data_dir=tmp_path / "data"))
    runtime.use(platform)
    try:
        tenant, _ = tenants.create_tenant(platform.uow_factory, name="alice")
        for name in (f"uploads/{tenant.id}/broken.gguf", "uploads/nobody/notes.md"):
            blob = Blob(b"not what it claims")
            blob.name = name
            with caplog.at_level(logging.WARNING, logger="functions.knowledge"):
                asyncio.run(handler(upload=blob, client=_durable_client_binding()))
            assert f"upload {name} refused" in caplog.text
        assert platform.atoms.list(tenant_id=tenant.id, limit=10, cursor=None).items == []
    finally:
        runtime.use(None)
        platform.close()
