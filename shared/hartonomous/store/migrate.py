"""Schema migrations through Alembic, driven from code (no alembic.ini needed at run time)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from hartonomous.store.engine import Engines

SCRIPT_LOCATION = "hartonomous:migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def upgrade(engines: Engines) -> None:
    """Bring the database to the newest revision (idempotent)."""
    cfg = alembic_config()
    with engines.write.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def current_revision(engines: Engines) -> str | None:
    with engines.read.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
