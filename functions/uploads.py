"""Upload sessions on Azure: the Event Grid blob trigger that completes them, and the sweep.

The trigger is the Event Grid kind (``source=EventGrid``), the only blob trigger Flex
Consumption runs; it needs an Event Grid subscription on the storage account (see
docs/deploy.md). It binds an SDK ``BlobClient`` (``azurefunctions-extensions-bindings-blob``),
so the worker hands over a reference, never the blob's bytes; the completion reads them through
the blob store's bounded ranged reads. The same completion answers
``POST /v1/uploads/{id}/complete``, so the client and the trigger may race: one completes, the
other gets its result (code in hartonomous.knowledge.uploads and services.upload_sessions).
"""

from __future__ import annotations

import logging

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from functions import runtime
from hartonomous.domain.uploads import RECEIVED_PREFIX, session_of
from hartonomous.knowledge import uploads as completion

bp = df.Blueprint()
log = logging.getLogger(__name__)

# App settings (the Functions host resolves %...%): the container of the blob store, and the
# connection of its account (a connection string, or <name>__blobServiceUri for an identity).
UPLOADS_PATH = "%HARTONOMOUS_BLOB_CONTAINER%/" + RECEIVED_PREFIX + "{tenant}/{upload}"
CONNECTION = "HARTONOMOUS_AZURE_STORAGE_CONNECTION_STRING"


@bp.blob_trigger(
    arg_name="received",
    path=UPLOADS_PATH,
    connection=CONNECTION,
    source=func.BlobSource.EVENT_GRID,
)
@bp.durable_client_input(client_name="client")
async def complete_uploaded_blob(
    received: blob.BlobClient, client: df.DurableOrchestrationClient
) -> None:
    """Bytes landed under uploads/{tenant}/{upload}: complete that session. Whatever a
    client would be told (expired, wrong size...) is logged: a retry would not change it."""
    session = session_of(received.blob_name)
    if session is None:
        log.warning("blob %s is not an upload session's", received.blob_name)
        return
    await completion.complete_uploaded_blob(runtime.platform(), client, *session)


@bp.timer_trigger(schedule="0 */10 * * * *", arg_name="timer", run_on_startup=False)
def sweep_upload_sessions(timer: func.TimerRequest) -> None:
    """Every 10 minutes: bytes of expired or ended sessions, PUTs a crash left half-written,
    and sessions that ended a week ago."""
    objects, rows = runtime.platform().uploads.sweep()
    log.info(
        "swept %d staged upload objects and %d ended sessions (past due: %s)",
        objects,
        rows,
        timer.past_due,
    )
