"""Writes that must not sit on a request's latency (knowledge gaps, search usage): queued,
then applied on one background thread, one transaction per tenant for whatever queued up
meanwhile. ``flush()`` waits until everything queued so far is written."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from hartonomous.store.unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Write = Callable[[UnitOfWork], object]


class BackgroundWriter:
    def __init__(self, uow_factory: UnitOfWorkFactory, name: str = "background-writes") -> None:
        self._uow = uow_factory
        self._queue: queue.Queue[tuple[str, Write]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, tenant_id: str, write: Write) -> None:
        self._queue.put((tenant_id, write))

    def flush(self) -> None:
        self._queue.join()

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                for tenant_id in dict.fromkeys(tenant for tenant, _ in items):
                    with self._uow(write=True, tenant_id=tenant_id) as uow:
                        for owner, write in items:
                            if owner == tenant_id:
                                write(uow)
                        uow.commit()
            except Exception:
                log.exception("could not apply %d background writes", len(items))
            finally:
                for _ in items:
                    self._queue.task_done()
