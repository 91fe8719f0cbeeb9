-- Write-backs: a run tells the systems people follow it in (the ticket it
-- came from, a chat channel) what happens, in order, once each; one row per
-- run and system. The run's audit records are the queue: a
-- write-back keeps a cursor (the last audit sequence number it wrote
-- back), and an instance claims the run's write-back under a lease (a
-- fencing token, as for runs and timers) to write what lies beyond it.
-- A system that is down only delays the cursor; nothing is lost.
CREATE TABLE writebacks (
    run_id          TEXT NOT NULL REFERENCES runs (id),
    -- The system (`servicenow`, `slack`, `teams`) and where in it: the
    -- ticket's number, the channel.
    system          TEXT NOT NULL,
    destination     TEXT NOT NULL,
    cursor_seq      BIGINT NOT NULL DEFAULT 0,
    -- The end of the batch being written: set before the system is
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
    lease_expires_ms BIGINT,
    PRIMARY KEY (run_id, system)
);
CREATE INDEX writebacks_open ON writebacks (next_attempt_ms) WHERE NOT done;
