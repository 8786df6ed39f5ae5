"""The autonomous loop: its orchestrators through the SDK's real replay on the local Durable
host (scripted activities, ``autonomy_app.py``), then its real activities on the real
platform (MiniLM, Gemma 3 270M under a grammar, SQLite)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import autonomy_app
import pytest
from autonomy_app import problem
from azure.durable_functions.models.history import HistoryEventType as T

from hartonomous.autonomy import loop, names
from hartonomous.autonomy.names import RunInput
from hartonomous.services.clock import utcnow
from hartonomous.store import migrate
from hartonomous.store.engine import create_engines
from hartonomous.workflows.client import LocalDurableClient
from hartonomous.workflows.host import LocalDurableHost


class Clock:
    """Real time plus an offset a test moves forward (timers of days fire at once)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def host(tmp_path: Path, clock: Clock) -> Iterator[LocalDurableHost]:
    engines = create_engines(f"sqlite:///{tmp_path / 'durable.db'}")
    migrate.upgrade(engines)
    autonomy_app.reset()
    with LocalDurableHost(engines, autonomy_app.registry(), poll_interval=0.02, clock=clock) as h:
        yield h
    engines.dispose()


@pytest.fixture
def client(host: LocalDurableHost) -> LocalDurableClient:
    return LocalDurableClient(host)


def run_input(clock: Clock, **values: Any) -> RunInput:
    base: dict[str, Any] = {"tenant_id": "t1", "run_id": "r1", "started_at": clock().isoformat(),
                            "budget_credits": 5.0, "max_duration_s": 3600, "max_iterations": 1,
                            "retry_first_ms": 10}  # fmt: skip
    return RunInput(**(base | values))


def start(client: LocalDurableClient, inp: RunInput) -> str:
    return client.start_new_sync(names.RUN, names.run_instance_id(inp.run_id), inp.to_json())


def wait(host: LocalDurableHost, iid: str, timeout: float = 30) -> tuple[str, Any]:
    row = host.wait_for(iid, timeout)
    return row.runtime_status, json.loads(row.output) if row.output else None


def until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def history(host: LocalDurableHost, iid: str) -> list[dict[str, Any]]:
    return [json.loads(e) for e in host.store.history(iid)]


def timers(host: LocalDurableHost, iid: str) -> int:
    return sum(e["EventType"] == T.TIMER_CREATED for e in history(host, iid))


def finished(status: str) -> Any:
    (finish,) = autonomy_app.SCRIPT.calls[loop.FINISH]
    assert finish.status == status, finish
    return finish


# -- budgets and duration ---------------------------------------------------------------------


def test_the_budget_stops_a_run_before_the_phase_that_would_pass_it(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    # Analyze fits (0.03 estimate); 0.01 spent + Hypothesize's estimate does not.
    budget = 0.01 + loop.HYPOTHESIZE_CREDITS - 0.001
    status, out = wait(host, start(client, run_input(clock, budget_credits=budget)))
    assert status == "Completed"
    assert out["status"] == "budget_exhausted" and out["stopped_before"] == "hypothesize"
    assert script.count(loop.ANALYZE) == 1 and script.count(loop.HYPOTHESIZE) == 0
    assert finished("budget_exhausted").spent_credits == pytest.approx(0.01)


def test_the_budget_checks_act_before_it_starts_never_midway(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems, script.needs_approval = [problem("q1")], False
    script.plan_cost = 0.17  # Hypothesize fits its estimate; then Act's 0.02 would not
    budget = 0.01 + loop.HYPOTHESIZE_CREDITS
    status, out = wait(host, start(client, run_input(clock, budget_credits=budget)))
    assert (status, out["status"], out["stopped_before"]) == (
        "Completed",
        "budget_exhausted",
        "act",
    )
    assert script.count(loop.ACT) == script.count(loop.BASELINE) == 0
    assert [p.phase for p in script.calls[loop.RECORD_PHASE]] == ["approval"]


def test_the_duration_limit_ends_a_run_before_its_next_phase(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    started = (clock() - timedelta(seconds=120)).isoformat()
    status, out = wait(host, start(client, run_input(clock, started_at=started, max_duration_s=60)))
    assert (status, out["status"], out["stopped_before"]) == (
        "Completed",
        "duration_exhausted",
        "analyze",
    )
    assert script.count(loop.ANALYZE) == 0
    finished("duration_exhausted")


# -- approvals --------------------------------------------------------------------------------


def approval_requested(client: LocalDurableClient) -> str:
    script = autonomy_app.SCRIPT
    until(lambda: script.count(loop.REQUEST_APPROVALS) == 1 and bool(script.approvals))
    (approval_id,) = script.approvals
    return approval_id


def decide(client: LocalDurableClient, iid: str, approval_id: str, status: str) -> None:
    """What the API does: the store first, then the event to the waiting run."""
    autonomy_app.SCRIPT.approvals[approval_id] = status
    until(lambda: asyncio.run(client.get_status(iid)).runtime_status.value == "Running")
    asyncio.run(client.raise_event(iid, names.approval_event(approval_id), {"status": status}))


def test_an_approved_action_is_acted_on_and_learned_from(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    iid = start(client, run_input(clock))
    approval_id = approval_requested(client)
    time.sleep(0.2)  # the run is waiting: nothing acted before the decision
    assert script.count(loop.ACT) == 0
    decide(client, iid, approval_id, "approved")
    status, out = wait(host, iid)
    assert (status, out["status"], out["approved"], out["applied"]) == (
        "Completed",
        "completed",
        1,
        1,
    )
    assert script.count(loop.BASELINE) == script.count(loop.ACT) == script.count(loop.LEARN) == 1
    phases = [p.phase for p in script.calls[loop.RECORD_PHASE]]
    assert phases == ["approval", "act"]
    approval_row = script.calls[loop.RECORD_PHASE][0]
    assert approval_row.outputs["decisions"][0]["decided_by"] == "key:x"
    assert not host.store.next_visible_at()  # the approval's timer was cancelled


def test_a_rejected_action_is_never_acted_on(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    iid = start(client, run_input(clock))
    decide(client, iid, approval_requested(client), "rejected")
    status, out = wait(host, iid)
    assert (status, out["status"], out["approved"]) == ("Completed", "completed", 0)
    assert script.count(loop.ACT) == script.count(loop.BASELINE) == script.count(loop.LEARN) == 0


def test_an_event_that_decided_nothing_does_not_end_the_wait(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    iid = start(client, run_input(clock))
    approval_id = approval_requested(client)
    # Anyone with write scope can raise events on a workflow; the store still says pending.
    asyncio.run(client.raise_event(iid, names.approval_event(approval_id), {"status": "approved"}))
    until(lambda: script.count(loop.SETTLE_APPROVAL) == 1)
    time.sleep(0.2)
    assert script.count(loop.ACT) == 0
    decide(client, iid, approval_id, "approved")
    assert wait(host, iid)[1]["applied"] == 1


@pytest.mark.parametrize("timeout_days", [1, 13])
def test_an_unanswered_approval_expires_by_timer_longer_ones_in_six_day_steps(
    client, host, clock, timeout_days
):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    script.approval_timeout_s = timeout_days * 86400
    iid = start(client, run_input(clock))
    approval_requested(client)
    for n in range(1, timeout_days // 6 + 2):
        until(lambda n=n: timers(host, iid) == n)  # type: ignore[misc]
        clock.offset += timedelta(days=6)
    status, out = wait(host, iid)
    assert (status, out["approved"]) == ("Completed", 0)
    (settle,) = script.calls[loop.SETTLE_APPROVAL]
    assert settle.expire is True
    assert script.approvals == {f"approval-{'r1'}-1-0": "expired"}
    assert timers(host, iid) == timeout_days // 6 + 1  # 1 day: one timer; 13: 6 + 6 + 1
    assert script.count(loop.ACT) == 0
    # Waiting for a human does not count against the run's duration.
    assert finished("completed")


# -- Act: retries, dead letters, the policy on failure ----------------------------------------


@pytest.mark.parametrize("on_failure", ["continue", "stop"])
def test_an_action_failing_after_its_retries_is_dead_lettered(client, host, clock, on_failure):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1")]
    script.needs_approval, script.act_failures, script.actions_per_plan = False, 99, 2
    script.on_action_failure = on_failure
    status, out = wait(host, start(client, run_input(clock)))
    assert status == "Completed"
    letters = script.calls[loop.DEAD_LETTER]
    if on_failure == "stop":
        assert out["status"] == "stopped"
        assert script.count(loop.ACT) == 6 and len(letters) == 1  # the second never ran
    else:
        assert out["status"] == "completed"
        assert script.count(loop.ACT) == 12 and len(letters) == 2
    assert all(letter.attempts == 6 and "failed" in letter.error for letter in letters)
    assert script.count(loop.LEARN) == 0  # nothing applied, nothing to learn
    (act_row,) = [p for p in script.calls[loop.RECORD_PHASE] if p.phase == "act"]
    assert act_row.status == ("stopped" if on_failure == "stop" else "completed")
    waits = [
        round((datetime.fromisoformat(e["FireAt"]) - datetime.fromisoformat(e["Timestamp"]))
              .total_seconds(), 3)
        for e in history(host, names.run_instance_id("r1")) if e["EventType"] == T.TIMER_CREATED
    ][:5]  # fmt: skip
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.16]  # the backoff doubles


def test_an_action_that_succeeds_on_a_retry_is_applied(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems, script.needs_approval, script.act_failures = [problem("q1")], False, 2
    _, out = wait(host, start(client, run_input(clock)))
    assert (out["applied"], script.count(loop.ACT), script.count(loop.DEAD_LETTER)) == (1, 3, 0)


def test_a_failed_workflow_rerun_failing_again_is_an_outcome_not_an_action_failure(
    client, host, clock
):
    script = autonomy_app.SCRIPT
    script.problems, script.needs_approval = [problem("wf")], False
    script.action_name = "retry_failed_workflow"
    status, out = wait(host, start(client, run_input(clock)))
    assert (status, out["status"], out["applied"]) == ("Completed", "completed", 1)
    (act_row,) = [p for p in script.calls[loop.RECORD_PHASE] if p.phase == "act"]
    workflow = act_row.outputs["actions"][0]["workflow"]
    assert workflow["status"] == "failed" and "failed again" in workflow["error"]
    assert workflow["instance_id"] == "rerun-r1-1-0"  # the id the executor named
    assert script.count(loop.LEARN) == 1


# -- iterations, the end of a run ---------------------------------------------------------------


def test_iterations_continue_as_new_carrying_spend_and_handled_problems(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [problem("q1"), problem("q2"), problem("q3")]
    script.needs_approval = False
    iid = start(client, run_input(clock, max_iterations=3))
    status, out = wait(host, iid)
    assert (status, out["status"], out["iteration"]) == ("Completed", "completed", 3)
    handled = [c.handled for c in script.calls[loop.ANALYZE]]
    assert handled == [[], ["q1"], ["q1", "q2"]]
    per_iteration = 0.01 + 0.05 + 0.02 + 0.01
    assert finished("completed").spent_credits == pytest.approx(3 * per_iteration)
    started = [e for e in history(host, iid) if e["EventType"] == T.EXECUTION_STARTED]
    assert json.loads(started[0]["Input"])["iteration"] == 3  # a fresh history each time


@pytest.mark.parametrize(("problems", "expected"), [([], "nothing_to_do"),
                                                     ([problem("q1")], "completed")])  # fmt: skip
def test_no_problem_ends_the_run(client, host, clock, problems, expected):
    script = autonomy_app.SCRIPT
    script.problems, script.needs_approval = problems, False
    status, out = wait(host, start(client, run_input(clock, max_iterations=3)))
    assert (status, out["status"]) == ("Completed", expected)
    assert script.count(loop.ANALYZE) == len(problems) + 1


def test_a_bug_in_the_orchestration_fails_the_run_and_records_it(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems = [{"kind": "knowledge_gap"}]  # not a Problem: the orchestration raises
    status, _ = wait(host, start(client, run_input(clock)))
    assert status == "Failed"
    assert "key" in (finished("failed").error or "")


# -- the schedule and a dead letter's retry -----------------------------------------------------


def test_the_schedule_waits_then_starts_a_run_and_goes_on(client, host, clock):
    script = autonomy_app.SCRIPT
    script.problems, script.needs_approval = [], False
    script.run_input = run_input(clock, run_id="sched-1").to_json()
    iid = client.start_new_sync(names.SCHEDULE, names.schedule_instance_id("t1"),
                                {"tenant_id": "t1"})  # fmt: skip
    until(lambda: timers(host, iid) == 1)
    assert script.count(loop.START_SCHEDULED) == 0
    clock.offset += timedelta(minutes=16)
    until(lambda: script.count(loop.FINISH) == 1)
    assert script.calls[loop.FINISH][0].run_id == "sched-1"
    until(lambda: script.count(loop.SCHEDULE_POLICY) == 2 and timers(host, iid) == 1)
    script.schedule_enabled = False  # the next tick sees the policy off and ends
    clock.offset += timedelta(minutes=16)
    status, out = wait(host, iid)
    assert (status, out) == ("Completed", {"enabled": False})
    assert script.count(loop.START_SCHEDULED) == 2


@pytest.mark.parametrize("failures", [0, 99])
def test_a_dead_letters_retry_resolves_or_parks_again(client, host, clock, failures):
    script = autonomy_app.SCRIPT
    script.act_failures = failures
    retry = {"tenant_id": "t1", "dead_letter_id": "d1", "action_id": "a1", "retry_first_ms": 10}
    iid = client.start_new_sync(names.RETRY_DEAD_LETTER, "retry-d1", retry)
    status, out = wait(host, iid)
    assert status == "Completed"
    assert all(c.retry for c in script.calls[loop.ACT])
    if failures:
        assert out["status"] == "parked" and script.count(loop.ACT) == 6
        assert script.calls[loop.DEAD_LETTER][0].attempts == 6
        assert script.count(loop.RESOLVE_DEAD_LETTER) == 0
    else:
        assert out["status"] == "resolved" and script.count(loop.RESOLVE_DEAD_LETTER) == 1
