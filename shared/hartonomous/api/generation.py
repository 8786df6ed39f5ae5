"""``/v1/generate``, ``/v1/receipts``, ``/v1/atoms/{id}/lineage`` and ``/v1/usage``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from hartonomous.api.auth import Reader, Writer
from hartonomous.api.deps import PlatformDep
from hartonomous.api.problems import PROBLEM_RESPONSES
from hartonomous.api.streams import ClosingStream, Primed
from hartonomous.errors import HartonomousError, InvalidInput
from hartonomous.generation.service import Generated, GenerateRequest
from hartonomous.knowledge.filters import Filters

log = logging.getLogger(__name__)
router = APIRouter(tags=["generation"], responses=PROBLEM_RESPONSES)


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


@router.post(
    "/v1/generate",
    response_model=GenerateOut,
    responses={200: {"content": {"text/event-stream": {}}, "description": "With stream: SSE"}},
)
async def generate(
    request: Request, body: GenerateIn, principal: Writer, platform: PlatformDep
) -> Any:
    """Retrieve, generate, and answer ``{text, receipt}``; the receipt names every component
    that produced the text. ``stream: true`` sends ``token`` events, then ``receipt``."""
    service = platform.generation
    if not body.stream:
        result = await run_in_threadpool(service.generate, principal.tenant_id, _request(body))
        return GenerateOut(text=result.text, receipt=result.receipt)
    pieces = service.stream(principal.tenant_id, _request(body))
    # Primed here: an unknown model or a prompt that does not fit is still a problem with
    # its status, not a 200 stream that fails (api/streams.py).
    primed: Primed[str | Generated] = await run_in_threadpool(Primed, pieces)

    def events() -> Generator[str, None, None]:
        try:
            for piece in primed:
                if isinstance(piece, Generated):
                    yield _sse("receipt", piece.receipt)
                else:
                    yield _sse("token", {"text": piece})
        except HartonomousError as exc:
            yield _sse("error", {"title": exc.title, "status": exc.status, "detail": exc.detail})
        except Exception:
            log.exception("generation failed mid-stream")
            yield _sse("error", {"title": "Internal error", "status": 500, "detail": None})

    content = events()

    def close() -> None:  # the model's lock is released even if the client went away
        content.close()
        primed.close()

    return ClosingStream(
        content, close, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


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
