-- Row-level security for Azure SQL: only what Azure SQL has, applied after the migrations.
--
-- Every query already scopes by tenant; this policy is the second wall. The application sets
-- SESSION_CONTEXT(N'tenant_id') at the start of every unit of work (NULL when it acts for no
-- tenant), so a query that forgot its WHERE clause still sees one tenant's rows, and a write
-- cannot put a row in another tenant. Tables that hold rows of several tenants by design
-- (tenants, api_keys looked up before the tenant is known, blobs shared by content, Stripe
-- events recorded before the event names its tenant) stay out.
-- Later migrations add their tenant-owned tables to the policy with ALTER SECURITY POLICY.

CREATE SCHEMA security;
GO

CREATE FUNCTION security.fn_tenant_access(@tenant_id VARCHAR(36))
RETURNS TABLE
WITH SCHEMABINDING
AS
RETURN
    SELECT 1 AS access_granted
    WHERE @tenant_id = CAST(SESSION_CONTEXT(N'tenant_id') AS VARCHAR(36));
GO

CREATE SECURITY POLICY security.tenant_isolation
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.atoms,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.atoms AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.atoms AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_runs,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_runs AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_runs AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.edges,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.edges AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.edges AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.chunks,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.chunks AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.chunks AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.embeddings,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.embeddings AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.embeddings AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.documents,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.documents AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.documents AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.knowledge_gaps,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.knowledge_gaps AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.knowledge_gaps AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.models,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.models AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.models AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.model_parts,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.model_parts AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.model_parts AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.receipts,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.receipts AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.receipts AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.usage_ledger,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.usage_ledger AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.usage_ledger AFTER UPDATE,
    -- The autonomous loop (migration 0008): every row acts for one tenant.
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_policies,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_policies AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_policies AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_runs,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_runs AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_runs AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_phases,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_phases AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_phases AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_actions,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_actions AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_actions AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_approvals,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_approvals AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_approvals AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_dead_letters,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_dead_letters AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.autonomy_dead_letters AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.learned_associations,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.learned_associations AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.learned_associations AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.answer_cache,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.answer_cache AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.answer_cache AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_failures,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_failures AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.workflow_failures AFTER UPDATE,
    -- The agent factory (migration 0009): every row acts for one tenant.
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agents,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agents AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agents AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_versions,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_versions AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_versions AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_runs,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_runs AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_runs AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_steps,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_steps AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_steps AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_violations,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_violations AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_violations AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_approvals,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_approvals AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.agent_approvals AFTER UPDATE,
    -- Tenants' plans (migration 0010): every row is one tenant's.
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.tenant_plans,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.tenant_plans AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.tenant_plans AFTER UPDATE,
    -- Credits and invoices (migration 0011): every row is one tenant's.
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_grants,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_grants AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_grants AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_holds,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_holds AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_holds AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_entries,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_entries AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_entries AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.invoices,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.invoices AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.invoices AFTER UPDATE,
    -- Concepts (migration 0012): every row is one tenant's.
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concepts,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concepts AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concepts AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_runs,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_runs AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_runs AFTER UPDATE,
    ADD FILTER PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_edges,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_edges AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_edges AFTER UPDATE,
    -- Discovery schedules are listed across tenants by the hourly timer (acting for no
    -- tenant): no filter predicate; writes stay inside their tenant.
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_schedules AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.concept_schedules AFTER UPDATE,
    -- Credit accounts are listed across tenants by the hold sweep and the billing run
    -- (acting for no tenant): no filter predicate; writes stay inside their tenant.
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_accounts AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.credit_accounts AFTER UPDATE,
    -- The outbox publisher reads every tenant's events (acting for no tenant): no filter
    -- predicate there; the block predicate still keeps each write inside its tenant.
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.outbox AFTER INSERT,
    -- Upload sessions are looked up by id before their tenant is known (the URL's token) and
    -- swept across tenants: no filter predicate; writes stay inside their tenant.
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.upload_sessions AFTER INSERT,
    ADD BLOCK PREDICATE security.fn_tenant_access(tenant_id) ON dbo.upload_sessions AFTER UPDATE
    WITH (STATE = ON);
GO
