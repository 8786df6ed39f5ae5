-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0007: Upload sessions: big files sent straight to storage before they become atoms

BEGIN TRANSACTION;

-- Running upgrade 0006 -> 0007

CREATE TABLE upload_sessions (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    purpose VARCHAR(16) NOT NULL,
    size BIGINT NOT NULL,
    media_type VARCHAR(255) NOT NULL,
    metadata NVARCHAR(max) NOT NULL,
    token_hash VARCHAR(64) NOT NULL,
    status VARCHAR(16) NOT NULL,
    claim_id VARCHAR(32) NULL,
    claimed_until DATETIMEOFFSET NULL,
    atom_id VARCHAR(36) NULL,
    deduplicated BIT NULL,
    instance_id VARCHAR(100) NULL,
    model_id VARCHAR(64) NULL,
    error VARCHAR(2000) NULL,
    created_at DATETIMEOFFSET NOT NULL,
    expires_at DATETIMEOFFSET NOT NULL,
    completed_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_upload_sessions PRIMARY KEY (id),
    CONSTRAINT fk_upload_sessions_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_upload_sessions_expires_at ON upload_sessions (expires_at);

GO

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

GO

COMMIT;

GO

