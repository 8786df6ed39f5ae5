"""Ports: the small Protocols the core needs from the outside world, all in this package.

Each has one adapter per world (``blobs/``, ``store/``, ``knowledge/``, ``inference/``,
``events/``, ``workflows/``); ``bootstrap.py`` is the one place that picks them. The value
types a port passes stay beside their code and are imported for type checking only, so
importing a port never loads an adapter. Import them from here: ``from hartonomous.ports
import BlobStore``.
"""

from __future__ import annotations

from hartonomous.ports.admission import LimiterState
from hartonomous.ports.blobs import (
    BlobStore,
    BlobWriter,
    StagedBlob,
    StagingWriter,
    UploadStaging,
    UploadTarget,
)
from hartonomous.ports.events import EventPublisher
from hartonomous.ports.inference import Inference
from hartonomous.ports.knowledge import Embedder, KeywordIndex, VectorSearch
from hartonomous.ports.payments import Payments
from hartonomous.ports.store import InsertOrIgnore, SessionSetup, UnitOfWork, UnitOfWorkFactory
from hartonomous.ports.workflows import WorkflowClient

__all__ = [
    "BlobStore",
    "BlobWriter",
    "Embedder",
    "EventPublisher",
    "Inference",
    "InsertOrIgnore",
    "KeywordIndex",
    "LimiterState",
    "Payments",
    "SessionSetup",
    "StagedBlob",
    "StagingWriter",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UploadStaging",
    "UploadTarget",
    "VectorSearch",
    "WorkflowClient",
]
