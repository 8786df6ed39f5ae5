"""What the Functions host hands a function, for tests that call functions as it would."""

from __future__ import annotations

import json


def durable_binding() -> str:
    """The ``durableClient`` binding's JSON, as the host sends it."""
    base = "http://127.0.0.1:17071/runtime/webhooks/durabletask"
    return json.dumps(
        {
            "taskHubName": "Hartonomous",
            "creationUrls": {},
            "managementUrls": {},
            "baseUrl": base,
            "requiredQueryStringParameters": "code=test",
            "rpcBaseUrl": base + "/",
            "httpBaseUrl": base,
            "maxGrpcMessageSizeInBytes": 0,
            "grpcHttpClientTimeout": "00:01:40",
        }
    )
