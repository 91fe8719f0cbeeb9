-- The foundation schema (PostgreSQL): events, runs, their attempts, and the
-- audit chain. Column for column the same as the SQLite schema.

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    dedup_key    TEXT NOT NULL,
    subject      TEXT NOT NULL,
    fields       TEXT NOT NULL,
    status       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    -- Milliseconds since the epoch, for time-window queries.
    received_ms  BIGINT NOT NULL,
    -- The matching runbook's recurrence key (runbook id + key fields), when
    -- the runbook only acts on recurring events.
    recurrence_key TEXT,
    -- What intake did with it: started_run, duplicate, no_match, inactive,
    -- plan_failed, below_recurrence.
    disposition  TEXT NOT NULL,
    detail       TEXT,
    run_id       TEXT
);
CREATE INDEX events_by_dedup_key ON events (dedup_key);
CREATE INDEX events_by_recurrence ON events (recurrence_key, received_ms) WHERE recurrence_key IS NOT NULL;

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    event_id         TEXT NOT NULL REFERENCES events (id),
    dedup_key        TEXT NOT NULL,
    runbook_id       TEXT NOT NULL,
    runbook_version  TEXT NOT NULL,
    state            TEXT NOT NULL,
    is_open          BOOLEAN NOT NULL,
    plan             TEXT NOT NULL,
    decision         TEXT NOT NULL,
    machine          TEXT NOT NULL,
    reason           TEXT,
    -- Bumped by every committed transition: a writer that read an older
    -- revision loses (optimistic concurrency).
    revision         BIGINT NOT NULL,
    created_at       TEXT NOT NULL,
    -- Milliseconds since the epoch: listings sort on this, not on text.
    created_ms       BIGINT NOT NULL,
    updated_at       TEXT NOT NULL
);
-- The database, not luck, guarantees one open run per dedup key.
CREATE UNIQUE INDEX runs_one_open_per_dedup_key ON runs (dedup_key) WHERE is_open;
CREATE INDEX runs_by_open ON runs (is_open);

CREATE TABLE attempts (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    seq          BIGINT NOT NULL,
    phase        TEXT NOT NULL,
    step_id      TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    action       TEXT NOT NULL,
    request      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    outcome      TEXT,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE audit (
    seq          BIGINT PRIMARY KEY,
    recorded_at  TEXT NOT NULL,
    run_id       TEXT,
    event_id     TEXT,
    kind         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    detail       TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_by_run ON audit (run_id, seq);
