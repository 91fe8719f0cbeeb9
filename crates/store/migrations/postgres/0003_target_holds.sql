-- One run acts on a target at a time, across every instance: a run's lease
-- covers its targets. A hold expires with the lease that took it.
CREATE TABLE target_holds (
    target      TEXT PRIMARY KEY,
    run_id      TEXT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX target_holds_by_run ON target_holds (run_id);
