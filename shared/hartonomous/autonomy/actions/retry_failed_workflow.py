"""``retry_failed_workflow``: run a failed ingestion or model workflow of the tenant again.

Apply does not start the workflow. It decides the retry's instance id
(``{instance_id}-retry-{action_id[:8]}``, deterministic), records that the tenant owns it
(``workflow_runs``) and marks the failure retried, then answers ``{instance_id, name,
input}``: the loop's orchestration starts it as a sub-orchestration under that id, so a
replayed orchestration never starts it twice and its completion is awaited in the run.
Not reversible: what the workflow writes is the tenant's own data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hartonomous.autonomy.actions.base import ActionContext, ActionExecutor, Measurement
from hartonomous.autonomy.registry import REGISTRY
from hartonomous.domain.workflows import WorkflowRun
from hartonomous.errors import Conflict, NotFound
from hartonomous.ports import UnitOfWorkFactory
from hartonomous.services.clock import utcnow

MAX_INSTANCE_ID = 200


def retry_instance_id(instance_id: str, action_id: str) -> str:
    suffix = f"-retry-{action_id[:8]}"
    return instance_id[: MAX_INSTANCE_ID - len(suffix)] + suffix


@dataclass
class RetryFailedWorkflow(ActionExecutor):
    uow_factory: UnitOfWorkFactory
    spec = REGISTRY["retry_failed_workflow"]

    def check(self, ctx: ActionContext) -> None:
        instance_id = str(ctx.parameters["instance_id"])
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            failure = uow.workflow_failures.get(ctx.tenant_id, instance_id)
        if failure is None:  # another tenant's instance is not found either
            raise NotFound(f"no failed workflow {instance_id!r}")
        if failure.retried_by not in (None, retry_instance_id(instance_id, ctx.action_id)):
            raise Conflict(
                f"workflow {instance_id!r} was retried already as {failure.retried_by!r}",
                retried_by=failure.retried_by,
            )

    def apply(self, ctx: ActionContext) -> dict[str, Any]:
        instance_id = str(ctx.parameters["instance_id"])
        new_id = retry_instance_id(instance_id, ctx.action_id)
        with self.uow_factory(write=True, tenant_id=ctx.tenant_id) as uow:
            failure = uow.workflow_failures.get(ctx.tenant_id, instance_id)
            if failure is None:
                raise NotFound(f"no failed workflow {instance_id!r}")
            if failure.retried_by != new_id:  # not this action's replay
                if not uow.workflow_failures.mark_retried(ctx.tenant_id, instance_id, new_id):
                    raise Conflict(f"workflow {instance_id!r} was retried already")
                if uow.workflow_runs.get(ctx.tenant_id, new_id) is None:
                    uow.workflow_runs.add(
                        WorkflowRun(new_id, ctx.tenant_id, failure.name, utcnow())
                    )
            uow.commit()
        return {"instance_id": new_id, "name": failure.name, "input": failure.input}

    def measure(self, ctx: ActionContext) -> Measurement:
        """-(failures not retried) - (retries that failed in turn), over the tenant's recorded
        failures. A retry that has not failed counts as recovered: the loop measures after
        the retry's sub-orchestration ended, so one still running is not measured."""
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            open_ = uow.workflow_failures.open_count(ctx.tenant_id)
            failed_retries = uow.workflow_failures.failed_retries(ctx.tenant_id)
        return Measurement(
            value=float(-(open_ + failed_retries)),
            details={"open_failures": open_, "failed_retries": failed_retries},
        )
