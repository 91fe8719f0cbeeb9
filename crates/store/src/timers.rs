//! Durable timers: what a run waits for besides a call (an approval's
//! expiry, a verification deadline, a retry's backoff, the end of a
//! time-bound term).
//!
//! A timer is armed for the run state that asked for it and disarmed by
//! the commit that leaves that state, so a timer that fires always finds
//! its run where it was. Due timers are claimed under a lease with a
//! fencing token, as runs are, and fired in the transaction that commits
//! the run's answer: once, whichever instance fires it.

use jiff::Timestamp;
use serde::Serialize;

use crate::backend::{Announcement, Row, WriteTransaction, timestamp_from_ms};
use crate::runs::{Lease, write_transition};
use crate::{Error, Result, Store};

/// A durable timer as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerRow {
    pub id: i64,
    pub run_id: String,
    pub kind: engine::TimerKind,
    /// The run state it was armed for.
    pub armed_in: domain::RunState,
    pub due_at: Timestamp,
    /// `pending`, `fired` or `disarmed`.
    pub status: String,
    pub settled_at: Option<String>,
}

/// A due timer this instance claimed: only the holder of `lease` may fire it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTimer {
    pub id: i64,
    pub run_id: String,
    pub kind: engine::TimerKind,
    pub lease: Lease,
}

/// What [`Store::fire_timer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerFiring {
    /// The timer fired, and the run's transition was committed with it.
    Fired,
    /// The timer no longer applies (its run left the state it was armed
    /// for); it is disarmed, and the run is unchanged.
    Disarmed,
    /// The run settled the timer before it could fire (an approval disarmed
    /// the expiry in the meantime): nothing to do.
    AlreadySettled,
}

fn timer_kind(text: &str) -> Result<engine::TimerKind> {
    engine::TimerKind::parse(text)
        .ok_or_else(|| Error::Corrupt(format!("unknown timer kind `{text}`")))
}

impl TimerRow {
    fn from_row(row: &Row) -> Result<TimerRow> {
        Ok(TimerRow {
            id: row.get("id")?,
            run_id: row.get("run_id")?,
            kind: timer_kind(&row.get::<String, _>("kind")?)?,
            armed_in: domain::RunState::parse(&row.get::<String, _>("armed_in")?)?,
            due_at: row.timestamp("due_at")?,
            status: row.get("status")?,
            settled_at: row.get("settled_at")?,
        })
    }
}

/// Stores the timers a run asked for on entering `armed_in`, and tells the
/// instances' timer loops that the next due time may have moved.
pub(crate) async fn schedule(
    tx: &mut WriteTransaction,
    run_id: &str,
    armed_in: domain::RunState,
    timers: &[engine::Timer],
) -> Result<()> {
    for timer in timers {
        tx.query(
            "INSERT INTO timers (run_id, kind, armed_in, due_at, due_ms, status) \
             VALUES ($1, $2, $3, $4, $5, 'pending')",
        )
        .bind(run_id)
        .bind(timer.kind.as_str())
        .bind(armed_in.as_str())
        .bind(timer.due.to_string())
        .bind(timer.due.as_millisecond())
        .execute()
        .await?;
    }
    if !timers.is_empty() {
        tx.announce(Announcement::TimerScheduled { run_id }).await?;
    }
    Ok(())
}

/// Disarms the run's pending timers armed for another state than `state`,
/// the one it is now in: they no longer apply.
pub(crate) async fn disarm_all_but(
    tx: &mut WriteTransaction,
    run_id: &str,
    state: domain::RunState,
    now: &str,
) -> Result<()> {
    tx.query(
        "UPDATE timers SET status = 'disarmed', settled_at = $1, lease_owner = NULL, lease_expires_ms = NULL \
         WHERE run_id = $2 AND status = 'pending' AND armed_in <> $3",
    )
    .bind(now)
    .bind(run_id)
    .bind(state.as_str())
    .execute()
    .await?;
    Ok(())
}

/// The claim of due timers, with `$lock` after the inner SELECT.
macro_rules! claim_due_timers {
    ($lock:literal) => {
        concat!(
            "UPDATE timers SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due_ms <= $3 \
             AND (lease_owner IS NULL OR lease_expires_ms < $3) ORDER BY due_ms, id LIMIT $4",
            $lock,
            ") RETURNING id, run_id, kind, lease_token"
        )
    };
}

impl Store {
    /// Claims up to `limit` timers due at `now` that nobody holds, for
    /// `owner` until `now + ttl_ms`, earliest first. Each claim bumps the
    /// timer's fencing token; concurrent claimers never get the same timer
    /// (on PostgreSQL they pass over rows another is claiming).
    pub async fn claim_due_timers(
        &self,
        owner: &str,
        now: Timestamp,
        ttl_ms: i64,
        limit: u32,
    ) -> Result<Vec<ClaimedTimer>> {
        let now_ms = now.as_millisecond();
        let expires_ms = now_ms + ttl_ms;
        let mut tx = self.begin_write().await?;
        let rows = tx
            .query_per_backend(
                claim_due_timers!(""),
                claim_due_timers!(" FOR UPDATE SKIP LOCKED"),
            )
            .bind(owner)
            .bind(expires_ms)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all()
            .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                Ok(ClaimedTimer {
                    id: row.get("id")?,
                    run_id: row.get("run_id")?,
                    kind: timer_kind(&row.get::<String, _>("kind")?)?,
                    lease: Lease {
                        owner: owner.to_owned(),
                        token: row.get("lease_token")?,
                        expires_ms,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|timer| timer.id);
        Ok(claimed)
    }

    /// Fires a claimed timer: marks it fired and commits `transition` (the
    /// run's answer to it, read at `run_revision`) in one transaction, so
    /// it fires exactly once. With no transition (the run cannot take the
    /// timer any more) the timer is disarmed instead. Refused with
    /// [`Error::Fenced`] when another instance claimed the timer since;
    /// [`Error::Conflict`] when the run changed since `run_revision`.
    pub async fn fire_timer(
        &self,
        timer: &ClaimedTimer,
        run_revision: i64,
        transition: Option<&engine::Transition>,
        actor: &str,
        now: Timestamp,
    ) -> Result<TimerFiring> {
        let mut tx = self.begin_write().await?;
        let status = if transition.is_some() {
            "fired"
        } else {
            "disarmed"
        };
        let settled = tx
            .query(
                "UPDATE timers SET status = $1, settled_at = $2, lease_owner = NULL, lease_expires_ms = NULL \
                 WHERE id = $3 AND status = 'pending' AND lease_owner = $4 AND lease_token = $5",
            )
            .bind(status)
            .bind(now.to_string())
            .bind(timer.id)
            .bind(&timer.lease.owner)
            .bind(timer.lease.token)
            .execute()
            .await?;
        if settled != 1 {
            let current: String = tx
                .query("SELECT status FROM timers WHERE id = $1")
                .bind(timer.id)
                .fetch_one()
                .await?
                .get("status")?;
            if current != "pending" {
                return Ok(TimerFiring::AlreadySettled);
            }
            return Err(Error::Fenced {
                run_id: timer.run_id.clone(),
            });
        }
        let firing = match transition {
            Some(transition) => {
                write_transition(
                    &mut tx,
                    &timer.run_id,
                    run_revision,
                    None,
                    transition,
                    actor,
                    now,
                )
                .await?;
                TimerFiring::Fired
            }
            None => TimerFiring::Disarmed,
        };
        tx.commit().await?;
        self.audit_appended();
        Ok(firing)
    }

    /// When the timer loop should next look: the earliest due time of a
    /// pending timer, or of its claim's expiry when another instance holds it.
    pub async fn next_timer_check(&self) -> Result<Option<Timestamp>> {
        let mut reader = self.read().await?;
        let next: Option<i64> = reader
            .query(
                "SELECT MIN(CASE WHEN lease_expires_ms IS NOT NULL AND lease_expires_ms > due_ms \
                 THEN lease_expires_ms ELSE due_ms END) FROM timers WHERE status = 'pending'",
            )
            .fetch_one()
            .await?
            .get(0)?;
        next.map(|ms| timestamp_from_ms(ms, "timer due time"))
            .transpose()
    }

    /// A run's timers, in the order they were asked for.
    pub async fn timers(&self, run_id: &str) -> Result<Vec<TimerRow>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT id, run_id, kind, armed_in, due_at, status, settled_at \
                 FROM timers WHERE run_id = $1 ORDER BY id",
            )
            .bind(run_id)
            .fetch_all()
            .await?;
        rows.iter().map(TimerRow::from_row).collect()
    }
}
