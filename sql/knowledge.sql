-- Search on Azure SQL: only what Azure SQL has, applied after the migrations.
--
-- Keywords: a full-text index over chunk text (SQLite uses FTS5 locally).
-- Vectors: embeddings.vector is VECTOR(384); VECTOR_DISTANCE does exact search, and a DiskANN
-- vector index serves large tenants (approximate; exact search stays available).
-- Both procedures run under the row-level security policy: SESSION_CONTEXT('tenant_id')
-- limits them to the caller's tenant even without the explicit filter.

CREATE FULLTEXT CATALOG ft_hartonomous AS DEFAULT;
GO

CREATE FULLTEXT INDEX ON dbo.chunks (text LANGUAGE 1033)
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
    @k INT
AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (@k)
        c.atom_id,
        1.0 - VECTOR_DISTANCE('cosine', e.vector, @query) AS score
    FROM dbo.embeddings AS e
    JOIN dbo.chunks AS c ON c.tenant_id = e.tenant_id AND c.sha256 = e.sha256
    WHERE e.tenant_id = @tenant_id AND e.model = @model
    ORDER BY VECTOR_DISTANCE('cosine', e.vector, @query);
END;
GO

CREATE PROCEDURE dbo.search_chunks_by_keywords
    @tenant_id VARCHAR(36),
    @query NVARCHAR(4000),
    @k INT
AS
BEGIN
    SET NOCOUNT ON;
    SELECT TOP (@k)
        c.atom_id,
        ft.[RANK] AS score
    FROM FREETEXTTABLE(dbo.chunks, text, @query) AS ft
    JOIN dbo.chunks AS c ON c.seq = ft.[KEY]
    WHERE c.tenant_id = @tenant_id
    ORDER BY ft.[RANK] DESC;
END;
GO
