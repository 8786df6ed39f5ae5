"""Starting model ingestions: from an upload, an atom already stored, or a blob trigger."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import to_thread

from hartonomous.models.gguf_layout import InvalidModel
from hartonomous.models.store import ModelRecord
from hartonomous.models.workflow import INGEST_MODEL
from hartonomous.ports import WorkflowClient
from hartonomous.services.atoms import StoredAtom

if TYPE_CHECKING:
    from hartonomous.bootstrap import Platform


@dataclass(frozen=True)
class StartedModel:
    model: ModelRecord
    instance_id: str


async def start_model_ingestion(
    platform: Platform,
    client: WorkflowClient,
    tenant_id: str,
    stored: StoredAtom,
    *,
    name: str | None,
    uploaded: bool,
) -> StartedModel:
    """Check the header, record the model, start its workflow.

    ``uploaded``: the atom came with this request; a bad file takes it away again (unless
    the tenant held the same bytes before), and a good one's own copy goes once its parts
    are stored, since they reassemble it byte for byte.
    """
    try:
        record = await to_thread.run_sync(
            lambda: platform.models.register(tenant_id, stored.atom, name=name)
        )
    except InvalidModel:
        if uploaded and not stored.deduplicated:
            await to_thread.run_sync(
                lambda: platform.atoms.delete(tenant_id=tenant_id, atom_id=stored.atom.id)
            )
        raise
    try:
        instance_id = await platform.tenant_workflows.start(
            client,
            tenant_id=tenant_id,
            name=INGEST_MODEL,
            input={
                "tenant_id": tenant_id,
                "model_id": record.id,
                "drop_source": uploaded and not stored.deduplicated,
            },
        )
    except BaseException as exc:
        error = f"the ingestion workflow did not start: {exc}"
        await to_thread.run_sync(platform.models.fail, tenant_id, record.id, error)
        raise
    await to_thread.run_sync(platform.models.set_instance, tenant_id, record.id, instance_id)
    return StartedModel(record, instance_id)
