"""Agent runs over the real app, a real SQLite store and the local Durable host: start,
list, read, cancel, the event stream (over real HTTP), and agents' requests in /v1/approvals.

The run's orchestration is stood in for by a small one registered under its name
(``names.RUN``): these tests are about what the API records and what it tells workflows,
not about what a run does. Versions, steps and approvals are written through the agents'
repository, as the compiler and the orchestration write them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import azure.durable_functions as df
import httpx
import pytest
from fastapi.testclient import TestClient
from live_server import serving

from conftest import TenantKeys, make_tenant
from hartonomous.agents import names
from hartonomous.agents.compiled import CompiledAgent, CompiledModel
from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRunRecord,
    StepRecord,
    VersionRecord,
    ViolationRecord,
)
from hartonomous.api import agent_runs
from hartonomous.api.app import create_app
from hartonomous.autonomy.names import approval_event
from hartonomous.autonomy.records import ApprovalRecord, RunRecord
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.inference.model_files import builtin_model
from hartonomous.models.store import ModelRecord
from hartonomous.services.clock import new_id, utcnow
from hartonomous.settings import Settings

PROBLEM = "application/problem+json"
bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def agent_run(context: df.DurableOrchestrationContext):
    """Stands in for a run: waits for the event named by ``wait_for`` (else one that never
    comes) and returns what it carried."""
    data = context.get_input()
    decision = yield context.wait_for_external_event(data.get("wait_for") or "never")
    return decision


def stub_functions() -> list[Any]:
    app = df.DFApp()
    app.register_functions(bp)
    functions = app.get_functions()
    assert names.RUN in {f.get_function_name() for f in functions}
    return functions


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[TestClient, Platform]]:
    platform = bootstrap(
        Settings(data_dir=tmp_path / "data", autonomy_retry_first_ms=7),
        functions=stub_functions(),
    )
    with TestClient(create_app(platform)) as api:
        yield api, platform
    platform.close()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    return body


def wait_workflow(api: TestClient, who: TenantKeys, iid: str, until: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = api.get(f"/v1/workflows/{iid}", headers=who.auth("read")).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


# -- seeding rows as the compiler and the orchestration write them ------------------------------


def add_agent(
    platform: Platform, tenant_id: str, name: str = "helper", *, model: CompiledModel | None = None,
    credits: float = 1.0, rules: tuple[dict[str, Any], ...] = (), instructions: str = "",
) -> VersionRecord:  # fmt: skip
    """A compiled version the name points at (the built-in model unless told)."""
    if model is None:
        ref = builtin_model()
        model = CompiledModel(ref.id, ref.sha256, ref.name)
    agent = CompiledAgent(
        name=name, description="", instructions=instructions, model=model, filters={},
        snapshot=0, tools=[], constitution=list(rules), credits_per_run=credits, max_steps=6,
        max_duration_s=600, output_schema=None, temperature=0.0, max_tokens_per_step=192,
    )  # fmt: skip
    now = utcnow()
    version = VersionRecord(tenant_id, agent.version_id, name, agent.to_json(), model.id,
                            model.sha256, 0, now, "key:test")  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.agents.add_version(version)
        uow.agents.point(tenant_id, name, version.id, now)
        uow.commit()
    return version


def add_model(platform: Platform, tenant_id: str, status: str = "ready") -> ModelRecord:
    now = utcnow()
    record = ModelRecord(new_id(), tenant_id, "tiny.gguf", status, None, None, "ab" * 32, 10,
                         None, None, None, None, None, None, None, None, None, None, None, None,
                         None, None, now, now)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.models.add(record)
        uow.commit()
    return record


def add_run(
    platform: Platform, tenant_id: str, version: VersionRecord, status: str = "running"
) -> AgentRunRecord:
    run_id = new_id()
    run = AgentRunRecord(run_id, tenant_id, version.name, version.id, names.run_instance_id(run_id),
                         status, "what is a quasar?", 7, 1.0, 6, 600, 0, 0.0, None, None, None,
                         None, utcnow(), None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.agents.add_run(run)
        uow.commit()
    return run


def add_step(
    platform: Platform, run: AgentRunRecord, step: int, kind: str, status: str,
    cost: float = 0.0,
) -> StepRecord:  # fmt: skip
    tool = kind == "tool"
    row = StepRecord(new_id(), run.tenant_id, run.id, step, kind, "save_note" if tool else None,
                     {"text": "remember quasars"} if tool else None, status, None,
                     None if tool else new_id(), {"output_atom_id": "a"} if not tool else None,
                     cost, utcnow(), None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
        assert uow.agents.add_step(row)
        uow.agents.add_cost(run.tenant_id, run.id, cost, step)
        uow.commit()
    return row


def set_step(platform: Platform, step: StepRecord, status: str) -> None:
    with platform.uow_factory(write=True, tenant_id=step.tenant_id) as uow:
        assert uow.agents.update_step(step.tenant_id, step.id, [step.status], status=status)
        uow.commit()


def add_agent_approval(
    platform: Platform, run: AgentRunRecord, step: StepRecord,
    expires_in: timedelta = timedelta(hours=1),
) -> AgentApprovalRecord:  # fmt: skip
    now = utcnow()
    approval = AgentApprovalRecord(new_id(), run.tenant_id, run.id, step.id, run.instance_id,
                                   "require_approval:save_note", "pending", now,
                                   now + expires_in, None, None, None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
        uow.agents.add_approval(approval)
        uow.commit()
    return approval


Gated = tuple[AgentRunRecord, StepRecord, AgentApprovalRecord]


def gated(platform: Platform, tenant_id: str, **kw: Any) -> Gated:
    """A running run whose step 1 waits for a human to allow its save_note."""
    run = add_run(platform, tenant_id, add_agent(platform, tenant_id))
    add_step(platform, run, 1, "model", "chose_tool", cost=0.01)
    step = add_step(platform, run, 1, "tool", "awaiting_approval")
    return run, step, add_agent_approval(platform, run, step, **kw)


def end_run(platform: Platform, run: AgentRunRecord, status: str = "answered") -> None:
    with platform.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
        assert uow.agents.end_run(run.tenant_id, run.id, status, utcnow(), answer="done")
        uow.commit()


def step_of(platform: Platform, step: StepRecord) -> StepRecord:
    with platform.uow_factory(write=False, tenant_id=step.tenant_id) as uow:
        found = uow.agents.step(step.tenant_id, step.id)
    assert found is not None
    return found


def key_id(platform: Platform, secret: str) -> str:
    return platform.tenants.authenticate(secret).key_id


# -- start --------------------------------------------------------------------------------------


def test_a_run_starts_with_its_caps_and_shows_its_status(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    rules = ({"type": "max_credits", "credits": 0.75}, {"type": "max_steps", "steps": 4})
    version = add_agent(platform, alice.id, rules=rules)
    problem(api.post("/v1/agents/helper/runs", json={"input": "hi"}, headers=alice.auth("read")),
            403)  # fmt: skip
    started = api.post("/v1/agents/helper/runs", json={"input": "what is a quasar?", "seed": 42},
                       headers=alice.auth())  # fmt: skip
    assert started.status_code == 202, started.text
    out = started.json()
    assert started.headers["location"] == out["status_url"] == f"/v1/agents/runs/{out['run_id']}"
    assert out["instance_id"] == names.run_instance_id(out["run_id"])
    workflow = wait_workflow(
        api, alice, out["instance_id"], lambda b: b["runtimeStatus"] == "Running"
    )
    run_input = names.RunInput.from_json(workflow["input"])
    assert (run_input.tenant_id, run_input.run_id) == (alice.id, out["run_id"])
    # The caps are the smaller of the budget and the rules; the step estimate is the price's.
    assert (run_input.budget_credits, run_input.max_steps) == (0.75, 4)
    assert run_input.max_duration_s == 600 and run_input.retry_first_ms == 7
    assert run_input.step_credits == names.step_credits(192)

    run = api.get(out["status_url"], headers=alice.auth("read")).json()
    assert (run["status"], run["agent_name"], run["version_id"]) == (
        "running",
        "helper",
        version.id,
    )
    assert (run["input"], run["seed"], run["budget_credits"], run["max_steps"]) == (
        "what is a quasar?", 42, 0.75, 4)  # fmt: skip
    assert run["steps"] == [] and run["violations"] == [] and run["approvals"] == []
    assert run["receipt"] is None and run["step_count"] == 0
    # The version id runs it too; another tenant sees neither the run nor the agent.
    by_version = api.post(
        f"/v1/agents/{version.id}/runs", json={"input": "x"}, headers=alice.auth()
    )
    assert by_version.status_code == 202, by_version.text
    problem(api.get(out["status_url"], headers=bob.auth("read")), 404)
    problem(api.post("/v1/agents/helper/runs", json={"input": "x"}, headers=bob.auth()), 404)
    problem(api.post(f"/v1/agents/{version.id}/runs", json={"input": "x"}, headers=bob.auth()), 404)
    problem(api.get(f"/v1/workflows/{out['instance_id']}", headers=bob.auth("read")), 404)


def test_a_start_is_refused_with_the_reason(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice = make_tenant(platform, "alice")
    write = alice.auth()
    add_agent(platform, alice.id)
    url = "/v1/agents/helper/runs"
    problem(api.post("/v1/agents/nobody/runs", json={"input": "x"}, headers=write), 404)
    for bad, where in [
        ({"input": "x", "seed": True}, "seed"),  # a boolean is no number
        ({"input": "x", "seed": -1}, "seed"),
        ({"input": "x", "seed": 2**31}, "seed"),
        ({"input": ""}, "input"),
        ({"input": "x" * 8001}, "input"),
        ({"input": 5}, "input"),
        ({}, "input"),
        ({"input": "x", "budget": 3}, "budget"),  # extra keys are refused
    ]:
        assert where in problem(api.post(url, json=bad, headers=write), 422)["detail"]

    # A cap that cannot pay one step (prices may have risen since it compiled).
    add_agent(platform, alice.id, "thrifty", rules=({"type": "max_credits", "credits": 0.01},))
    body = problem(api.post("/v1/agents/thrifty/runs", json={"input": "x"}, headers=write), 422)
    assert "budget too small" in body["detail"] and body["step_credits"] == names.step_credits(192)

    # A retired name runs nothing: 410.
    add_agent(platform, alice.id, "old")
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        assert uow.agents.retire(alice.id, "old", utcnow())
        uow.commit()
    assert "retired" in problem(api.post("/v1/agents/old/runs", json={"input": "x"},
                                         headers=write), 410)["detail"]  # fmt: skip

    # A tenant model pinned by the version: no longer ready, bytes changed, gone: 409.
    model = add_model(platform, alice.id)
    add_agent(platform, alice.id, "own", model=CompiledModel(model.id, model.sha256, model.name))
    own = "/v1/agents/own/runs"
    assert api.post(own, json={"input": "x"}, headers=write).status_code == 202
    for values, says in [
        ({"status": "failed"}, "not ready"),
        ({"status": "ready", "sha256": "cd" * 32}, "the model's bytes changed"),
    ]:
        with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
            uow.models.update(alice.id, model.id, **values)
            uow.commit()
        body = problem(api.post(own, json={"input": "x"}, headers=write), 409)
        assert says in body["detail"] and body["model_id"] == model.id
    add_agent(platform, alice.id, "ghost", model=CompiledModel(new_id(), "ef" * 32, "gone.gguf"))
    body = problem(api.post("/v1/agents/ghost/runs", json={"input": "x"}, headers=write), 409)
    assert "no longer exists" in body["detail"]
    # None of the refusals left a run behind.
    runs = api.get("/v1/agents/runs", headers=alice.auth("read")).json()["items"]
    assert [r["agent_name"] for r in runs] == ["own"]


def test_a_run_whose_workflow_cannot_start_ends_failed(tmp_path: Path) -> None:
    import workflow_app  # functions without the run's orchestration

    platform = bootstrap(Settings(data_dir=tmp_path / "data"), functions=workflow_app.functions())
    try:
        alice = make_tenant(platform, "alice")
        add_agent(platform, alice.id)
        assert platform.workflows is not None
        client = platform.workflows.client

        async def start() -> None:
            await platform.agent_runs.start(client, alice.id, "helper", "hi", None, "key:k")

        with pytest.raises(Exception, match="no orchestrator function named 'agent_run'"):
            anyio.run(start)
        [failed] = platform.agent_runs.runs(alice.id, 10).items
        assert failed.status == "failed" and "did not start" in (failed.error or "")
        assert failed.ended_at is not None and (failed.receipt or {})["status"] == "failed"
    finally:
        platform.close()


# -- list, read, cancel -------------------------------------------------------------------------


def test_runs_list_and_show_their_audit(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    helper, other = add_agent(platform, alice.id), add_agent(platform, alice.id, "other")
    runs = [add_run(platform, alice.id, v, "answered") for v in (helper, other, helper)]
    add_run(platform, bob.id, add_agent(platform, bob.id))
    read = alice.auth("read")
    first = api.get("/v1/agents/runs?limit=2", headers=read).json()
    assert [r["id"] for r in first["items"]] == [runs[2].id, runs[1].id]  # newest first
    rest = api.get(f"/v1/agents/runs?limit=2&cursor={first['next_cursor']}", headers=read).json()
    assert [r["id"] for r in rest["items"]] == [runs[0].id] and rest["next_cursor"] is None
    mine = api.get("/v1/agents/runs?agent=helper", headers=read).json()["items"]
    assert [r["id"] for r in mine] == [runs[2].id, runs[0].id]
    problem(api.get("/v1/agents/runs?cursor=nope!", headers=read), 400)
    problem(api.get("/v1/agents/runs?agent=Not_A_Name", headers=read), 422)
    problem(api.get("/v1/agents/runs?limit=101", headers=read), 422)

    run = runs[0]
    add_step(platform, run, 1, "model", "chose_tool", cost=0.02)
    step = add_step(platform, run, 1, "tool", "awaiting_approval")
    approval = add_agent_approval(platform, run, step)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.agents.add_violation(ViolationRecord(alice.id, run.id, 1, "require_approval",
                                                 "save_note needs a human", "approval",
                                                 utcnow()))  # fmt: skip
        uow.commit()
    detail = api.get(f"/v1/agents/runs/{run.id}", headers=read).json()
    assert [(s["step"], s["kind"], s["status"]) for s in detail["steps"]] == [
        (1, "model", "chose_tool"), (1, "tool", "awaiting_approval")]  # fmt: skip
    assert detail["steps"][1]["name"] == "save_note" and detail["step_count"] == 1
    [violation] = detail["violations"]
    assert (violation["rule_type"], violation["outcome"]) == ("require_approval", "approval")
    [requested] = detail["approvals"]
    assert (requested["id"], requested["step_id"], requested["status"]) == (
        approval.id, step.id, "pending")  # fmt: skip
    problem(api.get(f"/v1/agents/runs/{run.id}", headers=bob.auth("read")), 404)
    problem(api.get("/v1/agents/runs/nope", headers=read), 404)


def test_cancel_ends_the_run_with_its_receipt_and_stops_its_workflow(
    wf: tuple[TestClient, Platform],
) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    add_agent(platform, alice.id)
    out = api.post("/v1/agents/helper/runs", json={"input": "hi"}, headers=alice.auth()).json()
    wait_workflow(api, alice, out["instance_id"], lambda b: b["runtimeStatus"] == "Running")
    run_id = out["run_id"]
    # The orchestration got as far as a gated step: cancelling expires its request.
    with platform.uow_factory(write=False, tenant_id=alice.id) as uow:
        run = uow.agents.run(alice.id, run_id)
    assert run is not None
    add_step(platform, run, 1, "model", "chose_tool", cost=0.03)
    step = add_step(platform, run, 1, "tool", "awaiting_approval")
    approval = add_agent_approval(platform, run, step)

    cancel = f"/v1/agents/runs/{run_id}/cancel"
    problem(api.post(cancel, headers=alice.auth("read")), 403)
    problem(api.post(cancel, headers=bob.auth()), 404)
    cancelled = api.post(cancel, headers=alice.auth())
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    by = f"key:{key_id(platform, alice.write)}"
    assert (
        body["status"] == "cancelled" and body["ended_at"] and body["error"] == f"cancelled by {by}"
    )
    wait_workflow(api, alice, out["instance_id"], lambda b: b["runtimeStatus"] == "Terminated")

    detail = api.get(f"/v1/agents/runs/{run_id}", headers=alice.auth("read")).json()
    receipt = detail["receipt"]
    assert receipt["status"] == "cancelled" and receipt["run_id"] == run_id
    assert [(s["step"], s["kind"], s["status"]) for s in receipt["steps"]] == [
        (1, "model", "chose_tool"), (1, "tool", "expired")]  # fmt: skip
    assert receipt["spent_credits"] == 0.03 and receipt["ended_at"]
    got = api.get(f"/v1/approvals/{approval.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("expired", "run-ended")

    again = problem(api.post(cancel, headers=alice.auth()), 409)
    assert again["run_status"] == "cancelled" and "has ended (cancelled)" in again["detail"]
    # A run whose workflow is gone (or never existed) is cancelled all the same.
    orphan = add_run(platform, alice.id, add_agent(platform, alice.id, "orphan"))
    gone = api.post(f"/v1/agents/runs/{orphan.id}/cancel", headers=alice.auth())
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"


def test_cancel_needs_no_workflows(client: TestClient, platform: Platform, alice) -> None:
    """Where no workflows run, the database is still the truth: the run ends cancelled and
    its orchestration, wherever it runs, finds that at its next step."""
    run = add_run(platform, alice.id, add_agent(platform, alice.id))
    body = client.post(f"/v1/agents/runs/{run.id}/cancel", headers=alice.auth()).json()
    assert body["status"] == "cancelled"
    end_other = add_run(platform, alice.id, add_agent(platform, alice.id, "done"), "answered")
    problem(client.post(f"/v1/agents/runs/{end_other.id}/cancel", headers=alice.auth()), 409)
    problem(client.post("/v1/agents/helper/runs", json={"input": "x"}, headers=alice.auth()), 503)


# -- approvals ----------------------------------------------------------------------------------


def add_loop_approval(platform: Platform, tenant_id: str) -> ApprovalRecord:
    """A loop's pending request (its run ended, so it is only listed, never decided here)."""
    from hartonomous.autonomy.records import ActionRecord

    now = utcnow()
    run_id = new_id()
    run = RunRecord(run_id, tenant_id, f"autonomy-{run_id}", "api", "completed", 5.0, 3600, 3, 1,
                    0.0, None, None, now, None)  # fmt: skip
    action = ActionRecord(new_id(), tenant_id, run.id, 1, "learn_association", 1, {"q": 1},
                          "deterministic", "awaiting_approval", None, None, None, None, 0, now,
                          now, None, None)  # fmt: skip
    approval = ApprovalRecord(new_id(), tenant_id, run.id, action.id, run.instance_id, "pending",
                              now, now + timedelta(hours=1), None, None, None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.autonomy.add_run(run)
        uow.autonomy.add_actions([action])
        uow.autonomy.add_approval(approval)
        uow.commit()
    return approval


def test_approvals_list_both_kinds_under_one_cursor(
    client: TestClient, platform: Platform, alice: TenantKeys, bob: TenantKeys
) -> None:
    loop_a = add_loop_approval(platform, alice.id)
    _, _, agent_b = gated(platform, alice.id)
    loop_c = add_loop_approval(platform, alice.id)
    _, _, agent_d = gated(platform, alice.id)
    gated(platform, bob.id)
    read = alice.auth("read")
    everything = client.get("/v1/approvals", headers=read).json()
    newest_first = [agent_d.id, loop_c.id, agent_b.id, loop_a.id]
    assert [x["id"] for x in everything["items"]] == newest_first
    assert [x["kind"] for x in everything["items"]] == ["agent", "loop", "agent", "loop"]
    seen, cursor = [], None
    while True:  # one at a time: the keyset carries across both tables
        page = client.get("/v1/approvals?limit=1" + (f"&cursor={cursor}" if cursor else ""),
                          headers=read).json()  # fmt: skip
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == newest_first
    two = client.get("/v1/approvals?limit=2", headers=read).json()
    rest = client.get(f"/v1/approvals?limit=2&cursor={two['next_cursor']}", headers=read).json()
    assert [x["id"] for x in two["items"] + rest["items"]] == newest_first

    agent = client.get(f"/v1/approvals/{agent_b.id}", headers=read).json()
    assert (agent["kind"], agent["action"], agent["action_id"]) == ("agent", None, None)
    assert agent["step"] == {"run_id": agent_b.run_id, "step": 1, "kind": "tool",
                             "tool": "save_note", "arguments": {"text": "remember quasars"},
                             "reason": "require_approval:save_note",
                             "status": "awaiting_approval", "answer": None,
                             "citations": None}  # fmt: skip
    assert agent["instance_id"] == names.run_instance_id(agent_b.run_id)
    loop = client.get(f"/v1/approvals/{loop_a.id}", headers=read).json()
    assert loop["kind"] == "loop" and loop["step"] is None and loop["action"]["status"]
    problem(client.get(f"/v1/approvals/{agent_b.id}", headers=bob.auth("read")), 404)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.agents.decide(alice.id, agent_b.id, "rejected", "key:k", utcnow())
        uow.commit()
    pending = client.get("/v1/approvals?status=pending", headers=read).json()["items"]
    assert [x["id"] for x in pending] == [agent_d.id, loop_c.id, loop_a.id]
    rejected = client.get("/v1/approvals?status=rejected", headers=read).json()["items"]
    assert [x["id"] for x in rejected] == [agent_b.id]


def test_an_admin_approves_an_agents_step_and_the_run_hears_it(
    wf: tuple[TestClient, Platform],
) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    _, step, approval = gated(platform, alice.id)
    assert platform.workflows is not None
    client = platform.workflows.client

    async def start() -> str:
        return await platform.tenant_workflows.start(
            client, tenant_id=alice.id, name=names.RUN,
            input={"wait_for": approval_event(approval.id)}, instance_id=approval.instance_id,
        )  # fmt: skip

    anyio.run(start)
    url = f"/v1/approvals/{approval.id}"
    for scope in ("read", "write"):  # only an admin decides
        problem(api.post(f"{url}/approve", headers=alice.auth(scope)), 403)
    problem(api.post(f"{url}/approve", headers=bob.auth("admin")), 404)  # another tenant's
    assert step_of(platform, step).status == "awaiting_approval"

    decided = api.post(f"{url}/approve", json={"comment": "go"}, headers=alice.auth("admin"))
    assert decided.status_code == 200, decided.text
    body = decided.json()
    by = f"key:{key_id(platform, alice.admin)}"
    assert (body["kind"], body["status"], body["decided_by"], body["comment"]) == (
        "agent", "approved", by, "go")  # fmt: skip
    assert body["step"]["status"] == "approved"
    now = step_of(platform, step)
    assert (now.status, now.decided_by, now.ended_at) == ("approved", by, None)  # it runs next
    done = wait_workflow(api, alice, approval.instance_id,
                         lambda b: b["runtimeStatus"] == "Completed")  # fmt: skip
    assert done["output"] == {"status": "approved"}
    again = problem(api.post(f"{url}/reject", headers=alice.auth("admin")), 409)
    assert "is approved" in again["detail"] and again["approval_status"] == "approved"
    assert step_of(platform, step).status == "approved"


def test_rejections_and_refused_decisions_on_agents_steps(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice = make_tenant(platform, "alice")
    admin = alice.auth("admin")
    # Rejected: the step ends without running (its run has no workflow: the database rules).
    _, step, rejected = gated(platform, alice.id)
    body = api.post(f"/v1/approvals/{rejected.id}/reject", headers=admin).json()
    assert (body["status"], body["step"]["status"]) == ("rejected", "rejected")
    now = step_of(platform, step)
    assert now.status == "rejected" and now.ended_at is not None

    # Past its expiry: expired, with its step, and refused.
    _, step, late = gated(platform, alice.id, expires_in=timedelta(seconds=-1))
    assert "expired at" in problem(api.post(f"/v1/approvals/{late.id}/approve", headers=admin),
                                   409)["detail"]  # fmt: skip
    got = api.get(f"/v1/approvals/{late.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("expired", "timer")
    assert (step_of(platform, step).status, step_of(platform, step).decided_by) == (
        "expired", "timer")  # fmt: skip

    # Its run ended without expiring it (rows from before): refused, expired by the end.
    run, step, orphaned = gated(platform, alice.id)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.agents.update_run(alice.id, run.id, status="failed")
        uow.commit()
    body = problem(api.post(f"/v1/approvals/{orphaned.id}/approve", headers=admin), 409)
    assert body["run_status"] == "failed" and f"run {run.id} has ended" in body["detail"]
    assert step_of(platform, step).status == "expired"

    # Its step is no longer waiting: refused, and nothing is recorded.
    _, step, stuck = gated(platform, alice.id)
    set_step(platform, step, "refused")
    body = problem(api.post(f"/v1/approvals/{stuck.id}/approve", headers=admin), 409)
    assert "is refused, not awaiting approval" in body["detail"]
    got = api.get(f"/v1/approvals/{stuck.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("pending", None)  # rolled back


# -- the event stream ---------------------------------------------------------------------------


def read_event(lines: Iterator[str]) -> dict[str, str]:
    """The next event's fields (comments and the retry hint skipped)."""
    event: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in event:
                return event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = value
    raise AssertionError(f"the stream ended inside {event}")


def test_events_stream_steps_as_they_are_recorded(platform: Platform, alice, bob) -> None:
    """Over real HTTP: each step row once it appears and again when it changes (an id only
    once it and all before it are final), then ``end`` when the run ends."""
    run = add_run(platform, alice.id, add_agent(platform, alice.id))
    add_step(platform, run, 1, "model", "chose_tool")
    url = f"/v1/agents/runs/{run.id}/events"

    def later() -> None:
        time.sleep(0.7)
        step = add_step(platform, run, 1, "tool", "awaiting_approval")
        time.sleep(0.7)
        set_step(platform, step, "approved")
        time.sleep(0.7)
        set_step(platform, replace(step, status="approved"), "executed")
        add_step(platform, run, 2, "model", "answered")
        time.sleep(0.7)
        end_run(platform, run)

    with serving(create_app(platform)) as base:
        problem(httpx.get(base + url, headers=bob.auth("read")), 404)
        problem(httpx.get(base + "/v1/agents/runs/nope/events", headers=alice.auth("read")), 404)
        writer = threading.Thread(target=later)
        started = time.monotonic()
        with httpx.stream("GET", base + url, headers=alice.auth("read"), timeout=10) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            writer.start()
            lines = response.iter_lines()
            got = [read_event(lines) for _ in range(6)]
        writer.join()
    assert time.monotonic() - started < 10
    steps = [json.loads(e["data"]) for e in got[:5]]
    assert [e["event"] for e in got] == ["step"] * 5 + ["end"]
    assert [(s["step"], s["kind"], s["status"]) for s in steps] == [
        (1, "model", "chose_tool"), (1, "tool", "awaiting_approval"), (1, "tool", "approved"),
        (1, "tool", "executed"), (2, "model", "answered")]  # fmt: skip
    assert [e.get("id") for e in got] == ["1:model", None, None, "1:tool", "2:model", None]
    end = json.loads(got[5]["data"])
    assert (end["run_id"], end["status"], end["steps"]) == (run.id, "answered", 2)

    # A reconnection resumes after the last id it got; the run has ended: the rest, then end.
    with TestClient(create_app(platform)) as api:
        resumed = api.get(url, headers={**alice.auth("read"), "Last-Event-ID": "1:model"})
        lines = iter(resumed.text.split("\n"))
        again = [read_event(lines) for _ in range(3)]
        assert [(e["event"], e.get("id")) for e in again] == [
            ("step", "1:tool"), ("step", "2:model"), ("end", None)]  # fmt: skip
        problem(api.get(url, headers={**alice.auth("read"), "Last-Event-ID": "later"}), 422)


def test_a_stream_is_bounded_and_the_client_reconnects(
    platform: Platform, alice: TenantKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its time a connection just closes (no ``end``): the run has not ended."""
    monkeypatch.setattr(agent_runs, "STREAM_LIMIT_S", 1.0)
    run = add_run(platform, alice.id, add_agent(platform, alice.id))
    add_step(platform, run, 1, "model", "chose_tool")
    with TestClient(create_app(platform)) as api:
        started = time.monotonic()
        body = api.get(f"/v1/agents/runs/{run.id}/events", headers=alice.auth("read")).text
    assert 0.9 < time.monotonic() - started < 5
    assert body.startswith("retry: 1000\n\n") and "id: 1:model\nevent: step\n" in body
    assert "event: end" not in body
