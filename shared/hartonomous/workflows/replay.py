"""Replay: what the Durable extension does with one instance's messages, on one machine.

Messages (a start, an event, a timer, a task's result) become the history events the extension
would append; an episode hands the history to the orchestrator through the SDK's own handler
(``df.Orchestrator.create(fn)``) as the context JSON the extension sends, and the actions it
returns become new history events, messages and activity work, so replay, determinism and
numbering behave as on Azure. Nothing here touches a thread or the database: everything lands
in the dispatcher's ``Step`` (``host.py``), committed as one transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.durable_functions.models.actions import ActionType as A

from hartonomous.workflows import history as h
from hartonomous.workflows.actions import (
    NUMBERED,
    UNSUPPORTED,
    RetryPolicy,
    describe,
    fingerprint,
    flatten,
)
from hartonomous.workflows.instance import Instance, Retry
from hartonomous.workflows.persistence import InstanceRow, Step, WorkItem
from hartonomous.workflows.registry import Registry

log = logging.getLogger(__name__)
OUT_OF_PROC_LABEL = "\n\n$OutOfProcData$:"
LIVE = ("Pending", "Running", "ContinuedAsNew")


@dataclass
class Delivery:
    """A stored message (``message_id`` set) or an activity's result handed over in memory."""

    kind: str
    payload: dict[str, Any]
    message_id: int | None = None


class NonDeterminismError(Exception):
    pass


def consume(instance_id: str, item: Delivery, step: Step) -> None:
    """Mark the delivery handled in this step (its message deleted, its work item done)."""
    if item.message_id is not None:
        step.consumed.append(item.message_id)
    if item.kind == "activity_done":
        p = item.payload
        step.work_done.append((instance_id, p["event_id"], p.get("execution_id", "")))


class Replayer:
    """Drives instances already loaded; ``instances`` is the dispatcher's cache (a child
    started here replaces a finished one of its id) and ``status`` reads one not cached."""

    def __init__(
        self,
        registry: Registry,
        instances: dict[str, Instance],
        status: Callable[[str], str | None],
    ) -> None:
        self.registry = registry
        self._instances = instances
        self._status = status

    def process(self, inst: Instance, items: list[Delivery], step: Step, now: datetime) -> bool:
        """Apply one instance's messages, run the episodes they call for; True if it ended."""
        instance_id = inst.row.instance_id
        if inst.terminal:  # finished: late arrivals are dropped
            for item in items:
                consume(instance_id, item, step)
            return False
        # A (re)start goes first: after continue-as-new it was sent after events that waited.
        items = sorted(items, key=lambda i: i.kind != "start")
        try:
            for item in items:
                if inst.terminal:
                    consume(instance_id, item, step)
                elif inst.row.runtime_status == "ContinuedAsNew" and item.kind != "start":
                    # Messages stay for the new execution (next step); results of the old
                    # execution's tasks are stale and go.
                    if item.message_id is None:
                        consume(instance_id, item, step)
                else:
                    consume(instance_id, item, step)
                    self._apply(inst, item, step, now)
            if inst.row.runtime_status == "Running" and inst.state["open_normal"]:
                self._episode(inst, step, now)
        except Exception as exc:  # a host bug must fail the instance, not the dispatcher
            log.exception("instance %s failed in the local host", instance_id)
            self._fail(inst, step, now, f"Local Durable host error: {type(exc).__name__}: {exc}")
        self._stage(inst, step, now)
        return inst.terminal

    # -- messages -> history -------------------------------------------------------------

    def _open(self, inst: Instance, now: datetime) -> None:
        if inst.state["open_from"] is None:
            inst.state["open_from"] = len(inst.events)
            inst.append(h.orchestrator_started(now))

    def _normal(self, inst: Instance, event: h.Event, now: datetime) -> None:
        """An event that may resume user code: it waits for the next episode."""
        self._open(inst, now)
        inst.append(event)
        inst.state["open_normal"] = True

    def _settle(self, inst: Instance, step: Step, now: datetime) -> None:
        """Run the open episode if it holds events that may resume user code.

        The SDK numbers retry timers and rescheduled attempts while it replays the failure
        and timer events, interleaved with the tasks user code yields; running the episode
        first keeps the host's numbering in the same order.
        """
        if inst.state["open_normal"]:
            self._episode(inst, step, now)

    def _apply(self, inst: Instance, item: Delivery, step: Step, now: datetime) -> None:
        p, state = item.payload, inst.state
        if item.kind == "start":
            self._start(inst, now)
        elif item.kind == "event":
            self._normal(inst, h.event_raised(now, p["name"], p.get("input")), now)
        elif item.kind == "terminate":
            self._open(inst, now)
            inst.append(h.execution_terminated(now, p.get("reason", "")))
            self._finish(inst, step, now, "Terminated", output=json.dumps(p.get("reason", "")))
        elif item.kind == "timer":
            if p.get("execution_id", inst.row.execution_id) != inst.row.execution_id:
                return  # a timer of an earlier execution
            timer_id = p["event_id"]
            fired = h.timer_fired(now, timer_id, datetime.fromisoformat(p["fire_at"]))
            if str(timer_id) in state["retry_timers"]:
                self._retry_timer_fired(inst, timer_id, fired, step, now)
            elif timer_id not in state["cancelled"]:
                self._normal(inst, fired, now)
        elif item.kind in ("activity_done", "suborch_done"):
            self._task_done(inst, item.kind, p, step, now)
        else:
            raise ValueError(f"unknown message kind {item.kind!r}")

    def _start(self, inst: Instance, now: datetime) -> None:
        if inst.row.runtime_status == "Running":
            return  # a duplicate start
        if inst.events:  # continue-as-new: the new execution starts from an empty history
            inst.restart()
        parent = None
        if inst.row.parent_instance_id:
            parent = {"OrchestrationInstance": {"InstanceId": inst.row.parent_instance_id}}
        inst.row.runtime_status = "Running"
        self._open(inst, now)
        inst.append(h.execution_started(now, inst.row.name, inst.row.input, parent))
        inst.state["open_normal"] = True

    def _task_done(
        self, inst: Instance, kind: str, p: dict[str, Any], step: Step, now: datetime
    ) -> None:
        event_id, state = p["event_id"], inst.state
        if p.get("execution_id") != inst.row.execution_id:
            return  # a task of an earlier execution (before continue-as-new)
        if event_id not in state["pending"]:
            return  # a duplicate delivery (an activity re-run after a restart)
        state["pending"].remove(event_id)
        retry = state["retries"].pop(str(event_id), None)
        activity = kind == "activity_done"
        if p["ok"]:
            done = h.task_completed if activity else h.sub_orchestration_completed
            self._normal(inst, done(now, event_id, p.get("result")), now)
            return
        failed = h.task_failed if activity else h.sub_orchestration_failed
        event = failed(now, event_id, p["reason"], p.get("details", ""))
        if retry is None:
            self._normal(inst, event, now)
            return
        # A failed attempt: the extension waits out the retry interval on a durable timer.
        self._settle(inst, step, now)
        if inst.row.runtime_status != "Running":
            return  # the episode ended or restarted the execution
        self._open(inst, now)
        inst.append(event)
        timer_id = inst.allocate()
        policy = RetryPolicy.of(retry["options"])
        fire_at = now + policy.delay(retry["attempt"])
        inst.append(h.timer_created(now, timer_id, fire_at))
        state["retry_timers"][str(timer_id)] = retry
        step.send(inst.row.instance_id, "timer", _timer(inst, timer_id, fire_at), fire_at)

    def _retry_timer_fired(
        self, inst: Instance, timer_id: int, fired: h.Event, step: Step, now: datetime
    ) -> None:
        retry = inst.state["retry_timers"].pop(str(timer_id))
        policy = RetryPolicy.of(retry["options"])
        if retry["attempt"] >= policy.max_attempts:
            self._normal(inst, fired, now)  # the SDK now fails the task: user code resumes
            return
        self._settle(inst, step, now)
        if inst.row.runtime_status != "Running":
            return  # the episode ended or restarted the execution
        self._open(inst, now)
        inst.append(fired)
        retry["attempt"] += 1
        event_id = inst.allocate()
        if retry["kind"] == "activity":
            self._schedule_activity(inst, event_id, retry["name"], retry["input"], step, now)
        else:
            child = retry.get("instance_id")
            self._create_child(inst, event_id, retry["name"], child, retry["input"], step, now)
        inst.state["retries"][str(event_id)] = retry

    # -- episodes ------------------------------------------------------------------------------

    def _episode(self, inst: Instance, step: Step, now: datetime) -> None:
        """Replay the orchestrator over its history and act on what it returns."""
        state = inst.state
        handler = self.registry.orchestrators.get(inst.row.name)
        error: str | None = None
        result: dict[str, Any] = {}
        if handler is None:
            error = f"no orchestrator function named {inst.row.name!r} is registered"
        else:
            try:
                result = json.loads(handler(inst.context_json()))
            except Exception as exc:
                message, _, data = str(exc).partition(OUT_OF_PROC_LABEL)
                error = message.strip() or type(exc).__name__
                result = json.loads(data) if data else {}
        custom = result.get("customStatus")
        inst.row.custom_status = None if custom is None else json.dumps(custom)
        actions = flatten(result.get("actions", []))
        fingerprints = [fingerprint(a) for a in actions]
        known: list[str] = state["known"]
        try:
            if error is None and fingerprints[: len(known)] != known:
                raise NonDeterminismError(_mismatch(known, fingerprints))
            if error is not None or result.get("isDone"):
                actions_to_run: list[tuple[dict[str, Any], str]] = []
            else:
                actions_to_run = list(
                    zip(actions[len(known) :], fingerprints[len(known) :], strict=True)
                )
            for action, fp in actions_to_run:
                self._act(inst, action, fp, step, now)
        except NonDeterminismError as exc:
            error = str(exc)
        self._cancel_timers(inst, actions, step)
        inst.append(h.orchestrator_completed(now))
        state["open_from"], state["open_normal"] = None, False
        if error is not None:
            self._fail(inst, step, now, error)
        elif result.get("isDone"):
            if any(a["actionType"] == A.CONTINUE_AS_NEW for a in actions):
                self._continue_as_new(inst, actions, step, now)
            else:
                self._finish(inst, step, now, "Completed", output=json.dumps(result.get("output")))

    def _act(
        self, inst: Instance, action: dict[str, Any], fp: str, step: Step, now: datetime
    ) -> None:
        kind = A(action["actionType"])
        state = inst.state
        event_id = inst.allocate() if kind in NUMBERED else None
        state["known"].append(fp)
        state["ids"].append(event_id)
        if kind in UNSUPPORTED:
            raise NonDeterminismError(  # not non-determinism, but fails the same way
                f"{describe(fp)} is not supported by the local Durable host"
            )
        if event_id is None:
            return  # wait_for_external_event, continue_as_new: no history event
        name = action.get("functionName", "")
        if kind in (A.CALL_ACTIVITY, A.CALL_ACTIVITY_WITH_RETRY):
            self._schedule_activity(inst, event_id, name, action.get("input"), step, now)
            if kind == A.CALL_ACTIVITY_WITH_RETRY:
                state["retries"][str(event_id)] = Retry(
                    "activity", name, action.get("input"), action["retryOptions"]
                ).to_json()
        elif kind in (A.CALL_SUB_ORCHESTRATOR, A.CALL_SUB_ORCHESTRATOR_WITH_RETRY):
            child = action.get("instanceId")
            self._create_child(inst, event_id, name, child, action.get("input"), step, now)
            if kind == A.CALL_SUB_ORCHESTRATOR_WITH_RETRY:
                state["retries"][str(event_id)] = Retry(
                    "suborch", name, action.get("input"), action["retryOptions"], child
                ).to_json()
        elif kind == A.CREATE_TIMER:
            fire_at = datetime.fromisoformat(action["fireAt"])
            inst.append(h.timer_created(now, event_id, fire_at))
            if action.get("isCanceled"):
                state["cancelled"].append(event_id)
            else:
                step.send(inst.row.instance_id, "timer", _timer(inst, event_id, fire_at), fire_at)

    def _schedule_activity(
        self,
        inst: Instance,
        event_id: int,
        name: str,
        input_json: str | None,
        step: Step,
        now: datetime,
    ) -> None:
        inst.append(h.task_scheduled(now, event_id, name, input_json))
        inst.state["pending"].append(event_id)
        step.work_added.append(
            WorkItem(inst.row.instance_id, event_id, inst.row.execution_id, name, input_json)
        )

    def _create_child(
        self,
        inst: Instance,
        event_id: int,
        name: str,
        child_id: str | None,
        input_json: str | None,
        step: Step,
        now: datetime,
    ) -> None:
        parent_id, execution_id = inst.row.instance_id, inst.row.execution_id
        child_id = child_id or f"{parent_id}:{execution_id[:8]}:{event_id:04d}"
        inst.append(h.sub_orchestration_created(now, event_id, name, child_id, input_json))
        inst.state["pending"].append(event_id)
        if self._is_live(child_id, step):
            reason = f"a workflow instance {child_id!r} is already running"
            payload = {"event_id": event_id, "execution_id": execution_id, "ok": False}
            step.send(parent_id, "suborch_done", payload | {"reason": reason, "details": ""}, now)
            return
        self._instances.pop(child_id, None)  # a finished instance of that id is replaced
        row = new_row(child_id, name, input_json, now)
        row.parent_instance_id, row.parent_event_id = parent_id, event_id
        row.parent_execution_id = execution_id
        step.upserts.append(row)
        step.reset_history.add(child_id)
        step.send(child_id, "start", {}, now)

    def _is_live(self, instance_id: str, step: Step) -> bool:
        if any(r.instance_id == instance_id for r in step.upserts):
            return True  # created earlier in this very step
        cached = self._instances.get(instance_id)
        if cached is not None:
            return cached.row.runtime_status in LIVE
        return self._status(instance_id) in LIVE

    def _cancel_timers(self, inst: Instance, actions: list[dict[str, Any]], step: Step) -> None:
        cancelled: list[int] = inst.state["cancelled"]
        for action, event_id in zip(actions, inst.state["ids"], strict=False):
            cancel = action["actionType"] == A.CREATE_TIMER and action.get("isCanceled")
            if cancel and event_id is not None and event_id not in cancelled:
                cancelled.append(event_id)
                step.cancelled_timers.append((inst.row.instance_id, event_id))

    # -- endings -----------------------------------------------------------------------------

    def _continue_as_new(
        self, inst: Instance, actions: list[dict[str, Any]], step: Step, now: datetime
    ) -> None:
        action = next(a for a in reversed(actions) if a["actionType"] == A.CONTINUE_AS_NEW)
        new_input = action.get("input")
        inst.row.input = (
            new_input
            if isinstance(new_input, str) or new_input is None
            else (json.dumps(new_input))
        )
        inst.row.execution_id = str(uuid.uuid4())
        inst.row.runtime_status = "ContinuedAsNew"
        step.cleared.add(inst.row.instance_id)
        step.history.pop(inst.row.instance_id, None)  # the old execution's history goes
        inst.restart()
        step.send(inst.row.instance_id, "start", {}, now)

    def _fail(self, inst: Instance, step: Step, now: datetime, error: str) -> None:
        inst.row.error = error
        self._finish(inst, step, now, "Failed", output=json.dumps(error))

    def _finish(self, inst: Instance, step: Step, now: datetime, status: str, output: str) -> None:
        inst.row.runtime_status = status
        inst.row.output = output
        inst.state["open_from"], inst.state["open_normal"] = None, False
        step.cleared.add(inst.row.instance_id)
        parent, parent_event = inst.row.parent_instance_id, inst.row.parent_event_id
        if parent is None or parent_event is None:
            return
        payload: dict[str, Any] = {
            "event_id": parent_event,
            "execution_id": inst.row.parent_execution_id,
            "ok": status == "Completed",
        }
        if status == "Completed":
            payload["result"] = output
        else:
            payload["reason"] = (
                f"Sub-orchestration '{inst.row.name}' ({inst.row.instance_id}) {status.lower()}: "
                f"{inst.row.error or json.loads(output)}"
            )
            payload["details"] = ""
        step.send(parent, "suborch_done", payload, now)

    def _stage(self, inst: Instance, step: Step, now: datetime) -> None:
        iid = inst.row.instance_id
        if inst.reset:
            step.reset_history.add(iid)
            inst.reset = False
        new = inst.events[inst.persisted :]
        if new:
            start, earlier = step.history.get(iid, (inst.persisted, []))
            step.history[iid] = (start, earlier + new)
            inst.persisted = len(inst.events)
        inst.row.last_updated_at = now
        step.upserts = [r for r in step.upserts if r.instance_id != iid] + [inst.row]


def _timer(inst: Instance, event_id: int, fire_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "fire_at": fire_at.isoformat(),
        "execution_id": inst.row.execution_id,
    }


def _mismatch(known: list[str], now: list[str]) -> str:
    for i, (was, is_) in enumerate(zip(known, now, strict=False)):
        if was != is_:
            return (
                f"Non-deterministic workflow detected: action #{i} was {describe(was)} when the "
                f"history was written but is {describe(is_)} on replay. Orchestrators must not "
                "depend on I/O, the clock or randomness outside the context's APIs."
            )
    return (
        f"Non-deterministic workflow detected: the history holds {len(known)} actions but "
        f"replay produced only {len(now)}. Orchestrators must not depend on I/O, the clock or "
        "randomness outside the context's APIs."
    )


def new_row(instance_id: str, name: str, input_json: str | None, now: datetime) -> InstanceRow:
    return InstanceRow(
        instance_id=instance_id,
        name=name,
        execution_id=str(uuid.uuid4()),
        runtime_status="Pending",
        input=input_json,
        output=None,
        custom_status=None,
        error=None,
        parent_instance_id=None,
        parent_event_id=None,
        parent_execution_id=None,
        host_state=Instance.fresh_state(),
        created_at=now,
        last_updated_at=now,
    )
