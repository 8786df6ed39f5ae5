"""The Function App as it deploys: a fresh venv from requirements.txt alone.

The deployment folder (what ``func azure functionapp publish`` uploads: the repository less
``.funcignore``) is copied, its requirements are installed into an empty venv with pip (its
cache makes a rerun take a minute or two), and tests/packaged_check.py runs there:
function_app imports and indexes every function, the local extra (torch, llama.cpp,
sentence-transformers) is absent, and an ingestion and a search run with embeddings from a
GPU worker on loopback. The worker runs here, in the test's own venv, with MiniLM in process.

Skipped only when PyPI cannot be reached; CI runs it. The shipped copy of MiniLM's tokenizer
is held to the model package's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import venv
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest
from live_server import serving
from pydantic import SecretStr

from hartonomous.bootstrap import bootstrap
from hartonomous.knowledge.embeddings import MINILM_TOKENIZER, minilm_path, minilm_tokenizer
from hartonomous.settings import Settings
from hartonomous.worker import create_worker_app

ROOT = Path(__file__).resolve().parent.parent
KEY = "packaged-worker-key"
# What the deployment holds: what .funcignore leaves of the repository.
DEPLOYED = {"function_app.py", "host.json", "requirements.txt", "pyproject.toml", "README.md"}
DEPLOYED |= {"functions", "shared"}


def funcignore() -> list[str]:
    lines = (ROOT / ".funcignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def deployed_entries() -> set[str]:
    """The repository's top-level entries that `func azure functionapp publish` uploads."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {path.split("/", 1)[0] for path in tracked}
    return {name for name in top if not any(fnmatch(name, p) for p in funcignore())}


def pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deploy") / "app"
    out.mkdir()
    ignored = shutil.ignore_patterns(*funcignore())
    for name in deployed_entries():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, out / name, ignore=ignored)
        else:
            shutil.copy2(ROOT / name, out / name)
    return out


@pytest.fixture(scope="module")
def fresh_python(app_dir: Path) -> Path:
    """An empty venv with requirements.txt installed, as the Functions build does it."""
    env_dir = app_dir.parent / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-compile", "-r", "requirements.txt"],
        cwd=app_dir, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return python


@pytest.fixture(scope="module")
def worker_url(tmp_path_factory: pytest.TempPathFactory, embedder) -> Iterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gpu-worker") / "data", worker_key=SecretStr(KEY)
    )
    platform = bootstrap(settings, embedder=embedder)
    try:
        with serving(create_worker_app(settings, embedder=embedder, platform=platform)) as url:
            yield url
    finally:
        platform.close()


def test_funcignore_deploys_the_app_and_nothing_else():
    """A new top-level folder must be deployed or ignored on purpose."""
    assert deployed_entries() == DEPLOYED


def test_the_shipped_tokenizer_is_minilms_own():
    """Chunks cut on the Function App (the shipped copy) fit the model the worker runs."""
    assert MINILM_TOKENIZER.read_bytes() == (minilm_path() / "tokenizer.json").read_bytes()
    assert minilm_tokenizer().count(["Olympus Mons is tall."]) == [5]  # olympus mons is tall .


@pytest.mark.skipif(not pypi_reachable(), reason="PyPI is unreachable")
@pytest.mark.timeout(600)
def test_the_function_app_runs_from_requirements_alone(app_dir, fresh_python, worker_url, tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HARTONOMOUS_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        HARTONOMOUS_DATA_DIR=str(tmp_path / "data"),
        HARTONOMOUS_EMBEDDING_URL=worker_url,
        HARTONOMOUS_INFERENCE_URL=worker_url,
        HARTONOMOUS_WORKER_KEY=KEY,
        PYTHON_ENABLE_INIT_INDEXING="1",
    )
    script = shutil.copy(ROOT / "tests" / "packaged_check.py", tmp_path)  # not from tests/
    done = subprocess.run(
        [str(fresh_python), str(script), str(app_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "http_api" in found["functions"] and "ingest_document" in found["functions"]
    assert "Olympus Mons" in found["top"]
