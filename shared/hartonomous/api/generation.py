"""``/v1/generate``, ``/v1/receipts``, ``/v1/atoms/{id}/lineage`` and ``/v1/usage``.

A generation is admitted (the tenant's plan: 429), then waits its turn in its model's queue
(full: 503) as a future on the event loop, never on a thread; the queue's own threads run
it. A client that goes away cancels it: still waiting, it is dropped without cost; running,
it stops at its next token and its usage counts the tokens that ran.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from hartonomous.admission.types import GenerationPermit
from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES, documented
from hartonomous.api.streams import CancellingStream
from hartonomous.billing.service import generation_estimate
from hartonomous.errors import HartonomousError, InvalidInput
from hartonomous.generation.queue import Done, Ticket
from hartonomous.generation.service import Generated, GenerateRequest
from hartonomous.inference.types import Control
from hartonomous.knowledge.filters import Filters
from hartonomous.services.clock import new_id

if TYPE_CHECKING:
    from hartonomous.bootstrap import Platform

log = logging.getLogger(__name__)
router = APIRouter(tags=["generation"], responses=PROBLEM_RESPONSES)
POLL_S = 0.1  # how often a waiting request looks for its client
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it


class GenerateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Field(min_length=1, max_length=16_000)]
    model_id: str | None = Field(
        default=None, max_length=64, description="A ready model of yours; default the built-in"
    )
    k: Annotated[int, Field(ge=0, le=20, description="Passages to retrieve (0: none)")] = 5
    filters: Filters = Filters()
    max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 128
    temperature: Annotated[float, Field(ge=0, le=2)] = 0.0
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=4, description="Default: stop where a new question begins"
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    stream: bool = Field(default=False, description="SSE: token events, then a receipt event")


class GenerateOut(BaseModel):
    text: str
    receipt: dict[str, Any]


def _request(body: GenerateIn) -> GenerateRequest:
    return GenerateRequest(
        prompt=body.prompt,
        model_id=body.model_id,
        k=body.k,
        filters=body.filters.to_search_filter(),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        stop=tuple(body.stop) if body.stop is not None else None,
        seed=body.seed,
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Hold:
    """The tenant's permit for one generation and the credits held for it, left exactly
    once: by the job when it ends, or by the request when its ticket was dropped before it
    ran. The receipt's transaction settles the credits; any other end releases them."""

    def __init__(
        self,
        context: AbstractContextManager[GenerationPermit],
        release: Callable[[], object],
    ) -> None:
        self._context = context
        self._release = release
        self._left = False
        self._lock = threading.Lock()
        self.permit: GenerationPermit | None = None

    def enter(self) -> None:
        self.permit = self._context.__enter__()

    def leave(self, settled: bool = False) -> None:
        with self._lock:
            if self._left:
                return
            self._left = True
        try:
            self._context.__exit__(None, None, None)
        finally:
            if not settled:
                self._release()

    def charge(self, tokens: int) -> None:
        if self.permit is not None:
            self.permit.charge(tokens)


class _ClientGone(Exception):
    pass


async def _next(ticket: Ticket[Any], request: Request) -> Any:
    """The ticket's next piece (or ``Done``), looking for the client every ``POLL_S``."""
    getter = asyncio.ensure_future(ticket.next())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=POLL_S)
            if done:
                return getter.result()
            if await request.is_disconnected():
                raise _ClientGone
    finally:
        if not getter.done():
            getter.cancel()


Job = Callable[[GenerateRequest, str, Ticket[Any]], Any]  # the request, its receipt's id


async def _submit(
    platform: Platform, tenant_id: str, body: GenerateIn, job: Job
) -> tuple[Ticket[Any], _Hold]:
    """Admit the generation and queue it: 404/409 for the model, 429 over the tenant's plan,
    503 when the model's queue is full, all at once (short calls off the event loop)."""
    service = platform.generation
    model = await run_in_threadpool(service.resolve, tenant_id, body.model_id)
    receipt_id = new_id()
    key = f"receipt:{receipt_id}"  # the usage key its receipt settles
    hold = _Hold(
        platform.admission.generation(tenant_id),
        partial(platform.credits.release, tenant_id, key),
    )
    await run_in_threadpool(hold.enter)
    try:
        context = platform.settings.inference_context_tokens
        estimate = generation_estimate(max(0, context - body.max_tokens), body.max_tokens, body.k)
        await run_in_threadpool(platform.credits.hold, tenant_id, key, estimate, "this generation")
    except BaseException:
        await run_in_threadpool(hold.leave, True)  # nothing was held
        raise
    asked = _request(body)

    def run(ticket: Ticket[Any]) -> Any:
        settled = False
        try:
            result = job(asked, receipt_id, ticket)
            settled = True  # the receipt's transaction settled the credits
            return result
        finally:
            hold.leave(settled)

    try:
        ticket = service.queue.submit(model.sha256, run, Control(on_tokens=hold.charge))
    except BaseException:
        await run_in_threadpool(hold.leave)
        raise
    return ticket, hold


async def _first(ticket: Ticket[Any], hold: _Hold, request: Request) -> Any:
    """The ticket's first piece; a client gone before it: the ticket is cancelled (dropped
    without cost if it had not started)."""
    try:
        return await _next(ticket, request)
    except BaseException:
        if ticket.cancel():
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(hold.leave)
        raise


_QUEUE_FULL = documented(503, "The model's queue is full; retry after Retry-After seconds")
_QUEUE_FULL[503]["headers"] = {
    "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait"}
}
GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "With stream: SSE"},
    **documented(402, "Your credits do not cover this generation's estimate"),
    **documented(409, "The model is not ready"),
    **_QUEUE_FULL,
    CLIENT_GONE: {"description": "The client went away first (logged; nobody reads it)"},
}


@router.post("/v1/generate", response_model=GenerateOut, responses=GENERATE_RESPONSES)
async def generate(
    request: Request, body: GenerateIn, principal: Writer, platform: PlatformDep
) -> Any:
    """Retrieve, generate, and answer ``{text, receipt}``; the receipt names every component
    that produced the text. ``stream: true`` sends ``token`` events, then ``receipt``."""
    service, tenant_id = platform.generation, principal.tenant_id
    if not body.stream:
        ticket, hold = await _submit(
            platform, tenant_id, body,
            lambda asked, receipt_id, own: service.generate(
                tenant_id, asked, control=own.control, receipt_id=receipt_id
            ),
        )  # fmt: skip
        try:
            done = await _first(ticket, hold, request)
        except _ClientGone:
            return Response(status_code=CLIENT_GONE)
        result: Generated = done.value
        return GenerateOut(text=result.text, receipt=result.receipt)

    def stream(asked: GenerateRequest, receipt_id: str, own: Ticket[Any]) -> None:
        for piece in service.stream(tenant_id, asked, control=own.control, receipt_id=receipt_id):
            own.emit(piece)

    ticket, hold = await _submit(platform, tenant_id, body, stream)
    # The first piece before the response: an unknown model or a prompt that does not fit is
    # still a problem with its status, not a 200 stream that fails.
    try:
        first = await _first(ticket, hold, request)
    except _ClientGone:
        return Response(status_code=CLIENT_GONE)

    async def events() -> AsyncGenerator[str, None]:
        piece = first
        try:
            while not isinstance(piece, Done):
                if isinstance(piece, Generated):
                    yield _sse("receipt", piece.receipt)
                else:
                    yield _sse("token", {"text": piece})
                piece = await ticket.next()
        except HartonomousError as exc:
            yield _sse("error", {"title": exc.title, "status": exc.status, "detail": exc.detail})
        except Exception:
            log.exception("generation failed mid-stream")
            yield _sse("error", {"title": "Internal error", "status": 500, "detail": None})

    # However the response ends (the client gone too), the generation stops at its next token.
    return CancellingStream(
        events(), ticket.cancel, media_type="text/event-stream",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


@router.get("/v1/receipts/{receipt_id}", response_model=dict[str, Any])
def get_receipt(receipt_id: str, principal: Reader, platform: PlatformDep) -> dict[str, Any]:
    """A generation's receipt: the ordered components that produced its output."""
    return platform.provenance.receipt(principal.tenant_id, receipt_id)


@router.get("/v1/atoms/{atom_id}/lineage", response_model=dict[str, Any])
def lineage(
    atom_id: str,
    principal: Reader,
    platform: PlatformDep,
    direction: Literal["up", "down"] = "up",
    depth: Annotated[int, Query(ge=1, le=10)] = 3,
) -> dict[str, Any]:
    """``up``: what the atom was made from, down to source documents. ``down``: what it
    went into (the outputs a source influenced: what deleting it would touch)."""
    return platform.provenance.lineage(principal.tenant_id, atom_id, direction, depth)


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _date_time_text(value: object) -> object:
    """RFC 3339 text only, as the schema says: pydantic would take a number as Unix time."""
    if isinstance(value, str) and _RFC3339.match(value):
        return value
    raise ValueError("a date-time with a UTC offset, e.g. 2026-11-21T00:00:00Z")


UtcTime = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]


class UsageLine(BaseModel):
    kind: str
    unit: str
    quantity: int
    events: int
    credits: float


class UsageOut(BaseModel):
    start: datetime | None = Field(alias="from")
    end: datetime | None = Field(alias="to")
    lines: list[UsageLine]
    credits: float

    model_config = ConfigDict(populate_by_name=True)


@router.get("/v1/usage", response_model=UsageOut, response_model_by_alias=True)
def usage(
    principal: Reader,
    platform: PlatformDep,
    start: Annotated[UtcTime | None, Query(alias="from")] = None,
    end: Annotated[UtcTime | None, Query(alias="to")] = None,
) -> UsageOut:
    """What the caller's tenant used in ``[from, to)``, by kind, priced in credits."""
    for value in (start, end):
        if value is not None and value.tzinfo is None:
            raise InvalidInput("from and to need a UTC offset, e.g. 2026-11-21T00:00:00Z")
    if start and end and start >= end:
        raise InvalidInput("from must be before to")
    report = platform.usage.report(principal.tenant_id, start, end)
    lines = [
        UsageLine(kind=line.total.kind, unit=line.total.unit, quantity=line.total.quantity,
                  events=line.total.events, credits=line.credits)
        for line in report.lines
    ]  # fmt: skip
    return UsageOut(start=start, end=end, lines=lines, credits=report.credits)
