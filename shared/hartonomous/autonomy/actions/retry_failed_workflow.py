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
        """This action's own retry: 1 when it ran and did not fail in turn (no failure row
        of its own), 0 before it ran (the baseline: the workflow had failed) or when it
        failed. The loop measures after the retry's sub-orchestration ended, so a retry still
        running is never measured; other failures of the tenant do not count."""
        instance_id = str(ctx.parameters["instance_id"])
        retry_id = retry_instance_id(instance_id, ctx.action_id)
        with self.uow_factory(write=False, tenant_id=ctx.tenant_id) as uow:
            failure = uow.workflow_failures.get(ctx.tenant_id, instance_id)
            ran = failure is not None and failure.retried_by == retry_id
            failed = ran and uow.workflow_failures.get(ctx.tenant_id, retry_id) is not None
        return Measurement(
            value=1.0 if ran and not failed else 0.0,
            details={"retry_instance_id": retry_id, "retried": ran, "failed": failed,
                     "cost_credits": 0.0},
        )  # fmt: skip
