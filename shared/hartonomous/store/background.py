"""Writes that must not sit on a request's latency (knowledge gaps, search usage): queued,
then applied on one background thread, one transaction per tenant for whatever queued up
meanwhile. ``flush()`` waits until everything queued so far is written; ``close()`` drains
the queue and stops the thread (the platform calls it on shutdown).

No row is lost to one bad neighbour or one failed commit: when a tenant's batch fails, each
of its writes is retried alone, up to ``attempts`` times with a growing pause; only a write
that fails every time is dropped, and it is logged with what it would have written.

Bounded: at most ``maxsize`` writes wait. ``submit`` then blocks (backpressure on the
caller) for up to ``submit_timeout`` seconds, and past that applies the write itself, in the
caller's thread and transaction: slower, never lost, never unbounded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from hartonomous.ports import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Write = Callable[[UnitOfWork], object]
_STOP: Any = object()


def describe(write: Write) -> str:
    """What a write would record, for the log: the values its closure and defaults hold."""
    code = getattr(write, "__code__", None)
    cells = getattr(write, "__closure__", None) or ()
    if code is None:
        return repr(write)
    values = {}
    for name, cell in zip(code.co_freevars, cells, strict=False):
        try:
            values[name] = repr(cell.cell_contents)[:200]
        except ValueError:  # an empty cell
            continue
    defaults = getattr(write, "__defaults__", None) or ()
    positional = code.co_varnames[: code.co_argcount]
    for name, value in zip(positional[len(positional) - len(defaults) :], defaults, strict=True):
        values[name] = repr(value)[:200]
    return f"{code.co_qualname} {values!r}"


class BackgroundWriter:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        name: str = "background-writes",
        *,
        maxsize: int = 10_000,
        batch: int = 500,
        attempts: int = 3,
        backoff: float = 0.2,
        submit_timeout: float = 2.0,
    ) -> None:
        self._uow = uow_factory
        self._batch, self._attempts, self._backoff = batch, attempts, backoff
        self._submit_timeout = submit_timeout
        self._queue: queue.Queue[tuple[str, Write]] = queue.Queue(maxsize)
        self._closed = False
        self.dropped = 0  # writes that failed every attempt
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, tenant_id: str, write: Write) -> None:
        if self._closed:
            raise RuntimeError("the background writer is closed")
        try:
            self._queue.put((tenant_id, write), timeout=self._submit_timeout)
        except queue.Full:
            log.warning(
                "background writes are %d behind; writing in the caller", self._queue.qsize()
            )
            self._apply_one(tenant_id, write)

    def flush(self) -> None:
        self._queue.join()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread; later submits raise."""
        if self._closed:
            return
        self._closed = True
        self._queue.put((_STOP, _STOP))  # after everything queued before it
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("background writer still busy after %.0fs at shutdown", timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self._batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(tenant is _STOP for tenant, _ in items)
            try:
                self._apply([(t, w) for t, w in items if t is not _STOP])
            except Exception:  # never let the thread die: later writes would wait forever
                log.exception("background writer failed on %d writes", len(items))
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                return

    def _apply(self, items: list[tuple[str, Write]]) -> None:
        for tenant_id in dict.fromkeys(tenant for tenant, _ in items):
            writes = [write for owner, write in items if owner == tenant_id]
            try:
                with self._uow(write=True, tenant_id=tenant_id) as uow:
                    for write in writes:
                        write(uow)
                    uow.commit()
            except Exception:
                log.warning(
                    "a batch of %d background writes failed; retrying them one by one",
                    len(writes),
                    exc_info=True,
                )
                for write in writes:
                    self._retry(tenant_id, write)

    def _retry(self, tenant_id: str, write: Write) -> None:
        for attempt in range(self._attempts):
            try:
                self._apply_one(tenant_id, write)
                return
            except Exception:
                if attempt == self._attempts - 1:
                    self.dropped += 1
                    log.exception(
                        "dropping a background write for tenant %s after %d attempts: %s",
                        tenant_id,
                        self._attempts,
                        describe(write),
                    )
                    return
                time.sleep(self._backoff * (attempt + 1))

    def _apply_one(self, tenant_id: str, write: Write) -> None:
        with self._uow(write=True, tenant_id=tenant_id) as uow:
            write(uow)
            uow.commit()
