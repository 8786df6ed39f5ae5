-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0010: Tenants' plans: the operator's per-tenant limits (NULL: the default plan's)

BEGIN TRANSACTION;

-- Running upgrade 0009 -> 0010

CREATE TABLE tenant_plans (
    tenant_id VARCHAR(36) NOT NULL,
    requests_per_second FLOAT NULL,
    burst INTEGER NULL,
    concurrent_generations INTEGER NULL,
    tokens_per_minute INTEGER NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_tenant_plans PRIMARY KEY (tenant_id),
    CONSTRAINT fk_tenant_plans_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

UPDATE alembic_version SET version_num='0010' WHERE alembic_version.version_num = '0009';

GO

COMMIT;

GO

