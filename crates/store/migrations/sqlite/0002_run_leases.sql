-- Leases: the instance driving a run holds its lease, renews it by
-- heartbeat, and loses it when it stops renewing. Every claim bumps the
-- fencing token; a write made under an older token is refused.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN lease_expires_ms INTEGER;
