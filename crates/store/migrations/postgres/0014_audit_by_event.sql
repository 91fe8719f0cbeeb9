-- A run's audit trail is its own records and its event's (`WHERE run_id =
-- ? OR event_id = ?`): without an index on the event, every read of a run
-- scanned the whole audit table.
CREATE INDEX audit_by_event ON audit (event_id, seq);
