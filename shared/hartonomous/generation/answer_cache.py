"""The answer cache (``uow.answer_cache``): a repeated prompt served without the model.

Only greedy answers (temperature 0) are cached: the same prompt, model and context give the
same text, so serving it again is exact. The key covers everything the answer depends on:
the question, the model file's SHA-256, the retrieved atoms the prompt used (in order), the
token limit and the stop strings. A new document that changes retrieval is a miss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hartonomous.store.schema import answer_cache, receipts

if TYPE_CHECKING:
    from hartonomous.ports import InsertOrIgnore, UnitOfWorkFactory

RECENT_RECEIPTS = 5000  # receipts repeated_prompts reads at most, newest first


def cache_key(
    prompt: str, model_sha256: str, atom_ids: Sequence[str], max_tokens: int,
    stop: Sequence[str],
) -> str:  # fmt: skip
    """sha256 of the canonical JSON of [prompt, model sha256, atom ids, max_tokens, stop]."""
    canonical = json.dumps(
        [prompt, model_sha256, list(atom_ids), max_tokens, list(stop)],
        ensure_ascii=False, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def retrieved_ids(body: dict[str, Any]) -> list[str]:
    """The retrieved atoms of a receipt, in the order the prompt used them."""
    return [c["atom_id"] for c in body.get("components", []) if c.get("role") == "retrieved"]


def receipt_key(body: dict[str, Any], model_sha256: str) -> str:
    """The cache key of the generation a receipt records."""
    parameters = body.get("parameters", {})
    return cache_key(
        body["question"], model_sha256, retrieved_ids(body), int(parameters["max_tokens"]),
        list(parameters.get("stop") or []),
    )  # fmt: skip


@dataclass(frozen=True)
class CachedAnswer:
    id: str
    action_id: str
    cache_key: str
    prompt: str
    model_sha256: str
    atom_ids: list[str]
    receipt_id: str
    output_atom_id: str


class AnswerCacheRepository:
    def __init__(self, conn: sa.Connection, insert_or_ignore: InsertOrIgnore) -> None:
        self._conn = conn
        self._insert_new = insert_or_ignore

    def add(self, row: dict[str, Any]) -> bool:
        """False when the key is cached already (by this action or another)."""
        return bool(self._insert_new(self._conn, answer_cache, [row], ("tenant_id", "cache_key")))

    def lookup(self, tenant_id: str, key: str) -> CachedAnswer | None:
        t = answer_cache
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.cache_key == key)
        ).first()
        return _cached(row) if row else None

    def for_action(self, tenant_id: str, action_id: str) -> CachedAnswer | None:
        t = answer_cache
        row = self._conn.execute(
            t.select().where(t.c.tenant_id == tenant_id, t.c.action_id == action_id)
        ).first()
        return _cached(row) if row else None

    def remove(self, tenant_id: str, action_id: str) -> int:
        t = answer_cache
        done = self._conn.execute(
            t.delete().where(t.c.tenant_id == tenant_id, t.c.action_id == action_id)
        )
        return int(done.rowcount)

    def keys(self, tenant_id: str) -> set[str]:
        """The tenant's cached keys."""
        t = answer_cache
        return set(
            self._conn.execute(sa.select(t.c.cache_key).where(t.c.tenant_id == tenant_id)).scalars()
        )

    def receipts_since(
        self, tenant_id: str, since: datetime, limit: int = RECENT_RECEIPTS
    ) -> list[tuple[str, dict[str, Any], datetime]]:
        """(id, body, created_at) of the tenant's receipts since ``since``, newest first."""
        t = receipts
        query = (
            sa.select(t.c.id, t.c.body, t.c.created_at)
            .where(t.c.tenant_id == tenant_id, t.c.created_at >= since)
            .order_by(t.c.created_at.desc(), t.c.id.desc())
            .limit(limit)
        )
        return [(r.id, dict(r.body), r.created_at) for r in self._conn.execute(query)]


@dataclass(frozen=True)
class RepeatedPrompt:
    prompt: str
    key: str  # of the group's request material (``request_material``), hex
    count: int
    latest_receipt_id: str
    mean_credits: float
    mean_total_ms: float


def request_material(body: dict[str, Any], model_sha256: str) -> str:
    """What makes two receipts the same request for the answer cache: the question, the
    model's SHA-256, k, max_tokens, stop strings and the search filters (temperature 0
    only), as sha256 hex. A repeat of this is served by one cache entry while retrieval
    gives the same atoms."""
    p = body.get("parameters", {})
    canonical = json.dumps(
        [body.get("question"), model_sha256, p.get("k"), p.get("max_tokens"),
         list(p.get("stop") or []), p.get("filters") or {}],
        ensure_ascii=False, separators=(",", ":"), sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def repeated_prompts(
    uow_factory: UnitOfWorkFactory, tenant_id: str, since: datetime, min_count: int = 3,
    limit: int = 10,
) -> list[RepeatedPrompt]:  # fmt: skip
    """Requests (``request_material``) made at least ``min_count`` times at temperature 0
    since ``since`` (of the newest 5,000 receipts) whose latest answer is not cached yet:
    most asked first, then the costliest. The same question with another token limit, stop
    or filter is another request."""
    with uow_factory(write=False, tenant_id=tenant_id) as uow:
        cached = uow.answer_cache.keys(tenant_id)
        rows = uow.answer_cache.receipts_since(tenant_id, since)
    groups: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for receipt_id, body, _ in rows:  # newest first: the first of a group is its latest
        question = body.get("question")
        if not isinstance(question, str):
            continue
        if float(body.get("parameters", {}).get("temperature", 1.0)) != 0.0:
            continue
        sha = _model_sha256(body)
        groups.setdefault(request_material(body, sha), []).append((receipt_id, body, sha))
    found = [
        RepeatedPrompt(
            prompt=str(items[0][1]["question"]),
            key=key,
            count=len(items),
            latest_receipt_id=items[0][0],
            mean_credits=sum(float(b.get("cost", {}).get("credits", 0.0)) for _, b, _ in items)
            / len(items),
            mean_total_ms=sum(
                float(b.get("timings_ms", {}).get("total_ms", 0.0)) for _, b, _ in items
            )
            / len(items),
        )
        for key, items in groups.items()
        if len(items) >= min_count and receipt_key(items[0][1], items[0][2]) not in cached
    ]
    found.sort(key=lambda r: (-r.count, -r.mean_credits, r.prompt, r.key))
    return found[:limit]


def _model_sha256(body: dict[str, Any]) -> str:
    for component in body.get("components", []):
        if component.get("role") == "model":
            return str(component.get("sha256"))
    return ""


def _cached(row: Any) -> CachedAnswer:
    return CachedAnswer(
        row.id, row.action_id, row.cache_key, row.prompt, row.model_sha256, list(row.atom_ids),
        row.receipt_id, row.output_atom_id,
    )  # fmt: skip
