-- relfleet-api's notifications of a release (NOTIFY relfleet_timeline '<release id>', 006)
-- come from its timeline rows alone (issue 20). 006's per-row trigger on releases notified
-- again for each change of a release's status, progress or failing pods, and every
-- statement that makes such a change writes a timeline row of that release in the same
-- transaction (render's start, fail and approval gate, apply's progressing, track's
-- progress, gray steps and end, rf_store_finish and rf_store_transition, relfleet_decide),
-- whose statement trigger (013) sends that same notification; PostgreSQL delivers a
-- channel and payload notified twice in one transaction once. So the row trigger's
-- notifications were never delivered, yet it ran three times per release, and its WHEN
-- (track -> 'progress' and pods of both versions) on every other update of releases,
-- claims and lease renewals included. Whoever changes those columns writes the timeline row with it.
DROP TRIGGER releases_notify ON releases;
DROP FUNCTION relfleet_notify_timeline();
