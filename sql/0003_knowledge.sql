-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0003: Knowledge: edges, chunks, embeddings, documents, knowledge gaps; FTS5 locally

BEGIN TRANSACTION;

-- Running upgrade 0002 -> 0003

CREATE TABLE embeddings (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    model VARCHAR(100) NOT NULL,
    dimension INTEGER NOT NULL,
    vector VECTOR(384) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_embeddings PRIMARY KEY (id),
    CONSTRAINT fk_embeddings_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_embeddings_tenant_id_sha256_model UNIQUE (tenant_id, sha256, model)
);

GO

CREATE TABLE knowledge_gaps (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    query NTEXT NOT NULL,
    mode VARCHAR(10) NOT NULL,
    best_score FLOAT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_knowledge_gaps PRIMARY KEY (id),
    CONSTRAINT fk_knowledge_gaps_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_knowledge_gaps_tenant_id_created_at ON knowledge_gaps (tenant_id, created_at);

GO

CREATE TABLE chunks (
    seq INTEGER NOT NULL IDENTITY,
    atom_id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    text NTEXT NOT NULL,
    token_count INTEGER NOT NULL,
    CONSTRAINT pk_chunks PRIMARY KEY (seq),
    CONSTRAINT fk_chunks_atom_id_atoms FOREIGN KEY(atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_chunks_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_chunks_atom_id UNIQUE (atom_id),
    CONSTRAINT uq_chunks_tenant_id_sha256 UNIQUE (tenant_id, sha256)
);

GO

CREATE INDEX ix_chunks_tenant_id_seq ON chunks (tenant_id, seq);

GO

CREATE TABLE documents (
    atom_id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    model VARCHAR(100) NOT NULL,
    chunk_count INTEGER NOT NULL,
    char_count INTEGER NOT NULL,
    indexed_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_documents PRIMARY KEY (atom_id),
    CONSTRAINT fk_documents_atom_id_atoms FOREIGN KEY(atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_documents_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE TABLE edges (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    kind VARCHAR(40) NOT NULL,
    src_id VARCHAR(36) NOT NULL,
    dst_id VARCHAR(36) NOT NULL,
    ordinal INTEGER NULL,
    start_offset INTEGER NULL,
    end_offset INTEGER NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_edges PRIMARY KEY (id),
    CONSTRAINT fk_edges_dst_id_atoms FOREIGN KEY(dst_id) REFERENCES atoms (id),
    CONSTRAINT fk_edges_src_id_atoms FOREIGN KEY(src_id) REFERENCES atoms (id),
    CONSTRAINT fk_edges_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_edges_tenant_id_src_id_kind_ordinal UNIQUE (tenant_id, src_id, kind, ordinal)
);

GO

CREATE INDEX ix_edges_tenant_id_dst_id_kind ON edges (tenant_id, dst_id, kind);

GO

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

GO

COMMIT;

GO

