-- Autovacuum for releases at the rate of a fleet (issue 20). Every status change of a
-- release is a non-HOT update (status is in the predicates of the partial indexes), so each
-- release leaves four or five dead versions behind, and two dead entries in
-- releases_one_active (its applying and progressing versions). The default threshold
-- (50 + 20% of the table) lets them pile up in proportion to the history kept: at 500
-- releases/s with 10 million releases kept, a vacuum every ~15 minutes and ~900,000 dead
-- entries in releases_one_active (a few hundred live ones) for the claim sweep and the
-- lookups of queued releases to step over. With 1% of the table plus 10,000: every ~50 s,
-- ~50,000 dead entries at most. The visibility map lets a vacuum skip the pages nothing
-- changed on, so its cost follows the writes, not the history kept.
ALTER TABLE releases SET (autovacuum_vacuum_scale_factor = 0.01,
                          autovacuum_vacuum_threshold = 10000,
                          autovacuum_analyze_scale_factor = 0.02);
