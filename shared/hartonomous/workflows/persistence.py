"""The local Durable host's storage: instances, histories, messages and pending activities.

Every change an orchestrator step makes (history appended, instance updated, messages
consumed and sent, activities scheduled or done) commits in one transaction, so a crash at
any point leaves either the step whole or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from hartonomous.store.engine import Engines
from hartonomous.store.schema import (
    durable_history,
    durable_instances,
    durable_messages,
    durable_work,
)


@dataclass
class Message:
    id: int
    instance_id: str
    kind: str
    payload: dict[str, Any]
    visible_at: datetime


@dataclass
class WorkItem:
    instance_id: str
    event_id: int
    execution_id: str
    name: str
    input: str | None


@dataclass
class InstanceRow:
    instance_id: str
    name: str
    execution_id: str
    runtime_status: str
    input: str | None
    output: str | None
    custom_status: str | None
    error: str | None
    parent_instance_id: str | None
    parent_event_id: int | None
    parent_execution_id: str | None
    host_state: dict[str, Any]
    created_at: datetime
    last_updated_at: datetime

    def values(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["host_state"] = json.dumps(self.host_state, separators=(",", ":"))
        return data


@dataclass
class Step:
    """Everything one dispatcher step changes, applied atomically by ``commit``."""

    upserts: list[InstanceRow] = field(default_factory=list)
    history: dict[str, tuple[int, list[str]]] = field(default_factory=dict)  # id -> (from, rows)
    reset_history: set[str] = field(default_factory=set)
    consumed: list[int] = field(default_factory=list)
    sent: list[tuple[str, str, dict[str, Any], datetime]] = field(default_factory=list)
    work_added: list[WorkItem] = field(default_factory=list)
    work_done: list[tuple[str, int, str]] = field(default_factory=list)  # id, event, execution
    cancelled_timers: list[tuple[str, int]] = field(default_factory=list)
    cleared: set[str] = field(default_factory=set)  # terminal: drop pending work and timers

    def send(self, instance_id: str, kind: str, payload: dict[str, Any], at: datetime) -> None:
        self.sent.append((instance_id, kind, payload, at))


def _row(row: Any) -> InstanceRow:
    data = dict(row._mapping)
    data["host_state"] = json.loads(data["host_state"])
    return InstanceRow(**data)


class DurableStore:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    # -- reads -----------------------------------------------------------------------------

    def instance(self, instance_id: str) -> InstanceRow | None:
        with self.engines.read.connect() as conn:
            row = conn.execute(
                durable_instances.select().where(durable_instances.c.instance_id == instance_id)
            ).first()
        return _row(row) if row else None

    def history(self, instance_id: str) -> list[str]:
        with self.engines.read.connect() as conn:
            return list(
                conn.execute(
                    sa.select(durable_history.c.event)
                    .where(durable_history.c.instance_id == instance_id)
                    .order_by(durable_history.c.seq)
                ).scalars()
            )

    def visible_messages(self, now: datetime, limit: int = 5000) -> list[Message]:
        with self.engines.read.connect() as conn:
            rows = conn.execute(
                durable_messages.select()
                .where(durable_messages.c.visible_at <= now)
                .order_by(durable_messages.c.id)
                .limit(limit)
            ).all()
        return [
            Message(r.id, r.instance_id, r.kind, json.loads(r.payload), r.visible_at) for r in rows
        ]

    def next_visible_at(self) -> datetime | None:
        with self.engines.read.connect() as conn:
            value: datetime | None = conn.execute(
                sa.select(sa.func.min(durable_messages.c.visible_at))
            ).scalar_one_or_none()
        return value

    def status(self, instance_id: str) -> str | None:
        with self.engines.read.connect() as conn:
            value: str | None = conn.execute(
                sa.select(durable_instances.c.runtime_status).where(
                    durable_instances.c.instance_id == instance_id
                )
            ).scalar_one_or_none()
        return value

    def pending_work(self) -> list[WorkItem]:
        with self.engines.read.connect() as conn:
            rows = conn.execute(durable_work.select()).all()
        return [WorkItem(r.instance_id, r.event_id, r.execution_id, r.name, r.input) for r in rows]

    # -- writes ----------------------------------------------------------------------------

    def create(self, row: InstanceRow, start: dict[str, Any], at: datetime) -> bool:
        """A new instance and its start message; False when the id is taken by a live one."""
        with self.engines.write.begin() as conn:
            existing = conn.execute(
                sa.select(durable_instances.c.runtime_status).where(
                    durable_instances.c.instance_id == row.instance_id
                )
            ).scalar_one_or_none()
            if existing in ("Pending", "Running", "ContinuedAsNew"):
                return False
            if existing is not None:  # a finished instance of that id is replaced
                self._delete(conn, row.instance_id)
            conn.execute(durable_instances.insert().values(**row.values()))
            self._send(conn, [(row.instance_id, "start", start, at)])
        return True

    def send(self, instance_id: str, kind: str, payload: dict[str, Any], at: datetime) -> None:
        with self.engines.write.begin() as conn:
            self._send(conn, [(instance_id, kind, payload, at)])

    def purge(self, instance_id: str) -> int:
        with self.engines.write.begin() as conn:
            return self._delete(conn, instance_id)

    def commit(self, step: Step) -> None:
        with self.engines.write.begin() as conn:
            for instance_id in step.reset_history:
                conn.execute(
                    durable_history.delete().where(durable_history.c.instance_id == instance_id)
                )
            rows = [
                {"instance_id": iid, "seq": start + i, "event": event}
                for iid, (start, events) in step.history.items()
                for i, event in enumerate(events)
            ]
            if rows:
                conn.execute(durable_history.insert(), rows)
            for row in step.upserts:
                values = row.values()
                updated = conn.execute(
                    durable_instances.update()
                    .where(durable_instances.c.instance_id == row.instance_id)
                    .values(**values)
                )
                if updated.rowcount == 0:
                    conn.execute(durable_instances.insert().values(**values))
            if step.consumed:
                conn.execute(
                    durable_messages.delete().where(durable_messages.c.id.in_(step.consumed))
                )
            for iid, event_id, execution_id in step.work_done:
                conn.execute(
                    durable_work.delete().where(
                        durable_work.c.instance_id == iid,
                        durable_work.c.event_id == event_id,
                        durable_work.c.execution_id == execution_id,
                    )
                )
            for iid, timer_id in step.cancelled_timers:
                conn.execute(
                    durable_messages.delete().where(
                        durable_messages.c.instance_id == iid,
                        durable_messages.c.kind == "timer",
                        durable_messages.c.event_id == timer_id,
                    )
                )
            for iid in step.cleared:
                conn.execute(durable_work.delete().where(durable_work.c.instance_id == iid))
                conn.execute(
                    durable_messages.delete().where(
                        durable_messages.c.instance_id == iid, durable_messages.c.kind == "timer"
                    )
                )
            if step.work_added:
                conn.execute(
                    durable_work.insert(),
                    [
                        {
                            "instance_id": w.instance_id,
                            "event_id": w.event_id,
                            "execution_id": w.execution_id,
                            "name": w.name,
                            "input": w.input,
                        }
                        for w in step.work_added
                    ],
                )
            self._send(conn, step.sent)

    @staticmethod
    def _send(conn: sa.Connection, sent: list[tuple[str, str, dict[str, Any], datetime]]) -> None:
        if sent:
            conn.execute(
                durable_messages.insert(),
                [
                    {
                        "instance_id": iid,
                        "kind": kind,
                        "event_id": payload.get("event_id") if kind == "timer" else None,
                        "payload": json.dumps(payload, separators=(",", ":")),
                        "visible_at": at,
                    }
                    for iid, kind, payload, at in sent
                ],
            )

    @staticmethod
    def _delete(conn: sa.Connection, instance_id: str) -> int:
        for table in (durable_history, durable_messages, durable_work):
            conn.execute(table.delete().where(table.c.instance_id == instance_id))
        return conn.execute(
            durable_instances.delete().where(durable_instances.c.instance_id == instance_id)
        ).rowcount
