"""The loop's API over the real app, a real SQLite store and the local Durable host.

The loop's own orchestrations are stood in for by small ones registered under the same
names (``names.RUN``, ``names.SCHEDULE``, ``names.RETRY_DEAD_LETTER``): these tests are about
what the API records and what it tells workflows, not about what the loop does (that is
tests/test_autonomy*.py). Rows the loop would write are written through its repository.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import azure.durable_functions as df
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from conftest import TenantKeys, make_tenant
from hartonomous.api.app import create_app
from hartonomous.autonomy import names
from hartonomous.autonomy.policy import Policy
from hartonomous.autonomy.records import (
    ActionRecord,
    ApprovalRecord,
    DeadLetterRecord,
    PhaseRecord,
    RunRecord,
)
from hartonomous.autonomy.registry import AGENT_TOOLS, LOOP_ACTIONS, REGISTRY
from hartonomous.autonomy.service import START_GRACE
from hartonomous.autonomy.types import RunStatus
from hartonomous.bootstrap import Platform, bootstrap
from hartonomous.domain.tenants import Scope
from hartonomous.errors import Conflict, Forbidden
from hartonomous.services.clock import new_id, utcnow
from hartonomous.services.tenants import Principal
from hartonomous.settings import Settings
from hartonomous.store.schema import autonomy_policies
from hartonomous.store.upsert import SqliteInsertOrIgnore

PROBLEM = "application/problem+json"
bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def autonomy_run(context: df.DurableOrchestrationContext):
    """Stands in for the loop: waits for one approval event (``wait_for``, else the one
    named after its run id) and returns what the event carried."""
    data = context.get_input()
    decision = yield context.wait_for_external_event(
        data.get("wait_for") or names.approval_event(data["run_id"])
    )
    return decision


@bp.orchestration_trigger(context_name="context")
def autonomy_schedule(context: df.DurableOrchestrationContext):
    """Stands in for the scheduler: runs until it is terminated."""
    yield context.wait_for_external_event("never")


@bp.orchestration_trigger(context_name="context")
def autonomy_retry_dead_letter(context: df.DurableOrchestrationContext):
    """Stands in for a retry: runs until told to settle, then returns its input."""
    yield context.wait_for_external_event("settle")
    return context.get_input()


def stub_functions() -> list[Any]:
    app = df.DFApp()
    app.register_functions(bp)
    functions = app.get_functions()
    wanted = {names.RUN, names.SCHEDULE, names.RETRY_DEAD_LETTER}
    assert wanted <= {f.get_function_name() for f in functions}  # the loop's names
    return functions


@pytest.fixture
def wf(tmp_path: Path) -> Iterator[tuple[TestClient, Platform]]:
    """The app with the stand-in orchestrations on the local host (its lifespan runs it)."""
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


def key_id(platform: Platform, secret: str) -> str:
    return platform.tenants.authenticate(secret).key_id


def wait_workflow(api: TestClient, who: TenantKeys, iid: str, until: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = api.get(f"/v1/workflows/{iid}", headers=who.auth("read")).json()
        if until(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


# -- seeding rows as the loop writes them -------------------------------------------------------


def add_run(platform: Platform, tenant_id: str, status: str = "completed") -> RunRecord:
    run_id = new_id()
    run = RunRecord(run_id, tenant_id, names.run_instance_id(run_id), "api", status, 5.0, 3600,
                    3, 1, 0.25, None, None, utcnow(), None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.autonomy.add_run(run)
        uow.commit()
    return run


def add_action(platform: Platform, run: RunRecord, status: str) -> ActionRecord:
    now = utcnow()
    action = ActionRecord(new_id(), run.tenant_id, run.id, 1, "learn_association", 1,
                          {"query": "what is a quasar", "atom_id": new_id()}, "deterministic",
                          status, None, None, None, None, 0, now, now, None, None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
        uow.autonomy.add_actions([action])
        uow.commit()
    return action


def running_run(platform: Platform, tenant_id: str) -> RunRecord:
    """The tenant's active run (one at a time), added when there is none."""
    with platform.uow_factory(write=False, tenant_id=tenant_id) as uow:
        active = uow.autonomy.active_run(tenant_id)
    return active or add_run(platform, tenant_id, "running")


def add_approval(
    platform: Platform, tenant_id: str, expires_in: timedelta = timedelta(hours=1),
    run: RunRecord | None = None, action_status: str = "awaiting_approval",
) -> ApprovalRecord:  # fmt: skip
    """A pending request of a running run (only a running run executes a decision)."""
    run = run or running_run(platform, tenant_id)
    action = add_action(platform, run, action_status)
    now = utcnow()
    approval = ApprovalRecord(new_id(), tenant_id, run.id, action.id, run.instance_id,
                              "pending", now, now + expires_in, None, None, None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.autonomy.add_approval(approval)
        uow.commit()
    return approval


def add_dead_letter(
    platform: Platform, tenant_id: str, status: str = "parked", touched: timedelta = timedelta()
) -> DeadLetterRecord:
    """A parked action (or one claimed for a retry ``touched`` ago)."""
    run = add_run(platform, tenant_id)
    action = add_action(platform, run, "dead_lettered")
    now = utcnow()
    letter = DeadLetterRecord(new_id(), tenant_id, run.id, action.id, action.name,
                              action.parameters, "RuntimeError: boom", 5, status, now,
                              now - touched, None)  # fmt: skip
    with platform.uow_factory(write=True, tenant_id=tenant_id) as uow:
        uow.autonomy.park(letter)
        uow.commit()
    return letter


def action_of(platform: Platform, tenant_id: str, action_id: str) -> ActionRecord:
    with platform.uow_factory(write=False, tenant_id=tenant_id) as uow:
        action = uow.autonomy.action(tenant_id, action_id)
    assert action is not None
    return action


# -- the registry and the policy ----------------------------------------------------------------


def test_the_registry_lists_every_action(client: TestClient, alice: TenantKeys) -> None:
    body = client.get("/v1/actions", headers=alice.auth("read")).json()
    assert [a["name"] for a in body] == list(REGISTRY)
    learn = body[0]
    assert learn["parameters"]["required"] == ["query", "atom_id"]
    assert learn["reversible"] is True and learn["cost_estimate_credits"] > 0
    assert {"version", "scope", "metric", "reversal", "addresses"} <= set(learn)
    problem(client.get("/v1/actions"), 401)


def test_policy_defaults_round_trip_and_refusals(client: TestClient, alice: TenantKeys) -> None:
    admin = alice.auth("admin")
    default = client.get("/v1/policy", headers=admin).json()
    assert default["schedule"]["enabled"] is False
    policy = Policy.model_validate(default)
    # The loop's actions and writing tools wait for a human by default; reading tools do not.
    assert all(policy.decide(name).needs_approval for name in LOOP_ACTIONS)
    assert policy.decide("save_note").needs_approval
    assert not policy.decide("search").needs_approval
    assert not policy.decide("read_atom").needs_approval
    assert set(AGENT_TOOLS) == {"search", "read_atom", "save_note"}

    wanted = {
        "actions": {"cache_answer": {"allowed": True, "requires_approval": False},
                    "retry_failed_workflow": {"allowed": False}},
        "budget": {"credits": 2.5, "duration_s": 600, "max_iterations": 2},
        "approval_timeout_s": 8 * 24 * 3600,
        "planner": "deterministic",
    }  # fmt: skip
    put = client.put("/v1/policy", json=wanted, headers=admin)
    assert put.status_code == 200, put.text
    got = client.get("/v1/policy", headers=admin).json()
    assert got == put.json()
    assert got["actions"]["retry_failed_workflow"] == {"allowed": False, "requires_approval": True}
    assert got["budget"] == wanted["budget"] and got["planner"] == "deterministic"

    for bad, where in [
        ({"actions": {"run_shell": {}}}, "unknown actions ['run_shell']"),
        ({"actions": {"cache_answer": {"allowed": True, "sudo": True}}}, "sudo"),
        ({"budget": {"credits": 0}}, "budget.credits"),
        ({"approval_timeout_s": 1}, "approval_timeout_s"),
        ({"surprise": 1}, "surprise"),
        ({"budget": {"duration_s": True}}, "budget.duration_s"),  # a boolean is no number
        ({"schedule": {"enabled": 1}}, "schedule.enabled"),
    ]:
        assert where in problem(client.put("/v1/policy", json=bad, headers=admin), 422)["detail"]
    for scope in ("read", "write"):
        body = problem(client.get("/v1/policy", headers=alice.auth(scope)), 403)
        assert body["required_scope"] == "admin"
        problem(client.put("/v1/policy", json={}, headers=alice.auth(scope)), 403)
    # Turning the schedule on needs workflows; this process has none: refused, nothing stored.
    scheduled = {**wanted, "schedule": {"enabled": True, "every_minutes": 60}}
    problem(client.put("/v1/policy", json=scheduled, headers=admin), 503)
    assert client.get("/v1/policy", headers=admin).json() == got


def test_a_first_policy_put_by_two_writers_at_once_does_not_break_the_key(
    platform: Platform, alice: TenantKeys
) -> None:
    """Another writer's first PUT lands between this writer's two statements (as a
    concurrent commit would on Azure SQL): the second statement must not insert again."""
    theirs = {"budget": {"credits": 1.0}}
    ours = {"budget": {"credits": 2.0}}
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        conn = uow.autonomy._conn
        landed: list[bool] = []

        def other_writer(conn_: Any, element: Any, *_: Any) -> None:
            if landed or getattr(element, "table", None) is not autonomy_policies:
                return
            landed.append(True)
            row = {"tenant_id": alice.id, "body": theirs, "updated_at": utcnow(),
                   "updated_by": "key:other"}  # fmt: skip
            SqliteInsertOrIgnore()(conn_, autonomy_policies, [row], ("tenant_id",))

        sa.event.listen(conn, "after_execute", other_writer)
        try:
            uow.autonomy.put_policy(alice.id, ours, "key:ours", utcnow())
        finally:
            sa.event.remove(conn, "after_execute", other_writer)
        uow.commit()
    assert landed
    assert platform.autonomy.policy(alice.id).budget.credits == 2.0  # the last write wins


def test_the_schedule_starts_and_stops_with_the_policy(
    wf: tuple[TestClient, Platform],
) -> None:
    api, platform = wf
    alice = make_tenant(platform, "alice")
    iid = names.schedule_instance_id(alice.id)
    on = {"schedule": {"enabled": True, "every_minutes": 30}}
    for _ in range(2):  # a second PUT finds it running and leaves it be
        assert api.put("/v1/policy", json=on, headers=alice.auth("admin")).status_code == 200
        body = wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Running")
        assert body["name"] == names.SCHEDULE and body["input"] == {"tenant_id": alice.id}
    assert api.put("/v1/policy", json={}, headers=alice.auth("admin")).status_code == 200
    wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Terminated")
    assert api.put("/v1/policy", json=on, headers=alice.auth("admin")).status_code == 200
    wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Running")


# -- runs ---------------------------------------------------------------------------------------


def test_a_run_starts_and_shows_its_status(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    admin = alice.auth("admin")
    problem(api.post("/v1/autonomy/runs", json={}, headers=alice.auth("write")), 403)
    started = api.post("/v1/autonomy/runs", json={"max_iterations": 7}, headers=admin)
    assert started.status_code == 202, started.text
    out = started.json()
    assert started.headers["location"] == out["status_url"] == f"/v1/autonomy/runs/{out['run_id']}"
    assert out["instance_id"] == names.run_instance_id(out["run_id"])
    workflow = wait_workflow(
        api, alice, out["instance_id"], lambda b: b["runtimeStatus"] == "Running"
    )
    run_input = names.RunInput.from_json(workflow["input"])
    assert (run_input.tenant_id, run_input.run_id) == (alice.id, out["run_id"])
    assert (run_input.budget_credits, run_input.max_iterations) == (5.0, 7)  # policy, override
    assert run_input.retry_first_ms == 7  # the setting

    run = api.get(out["status_url"], headers=alice.auth("read")).json()
    assert run["status"] == "running" and run["origin"] == "api" and run["max_iterations"] == 7
    assert run["phases"] == [] and run["actions"] == []
    problem(api.get(out["status_url"], headers=bob.auth("read")), 404)  # another tenant's
    problem(api.get("/v1/autonomy/runs/nope", headers=alice.auth("read")), 404)

    # One active run per tenant; another tenant is not held up by it.
    body = problem(api.post("/v1/autonomy/runs", headers=admin), 409)
    assert body["active_run_id"] == out["run_id"]
    assert api.post("/v1/autonomy/runs", headers=bob.auth("admin")).status_code == 202
    for bad in ({"max_iterations": 0}, {"budget_credits": -1}, {"budget": 3}):
        problem(api.post("/v1/autonomy/runs", json=bad, headers=admin), 422)

    # Its workflow ends without ending the run (an operator terminates it): the next start
    # ends the stale run instead of refusing the tenant forever.
    terminate = api.post(f"/v1/workflows/{out['instance_id']}/terminate", headers=alice.auth())
    assert terminate.status_code == 202
    wait_workflow(api, alice, out["instance_id"], lambda b: b["runtimeStatus"] == "Terminated")
    again = api.post("/v1/autonomy/runs", headers=admin)
    assert again.status_code == 202, again.text
    old = api.get(out["status_url"], headers=alice.auth("read")).json()
    assert old["status"] == "terminated" and old["ended_at"] and "terminated" in old["error"]


def test_one_active_run_per_tenant(platform: Platform, alice: TenantKeys, bob: TenantKeys) -> None:
    service = platform.autonomy
    run, run_input = service.create_run(alice.id, origin="schedule", budget_credits=1.5)
    assert (run.status, run.origin, run.budget_credits) == ("running", "schedule", 1.5)
    assert run_input.run_id == run.id and run_input.retry_first_ms == 1000
    with pytest.raises(Conflict, match=run.id):
        service.create_run(alice.id, origin="api")
    service.create_run(bob.id, origin="api")
    with platform.uow_factory(write=False) as uow:  # its workflow's owner is recorded
        owner = uow.workflow_runs.get(alice.id, run.instance_id)
    assert owner is not None and owner.name == names.RUN


def test_a_run_whose_workflow_cannot_start_is_not_left_active(tmp_path: Path) -> None:
    import workflow_app  # functions without the loop's orchestration

    platform = bootstrap(Settings(data_dir=tmp_path / "data"), functions=workflow_app.functions())
    try:
        alice = make_tenant(platform, "alice")
        assert platform.workflows is not None
        client = platform.workflows.client

        async def start() -> None:
            await platform.autonomy.start_run(client, alice.id)

        with pytest.raises(Exception, match="no orchestrator function named 'autonomy_run'"):
            anyio.run(start)
        [failed] = platform.autonomy.runs(alice.id, 10).items
        assert failed.status == "failed" and "did not start" in (failed.error or "")
        platform.autonomy.create_run(alice.id, origin="api")  # the tenant is not blocked
    finally:
        platform.close()


class StartsThenLosesTheAnswer:
    """A Durable client whose start goes through but whose answer is lost (a timeout)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def start_new(self, *args: Any) -> str:
        await self.inner.start_new(*args)
        raise TimeoutError("the answer to the start was lost")


def test_a_start_whose_answer_is_lost_is_not_undone(wf: tuple[TestClient, Platform]) -> None:
    """start_new raised, but the instance has state: it started, so the run stays active
    and the dead letter stays retrying (ending them would orphan a live workflow)."""
    api, platform = wf
    alice = make_tenant(platform, "alice")
    assert platform.workflows is not None
    client = StartsThenLosesTheAnswer(platform.workflows.client)

    async def start() -> RunRecord:
        return await platform.autonomy.start_run(client, alice.id)

    run = anyio.run(start)
    wait_workflow(api, alice, run.instance_id, lambda b: b["runtimeStatus"] == "Running")
    assert platform.autonomy.run(alice.id, run.id).run.status == "running"

    letter = add_dead_letter(platform, alice.id)

    async def retry() -> str:
        return await platform.autonomy.retry_dead_letter(client, alice.id, letter.id, "key:k")

    iid = anyio.run(retry)
    wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Running")
    got = api.get(f"/v1/autonomy/dead-letters/{letter.id}", headers=alice.auth("read"))
    assert got.json()["status"] == "retrying"
    with platform.uow_factory(write=False, tenant_id=alice.id) as uow:
        assert uow.workflow_runs.get(alice.id, iid) is not None  # still the tenant's


def test_runs_list_and_show_their_audit(client: TestClient, platform: Platform, alice, bob) -> None:
    runs = [add_run(platform, alice.id) for _ in range(3)]
    add_run(platform, bob.id)
    now = utcnow()
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        phase = PhaseRecord(alice.id, runs[0].id, 1, "analyze", "done", {"signals": 4},
                            {"problem": "knowledge_gap"}, "act", "policy:default", 0.5, 12.5,
                            now, now)  # fmt: skip
        uow.autonomy.record_phase(phase)
        uow.commit()
    action = add_action(platform, runs[0], "kept")
    read = alice.auth("read")
    first = client.get("/v1/autonomy/runs?limit=2", headers=read).json()
    assert [r["id"] for r in first["items"]] == [runs[2].id, runs[1].id]  # newest first
    rest = client.get(f"/v1/autonomy/runs?limit=2&cursor={first['next_cursor']}", headers=read)
    assert [r["id"] for r in rest.json()["items"]] == [runs[0].id]
    assert rest.json()["next_cursor"] is None
    problem(client.get("/v1/autonomy/runs?cursor=nope!", headers=read), 400)
    problem(client.get("/v1/autonomy/runs?limit=101", headers=read), 422)

    detail = client.get(f"/v1/autonomy/runs/{runs[0].id}", headers=read).json()
    [phase] = detail["phases"]
    assert phase["phase"] == "analyze" and phase["decider"] == "policy:default"
    assert phase["inputs"] == {"signals": 4} and phase["cost_credits"] == 0.5
    assert phase["duration_ms"] == 12.5
    assert detail["spent_credits"] == 0.25 + 0.5  # the phase's cost, added once
    assert [a["id"] for a in detail["actions"]] == [action.id]


# -- approvals ----------------------------------------------------------------------------------


def test_an_admin_decides_and_the_run_hears_it(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    approval = add_approval(platform, alice.id)
    assert platform.workflows is not None
    wait_for = {"wait_for": names.approval_event(approval.id)}
    client = platform.workflows.client

    async def start() -> str:
        return await platform.tenant_workflows.start(
            client,
            tenant_id=alice.id,
            name=names.RUN,
            input=wait_for,
            instance_id=approval.instance_id,
        )

    anyio.run(start)
    url = f"/v1/approvals/{approval.id}"

    for scope in ("read", "write"):  # only an admin decides
        problem(api.post(f"{url}/approve", headers=alice.auth(scope)), 403)
    problem(api.post(f"{url}/approve", headers=bob.auth("admin")), 404)  # another tenant's
    problem(api.get(url, headers=bob.auth("read")), 404)
    problem(
        api.post(f"{url}/approve", json={"comment": "x" * 1001}, headers=alice.auth("admin")), 422
    )
    problem(
        api.post(f"{url}/approve", json={"decided_by": "mallory"}, headers=alice.auth("admin")), 422
    )
    pending = api.get(url, headers=alice.auth("read")).json()
    assert pending["status"] == "pending" and pending["action"]["name"] == "learn_association"

    decided = api.post(f"{url}/approve", json={"comment": "go"}, headers=alice.auth("admin"))
    assert decided.status_code == 200, decided.text
    body = decided.json()
    by = f"key:{key_id(platform, alice.admin)}"
    assert (body["status"], body["decided_by"], body["comment"]) == ("approved", by, "go")
    assert body["decided_at"] and body["action"]["status"] == "approved"
    action = action_of(platform, alice.id, approval.action_id)
    assert (action.status, action.decided_by) == ("approved", by)
    done = wait_workflow(
        api, alice, approval.instance_id, lambda b: b["runtimeStatus"] == "Completed"
    )
    assert done["output"] == {"status": "approved"}

    again = problem(api.post(f"{url}/reject", headers=alice.auth("admin")), 409)
    assert "is approved" in again["detail"]
    assert action_of(platform, alice.id, approval.action_id).status == "approved"


def test_a_rejection_and_a_decision_after_expiry(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice = make_tenant(platform, "alice")
    admin = alice.auth("admin")
    rejected = add_approval(platform, alice.id)
    # Its run has no workflow any more: the decision stands, the database is the truth.
    body = api.post(f"/v1/approvals/{rejected.id}/reject", headers=admin).json()
    assert body["status"] == "rejected" and body["comment"] is None
    assert action_of(platform, alice.id, rejected.action_id).status == "rejected"

    late = add_approval(platform, alice.id, expires_in=timedelta(seconds=-1))
    detail = problem(api.post(f"/v1/approvals/{late.id}/approve", headers=admin), 409)["detail"]
    assert "expired at" in detail
    expired = api.get(f"/v1/approvals/{late.id}", headers=alice.auth("read")).json()
    assert (expired["status"], expired["decided_by"]) == ("expired", "timer")
    action = action_of(platform, alice.id, late.action_id)
    assert (action.status, action.decided_by) == ("expired", "timer")
    problem(api.post(f"/v1/approvals/{late.id}/reject", headers=admin), 409)


def test_a_run_that_ends_expires_its_pending_approvals(wf: tuple[TestClient, Platform]) -> None:
    """Once its run has ended nothing would execute a decision: the end expires the
    pending requests in the same transaction, and a decision on one is refused."""
    client, platform = wf
    alice = make_tenant(platform, "alice")
    approval = add_approval(platform, alice.id)
    other_run = add_run(platform, alice.id)  # completed: not touched by the end
    assert platform.autonomy._end(alice.id, approval.run_id, RunStatus.FAILED, "it died")
    got = client.get(f"/v1/approvals/{approval.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("expired", "run-ended") and got["decided_at"]
    action = action_of(platform, alice.id, approval.action_id)
    assert (action.status, action.decided_by) == ("expired", "run-ended")
    refused = problem(client.post(f"/v1/approvals/{approval.id}/approve",
                                  headers=alice.auth("admin")), 409)  # fmt: skip
    assert "is expired" in refused["detail"]
    assert platform.autonomy.run(alice.id, other_run.id).run.status == "completed"


def test_a_decision_whose_run_has_ended_is_refused(wf: tuple[TestClient, Platform]) -> None:
    """A pending request of a run that ended without expiring it (rows from before the
    end expired them): 409 naming the run's end, and the request expires."""
    client, platform = wf
    alice = make_tenant(platform, "alice")
    ended = add_run(platform, alice.id, "terminated")
    approval = add_approval(platform, alice.id, run=ended)
    body = problem(client.post(f"/v1/approvals/{approval.id}/approve",
                               headers=alice.auth("admin")), 409)  # fmt: skip
    assert f"run {ended.id} has ended (terminated)" in body["detail"]
    assert body["run_status"] == "terminated"
    got = client.get(f"/v1/approvals/{approval.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("expired", "run-ended")
    assert action_of(platform, alice.id, approval.action_id).status == "expired"


def test_a_decision_whose_action_cannot_move_is_refused_and_not_recorded(
    wf: tuple[TestClient, Platform],
) -> None:
    client, platform = wf
    alice = make_tenant(platform, "alice")
    approval = add_approval(platform, alice.id, action_status="refused")
    body = problem(client.post(f"/v1/approvals/{approval.id}/approve",
                               headers=alice.auth("admin")), 409)  # fmt: skip
    assert "is refused, not awaiting approval" in body["detail"]
    got = client.get(f"/v1/approvals/{approval.id}", headers=alice.auth("read")).json()
    assert (got["status"], got["decided_by"]) == ("pending", None)  # rolled back
    assert action_of(platform, alice.id, approval.action_id).status == "refused"


def test_an_approver_whose_scope_is_below_the_actions_is_refused(
    wf: tuple[TestClient, Platform],
) -> None:
    """The route wants an admin key anyway; the service still checks the approving key
    against the action's spec.scope, so no other caller can approve below it."""
    _, platform = wf
    alice = make_tenant(platform, "alice")
    approval = add_approval(platform, alice.id)
    assert platform.workflows is not None
    client = platform.workflows.client
    spec = REGISTRY["learn_association"]

    async def decide(scope: Scope, approve: bool) -> Any:
        who = Principal(alice.id, scope, "k1")
        return await platform.autonomy.decide(client, alice.id, approval.id, approve, who)

    with pytest.raises(Forbidden, match=f"approving learn_association needs '{spec.scope}'"):
        anyio.run(decide, Scope.READ, True)
    assert action_of(platform, alice.id, approval.action_id).status == "awaiting_approval"
    decided = anyio.run(decide, spec.scope, True)
    assert (decided.approval.status, decided.approval.decided_by) == ("approved", "key:k1")


def test_approvals_list_by_status(client: TestClient, platform: Platform, alice, bob) -> None:
    a, b, c = (add_approval(platform, alice.id) for _ in range(3))
    add_approval(platform, bob.id)
    with platform.uow_factory(write=True, tenant_id=alice.id) as uow:
        uow.autonomy.decide(alice.id, b.id, "rejected", "key:k", utcnow())
        uow.commit()
    read = alice.auth("read")
    everything = client.get("/v1/approvals", headers=read).json()["items"]
    assert [x["id"] for x in everything] == [c.id, b.id, a.id]
    pending = client.get("/v1/approvals?status=pending&limit=1", headers=read).json()
    assert [x["id"] for x in pending["items"]] == [c.id]
    more = client.get(f"/v1/approvals?status=pending&cursor={pending['next_cursor']}", headers=read)
    assert [x["id"] for x in more.json()["items"]] == [a.id]
    rejected = client.get("/v1/approvals?status=rejected", headers=read).json()["items"]
    assert [x["id"] for x in rejected] == [b.id]
    problem(client.get("/v1/approvals?status=maybe", headers=read), 422)


# -- dead letters -------------------------------------------------------------------------------


def test_dead_letters_retry_and_discard(wf: tuple[TestClient, Platform]) -> None:
    api, platform = wf
    alice, bob = make_tenant(platform, "alice"), make_tenant(platform, "bob")
    admin = alice.auth("admin")
    retried, discarded = add_dead_letter(platform, alice.id), add_dead_letter(platform, alice.id)
    base = "/v1/autonomy/dead-letters"

    problem(api.post(f"{base}/{retried.id}/retry", headers=alice.auth("write")), 403)
    problem(api.post(f"{base}/{retried.id}/retry", headers=bob.auth("admin")), 404)
    problem(api.get(f"{base}/{retried.id}", headers=bob.auth("read")), 404)
    started = api.post(f"{base}/{retried.id}/retry", headers=admin)
    assert started.status_code == 202, started.text
    iid = started.json()["instance_id"]
    assert iid.startswith(f"autonomy-retry-{retried.id}-5-")  # the attempts, the claim
    assert started.headers["location"] == f"/v1/workflows/{iid}"
    running = wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Running")
    assert running["input"] == {"tenant_id": alice.id, "dead_letter_id": retried.id,
                                "action_id": retried.action_id, "retry_first_ms": 7,
                                "run_id": retried.run_id,
                                "key": f"retry-5-{iid.split('-5-')[-1]}"}  # fmt: skip
    letter = api.get(f"{base}/{retried.id}", headers=alice.auth("read")).json()
    assert letter["status"] == "retrying" and letter["error"] == "RuntimeError: boom"
    assert (
        "is retrying"
        in problem(api.post(f"{base}/{retried.id}/retry", headers=admin), 409)["detail"]
    )
    problem(api.post(f"{base}/{retried.id}/discard", headers=admin), 409)
    # The retry is terminated before it settles the letter: the letter is parked again
    # (it would otherwise stay retrying for ever), and a new retry is a new instance.
    terminate = api.post(f"/v1/workflows/{iid}/terminate", headers=alice.auth())
    assert terminate.status_code == 202
    wait_workflow(api, alice, iid, lambda b: b["runtimeStatus"] == "Terminated")
    letter = api.get(f"{base}/{retried.id}", headers=alice.auth("read")).json()
    assert (letter["status"], letter["attempts"]) == ("parked", 5)
    again = api.post(f"{base}/{retried.id}/retry", headers=admin)
    assert again.status_code == 202, again.text
    assert again.json()["instance_id"] != iid

    problem(api.post(f"{base}/{discarded.id}/discard", headers=alice.auth("read")), 403)
    gone = api.post(f"{base}/{discarded.id}/discard", headers=admin)
    assert gone.status_code == 200, gone.text
    by = f"key:{key_id(platform, alice.admin)}"
    assert (gone.json()["status"], gone.json()["resolved_by"]) == ("discarded", by)
    problem(api.post(f"{base}/{discarded.id}/discard", headers=admin), 409)
    problem(api.post(f"{base}/{discarded.id}/retry", headers=admin), 409)
    problem(api.post(f"{base}/nope/discard", headers=admin), 404)

    read = alice.auth("read")
    assert [d["id"] for d in api.get(f"{base}?status=discarded", headers=read).json()["items"]] == [
        discarded.id
    ]
    assert len(api.get(base, headers=read).json()["items"]) == 2
    assert api.get(base, headers=bob.auth("read")).json()["items"] == []


def test_a_dead_letter_is_retried_only_while_the_policy_allows_its_action(
    wf: tuple[TestClient, Platform],
) -> None:
    api, platform = wf
    alice = make_tenant(platform, "alice")
    admin, base = alice.auth("admin"), "/v1/autonomy/dead-letters"
    letter = add_dead_letter(platform, alice.id)
    off = {"actions": {"learn_association": {"allowed": False}}}
    assert api.put("/v1/policy", json=off, headers=admin).status_code == 200
    body = problem(api.post(f"{base}/{letter.id}/retry", headers=admin), 409)
    assert "disallows learn_association now" in body["detail"]
    assert body["rule"] == "policy:learn_association.allowed=false"
    assert api.get(f"{base}/{letter.id}", headers=alice.auth("read")).json()["status"] == "parked"
    assert api.put("/v1/policy", json={}, headers=admin).status_code == 200
    started = api.post(f"{base}/{letter.id}/retry", headers=admin)
    assert started.status_code == 202, started.text
    running = wait_workflow(
        api, alice, started.json()["instance_id"], lambda b: b["runtimeStatus"] == "Running"
    )
    assert running["input"]["run_id"] == letter.run_id
    assert running["input"]["key"].startswith("retry-5-")  # keys the retry's usage


def test_a_retry_that_never_started_parks_its_letter_again(
    wf: tuple[TestClient, Platform],
) -> None:
    """Claimed, then the process died before the start: no state. Within the start's
    grace it may be starting; past it the letter is parked again, on reads and writes."""
    api, platform = wf
    alice = make_tenant(platform, "alice")
    base, read = "/v1/autonomy/dead-letters", alice.auth("read")
    starting = add_dead_letter(platform, alice.id, "retrying")
    lost = add_dead_letter(platform, alice.id, "retrying", touched=START_GRACE * 2)
    listed = {d["id"]: d["status"] for d in api.get(base, headers=read).json()["items"]}
    assert listed == {starting.id: "retrying", lost.id: "parked"}
    problem(api.post(f"{base}/{starting.id}/discard", headers=alice.auth("admin")), 409)
    other = add_dead_letter(platform, alice.id, "retrying", touched=START_GRACE * 2)
    discarded = api.post(f"{base}/{other.id}/discard", headers=alice.auth("admin"))
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"


def test_the_loop_runs_through_the_api(pipeline_platform: Platform) -> None:
    """The real orchestration (functions/autonomy.py): a tenant with nothing to improve gets
    a run that Analyze ends, and its audit shows why."""
    alice = make_tenant(pipeline_platform, "alice")
    with TestClient(create_app(pipeline_platform)) as api:
        started = api.post("/v1/autonomy/runs", json={}, headers=alice.auth("admin"))
        assert started.status_code == 202, started.text
        url = started.json()["status_url"]
        deadline = time.monotonic() + 60
        while (run := api.get(url, headers=alice.auth("read")).json())["status"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
        assert run["status"] == "nothing_to_do", run
        assert run["ended_at"] and run["error"] is None
        assert [p["phase"] for p in run["phases"]] == ["analyze"]
        assert run["actions"] == []
        instance = started.json()["instance_id"]
        workflow = wait_workflow(api, alice, instance, lambda b: b["runtimeStatus"] == "Completed")
        assert workflow["name"] == names.RUN
        # The run ended itself: the next one starts at once.
        assert api.post("/v1/autonomy/runs", headers=alice.auth("admin")).status_code == 202


def test_an_approval_event_cannot_be_raised_through_the_workflows_api(
    wf: tuple[TestClient, Platform],
) -> None:
    """Decisions go through /v1/approvals: an ``approval-*`` event raised on a run by any
    write key would be kept by the SDK and wake the run's every later wait at once."""
    api, platform = wf
    alice = make_tenant(platform, "alice")
    approval = add_approval(platform, alice.id)
    assert platform.workflows is not None
    wait_for = {"wait_for": names.approval_event(approval.id)}

    async def start() -> str:
        return await platform.tenant_workflows.start(
            platform.workflows.client, tenant_id=alice.id, name=names.RUN,  # type: ignore[union-attr]
            input=wait_for, instance_id=approval.instance_id,
        )  # fmt: skip

    anyio.run(start)
    url = f"/v1/workflows/{approval.instance_id}/events"
    for scope in ("write", "admin"):
        refused = problem(
            api.post(f"{url}/{names.approval_event(approval.id)}", json={"status": "approved"},
                     headers=alice.auth(scope)), 403,
        )  # fmt: skip
        assert "/v1/approvals" in refused["detail"]
    assert api.post(f"{url}/other", json=1, headers=alice.auth("write")).status_code == 202
    status = api.get(f"/v1/workflows/{approval.instance_id}", headers=alice.auth("read")).json()
    assert status["runtimeStatus"] == "Running"  # the stand-in never heard the event
