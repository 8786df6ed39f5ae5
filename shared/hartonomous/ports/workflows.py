"""The Durable client (``workflows/``, the SDK's on Azure)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from azure.durable_functions.models.DurableOrchestrationStatus import (
        DurableOrchestrationStatus,
    )
    from azure.durable_functions.models.PurgeHistoryResult import PurgeHistoryResult


class WorkflowClient(Protocol):
    """The Durable client routes use: the SDK's ``DurableOrchestrationClient`` on Azure,
    ``LocalDurableClient`` here; both answer with the SDK's own status types."""

    async def start_new(
        self,
        orchestration_function_name: str,
        instance_id: str | None = None,
        client_input: Any | None = None,
    ) -> str: ...

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> DurableOrchestrationStatus: ...

    async def raise_event(
        self, instance_id: str, event_name: str, event_data: Any = None
    ) -> None: ...

    async def terminate(self, instance_id: str, reason: str) -> None: ...

    async def purge_instance_history(self, instance_id: str) -> PurgeHistoryResult: ...
