-- One run per problem, not per update.
--
-- Intake asks, for every event that would start a run, for the run that
-- holds it back: an open run of its dedup key, or the runbook's last run
-- of it and whether the problem was resolved since (an inactive event of
-- the dedup key received after that run was created). Both halves are
-- range reads on these two indexes; the second one covers every query the
-- index on `events (dedup_key)` alone served, which it replaces.
CREATE INDEX runs_by_dedup_key ON runs (dedup_key, created_ms);
CREATE INDEX events_by_dedup_key_and_time ON events (dedup_key, received_ms);
DROP INDEX events_by_dedup_key;
-- A new ticket is linked to an open run of the same runbook on its
-- subject: the runbook's open runs, never its history.
CREATE INDEX runs_open_by_runbook ON runs (runbook_id) WHERE is_open;

-- A new ticket about a problem that already has an open run is linked to
-- that run, and its ticket becomes one more of the run's write-backs: a
-- run may now write back to two tickets of one system, so a write-back is
-- known by its destination too.
ALTER TABLE writebacks DROP CONSTRAINT writebacks_pkey,
    ADD PRIMARY KEY (run_id, system, destination);
