-- releases.manifests as json instead of jsonb (issue 20): the exact text render wrote (its
-- canonical JSON, keys sorted, the bytes manifests_sha256 is taken over), still checked to
-- be JSON by the server. Nothing queries inside the manifests: the database only asks
-- whether a release has them (IS NOT NULL: 009's wave driver, shared/store/rf_wave.c,
-- shared/msg/rf_request.c), apply reads them from the `rendered` message, and render's
-- republish of `rendered` builds it with jsonb_build_object, which takes json as well. As
-- jsonb, each render's start parsed ~2.8 KB of manifests into jsonb's binary form and
-- wrote that out again; json only checks the syntax. Render's batch start of 200 bench
-- releases, backend CPU, 21 interleaved runs (a throwaway bench stack): 38.9 -> 34.4 ms
-- median (25.5 -> 22.8 min); the value stored is 1.31 KB instead of 2.09 KB after lz4
-- (jsonb's binary form compresses worse than its text), so every later non-HOT version of
-- the row and its WAL record are smaller too.
--
-- The cost of the change: ALTER TYPE rewrites releases (and its indexes) under an
-- exclusive lock, ~6 s per 100,000 releases on the bench machine (436 -> 299 MB), while
-- which every stage and relfleet-api wait for the lock: requests wait in Kafka, nothing is
-- lost, nothing is started twice. Chosen over a second text column beside the old one
-- (no rewrite) because every reader of "has manifests" would then have to look at both
-- columns for ever and a worker built before would not see the newer releases' manifests
-- at all. Old rows keep their content as jsonb's text (keys in jsonb's order, with spaces),
-- which is the same JSON but not the bytes their manifests_sha256 was taken over; rows
-- written from now on hold render's exact text. Casts between json and jsonb are
-- assignment casts both ways, so a render built before this migration still writes here
-- (jsonb's text) and one built after still writes a jsonb column. Ad hoc queries that used
-- jsonb's functions on the column need `manifests::jsonb` (json's -> and ->> work as they
-- are). ALTER TYPE resets the column's compression to the default: lz4 (015) is set again
-- in the same statement, so the rewrite already compresses with it.
DO $$
BEGIN
    ALTER TABLE releases ALTER COLUMN manifests TYPE json USING manifests::json,
        ALTER COLUMN manifests SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'releases.manifests keeps pglz compression: %', SQLERRM;
    ALTER TABLE releases ALTER COLUMN manifests TYPE json USING manifests::json;
END
$$;
