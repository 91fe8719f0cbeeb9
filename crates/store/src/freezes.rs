//! Freezes: issued and lifted with their audit records in one
//! transaction, and announced to every instance when it commits (on
//! PostgreSQL), so a freeze issued on one instance stops the runs another
//! drives without anyone polling for it.

use domain::{Freeze, FreezeScope, Lifted, OnRuns};
use jiff::Timestamp;

use crate::audit::{self, AuditEntry};
use crate::backend::{Announcement, Row, timestamp_from_ms};
use crate::{Error, Result, Store};

fn freeze_from_row(row: &Row) -> Result<Freeze> {
    let scope = FreezeScope::from_parts(&row.get::<String, _>("scope")?, row.get("pattern")?)
        .map_err(|error| Error::Corrupt(format!("freeze scope: {error}")))?;
    let on_runs = OnRuns::parse(&row.get::<String, _>("on_runs")?)
        .map_err(|error| Error::Corrupt(format!("freeze: {error}")))?;
    let expires_at = row
        .get::<Option<i64>, _>("expires_ms")?
        .map(|ms| timestamp_from_ms(ms, "freeze expiry"))
        .transpose()?;
    let lifted = match (
        row.get::<Option<i64>, _>("lifted_ms")?,
        row.get::<Option<String>, _>("lifted_by")?,
    ) {
        (Some(ms), Some(by)) => Some(Lifted {
            by,
            at: timestamp_from_ms(ms, "freeze lift time")?,
            reason: row.get("lift_reason")?,
        }),
        _ => None,
    };
    Ok(Freeze {
        id: row.get("id")?,
        scope,
        on_runs,
        reason: row.get("reason")?,
        issued_by: row.get("issued_by")?,
        issued_at: timestamp_from_ms(row.get("issued_ms")?, "freeze issue time")?,
        expires_at,
        lifted,
    })
}

/// The select of freezes, with `$tail` (a `WHERE`, an `ORDER BY`) after it.
macro_rules! select_freezes {
    ($tail:literal) => {
        concat!(
            "SELECT id, scope, pattern, on_runs, reason, issued_by, issued_ms, \
             expires_ms, lifted_ms, lifted_by, lift_reason FROM freezes ",
            $tail
        )
    };
}

impl Store {
    /// Stores a new freeze with its `freeze.issued` record, and announces it.
    pub async fn issue_freeze(&self, freeze: &Freeze, record: &AuditEntry) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.query(
            "INSERT INTO freezes (id, scope, pattern, on_runs, reason, issued_by, issued_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&freeze.id)
        .bind(freeze.scope.kind())
        .bind(freeze.scope.pattern())
        .bind(freeze.on_runs.as_str())
        .bind(&freeze.reason)
        .bind(&freeze.issued_by)
        .bind(freeze.issued_at.as_millisecond())
        .bind(freeze.expires_at.map(Timestamp::as_millisecond))
        .execute()
        .await?;
        audit::append(
            &mut tx,
            freeze.issued_at,
            None,
            None,
            std::slice::from_ref(record),
        )
        .await?;
        tx.announce(Announcement::FreezesChanged).await?;
        tx.commit().await?;
        self.audit_appended();
        Ok(())
    }

    /// Lifts the freeze `id` if it is still active at `now`, with its
    /// `freeze.lifted` record, and announces it. `None` when there is no
    /// such freeze, or it was already lifted or has expired.
    pub async fn lift_freeze(
        &self,
        id: &str,
        lifted: &Lifted,
        record: &AuditEntry,
    ) -> Result<Option<Freeze>> {
        let mut tx = self.begin_write().await?;
        let changed = tx
            .query(
                "UPDATE freezes SET lifted_ms = $1, lifted_by = $2, lift_reason = $3 \
                 WHERE id = $4 AND lifted_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $1)",
            )
            .bind(lifted.at.as_millisecond())
            .bind(&lifted.by)
            .bind(lifted.reason.as_deref())
            .bind(id)
            .execute()
            .await?;
        if changed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        audit::append(&mut tx, lifted.at, None, None, std::slice::from_ref(record)).await?;
        tx.announce(Announcement::FreezesChanged).await?;
        let row = tx
            .query(select_freezes!("WHERE id = $1"))
            .bind(id)
            .fetch_one()
            .await?;
        let freeze = freeze_from_row(&row)?;
        tx.commit().await?;
        self.audit_appended();
        Ok(Some(freeze))
    }

    /// The freezes active at `now` (neither lifted nor expired), oldest first.
    pub async fn active_freezes(&self, now: Timestamp) -> Result<Vec<Freeze>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(select_freezes!(
                "WHERE lifted_ms IS NULL AND (expires_ms IS NULL OR expires_ms > $1) \
                 ORDER BY issued_ms, id"
            ))
            .bind(now.as_millisecond())
            .fetch_all()
            .await?;
        rows.iter().map(freeze_from_row).collect()
    }

    /// The freeze `id`, active or not.
    pub async fn freeze(&self, id: &str) -> Result<Option<Freeze>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(select_freezes!("WHERE id = $1"))
            .bind(id)
            .fetch_optional()
            .await?;
        row.as_ref().map(freeze_from_row).transpose()
    }
}
