"""Models: GGUF files taken apart into header and tensor atoms, reassembled, sliced.

``ModelService`` is the one object the platform, routes and activities hold; its sides live
apart: the catalogue (``catalog.py``), ingestion (``ingestion.py``), slices (``slicing.py``).
"""

from __future__ import annotations

from hartonomous.models.catalog import (
    FAILED,
    HEADER_MEDIA_TYPE,
    INGESTING,
    MODEL_MEDIA_TYPE,
    PROFILE_MEDIA_TYPE,
    READY,
    TENSOR_MEDIA_TYPE,
    ModelPage,
)
from hartonomous.models.ingestion import ModelIngestion
from hartonomous.models.slicing import ModelSlicing

__all__ = [
    "FAILED",
    "HEADER_MEDIA_TYPE",
    "INGESTING",
    "MODEL_MEDIA_TYPE",
    "PROFILE_MEDIA_TYPE",
    "READY",
    "TENSOR_MEDIA_TYPE",
    "ModelPage",
    "ModelService",
]


class ModelService(ModelIngestion, ModelSlicing):
    """Register, ingest, read, export and slice a tenant's models."""
