-- Signed webhooks are accepted once: the first use of a signature is
-- recorded here, and a second one is refused as a replay, whichever
-- instance it reaches. `signature` names the verifier and the signature's
-- decoded bytes (never the header's text, which can be re-encoded). A row
-- is needed only while its signature could still pass the timestamp
-- check: `expires_at` (unix seconds) says until when, and expired rows
-- are deleted through the index as new ones are recorded.
CREATE TABLE used_signatures (
    signature   TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX used_signatures_by_expiry ON used_signatures (expires_at);
