-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0012: Concepts: concept atoms, discovery runs and schedules, the concepts' graph, member distances

BEGIN TRANSACTION;

-- Running upgrade 0011 -> 0012

CREATE TABLE concept_runs (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    modality VARCHAR(32) NOT NULL,
    instance_id VARCHAR(100) NOT NULL,
    origin VARCHAR(16) NOT NULL,
    status VARCHAR(16) NOT NULL,
    active_key VARCHAR(80) NULL,
    k_requested INTEGER NULL,
    seed INTEGER NOT NULL,
    summary NVARCHAR(max) NULL,
    error VARCHAR(2000) NULL,
    started_at DATETIMEOFFSET NOT NULL,
    ended_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_concept_runs PRIMARY KEY (id),
    CONSTRAINT fk_concept_runs_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_concept_runs_tenant_id_modality_started_at ON concept_runs (tenant_id, modality, started_at);

GO

CREATE UNIQUE INDEX ux_concept_runs_active_key ON concept_runs (active_key) WHERE active_key IS NOT NULL;

GO

CREATE TABLE concept_schedules (
    tenant_id VARCHAR(36) NOT NULL,
    modality VARCHAR(32) NOT NULL,
    k INTEGER NULL,
    enabled BIT NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_concept_schedules PRIMARY KEY (tenant_id, modality),
    CONSTRAINT fk_concept_schedules_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_concept_schedules_enabled ON concept_schedules (enabled);

GO

CREATE TABLE concepts (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    modality VARCHAR(32) NOT NULL,
    atom_id VARCHAR(36) NOT NULL,
    state VARCHAR(16) NOT NULL,
    name NVARCHAR(300) NOT NULL,
    terms NVARCHAR(max) NOT NULL,
    size INTEGER NOT NULL,
    centroid VECTOR(384) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_concepts PRIMARY KEY (id),
    CONSTRAINT fk_concepts_atom_id_atoms FOREIGN KEY(atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_concepts_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_concepts_tenant_id_atom_id ON concepts (tenant_id, atom_id);

GO

CREATE INDEX ix_concepts_tenant_id_created_at_id ON concepts (tenant_id, created_at, id);

GO

CREATE INDEX ix_concepts_tenant_id_modality_state ON concepts (tenant_id, modality, state);

GO

CREATE TABLE concept_edges (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    src_id VARCHAR(36) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    dst_id VARCHAR(36) NOT NULL,
    confidence FLOAT NOT NULL,
    evidence NVARCHAR(max) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_concept_edges PRIMARY KEY (id),
    CONSTRAINT fk_concept_edges_dst_id_concepts FOREIGN KEY(dst_id) REFERENCES concepts (id),
    CONSTRAINT fk_concept_edges_src_id_concepts FOREIGN KEY(src_id) REFERENCES concepts (id),
    CONSTRAINT fk_concept_edges_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_concept_edges_tenant_id_src_id_kind_dst_id UNIQUE (tenant_id, src_id, kind, dst_id)
);

GO

CREATE INDEX ix_concept_edges_tenant_id_dst_id_kind ON concept_edges (tenant_id, dst_id, kind);

GO

ALTER TABLE edges ADD weight FLOAT NULL;

GO

UPDATE alembic_version SET version_num='0012' WHERE alembic_version.version_num = '0011';

GO

COMMIT;

GO

