"""Streaming responses that hold a resource (a model's lock) until they end.

A stream is primed before the response starts: whatever fails before the first piece (an
unknown model, a prompt that does not fit) is still an RFC 9457 problem with its status.
And nothing else closes a stream on time: Starlette cancels a response whose client went
away but leaves its iterator to the garbage collector (a ``for`` loop never closes what it
iterates), so the response closes the stream itself, however it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

import anyio
from fastapi.responses import StreamingResponse
from starlette.types import Send

T = TypeVar("T")
_END: Any = object()


class Primed(Generic[T]):
    """``items`` with its first item produced now, in the caller's thread; ``close()``
    closes ``items`` whether or not anyone iterated."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._first: Any = next(items, _END)

    def __iter__(self) -> Primed[T]:
        return self

    def __next__(self) -> T:
        if self._first is not _END:
            first, self._first = self._first, _END
            return first  # type: ignore[no-any-return]
        return next(self._items)

    def close(self) -> None:
        self._first = _END
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


class ClosingStream(StreamingResponse):
    """A streaming response that runs ``close`` when it ends, however it ends; ``cancel``
    first, at once (a flag the running step sees at its next token, where ``close`` waits for
    that step)."""

    def __init__(
        self,
        content: Iterator[str],
        close: Any,
        *,
        cancel: Callable[[], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(content, **kwargs)
        self._close = close
        self._cancel = cancel

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            if self._cancel is not None:
                self._cancel()
            # No step of the stream is running: a cancelled thread-pool call is waited for.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close)


class CancellingStream(StreamingResponse):
    """A streaming response over pieces another thread produces: ``cancel`` runs when it
    ends, however it ends (the client gone: the producer stops at its next piece). It only
    sets a flag, so it runs here, on the event loop."""

    def __init__(
        self, content: AsyncIterator[str], cancel: Callable[[], object], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._cancel = cancel

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            self._cancel()
