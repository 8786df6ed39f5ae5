"""The client surface routes use, the same in both worlds.

On Azure it is the SDK's ``DurableOrchestrationClient`` from the binding on the catch-all
HTTP function; locally it is ``LocalDurableClient`` over the local host's store. Both are
async and return the SDK's own ``DurableOrchestrationStatus`` and ``PurgeHistoryResult``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from anyio import to_thread
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.PurgeHistoryResult import PurgeHistoryResult
from azure.durable_functions.models.utils.df_serialization import df_dumps

from hartonomous.ports import WorkflowClient as WorkflowClient  # the port, importable here
from hartonomous.workflows.host import LocalDurableHost
from hartonomous.workflows.instance import TERMINAL
from hartonomous.workflows.persistence import InstanceRow
from hartonomous.workflows.replay import new_row


class DurableClientError(Exception):
    """What the SDK's client raises on a refused operation (a plain ``Exception`` there)."""


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def status_of(row: InstanceRow, *, show_input: bool = True) -> DurableOrchestrationStatus:
    return DurableOrchestrationStatus(
        name=row.name,
        instanceId=row.instance_id,
        createdTime=row.created_at.isoformat(),
        lastUpdatedTime=row.last_updated_at.isoformat(),
        input=_json(row.input) if show_input else None,
        output=_json(row.output),
        runtimeStatus=row.runtime_status,
        customStatus=_json(row.custom_status),
    )


class LocalDurableClient:
    def __init__(self, host: LocalDurableHost) -> None:
        self._host = host
        self._store = host.store

    async def start_new(
        self,
        orchestration_function_name: str,
        instance_id: str | None = None,
        client_input: Any | None = None,
    ) -> str:
        return await to_thread.run_sync(
            self.start_new_sync, orchestration_function_name, instance_id, client_input
        )

    def start_new_sync(
        self, name: str, instance_id: str | None = None, client_input: Any | None = None
    ) -> str:
        if name not in self._host.registry.orchestrators:
            raise DurableClientError(f"no orchestrator function named {name!r} is registered")
        instance_id = instance_id or uuid.uuid4().hex
        input_json = None if client_input is None else df_dumps(client_input)
        now = self._host.now()
        if not self._store.create(new_row(instance_id, name, input_json, now), {}, now):
            raise DurableClientError(f"an instance with ID {instance_id!r} is already running")
        self._host.notify()
        return instance_id

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> DurableOrchestrationStatus:
        row = await to_thread.run_sync(self._store.instance, instance_id)
        if row is None:
            return DurableOrchestrationStatus()  # falsy, as the SDK's client gives for a 404
        status = status_of(row, show_input=show_input)
        if show_history:
            events = await to_thread.run_sync(self._store.history, instance_id)
            status._history = [json.loads(e) for e in events]
        return status

    async def raise_event(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        if not event_name:
            raise ValueError("event_name must be a non-empty string.")
        await to_thread.run_sync(self.raise_event_sync, instance_id, event_name, event_data)

    def raise_event_sync(self, instance_id: str, event_name: str, event_data: Any = None) -> None:
        row = self._store.instance(instance_id)
        if row is None:
            raise DurableClientError(f"No instance with ID {instance_id} found.")
        if row.runtime_status in TERMINAL:
            raise DurableClientError(
                f"Instance with ID {instance_id} is gone: either completed or failed"
            )
        payload = {"name": event_name, "input": json.dumps(event_data)}
        self._store.send(instance_id, "event", payload, self._host.now())
        self._host.notify()

    async def terminate(self, instance_id: str, reason: str) -> None:
        await to_thread.run_sync(self.terminate_sync, instance_id, reason)

    def terminate_sync(self, instance_id: str, reason: str) -> None:
        row = self._store.instance(instance_id)
        if row is None:
            raise DurableClientError(f"No instance with ID '{instance_id}' found.")
        if row.runtime_status in TERMINAL:
            return  # the SDK treats 410 (already finished) as done
        self._store.send(instance_id, "terminate", {"reason": reason}, self._host.now())
        self._host.notify()

    async def purge_instance_history(self, instance_id: str) -> PurgeHistoryResult:
        return await to_thread.run_sync(self.purge_sync, instance_id)

    def purge_sync(self, instance_id: str) -> PurgeHistoryResult:
        """Forget a finished instance and its history; running ones are left alone."""
        row = self._store.instance(instance_id)
        if row is None or row.runtime_status not in TERMINAL:
            return PurgeHistoryResult(instancesDeleted=0)
        return PurgeHistoryResult(instancesDeleted=self._store.purge(instance_id))
