"""Generate: retrieve, assemble the prompt, generate, and persist the receipt.

The receipt, its edges, the prompt, output and model-card atoms, the usage rows and the
outbox event are written in one transaction after the model finishes, so an output either
exists with its whole provenance or not at all.

A generation whose caller went away (``Control.cancel``) stops at its next token and writes
its usage rows alone, for the tokens that ran: no receipt, no atoms, no event. Nobody is
there to read a receipt, and a half answer recorded as an output would be provenance for
text no one received.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hartonomous.domain.atoms import Atom
from hartonomous.errors import Conflict, InvalidInput
from hartonomous.generation.answer_cache import cache_key
from hartonomous.generation.prompting import DEFAULT_STOP, Assembled, assemble
from hartonomous.generation.queue import GenerationQueue, Shape
from hartonomous.generation.store import (
    DERIVED_FROM,
    GENERATED,
    USED_IN_GENERATION,
    ReceiptRow,
)
from hartonomous.inference.model_files import builtin_model
from hartonomous.inference.types import (
    BUILTIN_MODEL,
    Completion,
    CompletionRequest,
    Control,
    ModelRef,
)
from hartonomous.knowledge.search import Mode, SearchResult, SearchService
from hartonomous.knowledge.store import SearchFilter
from hartonomous.metering.ledger import Usage
from hartonomous.metering.pricing import price
from hartonomous.ports import Inference, UnitOfWorkFactory
from hartonomous.services.atoms import AtomService
from hartonomous.services.clock import new_id, utcnow
from hartonomous.store.repositories import WriteConflict

TEXT = "text/plain; charset=utf-8"
MODEL_CARD = "application/vnd.hartonomous.model+json"
TOPIC = "generation.completed"
WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    model_id: str | None = None
    k: int = 5
    filters: SearchFilter = field(default_factory=SearchFilter)
    max_tokens: int = 128
    temperature: float = 0.0
    stop: tuple[str, ...] | None = None  # None: stop where a new question would begin
    seed: int | None = None


@dataclass(frozen=True)
class Outcome:
    """What one generation produced, before it is recorded."""

    receipt_id: str
    tenant_id: str
    request: GenerateRequest
    model: ModelRef
    assembled: Assembled
    completion: Completion
    timings: dict[str, float]
    cached_from: str | None = None  # the receipt whose answer the cache served
    extra: dict[str, Any] = field(default_factory=dict)  # more receipt keys (an agent's step)


@dataclass(frozen=True)
class Generated:
    text: str
    receipt: dict[str, Any]


class Cancelled(Exception):
    """The generation's caller went away: it stopped, its usage is recorded, nothing else."""

    def __init__(self, completion: Completion) -> None:
        super().__init__("the generation was cancelled")
        self.completion = completion


@dataclass(frozen=True)
class Replayed:
    """A measurement's generation (``GenerationService.replay``): recorded nowhere but in
    the usage ledger."""

    text: str
    hit: bool  # served from the answer cache
    credits: float  # of its tokens, as a receipt prices them (0 on a hit)
    cost_credits: float  # everything it metered: its tokens and its search
    total_ms: float
    atom_ids: list[str]  # the retrieved atoms its prompt used


@dataclass
class GenerationService:
    uow_factory: UnitOfWorkFactory
    atoms: AtomService
    search: Callable[[], SearchService]  # built lazily: the embedder loads on first use
    inference: Callable[[], Inference]
    models: Any  # ModelService: resolves a tenant's model id
    context_tokens: int
    max_tokens: int
    on_commit: Callable[[], None] = lambda: None
    queue_depth: int = 8  # generations that may wait per model (the API's queue)
    queue_shape: Shape = field(default_factory=lambda: Shape(slots=1, threads=1))
    _queue: GenerationQueue | None = field(default=None, init=False, repr=False)
    _queue_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def queue(self) -> GenerationQueue:
        """The queue the API's generations wait in (``queue.py``), built on first use.
        Agent runs and the autonomy loop call the model from their own activity threads."""
        with self._queue_lock:
            if self._queue is None:
                shape = self.queue_shape
                self._queue = GenerationQueue(
                    self.queue_depth,
                    threads=shape.threads,
                    slots=shape.slots,
                    niceness=shape.niceness,
                )
            return self._queue

    def close(self) -> None:
        """Stop the queue's threads (a running generation is cancelled at its next token
        by the caller's control; queued ones are dropped)."""
        with self._queue_lock:
            if self._queue is not None:
                self._queue.close()

    def resolve(self, tenant_id: str, model_id: str | None) -> ModelRef:
        if model_id is None or model_id == BUILTIN_MODEL:
            return builtin_model()
        record = self.models.get(tenant_id, model_id)  # another tenant's model: 404
        if record.status != "ready":
            raise Conflict(f"model {model_id!r} is {record.status}, not ready")
        return ModelRef(record.id, record.sha256, record.name, tenant_id)

    def generate(
        self,
        tenant_id: str,
        request: GenerateRequest,
        *,
        control: Control | None = None,
        receipt_id: str | None = None,
    ) -> Generated:
        """The whole answer at once: the model is asked for one response, not a stream (over
        HTTP that spares an event per token). ``Cancelled`` when ``control`` is cancelled."""
        pieces = self.stream(tenant_id, request, live=False, control=control, receipt_id=receipt_id)
        for piece in pieces:
            if isinstance(piece, Generated):
                return piece
        raise AssertionError("a generation ended without its receipt")

    def stream(
        self,
        tenant_id: str,
        request: GenerateRequest,
        *,
        live: bool = True,
        control: Control | None = None,
        receipt_id: str | None = None,
    ) -> Generator[str | Generated, None, None]:
        """Text pieces as they come (``live``), then the ``Generated`` (text and persisted
        receipt); ``Cancelled`` instead when ``control`` is cancelled. ``receipt_id``: the
        caller's (it keyed the credits held for this generation, which its usage settles)."""
        started = time.perf_counter()
        receipt_id = receipt_id or new_id()  # known up front: it keys the usage rows
        model, assembled, asked = self._prepare(tenant_id, request, receipt_id, record_gaps=True)
        asked = dataclasses.replace(asked, control=control)
        searched = time.perf_counter()
        completion, cached_from = self._cached(tenant_id, request, model, assembled, asked)
        if completion is not None:
            if live:
                yield completion.text
        elif not live:
            completion = self.inference().complete(model, asked)
        else:
            for piece in self.inference().stream(model, asked):
                if isinstance(piece, Completion):
                    completion = piece
                else:
                    yield piece
        assert completion is not None, "the inference stream ended without a completion"
        if control is not None:
            control.settle(completion.prompt_tokens + completion.completion_tokens)
        if completion.finish_reason == "cancelled":
            self._bill_cancelled(tenant_id, receipt_id, completion)
            raise Cancelled(completion)
        timings = {
            "search_ms": round((searched - started) * 1000, 3),
            "prompt_ms": round(completion.prompt_ms, 3),
            "generation_ms": round(completion.generation_ms, 3),
            "total_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        receipt = self.record(
            Outcome(
                receipt_id, tenant_id, request, model, assembled, completion, timings, cached_from
            )
        )
        yield Generated(completion.text, receipt)

    def _bill_cancelled(self, tenant_id: str, receipt_id: str, completion: Completion) -> None:
        """A cancelled generation's usage rows: the tokens that ran, keyed as its receipt's
        would have been."""
        tokens = [
            Usage(kind, n, "tokens")
            for kind, n in (
                ("generation.prompt_tokens", completion.prompt_tokens),
                ("generation.completion_tokens", completion.completion_tokens),
            )
            if n  # stopped before the model ran: nothing to bill
        ]
        if not tokens:
            return
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.usage.record(tenant_id, f"receipt:{receipt_id}", tokens, utcnow())
            uow.commit()

    def replay(self, tenant_id: str, request: GenerateRequest, key: str) -> Replayed:
        """Generate as ``generate`` would, for a measurement (the loop's ``cache_answer``):
        the answer cache serves it where it would, and nothing is recorded but its usage. No
        receipt, atoms or outbox event (a customer sees no generation that nobody asked
        for), no knowledge gap, and so no repeated prompt either. Its usage is keyed by
        ``key`` (the search's ``search:{key}``, the tokens' ``{key}``): a replayed activity
        counts once, and the run pays for it."""
        started = time.perf_counter()
        model, assembled, asked = self._prepare(tenant_id, request, key, record_gaps=False)
        completion, cached_from = self._cached(tenant_id, request, model, assembled, asked)
        if completion is None:
            completion = self.inference().complete(model, asked)
        quantities = {
            "generation.prompt_tokens": completion.prompt_tokens,
            "generation.completion_tokens": completion.completion_tokens,
        }
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            uow.usage.record(
                tenant_id, key, [Usage(kind, n, "tokens") for kind, n in quantities.items()],
                utcnow(),
            )  # fmt: skip
            uow.commit()
        searches = {"search.queries": 1} if request.k else {}
        return Replayed(
            text=completion.text,
            hit=cached_from is not None,
            credits=price(quantities).credits,
            cost_credits=price({**quantities, **searches}).credits,
            total_ms=round((time.perf_counter() - started) * 1000, 3),
            atom_ids=[hit.atom_id for hit in assembled.used],
        )

    def _prepare(
        self, tenant_id: str, request: GenerateRequest, request_id: str, *, record_gaps: bool
    ) -> tuple[ModelRef, Assembled, CompletionRequest]:
        """The model, the prompt assembled from what retrieval found, and the completion
        request."""
        if request.max_tokens > self.max_tokens:
            raise InvalidInput(f"max_tokens is at most {self.max_tokens}", limit=self.max_tokens)
        model = self.resolve(tenant_id, request.model_id)
        hits: list[SearchResult] = []
        if request.k:
            hits = self.search().search(
                tenant_id=tenant_id, query=request.prompt, k=request.k, mode=Mode.HYBRID,
                flt=request.filters, request_id=request_id, record_gaps=record_gaps,
            )  # fmt: skip
        assembled = assemble(
            request.prompt, hits, context_tokens=self.context_tokens, max_tokens=request.max_tokens
        )
        asked = CompletionRequest(
            prompt=assembled.text,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            stop=DEFAULT_STOP if request.stop is None else request.stop,
            seed=request.seed,
        )
        return model, assembled, asked

    def _cached(
        self,
        tenant_id: str,
        request: GenerateRequest,
        model: ModelRef,
        assembled: Assembled,
        asked: CompletionRequest,
    ) -> tuple[Completion | None, str | None]:
        """The cached answer (no tokens) and its source receipt, or (None, None). Only a
        greedy request (temperature 0: the seed changes nothing) is ever served from it."""
        if request.temperature != 0:
            return None, None
        key = cache_key(
            request.prompt, model.sha256, [hit.atom_id for hit in assembled.used],
            request.max_tokens, asked.stop,
        )  # fmt: skip
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            entry = uow.answer_cache.lookup(tenant_id, key)
            source = uow.receipts.get(tenant_id, entry.receipt_id) if entry else None
            output = uow.atoms.get(tenant_id, entry.output_atom_id) if entry else None
        if entry is None or output is None:
            return None, None
        text = b"".join(self.atoms.read(output)).decode("utf-8")
        finish = "stop"
        for component in source.body.get("components", []) if source else []:
            if component.get("role") == "output":
                finish = component.get("finish_reason") or finish
        return Completion(text, finish, 0, 0, extra={"cache": True}), entry.receipt_id

    def record(self, outcome: Outcome) -> dict[str, Any]:
        """Persist the receipt with its atoms, edges, usage and outbox event; returns it."""
        model = outcome.model
        card = json.dumps(
            {"model_id": model.id, "sha256": model.sha256, "name": model.name}, sort_keys=True
        ).encode()
        staged = self.atoms.stage_many(
            [outcome.assembled.text.encode("utf-8"), outcome.completion.text.encode("utf-8"), card]
        )
        try:
            for attempt in range(WRITE_ATTEMPTS):
                try:
                    receipt = self._write(outcome, staged)
                    break
                except WriteConflict:  # a concurrent writer recorded the same bytes first
                    if attempt == WRITE_ATTEMPTS - 1:
                        raise
        finally:
            for blob in staged:
                blob.discard()
        with contextlib.suppress(Exception):
            self.on_commit()
        return receipt

    def _write(self, outcome: Outcome, staged: list[Any]) -> dict[str, Any]:
        o, now = outcome, utcnow()
        with self.uow_factory(write=True, tenant_id=o.tenant_id) as uow:
            prompt, output, card = (
                stored.atom
                for stored in self.atoms.record_many_in(
                    uow,
                    o.tenant_id,
                    [
                        (staged[0], TEXT, {"kind": "prompt"}),
                        (staged[1], TEXT, {"kind": "generation"}),
                        (staged[2], MODEL_CARD, {"kind": "model-card", "model_id": o.model.id}),
                    ],
                )
            )
            quantities = {
                "generation.prompt_tokens": o.completion.prompt_tokens,
                "generation.completion_tokens": o.completion.completion_tokens,
            }
            body = receipt_body(o, prompt, output, card, quantities, now)
            links = [
                (USED_IN_GENERATION, hit.atom_id, output.id, rank)
                for rank, hit in enumerate(o.assembled.used, start=1)
            ]
            links += [(GENERATED, card.id, output.id, 0), (DERIVED_FROM, output.id, prompt.id, 0)]
            uow.receipts.add(
                ReceiptRow(
                    id=o.receipt_id, tenant_id=o.tenant_id, prompt_atom_id=prompt.id,
                    output_atom_id=output.id, model_id=o.model.id,
                    model_sha256=o.model.sha256, prompt_tokens=o.completion.prompt_tokens,
                    completion_tokens=o.completion.completion_tokens, body=body,
                    created_at=now,
                ),
                links,
            )  # fmt: skip
            uow.usage.record(
                o.tenant_id,
                f"receipt:{o.receipt_id}",
                [Usage(kind, n, "tokens") for kind, n in quantities.items()],
                now,
            )
            uow.outbox.add(o.tenant_id, TOPIC, o.receipt_id, body, now)
            uow.commit()
        return body


def receipt_body(
    o: Outcome, prompt: Atom, output: Atom, card: Atom, quantities: dict[str, int], now: datetime
) -> dict[str, Any]:
    """The receipt: every component in order, then tokens, timings and cost."""
    c, request = o.completion, o.request
    cost = price(quantities)
    return {
        "id": o.receipt_id,
        "created_at": now.isoformat(),
        "components": [
            {"role": "prompt", "atom_id": prompt.id, "sha256": prompt.sha256,
             "tokens": c.prompt_tokens},
            *(
                {"role": "retrieved", "rank": rank, "atom_id": hit.atom_id, "score": hit.score,
                 "vector_score": hit.vector_score, "keyword_score": hit.keyword_score,
                 "document_id": hit.document_id, "ordinal": hit.ordinal}
                for rank, hit in enumerate(o.assembled.used, start=1)
            ),
            {"role": "model", "model_id": o.model.id, "sha256": o.model.sha256,
             "name": o.model.name, "card_atom_id": card.id},
            {"role": "output", "atom_id": output.id, "sha256": output.sha256,
             "tokens": c.completion_tokens, "finish_reason": c.finish_reason},
        ],
        "question": request.prompt,
        "parameters": {
            "k": request.k, "mode": Mode.HYBRID.value, "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(DEFAULT_STOP if request.stop is None else request.stop),
            "seed": request.seed, "context_left_out": o.assembled.left_out,
            "filters": filters_json(request.filters),
        },
        "tokens": {"prompt": c.prompt_tokens, "completion": c.completion_tokens,
                   "total": c.prompt_tokens + c.completion_tokens},
        "timings_ms": o.timings,
        "cost": {"credits": cost.credits, "lines": cost.lines},
        **({"cache": {"hit": True, "source_receipt_id": o.cached_from}} if o.cached_from else {}),
        **o.extra,
    }  # fmt: skip


def filters_json(flt: SearchFilter) -> dict[str, Any]:
    """A search filter as a receipt records it: the fields set, datetimes in ISO 8601."""
    out: dict[str, Any] = {}
    for name, value in dataclasses.asdict(flt).items():
        if value is not None:
            out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def filters_from_json(data: dict[str, Any] | None) -> SearchFilter:
    """The filter a receipt recorded (none recorded: no filter), to replay its search."""
    values = dict(data or {})
    for name in ("created_after", "created_before"):
        if values.get(name) is not None:
            values[name] = datetime.fromisoformat(values[name])
    return SearchFilter(**values)
