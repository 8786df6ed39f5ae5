-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0006: Blob lifecycle: the durable deletion queue

BEGIN TRANSACTION;

-- Running upgrade 0005 -> 0006

CREATE TABLE blob_deletions (
    id INTEGER NOT NULL IDENTITY,
    sha256 VARCHAR(64) NOT NULL,
    queued_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_blob_deletions PRIMARY KEY (id)
);

GO

CREATE INDEX ix_blob_deletions_sha256 ON blob_deletions (sha256);

GO

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

GO

COMMIT;

GO

