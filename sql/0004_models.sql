-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0004: Models: GGUF manifests over header and tensor atoms

BEGIN TRANSACTION;

-- Running upgrade 0003 -> 0004

CREATE TABLE models (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    name NVARCHAR(200) NOT NULL,
    status VARCHAR(12) NOT NULL,
    error NTEXT NULL,
    instance_id VARCHAR(64) NULL,
    sha256 VARCHAR(64) NOT NULL,
    file_size BIGINT NOT NULL,
    source_atom_id VARCHAR(36) NULL,
    parent_id VARCHAR(36) NULL,
    layers NVARCHAR(max) NULL,
    architecture VARCHAR(100) NULL,
    parameter_count BIGINT NULL,
    quantization NVARCHAR(max) NULL,
    context_length INTEGER NULL,
    vocab_size INTEGER NULL,
    block_count INTEGER NULL,
    chat_template BIT NULL,
    license NVARCHAR(200) NULL,
    new_bytes BIGINT NULL,
    info NVARCHAR(max) NULL,
    profile_atom_id VARCHAR(36) NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_models PRIMARY KEY (id),
    CONSTRAINT fk_models_parent_id_models FOREIGN KEY(parent_id) REFERENCES models (id),
    CONSTRAINT fk_models_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_models_tenant_id_created_at ON models (tenant_id, created_at);

GO

CREATE TABLE model_parts (
    model_id VARCHAR(36) NOT NULL,
    ordinal INTEGER NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    kind VARCHAR(8) NOT NULL,
    file_offset BIGINT NOT NULL,
    length BIGINT NOT NULL,
    atom_id VARCHAR(36) NULL,
    sha256 VARCHAR(64) NULL,
    tensor_name NVARCHAR(255) NULL,
    tensor_index INTEGER NULL,
    ggml_type VARCHAR(16) NULL,
    shape NVARCHAR(max) NULL,
    layer INTEGER NULL,
    CONSTRAINT pk_model_parts PRIMARY KEY (model_id, ordinal),
    CONSTRAINT fk_model_parts_atom_id_atoms FOREIGN KEY(atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_model_parts_model_id_models FOREIGN KEY(model_id) REFERENCES models (id),
    CONSTRAINT fk_model_parts_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_model_parts_tenant_id_atom_id ON model_parts (tenant_id, atom_id);

GO

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

GO

COMMIT;

GO

