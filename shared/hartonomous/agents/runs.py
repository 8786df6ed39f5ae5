"""What the API asks of agent runs: start, read, list, cancel, and a look for the event
stream; and the approvals API's agent requests (decided as the loop's are, and told to the
waiting run by the same external event).

The database is the truth: a run's row and its workflow's owner are committed before its
orchestration starts, a cancellation is committed before the instance is terminated, and a
decision is committed before the run is told of it. The orchestration ends its run itself;
this module only ends a run that is cancelled or whose workflow never started.

Sync methods do database work (routes run them in the thread pool); the async ones also
talk to the Durable client and run their database work with ``anyio.to_thread``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from anyio import CancelScope, to_thread

from hartonomous.agents import names
from hartonomous.agents.compiled import CompiledAgent
from hartonomous.agents.compiler import check_startable
from hartonomous.agents.constitution import Governor
from hartonomous.agents.receipts import run_receipt
from hartonomous.agents.records import (
    AgentApprovalRecord,
    AgentRecord,
    AgentRunRecord,
    StepRecord,
    VersionRecord,
    ViolationRecord,
)
from hartonomous.agents.store import RUN_ENDED
from hartonomous.agents.types import AgentStatus, RunStatus, StepStatus
from hartonomous.autonomy.names import approval_event
from hartonomous.autonomy.records import ApprovalRecord
from hartonomous.autonomy.service import ApprovalDetail
from hartonomous.autonomy.types import ApprovalStatus
from hartonomous.domain.tenants import Scope
from hartonomous.domain.workflows import FINISHED, WorkflowRun
from hartonomous.errors import (
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    TooManyRequests,
)
from hartonomous.inference.types import ModelRef
from hartonomous.ports import UnitOfWork, UnitOfWorkFactory, WorkflowClient
from hartonomous.services.clock import new_id, utcnow
from hartonomous.services.pages import Page, page_of, position_after
from hartonomous.services.starts import runtime_status, started_anyway
from hartonomous.services.tenants import Principal

log = logging.getLogger(__name__)

# The agent service's ``current_version``: 404 unknown (or another tenant's), 410 retired.
VersionLookup = Callable[[str, str], tuple[VersionRecord, AgentRecord | None]]
# ``GenerationService.resolve``: 404 unknown, 409 not ready.
ModelResolver = Callable[[str, str], ModelRef]


@dataclass(frozen=True)
class RunDetail:
    run: AgentRunRecord
    steps: list[StepRecord]  # in order: by step, the model's row before its tool row
    violations: list[ViolationRecord]
    approvals: list[AgentApprovalRecord]


@dataclass(frozen=True)
class Progress:
    """One look at a run for its event stream: the row and its steps, read together."""

    run: AgentRunRecord
    steps: list[StepRecord]


@dataclass(frozen=True)
class AgentApprovalDetail:
    approval: AgentApprovalRecord
    step: StepRecord | None


AnyApproval = ApprovalDetail | AgentApprovalDetail  # what /v1/approvals serves


@dataclass
class AgentRunService:
    uow_factory: UnitOfWorkFactory
    resolve_model: ModelResolver
    current_version: VersionLookup | None = None  # None: read the versions here
    retry_first_ms: int = 1000  # Settings.autonomy_retry_first_ms
    max_active_runs: int = 16  # Settings.agent_max_active_runs, per tenant

    # -- start -----------------------------------------------------------------------------

    async def start(
        self,
        client: WorkflowClient,
        tenant_id: str,
        name_or_version: str,
        input_text: str,
        seed: int | None,
        by: str,
    ) -> AgentRunRecord:
        """Check the agent can run now, record the run, start its orchestration. A start
        that raised but whose instance has state started all the same (its answer was
        lost): the run stays; one with no state never started: the run ends failed."""
        run, run_input = await to_thread.run_sync(
            self.create_run, tenant_id, name_or_version, input_text, seed, by
        )
        try:
            await client.start_new(names.RUN, run.instance_id, run_input.to_json())
        except BaseException as exc:
            with CancelScope(shield=True):
                started = await started_anyway(client, run.instance_id, exc)
                if started and isinstance(exc, Exception):  # a cancellation goes on up
                    return run
                if started is False:
                    error = f"its workflow did not start: {exc}"[:2000]
                    await to_thread.run_sync(self._fail, tenant_id, run.id, error)
            raise
        return run

    def create_run(
        self, tenant_id: str, name_or_version: str, input_text: str, seed: int | None, by: str
    ) -> tuple[AgentRunRecord, names.RunInput]:
        """The run's row (running) and its orchestration's input; the workflow's owner is
        recorded in the same transaction. 404 unknown agent, 410 retired name, 409 when its
        model is gone, not ready or has other bytes, 422 when its cap cannot pay a step,
        429 when the tenant already has ``max_active_runs`` running (one tenant's runs
        cannot fill the workflow host for everyone)."""
        version, _ = self._version(tenant_id, name_or_version)
        agent = CompiledAgent.from_json(version.spec)
        self._check_model(tenant_id, agent)
        check_startable(agent)
        governor = Governor(agent)
        needed = names.step_credits(agent.max_tokens_per_step)
        now, run_id = utcnow(), new_id()
        run = AgentRunRecord(
            id=run_id, tenant_id=tenant_id, agent_name=version.name, version_id=version.id,
            instance_id=names.run_instance_id(run_id), status=RunStatus.RUNNING.value,
            input_text=input_text, seed=seed, budget_credits=governor.credit_cap,
            max_steps=governor.step_cap, max_duration_s=agent.max_duration_s, steps=0,
            spent_credits=0.0, answer=None, answer_atom_id=None, receipt=None, error=None,
            started_at=now, ended_at=None,
        )  # fmt: skip
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            if uow.agents.running(tenant_id, self.max_active_runs) >= self.max_active_runs:
                raise TooManyRequests(
                    f"the tenant has {self.max_active_runs} agent runs running, its most; "
                    "retry when one has ended (or cancel one)",
                    headers={"Retry-After": "5"},
                    max_active_runs=self.max_active_runs,
                )
            uow.agents.add_run(run)
            uow.workflow_runs.add(WorkflowRun(run.instance_id, tenant_id, names.RUN, now))
            uow.commit()
        log.info("agent run %s of %s (%s) started by %s", run_id, version.name, version.id, by)
        run_input = names.RunInput(
            tenant_id=tenant_id,
            run_id=run_id,
            started_at=now.isoformat(),
            budget_credits=run.budget_credits,
            max_steps=run.max_steps,
            max_duration_s=run.max_duration_s,
            step_credits=needed,
            retry_first_ms=self.retry_first_ms,
        )
        return run, run_input

    def _version(
        self, tenant_id: str, name_or_version: str
    ) -> tuple[VersionRecord, AgentRecord | None]:
        if self.current_version is not None:
            return self.current_version(tenant_id, name_or_version)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            return _current_version(uow, tenant_id, name_or_version)

    def _check_model(self, tenant_id: str, agent: CompiledAgent) -> None:
        """A version pins its model's bytes: the model must still be ready and the same."""
        model = agent.model
        try:
            ref = self.resolve_model(tenant_id, model.id)
        except NotFound as exc:
            raise Conflict(
                f"agent {agent.name!r} runs model {model.id!r}, which no longer exists; "
                "compile a new version",
                model_id=model.id,
            ) from exc
        except Conflict as exc:
            raise Conflict(
                f"agent {agent.name!r} cannot run: {exc.detail}", model_id=model.id
            ) from exc
        if ref.sha256 != model.sha256:
            raise Conflict(
                f"the model's bytes changed; compile a new version (agent {agent.name!r} "
                f"was compiled against {model.id!r} with sha256 {model.sha256}, it now has "
                f"{ref.sha256})",
                model_id=model.id,
            )

    def _fail(self, tenant_id: str, run_id: str, error: str) -> None:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            repo = uow.agents
            if repo.end_run(tenant_id, run_id, RunStatus.FAILED.value, utcnow(), error=error):
                ended = repo.run(tenant_id, run_id)
                assert ended is not None
                repo.update_run(tenant_id, run_id, receipt=run_receipt(uow, ended))
            uow.commit()

    # -- read ------------------------------------------------------------------------------

    def runs(
        self, tenant_id: str, limit: int, cursor: str | None = None, agent_name: str | None = None
    ) -> Page[AgentRunRecord]:
        """Newest first; one agent's when named."""
        after = position_after(cursor)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            items = uow.agents.runs(tenant_id, limit + 1, after, agent_name)
        return page_of(items, limit, lambda r: (r.started_at, r.id))

    def run(self, tenant_id: str, run_id: str) -> RunDetail:
        """The run with its steps, violations and approval requests; another tenant's: 404."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = _run(uow, tenant_id, run_id)
            repo = uow.agents
            return RunDetail(
                run,
                repo.steps(tenant_id, run_id),
                repo.violations(tenant_id, run_id),
                repo.run_approvals(tenant_id, run_id),
            )

    def progress(self, tenant_id: str, run_id: str) -> Progress:
        """The run and its steps as of one read (the event stream polls this)."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            run = _run(uow, tenant_id, run_id)
            return Progress(run, uow.agents.steps(tenant_id, run_id))

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(
        self, client: WorkflowClient | None, tenant_id: str, run_id: str, by: str
    ) -> AgentRunRecord:
        """Running to cancelled with its receipt (409 once it has ended), committed; then
        its instance is terminated. Without workflows (``client`` None), or when the
        terminate fails, the orchestration stops at its next step, which finds the run
        ended."""
        run = await to_thread.run_sync(self._cancel, tenant_id, run_id, by)
        if client is not None:
            await _terminate(client, run.instance_id, f"agent run {run_id} cancelled by {by}")
        return run

    def _cancel(self, tenant_id: str, run_id: str, by: str) -> AgentRunRecord:
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            repo = uow.agents
            _run(uow, tenant_id, run_id)
            now = utcnow()
            error = f"cancelled by {by}"
            if not repo.end_run(tenant_id, run_id, RunStatus.CANCELLED.value, now, error=error):
                ended = _run(uow, tenant_id, run_id)
                raise Conflict(
                    f"run {run_id} has ended ({ended.status}); only a running run is cancelled",
                    run_status=ended.status,
                )
            cancelled = _run(uow, tenant_id, run_id)  # the receipt must say cancelled
            receipt = run_receipt(uow, cancelled)
            repo.update_run(tenant_id, run_id, receipt=receipt)
            uow.commit()
        return replace(cancelled, receipt=receipt)

    # -- approvals (the loop's and agents', /v1/approvals) ---------------------------------

    def approvals(
        self, tenant_id: str, status: str | None, limit: int, cursor: str | None = None
    ) -> Page[AnyApproval]:
        """The loop's and agents' requests, newest first, under one cursor: the keyset
        (requested_at, id) bounds both tables, each gives ``limit + 1``, and the merge is
        cut to ``limit``."""
        after = position_after(cursor)
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            loop: list[ApprovalRecord | AgentApprovalRecord] = list(
                uow.autonomy.approvals(tenant_id, status, limit + 1, after)
            )
            agents = uow.agents.approvals(tenant_id, status, limit + 1, after)
            merged = sorted([*loop, *agents], key=lambda a: (a.requested_at, a.id), reverse=True)
            page = page_of(merged, limit, lambda a: (a.requested_at, a.id))
            return Page([_detail(uow, a) for a in page.items], page.next_cursor)

    def approval(self, tenant_id: str, approval_id: str) -> AnyApproval:
        """A loop's or an agent's request; 404 when the tenant has neither."""
        with self.uow_factory(write=False, tenant_id=tenant_id) as uow:
            found: ApprovalRecord | AgentApprovalRecord | None = uow.autonomy.approval(
                tenant_id, approval_id
            ) or uow.agents.approval(tenant_id, approval_id)
            if found is None:
                raise NotFound(f"no approval {approval_id!r}")
            return _detail(uow, found)

    async def decide(
        self,
        client: WorkflowClient,
        tenant_id: str,
        approval_id: str,
        approve: bool,
        principal: Principal,
        note: str | None = None,
    ) -> AgentApprovalDetail | None:
        """An admin's decision on an agent's request (None: not an agent's request, the
        loop's ``decide`` handles it), committed with its step's; then the waiting run is
        told by the event ``approval-<id>``. 409 unless pending, unexpired and its run still
        running; a late decision expires the request and its step."""
        decided = await to_thread.run_sync(
            self._decide, tenant_id, approval_id, approve, principal, note
        )
        if decided is None:
            return None
        event = {"status": decided.approval.status}
        try:
            await client.raise_event(
                decided.approval.instance_id, approval_event(approval_id), event
            )
        except Exception:  # it ended (or expired it) meanwhile: the database holds the truth
            log.warning(
                "agent approval %s decided, but run %s took no event",
                approval_id,
                decided.approval.instance_id,
                exc_info=True,
            )
        return decided

    def _decide(
        self, tenant_id: str, approval_id: str, approve: bool, principal: Principal,
        note: str | None,
    ) -> AgentApprovalDetail | None:  # fmt: skip
        now, by = utcnow(), f"key:{principal.key_id}"
        status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
        with self.uow_factory(write=True, tenant_id=tenant_id) as uow:
            repo = uow.agents
            approval = repo.approval(tenant_id, approval_id)
            if approval is None:
                return None
            if not principal.scope.allows(Scope.ADMIN):
                raise Forbidden(
                    f"this API key has scope '{principal.scope}'; deciding an agent's request "
                    "needs 'admin'",
                    required_scope=Scope.ADMIN.value,
                )
            if approval.status != ApprovalStatus.PENDING:
                raise Conflict(
                    f"approval {approval_id} is {approval.status}; only a pending one is decided",
                    approval_status=approval.status,
                )
            run = repo.run(tenant_id, approval.run_id)
            ended = run.status if run is not None else "gone"
            if ended != RunStatus.RUNNING or approval.expires_at <= now:
                # Nothing would execute it: expire it (unless decided meanwhile), then refuse.
                by_rule = "timer" if ended == RunStatus.RUNNING else RUN_ENDED
                _expire(uow, approval, by_rule, now)
                if ended != RunStatus.RUNNING:
                    raise Conflict(
                        f"run {approval.run_id} has ended ({ended}); nothing would execute a "
                        f"decision on approval {approval_id}",
                        approval_status=ApprovalStatus.EXPIRED.value,
                        run_status=ended,
                    )
                raise Conflict(
                    f"approval {approval_id} expired at {approval.expires_at.isoformat()}; "
                    "it can no longer be decided",
                    approval_status=ApprovalStatus.EXPIRED.value,
                )
            if not repo.decide(tenant_id, approval_id, status, by, now, note):
                raise Conflict(f"approval {approval_id} was decided meanwhile")
            step_values: dict[str, object] = {"status": status.value, "decided_by": by}
            if not approve:  # a rejected step never runs: it has ended
                step_values["ended_at"] = now
            waiting = [StepStatus.AWAITING_APPROVAL.value]
            if not repo.update_step(tenant_id, approval.step_id, waiting, **step_values):
                step = repo.step(tenant_id, approval.step_id)
                state = step.status if step else "gone"
                raise Conflict(  # rolled back: the approval stays as it was
                    f"step {approval.step_id} is {state}, not awaiting approval; "
                    f"approval {approval_id} was not decided",
                    step_status=state,
                )
            decided = repo.approval(tenant_id, approval_id)
            assert decided is not None
            detail = AgentApprovalDetail(decided, repo.step(tenant_id, decided.step_id))
            uow.commit()
            return detail


def _run(uow: UnitOfWork, tenant_id: str, run_id: str) -> AgentRunRecord:
    run = uow.agents.run(tenant_id, run_id)
    if run is None:
        raise NotFound(f"no agent run {run_id!r}")
    return run


def _detail(uow: UnitOfWork, approval: ApprovalRecord | AgentApprovalRecord) -> AnyApproval:
    if isinstance(approval, AgentApprovalRecord):
        return AgentApprovalDetail(approval, uow.agents.step(approval.tenant_id, approval.step_id))
    return ApprovalDetail(approval, uow.autonomy.action(approval.tenant_id, approval.action_id))


def _expire(uow: UnitOfWork, approval: AgentApprovalRecord, by: str, now: datetime) -> None:
    """Pending to expired, with its step, committed (compare-and-set: a decision that got
    there first stands)."""
    repo = uow.agents
    if repo.decide(approval.tenant_id, approval.id, ApprovalStatus.EXPIRED, by, now):
        repo.update_step(
            approval.tenant_id, approval.step_id, [StepStatus.AWAITING_APPROVAL.value],
            status=StepStatus.EXPIRED.value, decided_by=by, ended_at=now,
        )  # fmt: skip
        uow.commit()


async def _terminate(client: WorkflowClient, instance_id: str, reason: str) -> None:
    """Stop the instance; one that is gone or has finished needs nothing. Any other failure
    is logged: the run is cancelled in the database, and its next step finds that."""
    try:
        await client.terminate(instance_id, reason)
    except Exception:
        try:
            runtime = runtime_status(await client.get_status(instance_id))
        except Exception:
            runtime = "unknown"
        if runtime is None or runtime in FINISHED:
            return
        log.warning("could not terminate %s (%s); its run is cancelled", instance_id, runtime,
                    exc_info=True)  # fmt: skip


def _current_version(
    uow: UnitOfWork, tenant_id: str, name_or_version: str
) -> tuple[VersionRecord, AgentRecord | None]:
    """A version by its id, or a name's current version; 404 unknown, 410 retired name."""
    repo = uow.agents
    version = repo.version(tenant_id, name_or_version)
    agent = repo.agent(tenant_id, version.name if version else name_or_version)
    if version is None:
        if agent is None:
            raise NotFound(f"no agent {name_or_version!r}")
        version = repo.version(tenant_id, agent.current_version)
        assert version is not None, "a name points at a version it stored"
    if agent is not None and agent.status == AgentStatus.RETIRED:
        raise Gone(f"agent {agent.name!r} is retired: compile it again to run it", name=agent.name)
    return version, agent
