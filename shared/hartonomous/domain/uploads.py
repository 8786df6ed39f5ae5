"""Upload sessions: a file declared first, sent straight to storage, then completed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Purpose(StrEnum):
    """What completing the session does with the bytes."""

    ATOM = "atom"  # store them as an atom (201)
    DOCUMENT = "document"  # store them and start the ingestion workflow (202)
    MODEL = "model"  # store them and start the model ingestion workflow (202)


class Status(StrEnum):
    PENDING = "pending"  # waiting for its bytes (or for completion)
    COMPLETING = "completing"  # claimed by one completion until ``claimed_until``
    STORED = "stored"  # the atom exists; its workflow has not started yet
    COMPLETED = "completed"
    FAILED = "failed"  # the bytes were refused for good (``error``)


@dataclass(frozen=True)
class UploadSession:
    id: str
    tenant_id: str
    purpose: Purpose
    size: int
    media_type: str
    metadata: dict[str, Any]
    status: Status
    created_at: datetime
    expires_at: datetime
    atom_id: str | None = None
    deduplicated: bool | None = None
    instance_id: str | None = None
    model_id: str | None = None
    error: str | None = None
    claimed_until: datetime | None = None
    completed_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        """Past its time without an atom: its URL no longer takes bytes, nor completion."""
        return self.status in (Status.PENDING, Status.COMPLETING) and now >= self.expires_at


# Where the bytes of an upload session land: {RECEIVED_PREFIX}{tenant}/{upload}. The Event
# Grid blob trigger watches this prefix; the staging adapters write under it.
RECEIVED_PREFIX = "uploads/"


def session_of(blob_name: str) -> tuple[str, str] | None:
    """(tenant id, upload id) of a received blob's name, as the blob trigger sees it."""
    parts = blob_name.removeprefix(RECEIVED_PREFIX).split("/")
    if not blob_name.startswith(RECEIVED_PREFIX) or len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]
