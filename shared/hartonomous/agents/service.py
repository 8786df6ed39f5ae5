"""What the API asks of agents' names and versions: compile, read, list, retire, pin.

A version is immutable and content-addressed (``compiler.compile_spec``); a name points at
its latest version unless pinned. Compiling a name again makes the new (or re-found) version
its latest and re-activates it when it was retired. Retired names stay readable (GET shows
``retired``) but run nothing: ``current_version`` answers 410 for them.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from hartonomous.agents.compiled import CompiledAgent
from hartonomous.agents.compiler import compile_spec
from hartonomous.agents.records import AgentRecord, VersionRecord
from hartonomous.agents.spec import AgentSpecIn
from hartonomous.agents.types import AgentStatus
from hartonomous.autonomy.policy import Policy
from hartonomous.errors import Gone, InvalidInput, NotFound, UnprocessableContent
from hartonomous.inference.types import ModelRef
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory
from hartonomous.services.atoms import decode_cursor, encode_position
from hartonomous.services.clock import utcnow

VERSION_ID = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")


@dataclass(frozen=True)
class Created:
    version: VersionRecord
    agent: AgentRecord
    created: bool  # False: the spec compiled to a version the tenant had already
    compile_ms: float  # resolving the model, reading policy and snapshot, compiling, storing


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def _name_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _after_name(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(
            "the cursor is not one this API returned; pass next_cursor unchanged"
        ) from exc


def _after_version(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    position = decode_cursor(cursor)  # 400 when it is not one this API returned
    return position.created_at, position.id


@dataclass
class AgentService:
    uow_factory: UnitOfWorkFactory
    resolve_model: Callable[[str, str], ModelRef]  # 404 unknown, 409 not ready
    policy: Callable[[str], Policy]  # the tenant's policy, defaults filled in

    # -- compile ---------------------------------------------------------------------------

    def create(self, tenant_id: str, spec: AgentSpecIn, by: str | None) -> Created:
        """Compile and store: a new version (``created``) or the one this spec already is.
        Either way the name now points at it, active."""
        started = time.perf_counter()
        model = self.resolve_model(tenant_id, spec.model_id)
        policy = self.policy(tenant_id)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            snapshot = uow.knowledge.snapshot(tenant_id)
        compiled = compile_spec(spec, model=model, snapshot=snapshot, policy=policy)
        now = utcnow()
        row = _version_row(tenant_id, compiled, now, by)
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            created = uow.agents.add_version(row)
            uow.agents.point(tenant_id, spec.name, row.id, now)
            version = uow.agents.version(tenant_id, row.id)
            agent = uow.agents.agent(tenant_id, spec.name)
            uow.commit()
        assert version is not None and agent is not None
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return Created(version, agent, created, elapsed)

    # -- read ------------------------------------------------------------------------------

    def get(self, tenant_id: str, name_or_version: str) -> tuple[VersionRecord, AgentRecord]:
        """A version by its id, or a name's current version (pinned, else latest); retired
        names included. Unknown, or another tenant's: 404."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return _lookup(uow, tenant_id, name_or_version)

    def current_version(
        self, tenant_id: str, name_or_version: str
    ) -> tuple[VersionRecord, AgentRecord | None]:
        """What a new run runs: 404 unknown, 410 when its name is retired (no new runs; its
        versions and runs stay readable)."""
        version, agent = self.get(tenant_id, name_or_version)
        if agent.status == AgentStatus.RETIRED:
            raise Gone(
                f"agent {agent.name!r} is retired: compile it again to run it",
                name=agent.name,
            )
        return version, agent

    def agents(
        self, tenant_id: str, limit: int, cursor: str | None, *, include_retired: bool = False
    ) -> Page[AgentRecord]:
        """Names in order; retired ones only when asked."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            rows = uow.agents.agents(
                tenant_id, limit + 1, _after_name(cursor), retired=include_retired
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, _name_cursor(rows[-1].name) if more else None)

    def versions(
        self, tenant_id: str, name: str, limit: int, cursor: str | None
    ) -> Page[VersionRecord]:
        """A name's versions, newest first; 404 for a name the tenant never compiled."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            _agent(uow, tenant_id, name)
            rows = uow.agents.versions(tenant_id, name, limit + 1, _after_version(cursor))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return Page(rows, encode_position(last.created_at, last.id) if more and last else None)

    # -- change ----------------------------------------------------------------------------

    def retire(self, tenant_id: str, name: str) -> AgentRecord:
        """No new runs; 404 when there is no active name."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            if not uow.agents.retire(tenant_id, name, utcnow()):
                raise NotFound(f"no active agent {name!r}")
            agent = _agent(uow, tenant_id, name)
            uow.commit()
        return agent

    def pin(
        self, tenant_id: str, name: str, version_id: str | None
    ) -> tuple[VersionRecord, AgentRecord]:
        """Pin the name to one of its versions (None: follow the latest again). The pin
        holds across later compilations until unpinned; a version of another name is 422."""
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            _agent(uow, tenant_id, name)
            if version_id is not None:
                version = uow.agents.version(tenant_id, version_id)
                if version is None or version.name != name:
                    raise UnprocessableContent(
                        f"{version_id} is not a version of agent {name!r}",
                        version_id=version_id,
                    )
            uow.agents.pin(tenant_id, name, version_id, utcnow())
            found = _lookup(uow, tenant_id, name)
            uow.commit()
        return found


def _version_row(
    tenant_id: str, compiled: CompiledAgent, at: datetime, by: str | None
) -> VersionRecord:
    return VersionRecord(
        tenant_id=tenant_id,
        id=compiled.version_id,
        name=compiled.name,
        spec=compiled.to_json(),
        model_id=compiled.model.id,
        model_sha256=compiled.model.sha256,
        snapshot=compiled.snapshot,
        created_at=at,
        created_by=by,
    )


def _agent(uow: UnitOfWork, tenant_id: str, name: str) -> AgentRecord:
    agent = uow.agents.agent(tenant_id, name)
    if agent is None:
        raise NotFound(f"no agent {name!r}")
    return agent


def _lookup(
    uow: UnitOfWork, tenant_id: str, name_or_version: str
) -> tuple[VersionRecord, AgentRecord]:
    if VERSION_ID.fullmatch(name_or_version):
        version = uow.agents.version(tenant_id, name_or_version)
        if version is None:
            raise NotFound(f"no agent version {name_or_version}")
        return version, _agent(uow, tenant_id, version.name)
    agent = _agent(uow, tenant_id, name_or_version)
    current = uow.agents.version(tenant_id, agent.current_version)
    assert current is not None, "a name points at a version it stored"
    return current, agent
