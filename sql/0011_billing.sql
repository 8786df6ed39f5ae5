-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0011: Credits, invoices and Stripe events

BEGIN TRANSACTION;

-- Running upgrade 0010 -> 0011

CREATE TABLE stripe_events (
    id VARCHAR(255) NOT NULL,
    type VARCHAR(100) NOT NULL,
    tenant_id VARCHAR(36) NULL,
    outcome VARCHAR(32) NOT NULL,
    received_at DATETIMEOFFSET NOT NULL,
    done_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_stripe_events PRIMARY KEY (id)
);

GO

CREATE TABLE credit_accounts (
    tenant_id VARCHAR(36) NOT NULL,
    mode VARCHAR(16) NOT NULL,
    credit_limit BIGINT NOT NULL,
    held BIGINT NOT NULL,
    owed BIGINT NOT NULL,
    stripe_customer_id VARCHAR(255) NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_credit_accounts PRIMARY KEY (tenant_id),
    CONSTRAINT fk_credit_accounts_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE TABLE credit_entries (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    amount BIGINT NOT NULL,
    owed BIGINT NOT NULL,
    [key] VARCHAR(200) NOT NULL,
    detail NVARCHAR(max) NOT NULL,
    invoice_id VARCHAR(36) NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_credit_entries PRIMARY KEY (id),
    CONSTRAINT fk_credit_entries_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_credit_entries_tenant_id_created_at_id ON credit_entries (tenant_id, created_at, id);

GO

CREATE INDEX ix_credit_entries_tenant_id_invoice_id_created_at ON credit_entries (tenant_id, invoice_id, created_at);

GO

CREATE TABLE credit_grants (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    source VARCHAR(16) NOT NULL,
    source_ref VARCHAR(200) NOT NULL,
    amount BIGINT NOT NULL,
    remaining BIGINT NOT NULL,
    priority INTEGER NOT NULL,
    expires_at DATETIMEOFFSET NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_credit_grants PRIMARY KEY (id),
    CONSTRAINT fk_credit_grants_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_credit_grants_tenant_id_source_ref UNIQUE (tenant_id, source_ref)
);

GO

CREATE INDEX ix_credit_grants_tenant_id_priority_expires_at ON credit_grants (tenant_id, priority, expires_at);

GO

CREATE TABLE credit_holds (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    [key] VARCHAR(200) NOT NULL,
    estimate BIGINT NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    expires_at DATETIMEOFFSET NOT NULL,
    closed_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_credit_holds PRIMARY KEY (id),
    CONSTRAINT fk_credit_holds_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_credit_holds_tenant_id_key UNIQUE (tenant_id, [key])
);

GO

CREATE INDEX ix_credit_holds_tenant_id_status_expires_at ON credit_holds (tenant_id, status, expires_at);

GO

CREATE TABLE invoices (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    period VARCHAR(32) NOT NULL,
    period_start DATETIMEOFFSET NOT NULL,
    period_end DATETIMEOFFSET NOT NULL,
    status VARCHAR(16) NOT NULL,
    credits BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    currency VARCHAR(3) NOT NULL,
    stripe_invoice_item_id VARCHAR(255) NULL,
    stripe_invoice_id VARCHAR(255) NULL,
    stripe_total_cents BIGINT NULL,
    stripe_status VARCHAR(32) NULL,
    difference_cents BIGINT NULL,
    reconciled_at DATETIMEOFFSET NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_invoices PRIMARY KEY (id),
    CONSTRAINT fk_invoices_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_invoices_tenant_id_period UNIQUE (tenant_id, period)
);

GO

UPDATE alembic_version SET version_num='0011' WHERE alembic_version.version_num = '0010';

GO

COMMIT;

GO

