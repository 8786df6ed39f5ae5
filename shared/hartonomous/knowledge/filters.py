"""A search filter as a request body states it (the API's search, agents' knowledge scope):
validated here, then turned into the store's ``SearchFilter``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from hartonomous.domain.atoms import Modality
from hartonomous.domain.metadata import (
    FILTER_KEY_PATTERN,
    INT64_MAX,
    INT64_MIN,
    MAX_FILTER_KEYS,
    MAX_FILTER_VALUE_CHARS,
    check_filter,
)
from hartonomous.errors import UnprocessableContent
from hartonomous.knowledge.store import SearchFilter

FilterKey = Annotated[str, StringConstraints(pattern=FILTER_KEY_PATTERN)]
FilterValue = (
    Annotated[str, Field(max_length=MAX_FILTER_VALUE_CHARS)]
    | Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | bool
)
# Stated whole: pydantic would publish the key pattern as patternProperties, which lets any
# other key through, and the integer bounds as floats.
METADATA_FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_FILTER_KEYS,
    "propertyNames": {"pattern": FILTER_KEY_PATTERN},
    "additionalProperties": {
        "anyOf": [
            {"type": "string", "maxLength": MAX_FILTER_VALUE_CHARS},
            {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
            {"type": "number"},
            {"type": "boolean"},
        ]
    },
}


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modality: Modality | None = None
    media_type: str | None = Field(default=None, max_length=255)
    document_id: str | None = Field(default=None, max_length=36)
    concept_id: str | None = Field(
        default=None,
        max_length=36,
        description="Only chunks that belong to this concept (for a broad concept, of level "
        "1: to any of the concepts it groups)",
    )
    metadata: (
        Annotated[dict[FilterKey, FilterValue], WithJsonSchema(METADATA_FILTER_SCHEMA)] | None
    ) = Field(
        default=None,
        max_length=MAX_FILTER_KEYS,
        description="Equality on the source document's metadata: at most "
        f"{MAX_FILTER_KEYS} keys, each a string, boolean, 64-bit integer or finite number",
    )
    created_after: datetime | None = Field(default=None, description="RFC 3339, with an offset")
    created_before: datetime | None = Field(default=None, description="RFC 3339, with an offset")

    @field_validator("created_after", "created_before", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        """RFC 3339 text, as the schema says: pydantic would take a number as Unix time."""
        if value is not None and not isinstance(value, str):
            raise ValueError("a date-time as RFC 3339 text, e.g. 2026-12-01T00:00:00Z")
        return value

    @field_validator("created_after", "created_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """In UTC, as the store compares them: a time without an offset is ambiguous, and one
        near year 1 or 9999 may not exist in UTC (it made the store's bind fail with a 500)."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("a time needs its UTC offset (for example 2026-12-01T00:00:00Z)")
        try:
            return value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("the time is out of range once in UTC") from exc

    @field_validator("metadata", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        """Counted and checked before pydantic walks the items: 100,000 keys cost nothing,
        and an integer past 64 bits is refused, never turned into a float."""
        if isinstance(value, dict):
            try:
                check_filter(value)
            except UnprocessableContent as exc:
                raise ValueError(exc.detail) from exc
        return value

    def to_search_filter(self) -> SearchFilter:
        return SearchFilter(
            modality=self.modality.value if self.modality else None,
            media_type=self.media_type,
            document_id=self.document_id,
            concept_id=self.concept_id,
            metadata=dict(self.metadata) if self.metadata else None,
            created_after=self.created_after,
            created_before=self.created_before,
        )
