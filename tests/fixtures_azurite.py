"""Pytest plugin: a real Azurite blob emulator for the tests that talk to Azure Blob Storage.

Azurite is pinned in package.json (``npm ci`` installs it into node_modules). A missing emulator
is a failure, not a skip: silently skipping the Azure adapter's tests would hide regressions.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

# The well-known development account baked into Azurite (public, documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def _start(location: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start azurite-blob on a free port; retry a couple of times if the port was taken."""
    problems: list[str] = []
    for _ in range(3):
        port = _free_port()
        args = [str(AZURITE_BLOB), "--blobHost", "127.0.0.1", "--blobPort", str(port)]
        args += ["--location", str(location), "--skipApiVersionCheck", "--disableTelemetry"]
        args += ["--silent", "--loose"]
        with log_path.open("ab") as log:
            # The .bin script has a node shebang: executed directly, its PID is the server's.
            proc = subprocess.Popen(
                args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _accepts(port):
                return proc, port
            time.sleep(0.1)
        _stop(proc)
        problems.append(f"port {port}: exit code {proc.returncode}")
    output = log_path.read_text(errors="replace")[-4000:]
    pytest.fail(f"Azurite did not start ({'; '.join(problems)}). Output:\n{output}", pytrace=False)


@pytest.fixture(scope="session")
def azurite_blob(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a private Azurite blob service, started once per test session."""
    if not AZURITE_BLOB.exists():
        pytest.fail(
            f"{AZURITE_BLOB} is missing: run `npm ci` in {REPO_ROOT} to install the pinned "
            "Azurite emulator (the Azure blob tests need it and are not skipped).",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("azurite")
    location = workdir / "data"
    location.mkdir()
    proc, port = _start(location, workdir / "azurite.log")
    try:
        yield connection_string(port)
    finally:
        _stop(proc)
