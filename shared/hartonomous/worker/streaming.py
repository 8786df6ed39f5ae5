"""Server-sent events the way OpenAI sends them: ``data: {json}`` lines, then ``[DONE]``.

A stream is started before the response is: whatever fails before the first token (the
model cannot be had, the prompt does not fit) is still an RFC 9457 problem with its status.
A failure after that can only be told in the stream; OpenAI's clients raise on an event with
an ``error`` member, so that is what it becomes.

A started stream holds its model's lock until it is closed, and nothing else closes it on
time: Starlette cancels a stream whose client went away but leaves its iterator to the
garbage collector (and a ``for`` loop never closes what it iterates). So the response closes
the stream itself, however it ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

from fastapi.responses import StreamingResponse

from hartonomous.api.streams import ClosingStream, Primed
from hartonomous.errors import HartonomousError

log = logging.getLogger(__name__)


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


def sse(
    events: Iterator[dict[str, Any]],
    headers: dict[str, str],
    source: Primed[Any],
    cancel: Callable[[], object] | None = None,
) -> StreamingResponse:
    """``events`` as a response; ``source`` (what holds the model) is closed at its end, and
    ``cancel`` (the generation's ``Control.cancel``) called the moment it ends: a client that
    goes away stops the generation at its next token."""

    def lines() -> Generator[str, None, None]:
        try:
            for event in events:
                yield _event(event)
        except HartonomousError as exc:
            yield _event({"error": {"message": exc.detail, "type": exc.slug, "code": exc.status}})
            return
        except Exception:
            log.exception("a stream failed after it started")
            yield _event({"error": {"message": "the stream failed; it has been logged",
                                    "type": "internal", "code": 500}})  # fmt: skip
            return
        yield "data: [DONE]\n\n"

    content = lines()

    def close() -> None:
        content.close()
        source.close()

    return ClosingStream(
        content,
        close,
        cancel=cancel,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
    )
