-- Search on Azure SQL: only what Azure SQL has, applied after the migrations.
--
-- Keywords: a full-text index over chunks.search_text, a persisted computed column holding
-- the chunk's text after its tenant's term ('tnt' and the tenant id's hex digits, 0-9 written
-- as g-p). Tenant isolation assumes that term is ONE token for the word breaker: it is made
-- of letters only, which no word breaker splits (a run mixing digits and letters may be split
-- or read as a number). knowledge/keyword_mssql.py's tenant_term builds the same term. Queries
-- (built by knowledge/keyword_mssql.py) require that term with CONTAINSTABLE, so the
-- full-text engine matches and ranks the caller's rows only: the tenant restricts the
-- candidates before ranking, instead of ranking every tenant's matches and joining after.
-- Vectors: embeddings.vector is VECTOR(384). Below @exact_below vectors a tenant is ranked
-- exactly with VECTOR_DISTANCE; above, VECTOR_SEARCH asks the DiskANN index (approximate;
-- the WHERE predicates are applied during the search). REQUIRES the latest vector index
-- version (iterative filtering): with an earlier one, VECTOR_SEARCH returns the top rows of
-- all tenants and the WHERE filters afterwards, so a tenant may get fewer than @k rows. Filtered searches stay exact over
-- the filter's chunks (knowledge/sql_vectors.py).
-- Everything runs under the row-level security policy: SESSION_CONTEXT('tenant_id')
-- limits it to the caller's tenant even without the explicit filter.

ALTER TABLE dbo.chunks ADD search_text AS CONCAT(N'tnt', TRANSLATE(LOWER(REPLACE(tenant_id, '-', '')), '0123456789', 'ghijklmnop'), N' ', text) PERSISTED;
GO

CREATE FULLTEXT CATALOG ft_hartonomous AS DEFAULT;
GO

CREATE FULLTEXT INDEX ON dbo.chunks (search_text LANGUAGE 1033)
    KEY INDEX pk_chunks ON ft_hartonomous
    WITH CHANGE_TRACKING AUTO;
GO

CREATE VECTOR INDEX ix_embeddings_vector_diskann ON dbo.embeddings (vector)
    WITH (METRIC = 'cosine', TYPE = 'diskann');
GO

CREATE PROCEDURE dbo.search_chunks_by_vector
    @tenant_id VARCHAR(36),
    @query VECTOR(384),
    @model VARCHAR(100),
    @k INT,
    @exact_below INT
AS
BEGIN
    SET NOCOUNT ON;
    DECLARE @vectors BIGINT;
    SELECT @vectors = COUNT_BIG(*) FROM dbo.embeddings
    WHERE tenant_id = @tenant_id AND model = @model;
    IF @vectors < @exact_below
        SELECT TOP (@k)
            c.atom_id,
            1.0 - VECTOR_DISTANCE('cosine', e.vector, @query) AS score
        FROM dbo.embeddings AS e
        JOIN dbo.chunks AS c ON c.tenant_id = e.tenant_id AND c.sha256 = e.sha256
        WHERE e.tenant_id = @tenant_id AND e.model = @model
        ORDER BY VECTOR_DISTANCE('cosine', e.vector, @query);
    ELSE
        SELECT TOP (@k) WITH APPROXIMATE
            c.atom_id,
            1.0 - s.distance AS score
        -- Needs the latest vector index version: the WHERE below is applied during the
        -- search (iterative filtering), not to a top list of every tenant's rows.
        FROM VECTOR_SEARCH(
            TABLE = dbo.embeddings AS e,
            COLUMN = vector,
            SIMILAR_TO = @query,
            METRIC = 'cosine'
        ) AS s
        JOIN dbo.chunks AS c ON c.tenant_id = e.tenant_id AND c.sha256 = e.sha256
        WHERE e.tenant_id = @tenant_id AND e.model = @model
        ORDER BY s.distance;
END;
GO
