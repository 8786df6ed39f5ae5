"""Housekeeping that timer triggers run."""

from __future__ import annotations

from datetime import timedelta

from hartonomous.ports import BlobStore, UnitOfWorkFactory
from hartonomous.services.blob_lifecycle import PUBLICATION_GRACE, BlobLifecycle, SweepReport
from hartonomous.services.clock import utcnow

STAGING_GRACE = timedelta(hours=24)


def sweep_staging(blobs: BlobStore, *, older_than: timedelta = STAGING_GRACE) -> int:
    """Remove staged uploads abandoned by a crash; live uploads are far younger than a day."""
    return blobs.sweep_staging(utcnow() - older_than)


def collect_blobs(
    uow_factory: UnitOfWorkFactory, blobs: BlobStore, *, grace: timedelta = PUBLICATION_GRACE
) -> SweepReport:
    """Delete bytes whose last atom is gone and bytes a failed transaction published."""
    return BlobLifecycle(uow_factory, blobs).sweep(grace=grace)
