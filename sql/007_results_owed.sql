-- A `results` message that is owed: track ends a release in one statement and produces its
-- message after it, outside any consumed message whose redelivery would repeat it. Until
-- the delivery is confirmed the release is marked owed, and its claim (track_until) holds
-- long enough for the ending worker's one attempt; when that lapses (the worker died, or
-- the broker did not take the message in time) a track worker's sweep claims the release
-- and publishes the same bytes again (DESIGN.md: a duplicate only after a failure).
ALTER TABLE releases ADD COLUMN results_owed boolean NOT NULL DEFAULT false;
CREATE INDEX releases_results_owed ON releases (track_until) WHERE results_owed;
