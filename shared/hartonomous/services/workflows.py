"""Tenant-scoped access to workflow instances, in either world.

The Durable client (the SDK's on Azure, the local host's here) is passed in by the caller;
this service adds what the Durable backend does not know: which tenant owns an instance.
Another tenant's instance is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anyio import to_thread

from hartonomous.agents import names as agent_names
from hartonomous.autonomy import names
from hartonomous.domain.workflows import WorkflowRun, WorkflowStatus
from hartonomous.errors import Conflict, Forbidden, InvalidInput, NotFound
from hartonomous.ports import UnitOfWorkFactory, WorkflowClient
from hartonomous.services.clock import utcnow
from hartonomous.store.repositories import WriteConflict

EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
APPROVAL_EVENT_PREFIX = names.approval_event("")  # the run's; only the approvals API raises it
# Runs whose approvals only /v1/approvals decides: the loop's and agents'.
GOVERNED_RUNS = {names.RUN: "an autonomy run", agent_names.RUN: "an agent run"}


def _time(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


@dataclass
class WorkflowService:
    uow_factory: UnitOfWorkFactory

    async def start(
        self,
        client: WorkflowClient,
        *,
        tenant_id: str,
        name: str,
        input: Any = None,
        instance_id: str | None = None,
    ) -> str:
        """Record the owner first, so an instance is never started without one."""
        instance_id = instance_id or uuid.uuid4().hex
        run = WorkflowRun(instance_id, tenant_id, name, utcnow())
        await to_thread.run_sync(self._record, run)
        try:
            return await client.start_new(name, instance_id, input)
        except BaseException:
            await to_thread.run_sync(self._forget, run)
            raise

    def _record(self, run: WorkflowRun) -> None:
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            try:
                uow.workflow_runs.add(run)
            except WriteConflict as exc:
                raise Conflict(f"workflow instance id {run.instance_id!r} is taken") from exc
            uow.commit()

    def _forget(self, run: WorkflowRun) -> None:
        with self.uow_factory(write=True, tenant_id=run.tenant_id) as uow:
            uow.workflow_runs.delete(run.tenant_id, run.instance_id)
            uow.commit()

    def _owned(self, tenant_id: str, instance_id: str) -> WorkflowRun:
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = uow.workflow_runs.get(tenant_id, instance_id)
        if run is None:
            raise NotFound(f"no workflow instance {instance_id!r}")
        return run

    async def status(
        self, client: WorkflowClient, *, tenant_id: str, instance_id: str
    ) -> WorkflowStatus:
        run = await to_thread.run_sync(self._owned, tenant_id, instance_id)
        status = await client.get_status(instance_id, show_input=True)
        if not status:
            raise NotFound(f"workflow instance {instance_id!r} has no state (purged?)")
        runtime_status = status.runtime_status.value if status.runtime_status else "Unknown"
        failed = runtime_status == "Failed"
        return WorkflowStatus(
            instance_id=instance_id,
            name=status.name or run.name,
            runtime_status=runtime_status,
            custom_status=status.custom_status,
            input=status.input_,
            output=None if failed else status.output,
            created_time=_time(status.created_time),
            last_updated_time=_time(status.last_updated_time),
            # The Durable API reports a failure's message as the output.
            error=str(status.output) if failed else None,
        )

    async def raise_event(
        self,
        client: WorkflowClient,
        *,
        tenant_id: str,
        instance_id: str,
        name: str,
        data: Any,
    ) -> None:
        if not EVENT_NAME.match(name):
            raise InvalidInput(
                f"event name {name!r} must be 1-100 letters, digits, '_', '.' or '-', "
                "starting with a letter"
            )
        current = await self.status(client, tenant_id=tenant_id, instance_id=instance_id)
        if current.name in GOVERNED_RUNS and name.startswith(APPROVAL_EVENT_PREFIX):
            # The run takes decisions from the store; an early event would be kept by the SDK
            # and wake every later wait for it at once.
            raise Forbidden(
                f"event {name!r}: {GOVERNED_RUNS[current.name]}'s approvals are decided through "
                "/v1/approvals/{id}/approve or /reject, not raised as workflow events"
            )
        if not current.finished:
            try:
                await client.raise_event(instance_id, name, data)
                return
            except Exception:
                # It may have ended between the check and the event (the SDK's client raises a
                # bare Exception then): look again rather than read the message.
                current = await self.status(client, tenant_id=tenant_id, instance_id=instance_id)
                if not current.finished:
                    raise
        raise Conflict(
            f"workflow {instance_id!r} is {current.runtime_status}; it accepts no events"
        )

    async def terminate(
        self, client: WorkflowClient, *, tenant_id: str, instance_id: str, reason: str
    ) -> None:
        current = await self.status(client, tenant_id=tenant_id, instance_id=instance_id)
        if current.name == agent_names.RUN:
            # Terminating the workflow alone would leave its run "running" for ever, with
            # approvals still decidable: cancel ends both.
            raise Forbidden(
                f"workflow {instance_id!r} is an agent run: cancel it with "
                "POST /v1/agents/runs/{run_id}/cancel, which ends its record too"
            )
        if current.finished:
            raise Conflict(f"workflow {instance_id!r} already ended: {current.runtime_status}")
        await client.terminate(instance_id, reason)
