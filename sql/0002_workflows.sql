-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0002: Workflow ownership, and the local Durable host's storage (SQLite only)

BEGIN TRANSACTION;

-- Running upgrade 0001 -> 0002

CREATE TABLE workflow_runs (
    instance_id VARCHAR(200) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    name VARCHAR(200) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_workflow_runs PRIMARY KEY (instance_id),
    CONSTRAINT fk_workflow_runs_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_workflow_runs_tenant_id_created_at ON workflow_runs (tenant_id, created_at);

GO

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

GO

COMMIT;

GO

