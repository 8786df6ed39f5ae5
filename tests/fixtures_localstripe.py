"""Pytest plugin: a real localstripe (the Stripe-protocol server from PyPI, installed by
``make test`` in a venv of its own) on a free port, for the billing tests. A missing server
is a failure, not a skip: payments would go untested."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

VERSION = "1.15.10"  # the Makefile's LOCALSTRIPE_VERSION
DEFAULT = Path.home() / ".cache/hartonomous/localstripe" / VERSION / "bin/localstripe"
START_TIMEOUT_S = 20.0
API_KEY = "sk_test_hartonomous"
# localstripe kept in memory only (the script says why), run with localstripe's own Python.
LAUNCHER = Path(__file__).resolve().parent.parent / "scripts/localstripe-in-memory.py"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(base: str) -> bool:
    request = urllib.request.Request(
        f"{base}/v1/customers?limit=1", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a private localstripe, started once per test session, from scratch
    and in memory only."""
    binary = Path(os.environ.get("HARTONOMOUS_TEST_LOCALSTRIPE", DEFAULT))
    if not binary.exists():
        pytest.fail(f"localstripe is missing at {binary}: `make test` installs it", pytrace=False)
    log = tmp_path_factory.mktemp("localstripe") / "localstripe.log"
    for _ in range(3):
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(binary.parent / "python"), str(LAUNCHER), "--from-scratch", "--port",
                 str(port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(base):
                try:
                    yield base
                finally:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                return
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    pytest.fail(f"localstripe did not start:\n{log.read_text(errors='replace')[-2000:]}")


def register_webhook(base: str, name: str, url: str, secret: str) -> None:
    """Have localstripe sign and send its events to ``url`` (kept in its memory)."""
    data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    request = urllib.request.Request(f"{base}/_config/webhooks/{name}", data=data, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
