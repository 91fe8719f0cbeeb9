-- The order in which runs were admitted, and indexes for what the gate
-- counts when it admits one.
--
-- A run is admitted in the intake's transaction, under the lock that
-- serialises intakes (see `admission.rs`), and numbered there: before a
-- run starts, the gate counts only the runs admitted before it, so the
-- runs admitted after it cannot take back its place. Runs stored before
-- this migration are numbered in the order they were created.
ALTER TABLE runs ADD COLUMN admission_seq BIGINT NOT NULL DEFAULT 0;
UPDATE runs SET admission_seq = ordered.seq
    FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY created_ms, id) AS seq FROM runs) AS ordered
    WHERE runs.id = ordered.id;
CREATE UNIQUE INDEX runs_by_admission ON runs (admission_seq);
-- Cooldowns, rate limits and concurrency caps count one runbook's runs;
-- the global limit counts every runbook's.
CREATE INDEX runs_by_runbook ON runs (runbook_id, created_ms);
CREATE INDEX runs_by_creation ON runs (created_ms);
