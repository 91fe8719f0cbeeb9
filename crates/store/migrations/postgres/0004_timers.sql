-- Durable timers: a run asks for one (its approval's expiry) and it fires
-- at its due time, after restarts, exactly once across every instance.
-- A timer is armed for the state its run entered when it was asked for,
-- and disarmed when the run leaves that state. An instance claims due
-- timers under a lease (a fencing token, as for runs); firing flips the
-- timer to `fired` in the same transaction as the run's transition.
CREATE TABLE timers (
    id           BIGSERIAL PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (id),
    kind         TEXT NOT NULL,
    armed_in     TEXT NOT NULL,
    due_at       TEXT NOT NULL,
    due_ms       BIGINT NOT NULL,
    -- pending, fired or disarmed.
    status       TEXT NOT NULL,
    settled_at   TEXT,
    lease_owner  TEXT,
    lease_token  BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT
);
CREATE INDEX timers_pending_by_due ON timers (due_ms) WHERE status = 'pending';
CREATE INDEX timers_by_run ON timers (run_id);
