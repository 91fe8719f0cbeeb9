//! Shadow mode's reads: whether a subject was shadowed lately (so a
//! recurring alert is not shadowed every minute), the shadowed run a
//! ticket's resolution is recorded beside, and the shadowed runs with
//! what they would have done and what a person then did — the evidence a
//! team reads before it switches a runbook from shadow to live.
//!
//! A shadowed run is an ordinary run row, born finished in the state
//! `shadowed`, with its `run.shadowed` record; a person's resolution is a
//! `shadow.resolved` record on it. Nothing here needs a table of its own.

use jiff::Timestamp;
use serde_json::Value;

use crate::backend::timestamp_from_ms;
use crate::{Result, Store};

/// One shadowed run, as the shadow report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowedRun {
    pub run_id: String,
    pub runbook_id: String,
    pub subject: String,
    pub dedup_key: String,
    /// The event's fields (its ticket, when it names one).
    pub fields: Value,
    pub created_at: Timestamp,
    /// The `run.shadowed` record's detail: what it would have done.
    pub shadowed: Value,
    /// The `shadow.resolved` record's detail, once a person resolved it.
    pub resolved: Option<Value>,
}

impl Store {
    /// A shadowed run of `runbook_id` on `subject` whose event happened at
    /// or after `since` (event time), the newest, if any.
    pub async fn shadowed_recently(
        &self,
        runbook_id: &str,
        subject: &str,
        since: Timestamp,
    ) -> Result<Option<String>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT runs.id FROM runs JOIN events ON events.id = runs.event_id \
                 WHERE runs.runbook_id = $1 AND runs.event_ms >= $2 AND runs.state = 'shadowed' \
                 AND events.subject = $3 ORDER BY runs.event_ms DESC LIMIT 1",
            )
            .bind(runbook_id)
            .bind(since.as_millisecond())
            .bind(subject)
            .fetch_optional()
            .await?;
        row.map(|row| row.get("id")).transpose()
    }

    /// The dedup key's last run, when it is a shadowed run no person's
    /// resolution has been recorded beside yet: its id and runbook.
    pub async fn unresolved_shadowed_run(
        &self,
        dedup_key: &str,
    ) -> Result<Option<(String, String)>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT id, runbook_id, state FROM runs WHERE dedup_key = $1 \
                 ORDER BY created_ms DESC, id DESC LIMIT 1",
            )
            .bind(dedup_key)
            .fetch_optional()
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if row.get::<String, _>("state")? != domain::RunState::Shadowed.as_str() {
            return Ok(None);
        }
        let run_id: String = row.get("id")?;
        let resolved = reader
            .query("SELECT 1 FROM audit WHERE run_id = $1 AND kind = $2 LIMIT 1")
            .bind(&run_id)
            .bind(domain::RecordKind::ShadowResolved.as_str())
            .fetch_optional()
            .await?;
        resolved
            .is_none()
            .then(|| row.get("runbook_id").map(|runbook| (run_id, runbook)))
            .transpose()
    }

    /// Every run shadowed at or after `since`, oldest first, with what it
    /// would have done and, once a person resolved its ticket, what they did.
    pub async fn shadowed_runs(&self, since: Timestamp) -> Result<Vec<ShadowedRun>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT runs.id, runs.runbook_id, runs.dedup_key, runs.created_ms, \
                 events.subject, events.fields, shadowed.detail AS shadowed, resolved.detail AS resolved \
                 FROM runs JOIN events ON events.id = runs.event_id \
                 LEFT JOIN audit shadowed ON shadowed.run_id = runs.id AND shadowed.kind = $2 \
                 LEFT JOIN audit resolved ON resolved.run_id = runs.id AND resolved.kind = $3 \
                 WHERE runs.state = 'shadowed' AND runs.created_ms >= $1 \
                 ORDER BY runs.created_ms, runs.id",
            )
            .bind(since.as_millisecond())
            .bind(domain::RecordKind::RunShadowed.as_str())
            .bind(domain::RecordKind::ShadowResolved.as_str())
            .fetch_all()
            .await?;
        rows.iter()
            .map(|row| {
                let resolved: Option<String> = row.get("resolved")?;
                Ok(ShadowedRun {
                    run_id: row.get("id")?,
                    runbook_id: row.get("runbook_id")?,
                    subject: row.get("subject")?,
                    dedup_key: row.get("dedup_key")?,
                    fields: row.json("fields")?,
                    created_at: timestamp_from_ms(row.get("created_ms")?, "run creation time")?,
                    shadowed: match row.get::<Option<String>, _>("shadowed")? {
                        Some(text) => serde_json::from_str(&text)?,
                        None => Value::Null,
                    },
                    resolved: resolved
                        .map(|text| serde_json::from_str(&text))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// How many events each runbook in shadow mode held off since `since`
    /// (its subject was shadowed within its `shadow_hold`), by runbook.
    pub async fn shadow_held_events(
        &self,
        since: Timestamp,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT audit.detail FROM events JOIN audit ON audit.event_id = events.id \
                 WHERE events.disposition = 'shadow_held' AND events.received_ms >= $1 \
                 AND audit.kind = $2",
            )
            .bind(since.as_millisecond())
            .bind(domain::RecordKind::EventSuppressed.as_str())
            .fetch_all()
            .await?;
        let mut held = std::collections::BTreeMap::new();
        for row in &rows {
            let detail: Value = row.json("detail")?;
            if let Some(runbook) = detail["runbook"].as_str() {
                *held.entry(runbook.to_owned()).or_default() += 1;
            }
        }
        Ok(held)
    }
}
