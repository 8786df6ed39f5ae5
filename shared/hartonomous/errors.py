"""Domain errors that carry their HTTP status; the API renders them as RFC 9457 problems.

The core raises these without knowing about HTTP; ``api/problems.py`` is the one place that
turns them (and every other error) into ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any


class HartonomousError(Exception):
    """Base of every error the platform explains to its callers."""

    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(
        self, detail: str, *, headers: dict[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    @property
    def type_uri(self) -> str:
        return f"https://hartonomous.dev/problems/{self.slug}"


class InvalidInput(HartonomousError):
    status, title, slug = 400, "Invalid input", "invalid-input"


class Unauthenticated(HartonomousError):
    status, title, slug = 401, "Unauthenticated", "unauthenticated"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class PaymentRequired(HartonomousError):
    """The tenant's credits do not cover the work's estimate (``balance`` and ``estimate``
    ride along as problem members, in credits)."""

    status, title, slug = 402, "Payment required", "payment-required"


class Forbidden(HartonomousError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(HartonomousError):
    """Also what another tenant's resource is: existence must not leak."""

    status, title, slug = 404, "Not found", "not-found"


class Conflict(HartonomousError):
    status, title, slug = 409, "Conflict", "conflict"


class Gone(HartonomousError):
    """Existed, and is no more: an expired upload session."""

    status, title, slug = 410, "Gone", "gone"


class PayloadTooLarge(HartonomousError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class RangeNotSatisfiable(HartonomousError):
    status, title, slug = 416, "Range not satisfiable", "range-not-satisfiable"


class UnprocessableContent(HartonomousError):
    status, title, slug = 422, "Unprocessable content", "unprocessable-content"


class TooManyRequests(HartonomousError):
    status, title, slug = 429, "Too many requests", "too-many-requests"

    def __init__(self, detail: str, *, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        # Exact (Retry-After rounds up to whole seconds): when a request would be admitted
        # again, for api/refusal_gate.py. None: not known.
        self.retry_after_s = retry_after_s


class ServiceUnavailable(HartonomousError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"
