-- Event time: when an event happened (an alert's startsAt, a ticket's
-- update time), bounded by when it was received. Recurrences, cooldowns,
-- rate limits and the global limit count in it, so a backlog flushed after
-- an outage, or a replay, is judged over the time it happened in.
--
-- An event's time, and the time of the event a run was started by; rows
-- stored before this migration happened when they were received.
ALTER TABLE events ADD COLUMN occurred_ms BIGINT;
UPDATE events SET occurred_ms = received_ms;
ALTER TABLE runs ADD COLUMN event_ms BIGINT;
UPDATE runs SET event_ms = created_ms;
-- What the windows count: a runbook's runs, every run, a recurrence key's
-- events, each by event time.
CREATE INDEX runs_by_runbook_and_event_time ON runs (runbook_id, event_ms);
CREATE INDEX runs_by_event_time ON runs (event_ms);
-- A shadowed run that would have acted (run, or asked for approval)
-- counts against the windows of the shadowed runs after it, as it would
-- have if it had run; never against a run that acts.
ALTER TABLE runs ADD COLUMN shadow_acts BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX events_by_recurrence_and_time ON events (recurrence_key, occurred_ms) WHERE recurrence_key IS NOT NULL;
