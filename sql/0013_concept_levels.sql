-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0013: Concept levels: broad concepts that group the fine ones (level, broader_id)

BEGIN TRANSACTION;

-- Running upgrade 0012 -> 0013

ALTER TABLE concepts ADD level INTEGER NOT NULL DEFAULT 0;

GO

ALTER TABLE concepts ADD broader_id VARCHAR(36) NULL;

GO

CREATE INDEX ix_concepts_tenant_id_broader_id ON concepts (tenant_id, broader_id);

GO

DELETE FROM concept_edges WHERE kind = 'IS_A';

GO

UPDATE alembic_version SET version_num='0013' WHERE alembic_version.version_num = '0012';

GO

COMMIT;

GO

