-- The large values of a release compressed with lz4 instead of pglz (issue 20). A row of
-- releases passes the 2 KB at which PostgreSQL compresses its values once render writes
-- the manifests (~3 KB of jsonb) and apply the tracking state (~1 KB, changed again by
-- apply's and track's updates), so each of a release's writes compresses what it changes.
-- With lz4, render's start of 200 releases takes ~1/3 less CPU of its backend (bench stack,
-- interleaved: 63 -> 42 ms median); it compresses JSON less (the bench's manifests ~2.1 KB
-- instead of ~1.9, the tracking state not at all when the row fits without): ~25% more
-- space per release (6.0 -> 7.5 KB with indexes and dead versions). Values written before
-- keep pglz (each value records its method); a server built without lz4 keeps pglz, with a
-- notice.
DO $$
BEGIN
    ALTER TABLE releases ALTER COLUMN request SET COMPRESSION lz4,
        ALTER COLUMN params SET COMPRESSION lz4,
        ALTER COLUMN manifests SET COMPRESSION lz4,
        ALTER COLUMN track SET COMPRESSION lz4,
        ALTER COLUMN pods SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'releases keeps pglz compression: %', SQLERRM;
END
$$;
