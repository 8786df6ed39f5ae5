"""A local Durable host: plays the Durable extension's part on one machine.

This is the dispatcher: one thread owns every instance's history (one writer, no locks on
instances) and hands each instance's messages to the replay logic (``replay.py``); activities
run on a bounded thread pool and hand their results back to it. Each step commits in one
transaction: kill the process anywhere and a restart resumes from the histories, re-running
only activities whose completion was not yet recorded (at-least-once, as on Azure).
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from hartonomous.services.clock import utcnow
from hartonomous.store.engine import Engines
from hartonomous.workflows import history as h
from hartonomous.workflows.instance import Instance
from hartonomous.workflows.persistence import DurableStore, InstanceRow, Step, WorkItem
from hartonomous.workflows.registry import Registry
from hartonomous.workflows.replay import Delivery, Replayer, consume

log = logging.getLogger(__name__)


class LocalDurableHost:
    def __init__(
        self,
        engines: Engines,
        registry: Registry,
        *,
        max_activity_workers: int = 8,
        poll_interval: float = 0.2,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        h.cache_sdk_timestamp_parsing()
        self.store = DurableStore(engines)
        self.registry = registry
        self.poll_interval = poll_interval
        self._clock = clock
        self._max_workers = max_activity_workers
        self._pool: ThreadPoolExecutor | None = None
        self._cond = threading.Condition()
        self._inbox: list[tuple[str, dict[str, Any]]] = []
        self._instances: dict[str, Instance] = {}
        self._replay = Replayer(registry, self._instances, self.store.status)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._finished = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LocalDurableHost:
        """Resume what was in flight (activities are re-run), then dispatch."""
        self._stopping = False
        self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="durable-activity")
        for item in self.store.pending_work():
            self._submit(item)
        self._thread = threading.Thread(target=self._loop, name="durable-dispatcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._instances.clear()

    def __enter__(self) -> LocalDurableHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> datetime:
        """The host's clock: clients stamp their messages with it too."""
        return self._clock()

    def notify(self) -> None:
        """Wake the dispatcher: a client wrote a message."""
        with self._cond:
            self._cond.notify()

    def wait_for(self, instance_id: str, timeout: float = 60.0) -> InstanceRow:
        """Block until the instance is terminal; TimeoutError otherwise."""
        deadline = self._clock() + timedelta(seconds=timeout)
        with self._finished:
            while True:
                row = self.store.instance(instance_id)
                if row is not None and row.runtime_status in ("Completed", "Failed", "Terminated"):
                    return row
                left = (deadline - self._clock()).total_seconds()
                if left <= 0:
                    status = row.runtime_status if row else "missing"
                    raise TimeoutError(f"{instance_id} still {status} after {timeout}s")
                self._finished.wait(min(left, 0.5))

    # -- activities ------------------------------------------------------------------------

    def _submit(self, item: WorkItem) -> None:
        assert self._pool is not None
        self._pool.submit(self._run_activity, item)

    def _run_activity(self, item: WorkItem) -> None:
        if self._stopping:
            return
        payload = self._activity_result(item)
        with self._cond:
            self._inbox.append((item.instance_id, payload))
            self._cond.notify()

    def _activity_result(self, item: WorkItem) -> dict[str, Any]:
        activity = self.registry.activities.get(item.name)
        payload: dict[str, Any] = {"event_id": item.event_id, "execution_id": item.execution_id}
        try:
            if activity is None:
                raise LookupError(f"no activity function named {item.name!r} is registered")
            payload |= {"ok": True, "result": activity.run(item.input)}
        except Exception as exc:
            payload |= {
                "ok": False,
                "reason": f"Activity function '{item.name}' failed: {type(exc).__name__}: {exc}",
                "details": traceback.format_exc(limit=20),
            }
        return payload

    # -- the dispatcher ----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            try:
                busy = self._tick()
            except Exception:
                log.exception("durable dispatcher step failed; retrying")
                self._instances.clear()  # the database is the truth: reload
                busy = False
            if not busy:
                self._idle()

    def _idle(self) -> None:
        wait = self.poll_interval
        due = self.store.next_visible_at()
        if due is not None:
            wait = max(0.0, min(wait, (due - self._clock()).total_seconds()))
        with self._cond:
            if not self._inbox and not self._stopping:
                self._cond.wait(wait)

    def _tick(self) -> bool:
        now = self._clock()
        with self._cond:
            inbox, self._inbox = self._inbox, []
        try:
            return self._step(inbox, now)
        except BaseException:
            with self._cond:  # keep the results; the messages are still in the database
                self._inbox[:0] = inbox
            raise

    def _step(self, inbox: list[tuple[str, dict[str, Any]]], now: datetime) -> bool:
        messages = self.store.visible_messages(now)
        if not inbox and not messages:
            return False
        grouped: dict[str, list[Delivery]] = {}
        for m in messages:
            grouped.setdefault(m.instance_id, []).append(Delivery(m.kind, m.payload, m.id))
        for instance_id, payload in inbox:
            grouped.setdefault(instance_id, []).append(Delivery("activity_done", payload))
        step = Step()
        finished = False
        for instance_id, items in grouped.items():
            finished |= self._process(instance_id, items, step, now)
        self.store.commit(step)
        for work in step.work_added:
            self._submit(work)
        for instance_id in [i for i, inst in self._instances.items() if inst.terminal]:
            del self._instances[instance_id]
        if finished:
            with self._finished:
                self._finished.notify_all()
        return True

    def _load(self, instance_id: str) -> Instance | None:
        inst = self._instances.get(instance_id)
        if inst is None:
            row = self.store.instance(instance_id)
            if row is None:
                return None
            events = self.store.history(instance_id)
            inst = Instance(row, events, persisted=len(events))
            if not row.host_state:
                row.host_state = Instance.fresh_state()
            self._instances[instance_id] = inst
        return inst

    def _process(self, instance_id: str, items: list[Delivery], step: Step, now: datetime) -> bool:
        inst = self._load(instance_id)
        if inst is None:  # purged: late arrivals are dropped
            for item in items:
                consume(instance_id, item, step)
            return False
        return self._replay.process(inst, items, step, now)
