//! Write-backs: the systems a run tells what happens (its ticket, a chat
//! channel), each with a cursor over the run's audit records.
//!
//! A write-back is claimed under a lease with a fencing token, as a run
//! is; every later write (a batch begun, finished, failed) carries the
//! token, so an instance that lost the claim can change nothing. A batch
//! is recorded as begun before the system is called, so whoever picks the
//! write-back up after a crash knows a note may already be there.

use jiff::Timestamp;

use crate::backend::{Query, WriteTransaction};
use crate::runs::Lease;
use crate::{Error, Result, Store};

/// A system a run tells what happens (`servicenow`, `slack`, `teams`) and
/// where in it (the ticket's number, the channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWriteback {
    pub system: String,
    pub destination: String,
}

/// A run's write-back, claimed under a lease: the run's audit records after
/// `cursor_seq` are still to be written. `pending_to_seq` is set when a
/// batch was begun and may already be in the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedWriteback {
    pub run_id: String,
    pub system: String,
    pub destination: String,
    pub cursor_seq: i64,
    pub pending_to_seq: Option<i64>,
    /// Failed attempts since the last success (for the backoff).
    pub failures: i64,
    pub lease: Lease,
}

/// A run's write-back as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WritebackRow {
    pub system: String,
    pub destination: String,
    /// The last audit record written back.
    pub cursor_seq: i64,
    pub done: bool,
    /// Failed attempts since the last success.
    pub failures: i64,
    pub last_error: Option<String>,
}

/// Stores a new run's write-backs, due at once.
pub(crate) async fn insert(
    tx: &mut WriteTransaction,
    run_id: &str,
    writebacks: &[NewWriteback],
    now: Timestamp,
) -> Result<()> {
    for writeback in writebacks {
        tx.query(
            "INSERT INTO writebacks (run_id, system, destination, next_attempt_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(run_id)
        .bind(&writeback.system)
        .bind(&writeback.destination)
        .bind(now.as_millisecond())
        .execute()
        .await?;
    }
    Ok(())
}

/// The claim of write-backs with records to write, with `$lock` after the
/// inner SELECT.
macro_rules! claim_writebacks {
    ($lock:literal) => {
        concat!(
            "UPDATE writebacks SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE (run_id, system, destination) IN (SELECT w.run_id, w.system, w.destination FROM writebacks w \
             WHERE w.done = FALSE AND w.next_attempt_ms <= $3 \
             AND (w.lease_owner IS NULL OR w.lease_expires_ms < $3) \
             AND EXISTS (SELECT 1 FROM audit a WHERE a.run_id = w.run_id AND a.seq > w.cursor_seq) \
             ORDER BY w.next_attempt_ms LIMIT $4",
            $lock,
            ") RETURNING run_id, system, destination, cursor_seq, pending_to_seq, failures, lease_token"
        )
    };
}

impl Store {
    /// Claims up to `limit` write-backs that have audit records beyond their
    /// cursor, are due (not backing off), and that nobody holds, for `owner`
    /// until `now + ttl_ms`. Each claim bumps the fencing token.
    pub async fn claim_writebacks(
        &self,
        owner: &str,
        now: Timestamp,
        ttl_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedWriteback>> {
        let now_ms = now.as_millisecond();
        let expires_ms = now_ms + ttl_ms;
        let mut tx = self.begin_write().await?;
        let rows = tx
            .query_per_backend(
                claim_writebacks!(""),
                claim_writebacks!(" FOR UPDATE SKIP LOCKED"),
            )
            .bind(owner)
            .bind(expires_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all()
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(ClaimedWriteback {
                    run_id: row.get("run_id")?,
                    system: row.get("system")?,
                    destination: row.get("destination")?,
                    cursor_seq: row.get("cursor_seq")?,
                    pending_to_seq: row.get("pending_to_seq")?,
                    failures: i64::from(row.get::<i32, _>("failures")?),
                    lease: Lease {
                        owner: owner.to_owned(),
                        token: row.get("lease_token")?,
                        expires_ms,
                    },
                })
            })
            .collect()
    }

    /// Records that the batch up to `to_seq` is about to be written, before
    /// the system is called. Fenced by the claim's token.
    pub async fn begin_writeback_batch(
        &self,
        claimed: &ClaimedWriteback,
        to_seq: i64,
    ) -> Result<()> {
        self.update_claimed_writeback(
            claimed,
            "UPDATE writebacks SET pending_to_seq = $1 \
             WHERE run_id = $2 AND system = $3 AND destination = $4 AND lease_owner = $5 AND lease_token = $6",
            |query| query.bind(to_seq),
        )
        .await
    }

    /// The batch up to `to_seq` is written: moves the cursor, clears
    /// the failures, marks the write-back `done` when asked, and gives the
    /// claim back. Fenced by the claim's token.
    pub async fn finish_writeback_batch(
        &self,
        claimed: &ClaimedWriteback,
        to_seq: i64,
        done: bool,
    ) -> Result<()> {
        self.update_claimed_writeback(
            claimed,
            "UPDATE writebacks SET cursor_seq = $1, pending_to_seq = NULL, done = $2, failures = 0, \
             last_error = NULL, lease_owner = NULL, lease_expires_ms = NULL \
             WHERE run_id = $3 AND system = $4 AND destination = $5 AND lease_owner = $6 AND lease_token = $7",
            |query| query.bind(to_seq).bind(done),
        )
        .await
    }

    /// Writing failed: counts it, keeps `error`, waits until `retry_at`, and
    /// gives the claim back. Fenced by the claim's token.
    pub async fn fail_writeback(
        &self,
        claimed: &ClaimedWriteback,
        error: &str,
        retry_at: Timestamp,
    ) -> Result<()> {
        self.update_claimed_writeback(
            claimed,
            "UPDATE writebacks SET failures = failures + 1, last_error = $1, next_attempt_ms = $2, \
             lease_owner = NULL, lease_expires_ms = NULL \
             WHERE run_id = $3 AND system = $4 AND destination = $5 AND lease_owner = $6 AND lease_token = $7",
            |query| query.bind(error).bind(retry_at.as_millisecond()),
        )
        .await
    }

    /// Runs `statement`, an UPDATE of one write-back ending in
    /// `WHERE run_id = $n AND system = $n+1 AND destination = $n+2 AND lease_owner = $n+3 AND
    /// lease_token = $n+4`,
    /// with `bind`'s values then the claim's; refused as [`Error::Fenced`]
    /// when the claim is no longer held.
    async fn update_claimed_writeback(
        &self,
        claimed: &ClaimedWriteback,
        statement: &'static str,
        bind: impl for<'c> FnOnce(Query<'c>) -> Query<'c>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = bind(tx.query(statement))
            .bind(&claimed.run_id)
            .bind(&claimed.system)
            .bind(&claimed.destination)
            .bind(&claimed.lease.owner)
            .bind(claimed.lease.token)
            .execute()
            .await?;
        if updated != 1 {
            return Err(Error::Fenced {
                run_id: claimed.run_id.clone(),
            });
        }
        tx.commit().await
    }

    /// A run's write-backs: one per system, and one more per ticket linked
    /// to the run.
    pub async fn writebacks(&self, run_id: &str) -> Result<Vec<WritebackRow>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT system, destination, cursor_seq, done, failures, last_error \
                 FROM writebacks WHERE run_id = $1 ORDER BY system, destination",
            )
            .bind(run_id)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WritebackRow {
                    system: row.get("system")?,
                    destination: row.get("destination")?,
                    cursor_seq: row.get("cursor_seq")?,
                    done: row.get("done")?,
                    failures: i64::from(row.get::<i32, _>("failures")?),
                    last_error: row.get("last_error")?,
                })
            })
            .collect()
    }
}
