"""The bounded per-model generation queue: a waiting request is a future on the event loop,
and a few threads of the queue's own run the generations.

Generations used to run on the server's shared thread pool, each thread parked on its
model's lock: 60 in flight held every thread, and authentication waited behind them (a
``GET /v1/me`` took 51 s). Here a model (its file, by SHA-256) runs ``slots`` generations at
once and keeps at most ``depth`` waiting; one more is refused at once (503, Retry-After).
A waiting request whose client goes is dropped: it never ran, it costs nothing. A running
one is told through its ``Control`` and stops at its next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hartonomous.errors import ServiceUnavailable
from hartonomous.inference.types import Control
from hartonomous.settings import Settings

T = TypeVar("T")
RECENT = 16  # generations whose durations estimate Retry-After


@dataclass(frozen=True)
class Shape:
    slots: int  # generations one model runs at once
    threads: int  # generations running at once, every model together
    niceness: int = 0  # added to the generation threads' nice value (Linux: per thread)


def shape(settings: Settings) -> Shape:
    """llama-cpp-python in process runs one generation per model (its lock); llama-server,
    or the GPU worker, batches ``inference_slots``. On CPUs one model runs at a time: a
    second would take the cores the first and the API need."""
    in_process = settings.inference_url is None
    slots = (
        1
        if in_process and settings.inference_engine != "llama-server"
        else settings.inference_slots
    )
    on_gpu = not in_process or settings.inference_gpu_layers != 0
    return Shape(slots, slots * 4 if on_gpu else slots, settings.generation_niceness)


@dataclass(frozen=True)
class Done(Generic[T]):
    """A job's result, after every piece it emitted."""

    value: T


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(eq=False)
class Ticket(Generic[T]):
    """One generation's place: waiting, then running, then done (or dropped)."""

    key: str
    job: Callable[[Ticket[T]], T]
    control: Control
    _queue: GenerationQueue
    _loop: asyncio.AbstractEventLoop
    _items: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    state: str = "waiting"  # waiting | running | dropped | done

    def emit(self, piece: Any) -> None:
        """From the job's thread: a piece for whoever awaits ``next`` (a streamed token)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._items.put_nowait, piece)

    async def next(self) -> Any:
        """The next piece the job emitted, then ``Done(result)``; the job's error raised."""
        item = await self._items.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def cancel(self) -> bool:
        """The client went away. True: the ticket was waiting and is dropped (its job never
        runs). False: it runs (or ran) and stops at its next token."""
        return self._queue._cancel(self)


@dataclass
class _Model:
    running: int = 0
    waiting: deque[Ticket[Any]] = field(default_factory=deque)


def _lower_priority(niceness: int) -> None:
    """Run this generation thread (and the llama.cpp threads it starts, which inherit it) at a
    lower CPU priority: when the cores are contended, the kernel serves authentication, search
    and every other tenant's cheap requests first, and the model gets what is left. Linux
    keeps a nice value per thread; elsewhere this is a no-op."""
    if niceness and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)


class GenerationQueue:
    """``submit`` from the event loop; jobs run on ``threads`` threads of the queue's own
    (never the server's shared pool), at most ``slots`` at once per key."""

    def __init__(self, depth: int, *, threads: int = 1, slots: int = 1, niceness: int = 0) -> None:
        self.depth = depth
        self.slots = slots
        self._executor = ThreadPoolExecutor(
            threads,
            thread_name_prefix="generation",
            initializer=_lower_priority,
            initargs=(niceness,),
        )
        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._durations: deque[float] = deque(maxlen=RECENT)

    def submit(self, key: str, job: Callable[[Ticket[T]], T], control: Control) -> Ticket[T]:
        """A ticket for ``job`` on ``key``'s model: it starts now or waits its turn;
        ``ServiceUnavailable`` (with Retry-After) when ``depth`` wait already."""
        ticket: Ticket[T] = Ticket(key, job, control, self, asyncio.get_running_loop())
        with self._lock:
            model = self._models.setdefault(key, _Model())
            if model.running < self.slots:
                model.running += 1
                ticket.state = "running"
            elif len(model.waiting) >= self.depth:
                raise ServiceUnavailable(
                    f"{len(model.waiting)} generations are waiting for this model already; "
                    "try again shortly",
                    headers={"Retry-After": str(self.retry_after())},
                )
            else:
                model.waiting.append(ticket)
        if ticket.state == "running":
            self._executor.submit(self._run, ticket)
        return ticket

    def waiting(self, key: str) -> int:
        with self._lock:
            model = self._models.get(key)
            return len(model.waiting) if model else 0

    def running(self, key: str) -> int:
        with self._lock:
            model = self._models.get(key)
            return model.running if model else 0

    def retry_after(self) -> int:
        """Seconds until a waiting place is likely free: a recent generation's mean
        duration (the running one ends in about that), at least 1."""
        recent = list(self._durations)
        return max(1, math.ceil(sum(recent) / len(recent))) if recent else 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, ticket: Ticket[Any]) -> None:
        started = time.perf_counter()
        try:
            ticket.emit(Done(ticket.job(ticket)))
        except BaseException as exc:  # the awaiting coroutine raises it
            ticket.emit(_Failed(exc))
        finally:
            self._finished(ticket, time.perf_counter() - started)

    def _finished(self, ticket: Ticket[Any], seconds: float) -> None:
        with self._lock:
            ticket.state = "done"
            self._durations.append(seconds)
            model = self._models[ticket.key]
            following = model.waiting.popleft() if model.waiting else None
            if following is not None:
                following.state = "running"
            else:
                model.running -= 1
                if model.running == 0:
                    del self._models[ticket.key]  # keys come and go with tenants' models
        if following is not None:
            self._executor.submit(self._run, following)

    def _cancel(self, ticket: Ticket[Any]) -> bool:
        ticket.control.cancel()
        with self._lock:
            if ticket.state != "waiting":
                return False
            ticket.state = "dropped"
            self._models[ticket.key].waiting.remove(ticket)
            return True
