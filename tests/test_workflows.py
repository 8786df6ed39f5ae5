"""The local Durable host, driving real orchestrators through the SDK's replay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import workflow_app
from azure.durable_functions.models.history import HistoryEventType as T

from hartonomous.store import migrate
from hartonomous.store.engine import create_engines
from hartonomous.workflows.client import DurableClientError, LocalDurableClient
from hartonomous.workflows.host import LocalDurableHost

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'durable.db'}"


@pytest.fixture
def host(db_url: str) -> Iterator[LocalDurableHost]:
    engines = create_engines(db_url)
    migrate.upgrade(engines)
    with LocalDurableHost(engines, workflow_app.registry(), poll_interval=0.05) as h:
        yield h
    engines.dispose()


@pytest.fixture
def client(host: LocalDurableHost) -> LocalDurableClient:
    return LocalDurableClient(host)


def run(client: LocalDurableClient, host: LocalDurableHost, name: str, data=None, timeout=30.0):
    instance_id = client.start_new_sync(name, client_input=data)
    return host.wait_for(instance_id, timeout), instance_id


def events(host: LocalDurableHost, instance_id: str) -> list[dict]:
    return [json.loads(e) for e in host.store.history(instance_id)]


def kinds(history: list[dict]) -> Counter[int]:
    return Counter(e["EventType"] for e in history)


def test_fan_out_and_fan_in(client, host):
    row, iid = run(client, host, "fan_out_in", list(range(20)))
    assert row.runtime_status == "Completed", row.error
    assert json.loads(row.output) == [v * 2 for v in range(20)] * 2
    counted = kinds(events(host, iid))
    assert counted[T.TASK_SCHEDULED] == counted[T.TASK_COMPLETED] == 40
    assert host.store.pending_work() == []


def test_the_diagnostics_fan_out_of_functions_app(client, host):
    row, _ = run(client, host, "diagnostics_fan_out", {"count": 300})
    assert json.loads(row.output) == {"completed": 300, "checksum": sum(range(300))}


def test_retry_then_success(client, host):
    spec = {"key": "retry-ok", "failures": 2, "first_ms": 20, "attempts": 3}
    row, iid = run(client, host, "with_retry", spec)
    assert row.runtime_status == "Completed", row.error
    assert json.loads(row.output) == "retry-ok ok after 3 attempts"
    counted = kinds(events(host, iid))
    assert (counted[T.TASK_FAILED], counted[T.TIMER_FIRED], counted[T.TASK_COMPLETED]) == (2, 2, 1)


def test_retries_exhausted_fail_the_orchestration_with_the_error_kept(client, host):
    spec = {"key": "retry-never", "failures": 99, "first_ms": 20, "attempts": 3}
    row, iid = run(client, host, "with_retry", spec)
    assert row.runtime_status == "Failed"
    assert workflow_app.calls["retry-never"] == 3
    assert "Activity function 'flaky' failed: RuntimeError: retry-never attempt 3 failed" in (
        row.error or ""
    )
    status = asyncio.run(client.get_status(iid))
    assert status.runtime_status.value == "Failed" and "attempt 3 failed" in status.output
    # As DTFx does: a timer after every failed attempt, the last one included.
    assert kinds(events(host, iid))[T.TIMER_CREATED] == 3


def test_retry_backoff_grows_the_interval(client, host):
    spec = {"key": "backoff", "failures": 3, "first_ms": 40, "attempts": 4, "backoff": True}
    row, iid = run(client, host, "with_retry", spec)
    assert row.runtime_status == "Completed", row.error
    waits = [
        (
            datetime.fromisoformat(e["FireAt"]) - datetime.fromisoformat(e["Timestamp"])
        ).total_seconds()
        for e in events(host, iid)
        if e["EventType"] == T.TIMER_CREATED
    ]
    assert [round(w, 3) for w in waits] == [0.04, 0.08, 0.16]


def test_parallel_retries_keep_numbering_in_step_with_the_sdk(client, host):
    row, _ = run(client, host, "parallel_retries")
    assert row.runtime_status == "Completed", row.error
    out = json.loads(row.output)
    assert out[3:] == [42, 2]
    assert [s.split(" ok after ")[1] for s in out[:3]] == ["1 attempts", "2 attempts", "3 attempts"]


def test_durable_timer(client, host):
    started = time.monotonic()
    row, iid = run(client, host, "sleeper", 0.4)
    assert row.runtime_status == "Completed"
    assert time.monotonic() - started >= 0.4
    assert json.loads(row.output) >= 0.4  # the orchestrator's own clock moved with the timer
    assert kinds(events(host, iid))[T.TIMER_FIRED] == 1


def test_external_event_wins_the_race_and_cancels_the_timeout(client, host):
    iid = client.start_new_sync("approval", client_input=30)
    deadline = time.monotonic() + 10
    while asyncio.run(client.get_status(iid)).custom_status != {"waiting_for": "approve"}:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    asyncio.run(client.raise_event(iid, "approve", "ada"))
    row = host.wait_for(iid, 10)
    assert json.loads(row.output) == {"approved_by": "ada"}
    assert json.loads(row.custom_status or "null") == {"waiting_for": None}
    assert host.store.next_visible_at() is None  # the cancelled timer is gone


def test_external_event_timeout(client, host):
    row, _ = run(client, host, "approval", 0.2)
    assert json.loads(row.output) == {"timed_out": True}


def test_events_for_unknown_or_finished_instances_are_refused(client, host):
    with pytest.raises(DurableClientError, match="No instance"):
        asyncio.run(client.raise_event("nope", "approve", 1))
    _, iid = run(client, host, "sleeper", 0)
    with pytest.raises(DurableClientError, match="is gone"):
        asyncio.run(client.raise_event(iid, "approve", 1))


def test_sub_orchestrations_complete_and_fail(client, host):
    spec = {
        "values": [1, 2],
        "failing": {"key": "child-fails", "failures": 9, "first_ms": 10, "attempts": 2},
    }
    row, iid = run(client, host, "parent", spec)
    assert row.runtime_status == "Completed", row.error
    out = json.loads(row.output)
    assert out["child"] == [2, 4, 2, 4]
    assert "with_retry" in out["failure"] and "child-fails attempt 2 failed" in out["failure"]
    children = [
        e["InstanceId"]
        for e in events(host, iid)
        if e["EventType"] == T.SUB_ORCHESTRATION_INSTANCE_CREATED
    ]
    assert len(children) == 2 and len(set(children)) == 2
    assert all(c.startswith(f"{iid}:") for c in children)
    first_child = asyncio.run(client.get_status(children[0]))
    assert first_child.runtime_status.value == "Completed"


def test_continue_as_new_restarts_with_a_fresh_history(client, host):
    row, iid = run(client, host, "counter", 0)
    assert row.runtime_status == "Completed", row.error
    assert json.loads(row.output) == 3
    history = events(host, iid)
    started = [e for e in history if e["EventType"] == T.EXECUTION_STARTED]
    assert len(started) == 1 and json.loads(started[0]["Input"]) == 3
    assert kinds(history)[T.TASK_SCHEDULED] == 1


def test_a_non_deterministic_orchestrator_is_caught(client, host):
    row, _ = run(client, host, "nondeterministic")
    assert row.runtime_status == "Failed"
    assert "Non-deterministic workflow detected: action #0 was call_activity 'double'" in (
        row.error or ""
    )


def test_unknown_orchestrator_and_activity(client, host):
    with pytest.raises(DurableClientError, match="no orchestrator function named 'ghost'"):
        client.start_new_sync("ghost")
    spec = {"key": "x", "failures": 0, "first_ms": 10, "attempts": 1}
    host.registry.activities.pop("flaky")
    row, _ = run(client, host, "with_retry", spec)
    assert row.runtime_status == "Failed" and "no activity function named 'flaky'" in row.error


def test_terminate_and_purge(client, host):
    iid = client.start_new_sync("sleeper", client_input=60)
    asyncio.run(client.terminate(iid, "operator said so"))
    row = host.wait_for(iid, 10)
    assert (row.runtime_status, json.loads(row.output)) == ("Terminated", "operator said so")
    assert host.store.next_visible_at() is None  # its timer went with it
    assert asyncio.run(client.purge_instance_history(iid)).instances_deleted == 1
    assert not asyncio.run(client.get_status(iid))
    assert host.store.history(iid) == []


def test_a_running_instance_is_not_purged_nor_started_twice(client, host):
    iid = client.start_new_sync("sleeper", "same-id", 60)
    with pytest.raises(DurableClientError, match="already running"):
        client.start_new_sync("sleeper", "same-id", 1)
    assert asyncio.run(client.purge_instance_history(iid)).instances_deleted == 0
    asyncio.run(client.terminate(iid, "cleanup"))


def test_kill_in_the_middle_then_resume_without_rerunning_completed_activities(db_url, tmp_path):
    log = tmp_path / "calls.log"
    log.touch()
    script = [sys.executable, str(TESTS / "workflow_app.py"), db_url, str(log)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    victim = subprocess.Popen([*script, "40"], env=env, stdout=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(log.read_text().split()) < 10:
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    engines = create_engines(db_url)
    from hartonomous.workflows.persistence import DurableStore

    store = DurableStore(engines)
    done_before = [
        json.loads(e)["TaskScheduledId"]
        for e in store.history("crash-test")
        if json.loads(e)["EventType"] == T.TASK_COMPLETED
    ]
    engines.dispose()
    assert 5 <= len(done_before) < 40, done_before
    assert store.instance("crash-test") is not None

    resumed = subprocess.run([*script, "resume"], env=env, capture_output=True, timeout=120)
    result = json.loads(resumed.stdout.decode().strip().splitlines()[-1])
    assert result == {"status": "Completed", "output": json.dumps(sum(range(40)))}
    calls = Counter(int(line) for line in log.read_text().split())
    assert set(calls) == set(range(40))
    # Activities whose completion was in the history at the kill never ran again.
    assert all(calls[step] == 1 for step in done_before)
