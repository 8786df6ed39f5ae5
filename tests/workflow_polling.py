"""Waiting for a workflow through the API, as a client would: poll its status URL."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient


def finish(api: TestClient, who: Any, started: dict, timeout: float = 120) -> dict:
    """The instance's status once it has Completed, Failed or been Terminated."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict = api.get(started["status_url"], headers=who.auth("read")).json()
        if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
