"""Write ``sql/``: one T-SQL script per Alembic revision, generated in offline mode.

``python -m hartonomous.store.sqlgen sql`` (or ``make sql``). A test regenerates the scripts
and fails when the committed ones differ, so ``sql/`` never drifts from the table definitions.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from hartonomous.store.migrate import alembic_config

HEADER = (
    "-- Generated from the Alembic migrations by `make sql`; do not edit by hand.\n"
    "-- Revision {rev}: {doc}\n\n"
)


def revision_scripts(dialect_name: str = "mssql") -> dict[str, str]:
    """File name -> T-SQL for every revision, oldest first."""
    cfg = alembic_config()
    revisions = list(reversed(list(ScriptDirectory.from_config(cfg).walk_revisions())))
    scripts: dict[str, str] = {}
    for rev in revisions:
        buf = io.StringIO()
        cfg.output_buffer = buf
        cfg.attributes["dialect_name"] = dialect_name
        start = rev.down_revision or "base"
        command.upgrade(cfg, f"{start}:{rev.revision}", sql=True)
        body = "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"
        name = f"{rev.revision}_{Path(rev.path).stem.split('_', 1)[-1]}.sql"
        scripts[name] = HEADER.format(rev=rev.revision, doc=rev.doc) + body
    return scripts


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in revision_scripts().items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "sql")):
        print(path)
