//! Rows → domain types, shared by both backends.
//!
//! Generic over the database so that SQLite and PostgreSQL decode a row the
//! same way: every column is read as text or a 64-bit integer, which both
//! backends store identically.

use domain::{Event, EventStatus, RunState};
use jiff::Timestamp;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use crate::audit::AuditRow;
use crate::model::{EventRow, RunRow, TimerRow};
use crate::{Error, Result};

/// The row types whose columns decode as `String`, `i64` and their options.
pub(crate) trait StoreRow: Row
where
    for<'r> &'r str: ColumnIndex<Self>,
{
    fn text(&self, column: &str) -> Result<String>;
    fn optional_text(&self, column: &str) -> Result<Option<String>>;
    fn integer(&self, column: &str) -> Result<i64>;
}

impl<R> StoreRow for R
where
    R: Row,
    for<'r> &'r str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    fn text(&self, column: &str) -> Result<String> {
        Ok(self.try_get(column)?)
    }

    fn optional_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.try_get(column)?)
    }

    fn integer(&self, column: &str) -> Result<i64> {
        Ok(self.try_get(column)?)
    }
}

fn timestamp<R: StoreRow>(row: &R, column: &str) -> Result<Timestamp>
where
    for<'r> &'r str: ColumnIndex<R>,
{
    row.text(column)?
        .parse()
        .map_err(|error| Error::Corrupt(format!("column {column}: {error}")))
}

pub(crate) fn run_row<R: StoreRow>(row: &R) -> Result<RunRow>
where
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(RunRow {
        id: row.text("id")?,
        event_id: row.text("event_id")?,
        dedup_key: row.text("dedup_key")?,
        state: RunState::parse(&row.text("state")?)?,
        plan: serde_json::from_str(&row.text("plan")?)?,
        decision: serde_json::from_str(&row.text("decision")?)?,
        machine: serde_json::from_str(&row.text("machine")?)?,
        reason: row.optional_text("reason")?,
        revision: row.integer("revision")?,
        created_at: timestamp(row, "created_at")?,
        updated_at: timestamp(row, "updated_at")?,
    })
}

pub(crate) fn event_row<R: StoreRow>(row: &R) -> Result<EventRow>
where
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(EventRow {
        event: Event {
            id: row.text("id")?,
            source: row.text("source")?,
            kind: row.text("kind")?,
            dedup_key: row.text("dedup_key")?,
            subject: row.text("subject")?,
            fields: serde_json::from_str(&row.text("fields")?)?,
            status: EventStatus::parse(&row.text("status")?)?,
            received_at: timestamp(row, "received_at")?,
        },
        disposition: row.text("disposition")?,
        detail: row.optional_text("detail")?,
        run_id: row.optional_text("run_id")?,
        requester: row.optional_text("requester")?,
    })
}

pub(crate) fn audit_row<R: StoreRow>(row: &R) -> Result<AuditRow>
where
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(AuditRow {
        seq: row.integer("seq")?,
        recorded_at: row.text("recorded_at")?,
        run_id: row.optional_text("run_id")?,
        event_id: row.optional_text("event_id")?,
        kind: row.text("kind")?,
        actor: row.text("actor")?,
        detail: serde_json::from_str(&row.text("detail")?)?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

pub(crate) fn timer_row<R: StoreRow>(row: &R) -> Result<TimerRow>
where
    for<'r> &'r str: ColumnIndex<R>,
{
    Ok(TimerRow {
        id: row.integer("id")?,
        run_id: row.text("run_id")?,
        kind: timer_kind(&row.text("kind")?)?,
        armed_in: RunState::parse(&row.text("armed_in")?)?,
        due_at: timestamp(row, "due_at")?,
        status: row.text("status")?,
        settled_at: row.optional_text("settled_at")?,
    })
}

pub(crate) fn timer_kind(text: &str) -> Result<engine::TimerKind> {
    engine::TimerKind::parse(text)
        .ok_or_else(|| Error::Corrupt(format!("unknown timer kind `{text}`")))
}
