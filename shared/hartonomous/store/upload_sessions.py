"""The upload sessions' rows: claims by compare-and-set, so one completion runs at a time.

Reads by id alone and the sweeper's deletes span tenants (the blob trigger and the sweep act
for no tenant until a row names one); ``sql/rls.sql`` filters nothing here for that reason,
as for the outbox, and still blocks writes into another tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hartonomous.domain.uploads import Purpose, Status, UploadSession
from hartonomous.store.repositories import IN_BATCH
from hartonomous.store.schema import upload_sessions as t

_LIVE = (Status.PENDING.value, Status.COMPLETING.value)


def _session(row: Any) -> UploadSession:
    return UploadSession(
        id=row.id,
        tenant_id=row.tenant_id,
        purpose=Purpose(row.purpose),
        size=row.size,
        media_type=row.media_type,
        metadata=row.metadata,
        status=Status(row.status),
        created_at=row.created_at,
        expires_at=row.expires_at,
        atom_id=row.atom_id,
        deduplicated=row.deduplicated,
        instance_id=row.instance_id,
        model_id=row.model_id,
        error=row.error,
        claimed_until=row.claimed_until,
        completed_at=row.completed_at,
    )


class UploadSessionRepository:
    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn

    def add(self, session: UploadSession, token_hash: str) -> None:
        self._conn.execute(
            t.insert().values(
                id=session.id,
                tenant_id=session.tenant_id,
                purpose=session.purpose.value,
                size=session.size,
                media_type=session.media_type,
                metadata=session.metadata,
                token_hash=token_hash,
                status=session.status.value,
                created_at=session.created_at,
                expires_at=session.expires_at,
            )
        )

    def get(self, tenant_id: str, upload_id: str) -> UploadSession | None:
        row = self._conn.execute(
            t.select().where(t.c.id == upload_id, t.c.tenant_id == tenant_id)
        ).first()
        return _session(row) if row else None

    def get_with_token(self, upload_id: str) -> tuple[UploadSession, str] | None:
        """By id alone, with the hash of its URL's token (the token is the credential)."""
        row = self._conn.execute(t.select().where(t.c.id == upload_id)).first()
        return (_session(row), row.token_hash) if row else None

    def claim(
        self, tenant_id: str, upload_id: str, claim_id: str, now: datetime, until: datetime
    ) -> bool:
        """Take the session for one completion: pending and unexpired, stored (its workflow
        still to start), or completing under a claim that ran out (its holder died), expired
        or not: a completer may die after the atom was stored, and only a new claim can
        finish what it started."""
        claimable = sa.or_(
            t.c.status == Status.STORED.value,
            sa.and_(t.c.status == Status.PENDING.value, t.c.expires_at > now),
            sa.and_(t.c.status == Status.COMPLETING.value, t.c.claimed_until < now),
        )
        result = self._conn.execute(
            t.update()
            .where(t.c.id == upload_id, t.c.tenant_id == tenant_id, claimable)
            .values(
                status=Status.COMPLETING.value,
                claim_id=claim_id,
                claimed_until=until,
            )
        )
        return result.rowcount == 1

    def settle(
        self, tenant_id: str, upload_id: str, claim_id: str, status: Status, **fields: Any
    ) -> bool:
        """Record what the claim produced and end it with ``status`` (``completing``: keep
        it); False when the claim was lost."""
        values = {**fields, "status": status.value}
        if status is not Status.COMPLETING:
            values |= {"claim_id": None, "claimed_until": None}
        result = self._conn.execute(
            t.update()
            .where(
                t.c.id == upload_id,
                t.c.tenant_id == tenant_id,
                t.c.claim_id == claim_id,
                t.c.status == Status.COMPLETING.value,
            )
            .values(**values)
        )
        return result.rowcount == 1

    def live_ids(self, upload_ids: Sequence[str], now: datetime) -> set[str]:
        """Those of ``upload_ids`` that may still own staged bytes: waiting for them (and not
        expired) or being completed under a live claim. Across tenants (the sweeper's)."""
        live: set[str] = set()
        ids = list(dict.fromkeys(upload_ids))
        for i in range(0, len(ids), IN_BATCH):
            rows = self._conn.execute(
                sa.select(t.c.id).where(
                    t.c.id.in_(ids[i : i + IN_BATCH]),
                    t.c.status.in_(_LIVE),
                    sa.or_(t.c.expires_at > now, t.c.claimed_until > now),
                )
            )
            live.update(row.id for row in rows)
        return live

    def delete_expired_before(self, cutoff: datetime) -> int:
        """Forget sessions whose time ended before ``cutoff`` (their answers with them)."""
        result = self._conn.execute(t.delete().where(t.c.expires_at < cutoff))
        return int(result.rowcount or 0)
