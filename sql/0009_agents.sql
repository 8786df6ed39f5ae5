-- Generated from the Alembic migrations by `make sql`; do not edit by hand.
-- Revision 0009: The agent factory: names, immutable versions, runs, steps, violations, approvals

BEGIN TRANSACTION;

-- Running upgrade 0008 -> 0009

CREATE TABLE agent_runs (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    agent_name VARCHAR(64) NOT NULL,
    version_id VARCHAR(64) NOT NULL,
    instance_id VARCHAR(100) NOT NULL,
    status VARCHAR(24) NOT NULL,
    input_text NTEXT NOT NULL,
    seed BIGINT NULL,
    budget_credits FLOAT NOT NULL,
    max_steps INTEGER NOT NULL,
    max_duration_s INTEGER NOT NULL,
    steps INTEGER NOT NULL DEFAULT '0',
    spent_credits FLOAT NOT NULL DEFAULT '0',
    answer NTEXT NULL,
    answer_atom_id VARCHAR(36) NULL,
    receipt NVARCHAR(max) NULL,
    error VARCHAR(2000) NULL,
    started_at DATETIMEOFFSET NOT NULL,
    ended_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_agent_runs PRIMARY KEY (id),
    CONSTRAINT fk_agent_runs_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_agent_runs_tenant_id_agent_name_started_at ON agent_runs (tenant_id, agent_name, started_at);

GO

CREATE INDEX ix_agent_runs_tenant_id_status ON agent_runs (tenant_id, status);

GO

CREATE INDEX ix_agent_runs_tenant_id_started_at ON agent_runs (tenant_id, started_at);

GO

CREATE TABLE agent_versions (
    tenant_id VARCHAR(36) NOT NULL,
    id VARCHAR(64) NOT NULL,
    name VARCHAR(64) NOT NULL,
    spec NVARCHAR(max) NOT NULL,
    model_id VARCHAR(64) NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL,
    snapshot BIGINT NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    created_by VARCHAR(100) NULL,
    CONSTRAINT pk_agent_versions PRIMARY KEY (tenant_id, id),
    CONSTRAINT fk_agent_versions_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE INDEX ix_agent_versions_tenant_id_name_created_at ON agent_versions (tenant_id, name, created_at);

GO

CREATE TABLE agents (
    tenant_id VARCHAR(36) NOT NULL,
    name VARCHAR(64) NOT NULL,
    latest_version VARCHAR(64) NOT NULL,
    pinned_version VARCHAR(64) NULL,
    status VARCHAR(16) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    updated_at DATETIMEOFFSET NOT NULL,
    retired_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_agents PRIMARY KEY (tenant_id, name),
    CONSTRAINT fk_agents_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id)
);

GO

CREATE TABLE agent_steps (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    step INTEGER NOT NULL,
    kind VARCHAR(8) NOT NULL,
    name VARCHAR(64) NULL,
    arguments NVARCHAR(max) NULL,
    status VARCHAR(24) NOT NULL,
    decided_by VARCHAR(100) NULL,
    receipt_id VARCHAR(36) NULL,
    result NVARCHAR(max) NULL,
    cost_credits FLOAT NOT NULL DEFAULT '0',
    started_at DATETIMEOFFSET NOT NULL,
    ended_at DATETIMEOFFSET NULL,
    CONSTRAINT pk_agent_steps PRIMARY KEY (id),
    CONSTRAINT fk_agent_steps_run_id_agent_runs FOREIGN KEY(run_id) REFERENCES agent_runs (id),
    CONSTRAINT fk_agent_steps_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_agent_steps_tenant_id_run_id_step_kind UNIQUE (tenant_id, run_id, step, kind)
);

GO

CREATE TABLE agent_violations (
    id INTEGER NOT NULL IDENTITY,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    step INTEGER NOT NULL,
    rule_type VARCHAR(64) NOT NULL,
    detail VARCHAR(2000) NOT NULL,
    outcome VARCHAR(16) NOT NULL,
    created_at DATETIMEOFFSET NOT NULL,
    CONSTRAINT pk_agent_violations PRIMARY KEY (id),
    CONSTRAINT fk_agent_violations_run_id_agent_runs FOREIGN KEY(run_id) REFERENCES agent_runs (id),
    CONSTRAINT fk_agent_violations_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_agent_violations_tenant_id_run_id_step_rule_type UNIQUE (tenant_id, run_id, step, rule_type)
);

GO

CREATE TABLE agent_approvals (
    id VARCHAR(36) NOT NULL,
    tenant_id VARCHAR(36) NOT NULL,
    run_id VARCHAR(36) NOT NULL,
    step_id VARCHAR(36) NOT NULL,
    instance_id VARCHAR(100) NOT NULL,
    reason VARCHAR(200) NOT NULL,
    status VARCHAR(16) NOT NULL,
    requested_at DATETIMEOFFSET NOT NULL,
    expires_at DATETIMEOFFSET NOT NULL,
    decided_at DATETIMEOFFSET NULL,
    decided_by VARCHAR(100) NULL,
    note VARCHAR(1000) NULL,
    CONSTRAINT pk_agent_approvals PRIMARY KEY (id),
    CONSTRAINT fk_agent_approvals_run_id_agent_runs FOREIGN KEY(run_id) REFERENCES agent_runs (id),
    CONSTRAINT fk_agent_approvals_step_id_agent_steps FOREIGN KEY(step_id) REFERENCES agent_steps (id),
    CONSTRAINT fk_agent_approvals_tenant_id_tenants FOREIGN KEY(tenant_id) REFERENCES tenants (id),
    CONSTRAINT uq_agent_approvals_tenant_id_step_id UNIQUE (tenant_id, step_id)
);

GO

CREATE INDEX ix_agent_approvals_tenant_id_status_requested_at ON agent_approvals (tenant_id, status, requested_at);

GO

CREATE INDEX ix_edges_tenant_id_kind_id ON edges (tenant_id, kind, id);

GO

UPDATE alembic_version SET version_num='0009' WHERE alembic_version.version_num = '0008';

GO

COMMIT;

GO

