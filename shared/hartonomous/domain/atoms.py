"""Atoms: content-addressed units of everything a tenant brings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_MEDIA_TYPE = "application/octet-stream"
# RFC 6838 type/subtype (restricted-name: ASCII only), parameters allowed after ';'. Also the
# OpenAPI pattern of media type parameters, so the schema and the server agree.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE_PATTERN = rf"^{_NAME}/{_NAME}$"
_MEDIA_TYPE = re.compile(MEDIA_TYPE_PATTERN)


class Modality(StrEnum):
    TEXT = "text"
    CODE = "code"
    DOCUMENT = "document"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    MODEL = "model"
    CONCEPT = "concept"  # a concept's description (docs/concepts.md)
    BINARY = "binary"


_CODE_TYPES = {
    "application/javascript",
    "application/typescript",
    "application/x-python",
    "application/x-sh",
    "application/sql",
    "text/x-python",
    "text/x-c",
    "text/x-java",
    "text/javascript",
    "text/x-go",
    "text/x-rust",
}
_TEXT_TYPES = {"application/json", "application/xml", "application/yaml", "application/x-ndjson"}
_DOCUMENT_TYPES = {
    "application/pdf",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
_MODEL_TYPES = {"application/x-gguf", "application/vnd.gguf"}
CONCEPT_MEDIA_TYPE = "application/vnd.hartonomous.concept+json"


def normalize_media_type(raw: str | None) -> str:
    """Lower-case ``type/subtype`` without parameters; ValueError when malformed."""
    if raw is None or not raw.strip():
        return DEFAULT_MEDIA_TYPE
    essence = raw.split(";", 1)[0].strip().lower()
    if not _MEDIA_TYPE.match(essence):
        raise ValueError(f"{raw!r} is not a media type of the form type/subtype")
    return essence


def modality_for(media_type: str) -> Modality:
    """The broad kind of an atom, used for filtering and by later pipelines."""
    major = media_type.split("/", 1)[0]
    if media_type in _CODE_TYPES:
        return Modality.CODE
    if media_type in _MODEL_TYPES:
        return Modality.MODEL
    if media_type == CONCEPT_MEDIA_TYPE:
        return Modality.CONCEPT
    if media_type in _DOCUMENT_TYPES:
        return Modality.DOCUMENT
    if major == "text" or media_type in _TEXT_TYPES or media_type.endswith("+json"):
        return Modality.TEXT
    if major in ("image", "audio", "video"):
        return Modality(major)
    return Modality.BINARY


@dataclass(frozen=True, slots=True)
class Atom:
    id: str
    tenant_id: str
    sha256: str
    size: int
    media_type: str
    modality: Modality
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
