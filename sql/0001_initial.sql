-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0001: atoms, tenants, api keys and blobs

BEGIN TRANSACTION;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

GO

-- Running upgrade  -> 0001

CREATE TABLE blobs (
    sha256 VARCHAR(64) NOT NULL,
    size BIGINT NOT NULL,
    refcount INTEGER NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_blobs PRIMARY KEY (sha256)
);

GO

CREATE TABLE tenants (
    id VARCHAR(36) NOT NULL,
    name VARCHAR(100) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_tenants PRIMARY KEY (id),
    CONSTRAINT uq_tenants_name UNIQUE (name)
);

GO

CREATE TABLE api_keys (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    key_hash VARCHAR(64) NOT NULL,
    display_prefix VARCHAR(16) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    revoked_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_api_keys PRIMARY KEY (id),
    CONSTRAINT fk_api_keys_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash)
);

GO

CREATE INDEX ix_api_keys_tenant_id ON api_keys (tenant_id);

GO

CREATE TABLE atoms (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    size BIGINT NOT NULL,
    media_type VARCHAR(255) NOT NULL,
    modality VARCHAR(32) NOT NULL,
    metadata NVARCHAR(max) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_atoms PRIMARY KEY (id),
    CONSTRAINT fk_atoms_sha256_blobs FOREIGN KEY(sha256) REFERENCES blobs (sha256),
    CONSTRAINT fk_atoms_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_atoms_tenant_id_sha256 UNIQUE (tenant_id, sha256)
);

GO

CREATE INDEX ix_atoms_tenant_id_created_at_id ON atoms (tenant_id, created_at, id);

GO

CREATE INDEX ix_atoms_tenant_id_modality_created_at ON atoms (tenant_id, modality, created_at);

GO

INSERT INTO alembic_version (version_num) OUTPUT inserted.version_num VALUES ('0001');

GO

COMMIT;

GO

