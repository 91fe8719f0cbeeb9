-- Freezes: the emergency stop an operator pulls. A freeze covers all
-- automation (`everything`), the runbooks whose id matches `pattern`
-- (`runbook`), runs acting on a matching target (`targets`), or what a
-- matching principal posts (`principal`). `on_runs` says what happens to
-- runs under way at their next step: `pause` or `cancel`. A freeze is
-- active until it is lifted (`lifted_ms`) or expires (`expires_ms`);
-- rows are kept afterwards, as the record of who stopped what and why.
-- Times are unix milliseconds, compared as numbers.
CREATE TABLE freezes (
    id           TEXT PRIMARY KEY,
    scope        TEXT NOT NULL,
    pattern      TEXT,
    on_runs      TEXT NOT NULL,
    reason       TEXT NOT NULL,
    issued_by    TEXT NOT NULL,
    issued_ms    BIGINT NOT NULL,
    expires_ms   BIGINT,
    lifted_ms    BIGINT,
    lifted_by    TEXT,
    lift_reason  TEXT
);
CREATE INDEX freezes_unlifted ON freezes (issued_ms) WHERE lifted_ms IS NULL;
