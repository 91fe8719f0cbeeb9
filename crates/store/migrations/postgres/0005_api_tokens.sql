-- API tokens: a principal's name and role, and the SHA-256 of the token's
-- secret part (the token itself is shown once, at creation, and never stored).
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    principal      TEXT NOT NULL,
    role           TEXT NOT NULL,
    secret_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    revoked_at     TEXT
);
-- Who posted an event (`source:alertmanager`, `user:alice`, `agent:triage`):
-- a requester may not approve the run their event started.
ALTER TABLE events ADD COLUMN requester TEXT;
