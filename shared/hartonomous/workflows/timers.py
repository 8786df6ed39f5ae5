"""Timer triggers, run locally on the schedules declared for Azure.

Azure Functions reads NCRONTAB expressions (six fields, seconds first); croniter evaluates
the same with ``second_at_beginning=True``. One scheduler thread sleeps until the next due
time; functions run on a small pool, and a run still going when its next time comes is not
started twice (the Functions host's singleton behaviour for timers).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from croniter import croniter

from hartonomous.services.clock import utcnow
from hartonomous.workflows.registry import TimerFunction

log = logging.getLogger(__name__)


class TimerScheduler:
    def __init__(
        self,
        timers: list[TimerFunction],
        *,
        clock: Callable[[], datetime] = utcnow,
        client: Any = None,
    ) -> None:
        for timer in timers:
            if not croniter.is_valid(timer.schedule, second_at_beginning=True):
                raise ValueError(f"timer {timer.name!r}: invalid NCRONTAB {timer.schedule!r}")
        self.timers = timers
        self._clock = clock
        self._client = client  # handed to timers that bind a Durable client
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="timer-trigger")
        self._running: dict[str, Future[None]] = {}
        self.runs: dict[str, int] = {t.name: 0 for t in timers}

    def next_after(self, timer: TimerFunction, moment: datetime) -> datetime:
        nxt: datetime = croniter(timer.schedule, moment, second_at_beginning=True).get_next(
            datetime
        )
        return nxt

    def start(self) -> TimerScheduler:
        if self.timers:
            self._thread = threading.Thread(target=self._loop, name="timer-triggers", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        now = self._clock()
        due = {t.name: self.next_after(t, now) for t in self.timers}
        for timer in self.timers:
            if timer.run_on_startup:
                self._fire(timer, past_due=False)
        while not self._stopping:
            now = self._clock()
            for timer in self.timers:
                if due[timer.name] <= now:
                    past_due = (now - due[timer.name]).total_seconds() > 1
                    self._fire(timer, past_due)
                    due[timer.name] = self.next_after(timer, now)
            wait = min(due.values()) - self._clock()
            self._wake.wait(max(0.0, min(wait.total_seconds(), 60.0)))

    def _fire(self, timer: TimerFunction, past_due: bool) -> None:
        running = self._running.get(timer.name)
        if running is not None and not running.done():
            log.warning("timer %s still running; skipping this occurrence", timer.name)
            return
        self._running[timer.name] = self._pool.submit(self._run, timer, past_due)

    def _run(self, timer: TimerFunction, past_due: bool) -> None:
        try:
            timer.run(past_due=past_due, client=self._client)
        except Exception:
            log.exception("timer function %s failed", timer.name)
        finally:
            self.runs[timer.name] += 1
