-- Ticket write-backs: a run started from a ticket tells the ticket what
-- happens, in order, once each. The run's audit records are the queue: a
-- write-back keeps a cursor (the last audit sequence number it wrote
-- back), and an instance claims the run's write-back under a lease (a
-- fencing token, as for runs and timers) to write what lies beyond it.
-- The ticket system being down only delays the cursor; nothing is lost.
CREATE TABLE writebacks (
    run_id          TEXT PRIMARY KEY REFERENCES runs (id),
    -- The ticket system (`servicenow`) and the ticket in it.
    system          TEXT NOT NULL,
    ticket          TEXT NOT NULL,
    cursor_seq      BIGINT NOT NULL DEFAULT 0,
    -- The end of the batch being written: set before the ticket system is
    -- called, so that a retry after a crash writes the same batch and can
    -- find it already there (each note carries a marker).
    pending_to_seq  BIGINT,
    -- Set once the run has finished and every record is written back.
    done            BOOLEAN NOT NULL DEFAULT FALSE,
    next_attempt_ms BIGINT NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_token     BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms BIGINT
);
CREATE INDEX writebacks_open ON writebacks (next_attempt_ms) WHERE NOT done;
