"""The Durable Functions client of the current request, when the app runs inside Azure.

Set by the catch-all HTTP function from its ``durableClient`` binding; ``None`` under
``hartonomous serve``, where the workflows issue wires the local host's client instead.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

durable_client: ContextVar[Any | None] = ContextVar("durable_client", default=None)
