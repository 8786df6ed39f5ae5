-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0008: The autonomous loop: policies, runs, audit, actions, approvals, dead letters, and more

BEGIN TRANSACTION;

-- Running upgrade 0007 -> 0008

CREATE TABLE autonomy_policies (
    tenant_id VARCHAR(36) NOT NULL,
    body NVARCHAR(max) NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    updated_by VARCHAR(100) NULL,
    CONSTRAINT pk_autonomy_policies PRIMARY KEY (tenant_id),
    CONSTRAINT fk_autonomy_policies_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE TABLE autonomy_runs (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    instance_id VARCHAR(100) NOT NULL,
    origin VARCHAR(16) NOT NULL,
    status VARCHAR(24) NOT NULL,
    active_tenant VARCHAR(36) NULL,
    budget_credits FLOAT NOT NULL,
    max_duration_s INTEGER NOT NULL,
    max_iterations INTEGER NOT NULL,
    iterations INTEGER NOT NULL DEFAULT '0',
    spent_credits FLOAT NOT NULL DEFAULT '0',
    summary NVARCHAR(max) NULL,
    error VARCHAR(2000) NULL,
    started_at DATETIMEOFFSET NOT NULL,
    ended_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_autonomy_runs PRIMARY KEY (id),
    CONSTRAINT fk_autonomy_runs_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_autonomy_runs_tenant_id_started_at ON autonomy_runs (tenant_id, started_at);

GO

CREATE UNIQUE INDEX ux_autonomy_runs_active_tenant ON autonomy_runs (active_tenant) WHERE active_tenant IS NOT NULL;

GO

CREATE TABLE workflow_failures (
    instance_id VARCHAR(200) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    name VARCHAR(200) NOT NULL,
    input NVARCHAR(max) NOT NULL,
    error VARCHAR(4000) NOT NULL,
    failed_at DATETIMEOFFSET NOT NULL,
    retried_by VARCHAR(200) NULL,
    CONSTRAINT pk_workflow_failures PRIMARY KEY (instance_id),
    CONSTRAINT fk_workflow_failures_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_workflow_failures_tenant_id_failed_at ON workflow_failures (tenant_id, failed_at);

GO

CREATE TABLE answer_cache (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    action_id VARCHAR(36) NOT NULL,
    cache_key VARCHAR(64) NOT NULL,
    prompt NTEXT NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL,
    atom_ids NVARCHAR(max) NOT NULL,
    receipt_id VARCHAR(36) NOT NULL,
    output_atom_id VARCHAR(36) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_answer_cache PRIMARY KEY (id),
    CONSTRAINT fk_answer_cache_output_atom_id_atoms FOREIGN KEY(output_atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_answer_cache_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_answer_cache_tenant_id_cache_key UNIQUE (tenant_id, cache_key)
);

GO

CREATE TABLE autonomy_actions (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    iteration INTEGER NOT NULL,
    name VARCHAR(64) NOT NULL,
    version INTEGER NOT NULL,
    parameters NVARCHAR(max) NOT NULL,
    planned_by VARCHAR(16) NOT NULL,
    status VARCHAR(24) NOT NULL,
    decided_by VARCHAR(100) NULL,
    result NVARCHAR(max) NULL,
    outcome NVARCHAR(max) NULL,
    error VARCHAR(4000) NULL,
    attempts INTEGER NOT NULL DEFAULT '0',
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    applied_at DATETIMEOFFSET NULL,
    reverted_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_autonomy_actions PRIMARY KEY (id),
    CONSTRAINT fk_autonomy_actions_run_id_autonomy_runs FOREIGN KEY(run_id) REFERENCES autonomy_runs (id),
    CONSTRAINT fk_autonomy_actions_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_autonomy_actions_tenant_id_run_id ON autonomy_actions (tenant_id, run_id);

GO

CREATE TABLE autonomy_phases (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    iteration INTEGER NOT NULL,
    phase VARCHAR(16) NOT NULL,
    status VARCHAR(24) NOT NULL,
    inputs NVARCHAR(max) NOT NULL,
    outputs NVARCHAR(max) NOT NULL,
    decision VARCHAR(40) NULL,
    decider VARCHAR(100) NULL,
    cost_credits FLOAT NOT NULL DEFAULT '0',
    duration_ms FLOAT NOT NULL DEFAULT '0',
    started_at DATETIMEOFFSET NOT NULL,
    ended_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_autonomy_phases PRIMARY KEY (id),
    CONSTRAINT fk_autonomy_phases_run_id_autonomy_runs FOREIGN KEY(run_id) REFERENCES autonomy_runs (id),
    CONSTRAINT fk_autonomy_phases_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_autonomy_phases_tenant_id_run_id_iteration_phase UNIQUE (tenant_id, run_id, iteration, phase)
);

GO

CREATE TABLE learned_associations (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    action_id VARCHAR(36) NOT NULL,
    query NTEXT NOT NULL,
    model VARCHAR(100) NOT NULL,
    query_vector IMAGE NOT NULL,
    query_atom_id VARCHAR(36) NOT NULL,
    atom_id VARCHAR(36) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_learned_associations PRIMARY KEY (id),
    CONSTRAINT fk_learned_associations_atom_id_atoms FOREIGN KEY(atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_learned_associations_query_atom_id_atoms FOREIGN KEY(query_atom_id) REFERENCES atoms (id),
    CONSTRAINT fk_learned_associations_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_learned_associations_tenant_id_action_id UNIQUE (tenant_id, action_id)
);

GO

CREATE INDEX ix_learned_associations_tenant_id_model_created_at ON learned_associations (tenant_id, model, created_at);

GO

CREATE TABLE autonomy_approvals (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    action_id VARCHAR(36) NOT NULL,
    instance_id VARCHAR(100) NOT NULL,
    status VARCHAR(16) NOT NULL,
    requested_at DATETIMEOFFSET NOT NULL,
    expires_at DATETIMEOFFSET NOT NULL,
    decided_at DATETIMEOFFSET NULL,
    decided_by VARCHAR(100) NULL,
    note VARCHAR(1000) NULL,
    CONSTRAINT pk_autonomy_approvals PRIMARY KEY (id),
    CONSTRAINT fk_autonomy_approvals_action_id_autonomy_actions FOREIGN KEY(action_id) REFERENCES autonomy_actions (id),
    CONSTRAINT fk_autonomy_approvals_run_id_autonomy_runs FOREIGN KEY(run_id) REFERENCES autonomy_runs (id),
    CONSTRAINT fk_autonomy_approvals_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_autonomy_approvals_tenant_id_status_requested_at ON autonomy_approvals (tenant_id, status, requested_at);

GO

CREATE TABLE autonomy_dead_letters (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    action_id VARCHAR(36) NOT NULL,
    name VARCHAR(64) NOT NULL,
    parameters NVARCHAR(max) NOT NULL,
    error VARCHAR(4000) NOT NULL,
    attempts INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    resolved_by VARCHAR(100) NULL,
    CONSTRAINT pk_autonomy_dead_letters PRIMARY KEY (id),
    CONSTRAINT fk_autonomy_dead_letters_action_id_autonomy_actions FOREIGN KEY(action_id) REFERENCES autonomy_actions (id),
    CONSTRAINT fk_autonomy_dead_letters_run_id_autonomy_runs FOREIGN KEY(run_id) REFERENCES autonomy_runs (id),
    CONSTRAINT fk_autonomy_dead_letters_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_autonomy_dead_letters_tenant_id_action_id UNIQUE (tenant_id, action_id)
);

GO

CREATE INDEX ix_autonomy_dead_letters_tenant_id_status_created_at ON autonomy_dead_letters (tenant_id, status, created_at);

GO

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

GO

COMMIT;

GO

