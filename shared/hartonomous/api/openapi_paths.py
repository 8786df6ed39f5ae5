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
    streamed: frozenset[str]  # request media types that are bytes (format: binary) or multipart
    structured: frozenset[str]  # JSON request media types with a schema: read whole


def operations(schema: dict[str, Any]) -> list[Operation]:
    found = []
    for template, item in schema.get("paths", {}).items():
        regex, _, _ = compile_path(template)
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            content = (operation.get("requestBody") or {}).get("content", {})
            streamed = {kind for kind, media in content.items() if _streamed(kind, media)}
            structured = {kind for kind in content if kind not in streamed and is_json(kind)}
            found.append(
                Operation(regex, method.upper(), frozenset(streamed), frozenset(structured))
            )
    return found


def is_json(content_type: str) -> bool:
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")


def _streamed(kind: str, media: dict[str, Any]) -> bool:
    return kind.startswith("multipart/") or (media.get("schema") or {}).get("format") == "binary"


def allowed_methods(schema: dict[str, Any], path: str) -> list[str]:
    """Every method some operation serves at ``path``, sorted."""
    return sorted({op.method for op in operations(schema) if op.path.match(path)})
