-- Signed approval links are single-use: a link's nonce is recorded the
-- first time it is used, and a second use is refused.
CREATE TABLE approval_links_used (
    nonce    TEXT PRIMARY KEY,
    run_id   TEXT NOT NULL,
    used_at  TEXT NOT NULL
);
