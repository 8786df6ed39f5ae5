"""Writes that must not sit on a request's latency (knowledge gaps, search usage): queued,
then applied on one background thread, one transaction per tenant for whatever queued up
meanwhile. ``flush()`` waits until everything queued so far is written; ``close()`` drains
the queue and stops the thread (the platform calls it on shutdown).

No row is lost to one bad neighbour or to a database that is busy for a while: when a
tenant's batch fails, each of its writes is retried alone. A write that fails with a
*permanent* error (a constraint, bad data, a programming error: retrying cannot help) is
dropped alone and logged with what it would have written. Any other failure (a locked or
unreachable database) is retried with capped exponential backoff for as long as the outage
lasts, up to ``RETRY_DEADLINE`` (5 minutes) from its first failure; only then are rows
dropped, each logged. Meanwhile the queue fills and applies backpressure.

Bounded: at most ``maxsize`` writes wait. ``submit`` then blocks (backpressure on the
caller) for up to ``submit_timeout`` seconds, and past that applies the write itself, in the
caller's thread and transaction. That fallback never raises into the request: a write it
cannot apply goes back to the queue (waiting once more, bounded), or, when even that fails,
is dropped and logged like any other.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import sqlalchemy.exc as sa_exc

from hartonomous.ports import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger(__name__)

Write = Callable[[UnitOfWork], object]

RETRY_DEADLINE = 300.0  # seconds an outage may last before its rows are dropped (logged)
BACKOFF_CAP = 10.0  # the longest pause between two tries of one row
_POLL = 0.05  # how often a blocked submit or the idle thread looks again

PERMANENT: tuple[type[BaseException], ...] = (
    sa_exc.IntegrityError,
    sa_exc.DataError,
    sa_exc.ProgrammingError,
    sa_exc.NotSupportedError,
    sa_exc.ArgumentError,
    sa_exc.CompileError,
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
)


def is_permanent(exc: BaseException) -> bool:
    """True when trying the same write again cannot succeed."""
    return isinstance(exc, PERMANENT)


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
        backoff: float = 0.2,
        backoff_cap: float = BACKOFF_CAP,
        deadline: float = RETRY_DEADLINE,
        submit_timeout: float = 2.0,
    ) -> None:
        self._uow = uow_factory
        self._batch, self._backoff, self._backoff_cap = batch, backoff, backoff_cap
        self._deadline = deadline
        self._submit_timeout = submit_timeout
        self._queue: queue.Queue[tuple[str, Write]] = queue.Queue(maxsize)
        self._lock = threading.Lock()  # closed-check and enqueue are one step
        self._closed = False
        self._stopping = threading.Event()
        self._failing_since: float | None = None  # the current outage's first failure
        self.dropped = 0  # writes given up on (permanent error, or past the deadline)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, tenant_id: str, write: Write) -> None:
        if not self._enqueue(tenant_id, write, self._submit_timeout):
            log.warning(
                "background writes are %d behind; writing in the caller", self._queue.qsize()
            )
            self._apply_in_caller(tenant_id, write)

    def _enqueue(self, tenant_id: str, write: Write, timeout: float) -> bool:
        """Queue the write unless the queue stays full for ``timeout``; raises once closed.
        The check and the put hold one lock, so nothing lands behind ``close``'s drain."""
        until = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the background writer is closed")
                try:
                    self._queue.put_nowait((tenant_id, write))
                    return True
                except queue.Full:
                    pass
            if time.monotonic() >= until:
                return False
            time.sleep(_POLL)

    def _apply_in_caller(self, tenant_id: str, write: Write) -> None:
        try:
            self._apply_one(tenant_id, write)
            return
        except Exception as exc:
            if is_permanent(exc):
                self._drop(tenant_id, write, "a permanent error")
                return
            log.warning("a background write failed in the caller; queueing it", exc_info=True)
        try:
            if self._enqueue(tenant_id, write, self._submit_timeout):
                return
        except RuntimeError:  # closed meanwhile
            pass
        self._drop(tenant_id, write, "a full queue and a failing database", exc_info=False)

    def flush(self) -> None:
        self._queue.join()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread; later submits raise. Never blocks
        longer than ``timeout``, however full the queue."""
        with self._lock:
            if self._closed:
                return
            self._closed = True  # no put can follow: they check this under the lock
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "background writer still busy after %.0fs at shutdown; %d writes queued",
                timeout,
                self._queue.qsize(),
            )

    def _run(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=_POLL)]
            except queue.Empty:
                if self._stopping.is_set():
                    return  # closed and drained: no put can come any more
                continue
            while len(items) < self._batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._apply(items)
            except Exception:  # never let the thread die: later writes would wait forever
                log.exception("background writer failed on %d writes", len(items))
            finally:
                for _ in items:
                    self._queue.task_done()

    def _apply(self, items: list[tuple[str, Write]]) -> None:
        for tenant_id in dict.fromkeys(tenant for tenant, _ in items):
            writes = [write for owner, write in items if owner == tenant_id]
            try:
                with self._uow(write=True, tenant_id=tenant_id) as uow:
                    for write in writes:
                        write(uow)
                    uow.commit()
                self._failing_since = None
            except Exception:
                log.warning(
                    "a batch of %d background writes failed; retrying them one by one",
                    len(writes),
                    exc_info=True,
                )
                for write in writes:
                    self._retry(tenant_id, write)

    def _retry(self, tenant_id: str, write: Write) -> None:
        pause = self._backoff
        while True:
            try:
                self._apply_one(tenant_id, write)
                self._failing_since = None
                return
            except Exception as exc:
                if is_permanent(exc):
                    self._drop(tenant_id, write, "a permanent error", exc_info=True)
                    return
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                if now - self._failing_since >= self._deadline:
                    self._drop(tenant_id, write, "the retry deadline", exc_info=True)
                    return
                log.warning("a background write failed; retrying in %.1fs: %s", pause, exc)
            time.sleep(pause)
            pause = min(pause * 2, self._backoff_cap)

    def _drop(self, tenant_id: str, write: Write, why: str, *, exc_info: bool = True) -> None:
        self.dropped += 1
        log.error(
            "dropping a background write for tenant %s after %s: %s",
            tenant_id,
            why,
            describe(write),
            exc_info=exc_info,
        )

    def _apply_one(self, tenant_id: str, write: Write) -> None:
        with self._uow(write=True, tenant_id=tenant_id) as uow:
            write(uow)
            uow.commit()
