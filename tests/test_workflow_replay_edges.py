"""Edge cases of the local host's bookkeeping, driven step by step with a fake clock.

Each scenario once desynchronised the host from the SDK or lost work: late results of an
execution that continued as new, retry failures arriving in the batch that restarts the
execution, sub-orchestration ids reused across executions or by two parents, retries of a
named sub-orchestration, and a failed dispatcher step.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.durable_functions as df
import pytest

from hartonomous.store import migrate
from hartonomous.store.engine import create_engines
from hartonomous.workflows.client import LocalDurableClient
from hartonomous.workflows.host import LocalDurableHost
from hartonomous.workflows.persistence import WorkItem
from hartonomous.workflows.registry import Registry

bp = df.Blueprint()


@bp.activity_trigger(input_name="x")
def echo(x):
    return x


@bp.activity_trigger(input_name="x")
def bad(x):
    raise RuntimeError(f"bad {x}")


@bp.orchestration_trigger(context_name="ctx")
def stale_after_continue(ctx: df.DurableOrchestrationContext):
    if ctx.get_input() == 0:
        task = ctx.call_activity("echo", "old")
        timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=1))
        yield ctx.task_any([task, timer])
        ctx.continue_as_new(1)
        return None
    return (yield ctx.call_activity("echo", "new"))


@bp.orchestration_trigger(context_name="ctx")
def retry_in_restarting_batch(ctx: df.DurableOrchestrationContext):
    if ctx.get_input() == 0:
        ok = ctx.call_activity("echo", "x")
        failing = ctx.call_activity_with_retry("bad", df.RetryOptions(1000, 3), "y")
        yield ctx.task_any([ok, failing])
        ctx.continue_as_new(1)
        return None
    return (yield ctx.call_activity("echo", "new"))


@bp.orchestration_trigger(context_name="ctx")
def waiter(ctx: df.DurableOrchestrationContext):
    yield ctx.wait_for_external_event("go")
    return ctx.get_input()


@bp.orchestration_trigger(context_name="ctx")
def child_after_continue(ctx: df.DurableOrchestrationContext):
    if ctx.get_input() == 0:
        child = ctx.call_sub_orchestrator("waiter", "old-child")
        timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(seconds=1))
        yield ctx.task_any([child, timer])
        ctx.continue_as_new(1)
        return None
    return (yield ctx.call_sub_orchestrator("waiter", "new-child"))


@bp.orchestration_trigger(context_name="ctx")
def named_parent(ctx: df.DurableOrchestrationContext):
    try:
        return (yield ctx.call_sub_orchestrator("waiter", ctx.get_input(), "shared-child"))
    except Exception as exc:
        return f"refused: {exc}"


@bp.orchestration_trigger(context_name="ctx")
def failing_child(ctx: df.DurableOrchestrationContext):
    yield ctx.call_activity("bad", "child")


@bp.orchestration_trigger(context_name="ctx")
def retry_named_child(ctx: df.DurableOrchestrationContext):
    return (
        yield ctx.call_sub_orchestrator_with_retry(
            "failing_child", df.RetryOptions(100, 2), None, "my-child"
        )
    )


@bp.orchestration_trigger(context_name="ctx")
def pair(ctx: df.DurableOrchestrationContext):
    return (yield ctx.task_all([ctx.call_activity("echo", 1), ctx.call_activity("echo", 2)]))


class Stepper:
    """The host without its threads: ticks by hand, activities run when told."""

    def __init__(self, tmp_path: Path) -> None:
        app = df.DFApp()
        app.register_functions(bp)
        self.registry = Registry.from_functions(app.get_functions())
        self.engines = create_engines(f"sqlite:///{tmp_path / 'edges.db'}")
        migrate.upgrade(self.engines)
        self.moment = datetime(2030, 1, 1, tzinfo=UTC)
        self.host = LocalDurableHost(self.engines, self.registry, clock=lambda: self.moment)
        self.work: list[WorkItem] = []
        # The stepper runs activities itself, when a test says so.
        self.host._submit = lambda item: self.work.append(item)  # type: ignore[method-assign]
        self.client = LocalDurableClient(self.host)

    def start(self, name: str, data=None, instance_id: str = "I") -> str:
        return self.client.start_new_sync(name, instance_id, data)

    def settle(self) -> None:
        for _ in range(50):
            if not self.host._tick():
                return
        raise AssertionError("the host never went idle")

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)
        self.settle()

    def deliver(self, item: WorkItem) -> None:
        """Run one activity for real and hand its result to the dispatcher."""
        self.host._inbox.append((item.instance_id, self.host._activity_result(item)))

    def run_all(self) -> None:
        work, self.work = self.work, []
        for item in work:
            self.deliver(item)
        self.settle()

    def row(self, instance_id: str = "I"):
        row = self.host.store.instance(instance_id)
        assert row is not None
        return row


@pytest.fixture
def stepper(tmp_path: Path):
    s = Stepper(tmp_path)
    yield s
    s.engines.dispose()


def test_a_late_result_of_the_previous_execution_is_ignored(stepper):
    stepper.start("stale_after_continue", 0)
    stepper.settle()
    (old,) = stepper.work
    stepper.work.clear()
    stepper.advance(2)  # the timer wins; continue-as-new; the new execution schedules id 0 too
    assert [(w.event_id, w.input) for w in stepper.work] == [(0, '"new"')]
    stepper.deliver(old)  # the old execution's activity finishes late
    stepper.settle()
    assert stepper.row().runtime_status == "Running"
    stepper.run_all()
    row = stepper.row()
    assert (row.runtime_status, json.loads(row.output)) == ("Completed", "new")


def test_a_retry_failure_in_the_batch_that_restarts_the_execution(stepper):
    stepper.start("retry_in_restarting_batch", 0)
    stepper.settle()
    ok, failing = stepper.work
    stepper.work.clear()
    stepper.deliver(ok)
    stepper.deliver(failing)  # same batch: ok resolves task_any -> continue-as-new
    stepper.settle()
    stepper.advance(2)  # no stray retry timer may fire into the new execution
    assert [(w.event_id, w.input) for w in stepper.work] == [(0, '"new"')]
    stepper.run_all()
    row = stepper.row()
    assert (row.runtime_status, json.loads(row.output)) == ("Completed", "new")


def test_sub_orchestration_ids_differ_across_executions(stepper):
    stepper.start("child_after_continue", 0)
    stepper.settle()
    stepper.advance(2)
    history = [json.loads(e) for e in stepper.host.store.history("I")]
    (new_child,) = [e["InstanceId"] for e in history if e["EventType"] == 7]
    assert stepper.row(new_child).runtime_status == "Running"
    stepper.client.raise_event_sync(new_child, "go", None)
    stepper.settle()
    row = stepper.row()
    assert (row.runtime_status, json.loads(row.output)) == ("Completed", "new-child")


def test_a_named_sub_orchestration_already_running_is_refused_not_hijacked(stepper):
    stepper.start("named_parent", "A", "PA")
    stepper.settle()
    stepper.start("named_parent", "B", "PB")
    stepper.settle()
    pb = stepper.row("PB")
    assert pb.runtime_status == "Completed"
    assert "'shared-child' is already running" in json.loads(pb.output)
    assert stepper.row("shared-child").input == '"A"'
    stepper.client.raise_event_sync("shared-child", "go", None)
    stepper.settle()
    assert json.loads(stepper.row("PA").output) == "A"


def test_retries_of_a_named_sub_orchestration_keep_its_id(stepper):
    stepper.start("retry_named_child", None, "P")
    for _ in range(6):
        stepper.run_all()
        stepper.advance(1)
    assert stepper.row("P").runtime_status == "Failed"
    import sqlalchemy as sa

    with stepper.engines.read.connect() as conn:
        ids = {r[0] for r in conn.execute(sa.text("select instance_id from durable_instances"))}
    assert ids == {"P", "my-child"}


def test_a_failed_dispatcher_step_keeps_the_activity_results(stepper):
    stepper.start("pair")
    stepper.settle()
    for item in stepper.work:
        stepper.deliver(item)
    stepper.work.clear()
    real = stepper.host.store.visible_messages
    failures = iter([RuntimeError("database is locked")])

    def flaky(now, limit=5000):
        for exc in failures:
            raise exc
        return real(now, limit)

    stepper.host.store.visible_messages = flaky
    with pytest.raises(RuntimeError):
        stepper.host._tick()
    stepper.settle()
    row = stepper.row()
    assert (row.runtime_status, json.loads(row.output)) == ("Completed", [1, 2])
