"""Timer triggers: NCRONTAB schedules run by the local scheduler, and the sweep they run."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hartonomous.blobs.local import LocalBlobStore
from hartonomous.services.maintenance import sweep_staging
from hartonomous.workflows.registry import Registry, TimerFunction
from hartonomous.workflows.timers import TimerScheduler


def test_ncrontab_schedules_have_seconds_first():
    timer = TimerFunction("t", "0 17 * * * *", lambda timer: None, "timer")
    scheduler = TimerScheduler([timer])
    at = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
    assert scheduler.next_after(timer, at) == at.replace(minute=17)
    weekly = TimerFunction("w", "0 0 9 * * 1", lambda timer: None, "timer")  # Mondays 09:00
    assert TimerScheduler([weekly]).next_after(weekly, at).weekday() == 0


def test_invalid_schedules_are_refused():
    with pytest.raises(ValueError, match="invalid NCRONTAB"):
        TimerScheduler([TimerFunction("bad", "every minute", lambda timer: None, "timer")])


def test_scheduler_runs_timers_on_their_schedule_and_on_startup():
    seen: list[bool] = []
    ran = threading.Event()

    def tick(timer) -> None:
        seen.append(timer.past_due)
        if len(seen) >= 3:
            ran.set()

    scheduler = TimerScheduler(
        [TimerFunction("tick", "* * * * * *", tick, "timer", run_on_startup=True)]
    ).start()
    try:
        assert ran.wait(5), seen
    finally:
        scheduler.stop()
    assert scheduler.runs["tick"] >= 3
    assert seen[0] is False


def test_a_failing_timer_function_does_not_stop_the_scheduler():
    calls: list[int] = []

    def boom(timer) -> None:
        calls.append(1)
        raise RuntimeError("boom")

    scheduler = TimerScheduler([TimerFunction("boom", "* * * * * *", boom, "timer")]).start()
    try:
        deadline = time.monotonic() + 5
        while len(calls) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        scheduler.stop()


def test_every_indexed_timer_runs_on_the_local_scheduler():
    """What Azure schedules, `hartonomous serve` schedules: each timer of the Function App with
    its NCRONTAB; those that start workflows get a Durable client (the monthly billing run,
    the hourly concept discovery at :15)."""
    from functions import indexed_app

    timers = {t.name: t for t in Registry.from_functions(indexed_app().get_functions()).timers}
    TimerScheduler(list(timers.values()))  # refuses an invalid schedule
    assert {n for n, t in timers.items() if t.client_name} == {"billing_monthly", "concepts_hourly"}
    hourly = timers["concepts_hourly"]
    assert hourly.client_name == "client" and not hourly.run_on_startup
    at = datetime(2026, 11, 21, 10, 20, 0, tzinfo=UTC)
    assert TimerScheduler([hourly]).next_after(hourly, at) == at.replace(hour=11, minute=15)


def test_sweep_staging_removes_only_abandoned_uploads(tmp_path: Path):
    store = LocalBlobStore(tmp_path / "blobs")
    abandoned = store.writer()
    abandoned.write(b"left behind by a crash")
    old = time.time() - timedelta(days=2).total_seconds()
    for path in store.staging.iterdir():  # only the abandoned upload so far
        os.utime(path, (old, old))
    live = store.writer()
    live.write(b"still uploading")
    assert sweep_staging(store) == 1
    assert len(list(store.staging.iterdir())) == 1
    staged = live.finish()
    staged.publish()
    assert store.exists(staged.sha256)
