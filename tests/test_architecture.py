"""Architecture guards: cheap checks that the seam between core and adapters holds.

Routes call services and never open a unit of work; only ``bootstrap.py`` chooses (imports)
adapters; every Protocol the core needs from outside is in ``ports/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import hartonomous

PACKAGE = Path(hartonomous.__file__).parent
ROOT = PACKAGE.parent.parent
# Adapter modules, and adapter classes that share a module with the code around their port.
ADAPTER_MODULES = {
    "hartonomous.blobs.local",
    "hartonomous.blobs.azure",
    "hartonomous.blobs.upload_staging",
    "hartonomous.knowledge.sql_vectors",
    "hartonomous.knowledge.keyword_sqlite",
    "hartonomous.knowledge.keyword_mssql",
    "hartonomous.inference.llama_engine",
    "hartonomous.inference.openai_http",
    "hartonomous.inference.llama_server",
    "hartonomous.events.event_hubs",
    "hartonomous.admission.memory",
    "hartonomous.admission.redis_state",
}
ADAPTER_NAMES = {("hartonomous.knowledge.embeddings", "MiniLMEmbedder")}
# Composition roots: the platform's, and the GPU worker's (a separate deployable that
# serves the llama.cpp engine and MiniLM over HTTP). Adapters may build on adapters.
COMPOSITION_ROOTS = {"hartonomous/bootstrap.py", "hartonomous/worker/"}
# Imports the guard still finds, each to be removed with its fix (a test fails once one is
# gone, so the list only shrinks).
KNOWN_ADAPTER_IMPORTS: set[str] = set()
# Protocols that are not ports: a port's value type, a local helper type.
NOT_PORTS = {"Tokenizer", "Readable"}
PROTOCOL = re.compile(r"(typing\.)?Protocol(\[.*\])?")


def _sources() -> list[tuple[str, ast.Module]]:
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]
    if (ROOT / "function_app.py").exists():
        files.append(ROOT / "function_app.py")
    out = []
    for path in sorted(files):
        rel = path.relative_to(PACKAGE.parent if path.is_relative_to(PACKAGE) else ROOT)
        out.append((rel.as_posix(), ast.parse(path.read_text(), str(path))))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, str | None]]:
    """(module, name) for every import in the file, lazy ones inside functions included."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
            found += [(f"{node.module}.{alias.name}", None) for alias in node.names]
    return found


def _unit_of_work_uses(rel: str, tree: ast.Module) -> list[str]:
    found = [
        f"{rel}:{node.lineno}: {name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute | ast.Name)
        and (name := node.attr if isinstance(node, ast.Attribute) else node.id)
        in ("uow_factory", "UnitOfWork", "UnitOfWorkFactory")
    ]
    found += [f"{rel}: {m}" for m, _ in _imports(tree) if m == "hartonomous.store.unit_of_work"]
    return found


def test_no_route_opens_a_unit_of_work() -> None:
    offenders = [
        line
        for rel, tree in _sources()
        if rel.startswith("hartonomous/api/")
        for line in _unit_of_work_uses(rel, tree)
    ]
    assert offenders == [], "routes call services; services open units of work"


@pytest.mark.parametrize(
    "source",
    [
        "def route(platform):\n    with platform.uow_factory(write=False) as uow:\n        pass",
        "from hartonomous.store.unit_of_work import UnitOfWork",
    ],
)
def test_the_route_guard_sees_a_unit_of_work(source: str) -> None:
    assert _unit_of_work_uses("hartonomous/api/example.py", ast.parse(source))


def _adapter_imports(rel: str, tree: ast.Module) -> list[str]:
    if any(
        rel == root or (root.endswith("/") and rel.startswith(root)) for root in COMPOSITION_ROOTS
    ):
        return []
    if rel.removesuffix(".py").replace("/", ".") in ADAPTER_MODULES:
        return []
    found = set()
    for module, name in _imports(tree):
        if module in ADAPTER_MODULES:
            found.add(f"{rel}: {module}")
        elif (module, name) in ADAPTER_NAMES:
            found.add(f"{rel}: {module} {name}")
    return sorted(found)


def _all_adapter_imports() -> set[str]:
    return {line for rel, tree in _sources() for line in _adapter_imports(rel, tree)}


def test_only_bootstrap_chooses_adapters() -> None:
    offenders = _all_adapter_imports() - KNOWN_ADAPTER_IMPORTS
    assert offenders == set(), "bootstrap.py is the one place that picks adapters"


def test_known_adapter_imports_are_still_there() -> None:
    assert KNOWN_ADAPTER_IMPORTS - _all_adapter_imports() == set(), "fixed: drop it from the list"


@pytest.mark.parametrize(
    "source",
    [
        "from hartonomous.blobs.local import LocalBlobStore",
        "def f():\n    from hartonomous.inference.openai_http import WorkerEmbedder",
        "from hartonomous.knowledge.embeddings import MiniLMEmbedder",
        "import hartonomous.events.event_hubs",
    ],
)
def test_the_adapter_guard_sees_an_import(source: str) -> None:
    assert _adapter_imports("hartonomous/services/example.py", ast.parse(source))


def _protocols(rel: str, tree: ast.Module) -> list[str]:
    return [
        f"{rel}: {node.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
        and any(PROTOCOL.fullmatch(ast.unparse(base)) for base in node.bases)
        and node.name not in NOT_PORTS
    ]


def test_protocols_live_in_ports() -> None:
    elsewhere = [
        line
        for rel, tree in _sources()
        if not rel.startswith("hartonomous/ports/")
        for line in _protocols(rel, tree)
    ]
    assert elsewhere == [], "a port's Protocol belongs in hartonomous/ports/"


def test_the_protocol_guard_sees_a_port_outside_ports() -> None:
    source = "class Clock(typing.Protocol):\n    def now(self) -> int: ..."
    assert _protocols("hartonomous/services/clock.py", ast.parse(source))
    assert not _protocols("hartonomous/x.py", ast.parse("class H(H11Protocol): pass"))
