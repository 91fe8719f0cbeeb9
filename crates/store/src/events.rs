//! Events and their intake: the one transaction that stores an event, the
//! audit records about it and, when intake decided so, the run it starts.
//!
//! The database, not a check-then-act in code, keeps one open run per
//! dedup key: a unique partial index on `runs`. Intake looks for an open
//! run first and stores the event as a duplicate of it; when two intakes
//! race past that look (instances sharing PostgreSQL), the index refuses
//! the loser's run, and its intake runs once more and becomes a duplicate.
//!
//! A run whose decision counts other runs (a cooldown, a rate limit, a
//! concurrency cap, the global limit) is decided inside the transaction,
//! on counts read under the admission lock (`admission.rs`): the caller
//! hands over what to count and a pure function from the counts to the run.

use domain::Event;
use jiff::Timestamp;
use serde::Serialize;

use crate::admission::{self, Counting, Counts};
use crate::audit::{self, AuditEntry};
use crate::backend::{Row, WriteTransaction};
use crate::runs::{self, NewRun};
use crate::{Error, Result, Store};

/// What intake did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    StartedRun,
    /// A run was made for the event and denied at once: it is stored, with
    /// the reasons, and never acts.
    DeniedRun,
    Duplicate,
    NoMatch,
    Inactive,
    PlanFailed,
    /// The runbook acts only on recurring events, and this one has not
    /// recurred often enough yet.
    BelowRecurrence,
    /// An operator's freeze covers the run the event would start: the
    /// event is stored, and nothing runs.
    Frozen,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::StartedRun => "started_run",
            Disposition::DeniedRun => "denied_run",
            Disposition::Duplicate => "duplicate",
            Disposition::NoMatch => "no_match",
            Disposition::Inactive => "inactive",
            Disposition::PlanFailed => "plan_failed",
            Disposition::BelowRecurrence => "below_recurrence",
            Disposition::Frozen => "frozen",
        }
    }
}

/// One event's intake, stored atomically.
#[derive(Debug, Clone)]
pub struct Intake {
    pub event: Event,
    pub disposition: Disposition,
    pub detail: Option<String>,
    /// Counted by [`Store::count_recurrences`] when set.
    pub recurrence_key: Option<String>,
    /// Who posted the event, as an actor (`source:alertmanager`, `user:alice`).
    pub requester: Option<String>,
    pub run: Option<NewRun>,
    /// Audit records about the event itself (received, no match, ...).
    pub records: Vec<AuditEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IntakeOutcome {
    Stored,
    /// Another open run already handles this dedup key; the event was stored
    /// as a duplicate pointing at it, and no run was created.
    Duplicate {
        existing_run_id: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    #[serde(flatten)]
    pub event: Event,
    pub disposition: String,
    pub detail: Option<String>,
    pub run_id: Option<String>,
    /// Who posted it, as an actor (`source:alertmanager`, `user:alice`).
    pub requester: Option<String>,
}

impl EventRow {
    fn from_row(row: &Row) -> Result<EventRow> {
        Ok(EventRow {
            event: Event {
                id: row.get("id")?,
                source: row.get("source")?,
                kind: row.get("kind")?,
                dedup_key: row.get("dedup_key")?,
                subject: row.get("subject")?,
                fields: row.json("fields")?,
                status: domain::EventStatus::parse(&row.get::<String, _>("status")?)?,
                received_at: row.timestamp("received_at")?,
            },
            disposition: row.get("disposition")?,
            detail: row.get("detail")?,
            run_id: row.get("run_id")?,
            requester: row.get("requester")?,
        })
    }
}

/// What intake records about an event besides the event itself.
struct EventInsert<'a> {
    requester: Option<&'a str>,
    disposition: Disposition,
    detail: Option<&'a str>,
    run_id: Option<&'a str>,
    recurrence_key: Option<&'a str>,
}

async fn insert_event(
    tx: &mut WriteTransaction,
    event: &Event,
    row: EventInsert<'_>,
) -> Result<()> {
    tx.query(
        "INSERT INTO events (id, source, kind, dedup_key, subject, fields, status, received_at, received_ms, \
         recurrence_key, disposition, detail, run_id, requester) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&event.id)
    .bind(&event.source)
    .bind(&event.kind)
    .bind(&event.dedup_key)
    .bind(&event.subject)
    .bind(serde_json::to_string(&event.fields)?)
    .bind(event.status.as_str())
    .bind(event.received_at.to_string())
    .bind(event.received_at.as_millisecond())
    .bind(row.recurrence_key)
    .bind(row.disposition.as_str())
    .bind(row.detail)
    .bind(row.run_id)
    .bind(row.requester)
    .execute()
    .await?;
    Ok(())
}

/// Whether `error` is a violation of the named constraint.
fn violates(error: &sqlx::Error, constraint: &str) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.constraint())
        == Some(constraint)
}

/// A run decided on the counts read in its intake's transaction, with
/// what the event's row says of it.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub disposition: Disposition,
    pub detail: String,
    pub run: NewRun,
}

/// Decides a run on the counts read under the admission lock. Called in
/// the transaction, so it must be quick and touch nothing (the gate is a
/// pure function); it may be called twice when the intake is retried.
pub type Admit<'a> = &'a (dyn Fn(&Counts) -> Admitted + Sync);

impl Store {
    /// Stores an event and, when intake decided so, the run it starts — in
    /// one transaction. When another open run already owns the dedup key,
    /// the run is not created and the event is stored as a duplicate.
    pub async fn intake(&self, intake: Intake, now: Timestamp) -> Result<IntakeOutcome> {
        let (outcome, _) = self.retried_intake(&intake, None, now).await?;
        Ok(outcome)
    }

    /// [`Store::intake`] of an event whose run is decided on other runs:
    /// `counting` is counted in the transaction, under the admission lock
    /// (`admission.rs`), and the run stored is the one `admit` makes of
    /// the counts (`intake.run` is not used). Returns the run admitted (or
    /// denied), unless the event was a duplicate.
    pub async fn intake_counted(
        &self,
        intake: Intake,
        counting: &Counting,
        admit: Admit<'_>,
        now: Timestamp,
    ) -> Result<(IntakeOutcome, Option<Admitted>)> {
        self.retried_intake(&intake, Some((counting, admit)), now)
            .await
    }

    async fn retried_intake(
        &self,
        intake: &Intake,
        counted: Option<(&Counting, Admit<'_>)>,
        now: Timestamp,
    ) -> Result<(IntakeOutcome, Option<Admitted>)> {
        match self.try_intake(intake, counted, now).await {
            // Another writer opened a run for this dedup key between our
            // check and our insert; the unique index refused ours. Once
            // more: now the check finds that run, and the event is a duplicate.
            Err(Error::Database(error)) if violates(&error, "runs_one_open_per_dedup_key") => {
                self.try_intake(intake, counted, now).await
            }
            other => other,
        }
    }

    async fn try_intake(
        &self,
        intake: &Intake,
        counted: Option<(&Counting, Admit<'_>)>,
        now: Timestamp,
    ) -> Result<(IntakeOutcome, Option<Admitted>)> {
        let mut tx = self.begin_write().await?;
        if counted.is_some() {
            tx.lock_admissions().await?;
        }
        if (intake.run.is_some() || counted.is_some())
            && let Some(existing_run_id) =
                runs::open_run_for(&mut tx, &intake.event.dedup_key).await?
        {
            let detail = format!("run {existing_run_id} is already open for this dedup key");
            let row = EventInsert {
                requester: intake.requester.as_deref(),
                disposition: Disposition::Duplicate,
                detail: Some(&detail),
                run_id: Some(&existing_run_id),
                recurrence_key: intake.recurrence_key.as_deref(),
            };
            insert_event(&mut tx, &intake.event, row).await?;
            let mut records = intake.records.clone();
            records.push(AuditEntry::new(
                domain::RecordKind::EventDuplicate,
                "opsgate",
                serde_json::json!({"dedup_key": intake.event.dedup_key, "existing_run": existing_run_id}),
            ));
            audit::append(&mut tx, now, None, Some(&intake.event.id), &records).await?;
            tx.commit().await?;
            self.audit_appended();
            return Ok((IntakeOutcome::Duplicate { existing_run_id }, None));
        }
        let admitted = match counted {
            None => None,
            Some((counting, admit)) => {
                let counts = admission::count(&mut tx, counting).await?;
                Some(admit(&counts))
            }
        };
        let (disposition, detail, run) = match &admitted {
            Some(admitted) => (
                admitted.disposition,
                Some(admitted.detail.as_str()),
                Some(&admitted.run),
            ),
            None => (
                intake.disposition,
                intake.detail.as_deref(),
                intake.run.as_ref(),
            ),
        };
        let row = EventInsert {
            requester: intake.requester.as_deref(),
            disposition,
            detail,
            run_id: run.map(|run| run.id.as_str()),
            recurrence_key: intake.recurrence_key.as_deref(),
        };
        insert_event(&mut tx, &intake.event, row).await?;
        audit::append(&mut tx, now, None, Some(&intake.event.id), &intake.records).await?;
        if let Some(run) = run {
            runs::insert(&mut tx, run, &intake.event.id, &intake.event.dedup_key, now).await?;
        }
        tx.commit().await?;
        self.audit_appended();
        Ok((IntakeOutcome::Stored, admitted))
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT id, source, kind, dedup_key, subject, fields, status, received_at, disposition, \
                 detail, run_id, requester FROM events WHERE id = $1",
            )
            .bind(event_id)
            .fetch_optional()
            .await?;
        row.as_ref().map(EventRow::from_row).transpose()
    }

    /// How many distinct incidents (dedup keys other than `except_dedup_key`)
    /// with this recurrence key arrived at or after `since`.
    pub async fn count_recurrences(
        &self,
        recurrence_key: &str,
        since: Timestamp,
        except_dedup_key: &str,
    ) -> Result<i64> {
        let mut reader = self.read().await?;
        reader
            .query(
                "SELECT COUNT(DISTINCT dedup_key) FROM events \
                 WHERE recurrence_key = $1 AND received_ms >= $2 AND dedup_key <> $3",
            )
            .bind(recurrence_key)
            .bind(since.as_millisecond())
            .bind(except_dedup_key)
            .fetch_one()
            .await?
            .get(0)
    }

    pub async fn event_count(&self) -> Result<i64> {
        let mut reader = self.read().await?;
        reader
            .query("SELECT COUNT(*) FROM events")
            .fetch_one()
            .await?
            .get(0)
    }
}
