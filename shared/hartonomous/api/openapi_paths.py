"""The app's operations as its own OpenAPI declares them, matched against request paths.

Read from the schema rather than from the router's internals: how FastAPI stores included
routers changes between versions, what it publishes does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class Operation:
    path: re.Pattern[str]
    method: str  # upper case
    request_types: frozenset[str]  # the media types its request body declares


def operations(schema: dict[str, Any]) -> list[Operation]:
    found = []
    for template, item in schema.get("paths", {}).items():
        regex, _, _ = compile_path(template)
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            body = operation.get("requestBody") or {}
            found.append(Operation(regex, method.upper(), frozenset(body.get("content", {}))))
    return found


def allowed_methods(schema: dict[str, Any], path: str) -> list[str]:
    """Every method some operation serves at ``path``, sorted."""
    return sorted({op.method for op in operations(schema) if op.path.match(path)})
