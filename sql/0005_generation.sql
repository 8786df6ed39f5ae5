-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0005: Generation: receipts, the usage ledger, the outbox, and receipts on edges

BEGIN TRANSACTION;

-- Running upgrade 0004 -> 0005

CREATE TABLE receipts (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    prompt_atom_id VARCHAR(36) NOT NULL,
    output_atom_id VARCHAR(36) NOT NULL,
    model_id VARCHAR(64) NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    body NVARCHAR(max) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_receipts PRIMARY KEY (id),
    CONSTRAINT fk_receipts_output_atom_id_atoms FOREIGN KEY(output_atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_receipts_prompt_atom_id_atoms FOREIGN KEY(prompt_atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_receipts_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_receipts_tenant_id_created_at ON receipts (tenant_id, created_at);

GO

CREATE INDEX ix_receipts_tenant_id_output_atom_id ON receipts (tenant_id, output_atom_id);

GO

CREATE INDEX ix_receipts_tenant_id_prompt_atom_id ON receipts (tenant_id, prompt_atom_id);

GO

CREATE TABLE usage_ledger (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    [key] VARCHAR(200) NOT NULL,
    kind VARCHAR(40) NOT NULL,
    quantity BIGINT NOT NULL,
    unit VARCHAR(20) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_usage_ledger PRIMARY KEY (id),
    CONSTRAINT fk_usage_ledger_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_usage_ledger_tenant_id_key_kind UNIQUE (tenant_id, [key], kind)
);

GO

CREATE INDEX ix_usage_ledger_tenant_id_created_at ON usage_ledger (tenant_id, created_at);

GO

CREATE TABLE outbox (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    topic VARCHAR(100) NOT NULL,
    [key] VARCHAR(200) NOT NULL,
    payload NVARCHAR(max) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    published_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_outbox PRIMARY KEY (id),
    CONSTRAINT fk_outbox_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_outbox_published_at_id ON outbox (published_at, id);

GO

ALTER TABLE edges ADD receipt_id VARCHAR(36) NOT NULL DEFAULT '';

GO

ALTER TABLE edges DROP CONSTRAINT uq_edges_tenant_id_src_id_kind_ordinal;

GO

ALTER TABLE edges ADD CONSTRAINT uq_edges_tenant_id_src_id_kind_ordinal_receipt_id UNIQUE (tenant_id, src_id, kind, ordinal, receipt_id);

GO

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

GO

COMMIT;

GO

