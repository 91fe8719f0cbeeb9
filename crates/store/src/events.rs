//! Events and their intake: the one transaction that stores an event, the
//! audit records about it and, when intake decided so, the run it starts.
//!
//! The database, not a check-then-act in code, keeps one open run per
//! dedup key: a unique partial index on `runs`. Intake looks for an open
//! run first and stores the event as a duplicate of it — or, when the dedup
//! key's last run finished and the problem was not resolved since, as
//! suppressed, or as linked to another ticket's open run on its subject
//! (`problems.rs`). That look is taken after the admission lock, so two
//! intakes on any instances take it one after the other; the index stays
//! as the last word: should it refuse a run all the same, the intake runs
//! once more and becomes a duplicate.
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
use crate::problems::{self, Held, OneRunPerProblem};
use crate::runs::{self, Lease, NewRun, Start};
use crate::{Error, Result, Store, writebacks};

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
    /// The event starts no run: its dedup key already had one and the
    /// problem was not resolved since (the event names that run), or the
    /// change it reports was opsgate's own.
    Suppressed,
    /// A new ticket about a subject another ticket's open run of the same
    /// runbook works on: linked to that run, which it names.
    Linked,
    /// The runbook (or the proposer) is in shadow mode: the run was made
    /// and stopped before any call.
    Shadowed,
    /// In shadow mode, the subject was shadowed within the runbook's
    /// `shadow_hold`: no second shadow run.
    ShadowHeld,
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
            Disposition::Suppressed => "suppressed",
            Disposition::Linked => "linked",
            Disposition::Shadowed => "shadowed",
            Disposition::ShadowHeld => "shadow_held",
        }
    }
}

/// What an intake stored: the outcome, the run admitted on counts (when
/// counted), and the lease and revision of the run it started (when asked
/// to start one).
type Stored = (IntakeOutcome, Option<Admitted>, Option<(Lease, i64)>);

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
    /// What holds the run back besides an open run of the dedup key,
    /// checked in the transaction before a run is stored.
    pub one_run_per_problem: Option<OneRunPerProblem>,
    /// Records the event adds to an earlier run (a person's resolution
    /// beside a shadowed run), in the same transaction.
    pub earlier_run_records: Option<(String, Vec<AuditEntry>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IntakeOutcome {
    Stored,
    /// Another open run already handles this dedup key; the event was stored
    /// as a duplicate pointing at it, and no run was created.
    Duplicate {
        existing_run_id: String,
    },
    /// The dedup key already had a run and the problem was not resolved
    /// since: the event was stored as suppressed, naming that run.
    Suppressed {
        earlier_run_id: String,
    },
    /// Another ticket's open run works on the same problem: the event was
    /// stored as linked to it, and the run told.
    Linked {
        run_id: String,
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
                occurred_at: match (
                    row.get::<Option<i64>, _>("occurred_ms")?,
                    row.get::<i64, _>("received_ms")?,
                ) {
                    (Some(occurred), received) if occurred != received => {
                        Some(crate::backend::timestamp_from_ms(occurred, "event time")?)
                    }
                    _ => None,
                },
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
         recurrence_key, disposition, detail, run_id, requester, occurred_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
    .bind(event.time().as_millisecond())
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

/// Stores an event whose run is held back, as what holds it makes it,
/// with the audit records that say so.
async fn store_held(
    tx: &mut WriteTransaction,
    intake: &Intake,
    held: Held,
    now: Timestamp,
) -> Result<IntakeOutcome> {
    let event = &intake.event;
    let mut records = intake.records.clone();
    let mut run_gains = None;
    let (disposition, detail, run_id, outcome) = match held {
        Held::Open { run_id } => {
            records.push(AuditEntry::new(
                domain::RecordKind::EventDuplicate,
                "opsgate",
                serde_json::json!({"dedup_key": event.dedup_key, "existing_run": run_id}),
            ));
            (
                Disposition::Duplicate,
                format!("run {run_id} is already open for this dedup key"),
                run_id.clone(),
                IntakeOutcome::Duplicate {
                    existing_run_id: run_id,
                },
            )
        }
        Held::Suppressed { earlier_run_id } => {
            records.push(AuditEntry::new(
                domain::RecordKind::EventSuppressed,
                "opsgate",
                serde_json::json!({
                    "dedup_key": event.dedup_key, "earlier_run": earlier_run_id,
                    "reason": "not_resolved_since",
                }),
            ));
            (
                Disposition::Suppressed,
                format!(
                    "run {earlier_run_id} already handled this dedup key, and it was not resolved since: no new run"
                ),
                earlier_run_id.clone(),
                IntakeOutcome::Suppressed { earlier_run_id },
            )
        }
        Held::Linked { run_id } => {
            let link = intake
                .one_run_per_problem
                .as_ref()
                .and_then(|rule| rule.link.as_ref())
                .expect("only a rule with a link links");
            let linked = AuditEntry::new(
                domain::RecordKind::RunLinked,
                "opsgate",
                serde_json::json!({
                    "event": event.id, "ticket": link.ticket, "source": event.source,
                    "dedup_key": event.dedup_key, "subject": event.subject,
                }),
            );
            run_gains = Some((linked, link.writeback.as_slice()));
            (
                Disposition::Linked,
                format!(
                    "run {run_id} already works on {}: the ticket is linked to it",
                    event.subject
                ),
                run_id.clone(),
                IntakeOutcome::Linked { run_id },
            )
        }
    };
    let row = EventInsert {
        requester: intake.requester.as_deref(),
        disposition,
        detail: Some(&detail),
        run_id: Some(&run_id),
        recurrence_key: intake.recurrence_key.as_deref(),
    };
    insert_event(tx, event, row).await?;
    audit::append(tx, now, None, Some(&event.id), &records).await?;
    if let Some((linked, writeback)) = run_gains {
        // On the run's timeline, so each of its write-backs tells it.
        audit::append(tx, now, Some(&run_id), Some(&event.id), &[linked]).await?;
        writebacks::insert(tx, &run_id, writeback, now).await?;
    }
    Ok(outcome)
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
    /// the run is not created and the event is stored as a duplicate; when
    /// `one_run_per_problem` holds the run back, as suppressed or linked.
    pub async fn intake(&self, intake: Intake, now: Timestamp) -> Result<IntakeOutcome> {
        let (outcome, _, _) = self.retried_intake(&intake, None, None, now).await?;
        Ok(outcome)
    }

    /// [`Store::intake`] of an event whose run this instance will drive:
    /// when the run is stored, the same transaction claims it and writes
    /// its first transition (`start`), so that the run's first step waits
    /// for one synced commit, not two. Returns the lease and the run's
    /// revision when it was claimed; not when the run was held back, or
    /// one of its targets is held by another run (it then waits, approved,
    /// as a run stored by [`Store::intake`] does).
    pub async fn intake_and_start(
        &self,
        intake: Intake,
        start: &Start,
        now: Timestamp,
    ) -> Result<(IntakeOutcome, Option<(Lease, i64)>)> {
        let (outcome, _, started) = self.retried_intake(&intake, None, Some(start), now).await?;
        Ok((outcome, started))
    }

    /// [`Store::intake`] of an event whose run is decided on other runs:
    /// `counting` is counted in the transaction, under the admission lock
    /// (`admission.rs`), and the run stored is the one `admit` makes of
    /// the counts (`intake.run` is not used). Returns the run admitted (or
    /// denied), unless its run was held back.
    pub async fn intake_counted(
        &self,
        intake: Intake,
        counting: &Counting,
        admit: Admit<'_>,
        now: Timestamp,
    ) -> Result<(IntakeOutcome, Option<Admitted>)> {
        let (outcome, admitted, _) = self
            .retried_intake(&intake, Some((counting, admit)), None, now)
            .await?;
        Ok((outcome, admitted))
    }

    async fn retried_intake(
        &self,
        intake: &Intake,
        counted: Option<(&Counting, Admit<'_>)>,
        start: Option<&Start>,
        now: Timestamp,
    ) -> Result<Stored> {
        match self.try_intake(intake, counted, start, now).await {
            // Another writer opened a run for this dedup key between our
            // check and our insert; the unique index refused ours. Once
            // more: now the check finds that run, and the event is a duplicate.
            Err(Error::Database(error)) if violates(&error, "runs_one_open_per_dedup_key") => {
                self.try_intake(intake, counted, start, now).await
            }
            other => other,
        }
    }

    async fn try_intake(
        &self,
        intake: &Intake,
        counted: Option<(&Counting, Admit<'_>)>,
        start: Option<&Start>,
        now: Timestamp,
    ) -> Result<Stored> {
        let mut tx = self.begin_write().await?;
        let stores_a_run = intake.run.is_some() || counted.is_some();
        if stores_a_run {
            let rule = intake.one_run_per_problem.as_ref();
            if let Some(held) = problems::held(&mut tx, &intake.event, rule).await? {
                let outcome = store_held(&mut tx, intake, held, now).await?;
                tx.commit().await?;
                self.audit_appended();
                return Ok((outcome, None, None));
            }
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
        if let Some((run_id, records)) = &intake.earlier_run_records {
            audit::append(&mut tx, now, Some(run_id), Some(&intake.event.id), records).await?;
        }
        let mut started = None;
        if let Some(run) = run {
            runs::insert(&mut tx, run, &intake.event, now).await?;
            if let Some(start) = start {
                started = runs::start_in(&mut tx, run, start, now).await?;
            }
        }
        tx.commit().await?;
        self.audit_appended();
        Ok((IntakeOutcome::Stored, admitted, started))
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<EventRow>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(
                "SELECT id, source, kind, dedup_key, subject, fields, status, received_at, received_ms, \
                 occurred_ms, disposition, detail, run_id, requester FROM events WHERE id = $1",
            )
            .bind(event_id)
            .fetch_optional()
            .await?;
        row.as_ref().map(EventRow::from_row).transpose()
    }

    /// How many distinct incidents (dedup keys other than `except_dedup_key`)
    /// with this recurrence key happened at or after `since` (event time).
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
                 WHERE recurrence_key = $1 AND occurred_ms >= $2 AND dedup_key <> $3",
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
