//! Runs and what belongs to one run alone: its attempts (one row per call),
//! its lease, and the holds on its targets.
//!
//! A run's row is changed only by a commit that names the revision it read
//! (optimistic concurrency), and, for a driver, the fencing token of its
//! lease: an instance that lost the lease can change nothing. Claiming a
//! run also holds each of its targets in `target_holds`, in the same
//! transaction, so one run acts on a target at a time across instances. A
//! unique partial index keeps one open run per dedup key (see `events.rs`).

use domain::{Decision, Plan, RunState};
use engine::{Effect, Transition};
use jiff::Timestamp;
use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::backend::{Announcement, Connection, Row, WriteTransaction};
use crate::writebacks::NewWriteback;
use crate::{Error, Result, Store, timers};

/// A run to create together with the event that caused it.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub plan: Plan,
    pub decision: Decision,
    pub machine: engine::Run,
    /// Audit records about the run's creation (match, plan, decision).
    pub records: Vec<AuditEntry>,
    /// The timers the run starts with (its approval's expiry).
    pub timers: Vec<engine::Timer>,
    /// The systems the run writes back to (its ticket, a chat channel).
    pub writebacks: Vec<NewWriteback>,
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub event_id: String,
    pub dedup_key: String,
    pub state: RunState,
    pub plan: Plan,
    pub decision: Decision,
    pub machine: engine::Run,
    pub reason: Option<String>,
    pub revision: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub seq: i64,
    pub phase: String,
    pub step_id: String,
    pub attempt: i64,
    pub action: String,
    pub request: serde_json::Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<serde_json::Value>,
}

/// The right to drive a run, held by one instance until `expires_ms`.
/// `token` grows with every claim: writes carry it, so an instance that lost
/// its lease (stalled, partitioned) cannot change the run any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub token: i64,
    /// Milliseconds since the epoch.
    pub expires_ms: i64,
}

/// A run started by the transaction that stores it ([`Store::intake_and_start`]):
/// claimed for `owner` for `ttl_ms`, with its first transition.
#[derive(Debug, Clone)]
pub struct Start {
    pub owner: String,
    pub ttl_ms: i64,
    pub transition: Transition,
}

/// The columns every run query reads; a macro so that the queries stay
/// `&'static str` literals (sqlx refuses SQL built at run time).
macro_rules! select_runs {
    ($rest:literal) => {
        concat!(
            "SELECT id, event_id, dedup_key, state, plan, decision, machine, reason, revision, \
             created_at, updated_at FROM runs ",
            $rest
        )
    };
}

impl RunRow {
    fn from_row(row: &Row) -> Result<RunRow> {
        Ok(RunRow {
            id: row.get("id")?,
            event_id: row.get("event_id")?,
            dedup_key: row.get("dedup_key")?,
            state: RunState::parse(&row.get::<String, _>("state")?)?,
            plan: row.json("plan")?,
            decision: row.json("decision")?,
            machine: row.json("machine")?,
            reason: row.get("reason")?,
            revision: row.get("revision")?,
            created_at: row.timestamp("created_at")?,
            updated_at: row.timestamp("updated_at")?,
        })
    }
}

/// The open run for a dedup key, if any.
pub(crate) async fn open_run_for(
    connection: &mut impl Connection,
    dedup_key: &str,
) -> Result<Option<String>> {
    let row = connection
        .query("SELECT id FROM runs WHERE dedup_key = $1 AND is_open = TRUE")
        .bind(dedup_key)
        .fetch_optional()
        .await?;
    row.map(|row| row.get("id")).transpose()
}

/// Stores a new run of the event `event_id` (see `events.rs`), with its
/// creation's audit records, timers and write-backs, numbered next in
/// admission order. The records go first: appending them takes the audit
/// chain's lock, which is the admission lock (see `admission.rs`), so the
/// next number is nobody else's (and the unique index would refuse it if
/// it were).
pub(crate) async fn insert(
    tx: &mut WriteTransaction,
    run: &NewRun,
    event: &domain::Event,
    now: Timestamp,
) -> Result<()> {
    let (event_id, dedup_key) = (&event.id, &event.dedup_key);
    audit::append(tx, now, Some(&run.id), Some(event_id), &run.records).await?;
    let now_text = now.to_string();
    tx.query(
        "INSERT INTO runs (id, event_id, dedup_key, runbook_id, runbook_version, state, is_open, plan, \
         decision, machine, reason, revision, created_at, created_ms, updated_at, admission_seq, event_ms, \
         shadow_acts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13, $12, \
         (SELECT COALESCE(MAX(admission_seq), 0) + 1 FROM runs), $14, $15)",
    )
    .bind(&run.id)
    .bind(event_id)
    .bind(dedup_key)
    .bind(&run.plan.runbook_id)
    .bind(&run.plan.runbook_version)
    .bind(run.machine.state.as_str())
    .bind(!run.machine.state.is_terminal())
    .bind(serde_json::to_string(&run.plan)?)
    .bind(serde_json::to_string(&run.decision)?)
    .bind(serde_json::to_string(&run.machine)?)
    .bind(&run.machine.reason)
    .bind(&now_text)
    .bind(now.as_millisecond())
    .bind(event.time().as_millisecond())
    .bind(
        run.machine.state == domain::RunState::Shadowed
            && run.decision.kind != domain::DecisionKind::Deny,
    )
    .execute()
    .await?;
    timers::schedule(tx, &run.id, run.machine.state, &run.timers).await?;
    crate::writebacks::insert(tx, &run.id, &run.writebacks, now).await
}

/// Writes one transition of a run inside the caller's transaction (see
/// [`Store::commit`]); `lease`, when given, fences the write.
pub(crate) async fn write_transition(
    tx: &mut WriteTransaction,
    run_id: &str,
    expected_revision: i64,
    lease: Option<&Lease>,
    transition: &Transition,
    actor: &str,
    now: Timestamp,
) -> Result<i64> {
    let now_text = now.to_string();
    let fence = lease.map(|lease| lease.token);
    let machine = &transition.run;
    let updated = tx
        .query(
            "UPDATE runs SET state = $1, is_open = $2, machine = $3, reason = $4, revision = revision + 1, \
             updated_at = $5 WHERE id = $6 AND revision = $7 AND ($8 IS NULL OR lease_token = $8)",
        )
        .bind(machine.state.as_str())
        .bind(!machine.state.is_terminal())
        .bind(serde_json::to_string(machine)?)
        .bind(&machine.reason)
        .bind(&now_text)
        .bind(run_id)
        .bind(expected_revision)
        .bind(fence)
        .execute()
        .await?;
    if updated != 1 {
        let current = tx
            .query("SELECT lease_token FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional()
            .await?;
        let Some(current) = current else {
            return Err(Error::UnknownRun {
                run_id: run_id.to_owned(),
            });
        };
        let current_token: i64 = current.get("lease_token")?;
        if fence.is_some_and(|token| token != current_token) {
            return Err(Error::Fenced {
                run_id: run_id.to_owned(),
            });
        }
        return Err(Error::Conflict {
            run_id: run_id.to_owned(),
            expected: expected_revision,
        });
    }
    for record in &transition.records {
        match record.kind {
            domain::RecordKind::AttemptFinished => {
                finish_attempt(tx, run_id, &record.detail, &now_text).await?
            }
            domain::RecordKind::RunRecovered => {
                tx.query(
                    "UPDATE attempts SET finished_at = $1, outcome = $2 \
                     WHERE run_id = $3 AND finished_at IS NULL",
                )
                .bind(&now_text)
                .bind(r#"{"outcome":"interrupted","reason":"opsgate stopped while the call was in flight"}"#)
                .bind(run_id)
                .execute()
                .await?;
            }
            _ => {}
        }
    }
    if let Some(Effect::Call {
        phase,
        step_id,
        attempt,
        call,
    }) = &transition.effect
    {
        tx.query(
            "INSERT INTO attempts (run_id, seq, phase, step_id, attempt, action, request, started_at) \
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM attempts WHERE run_id = $1), $2, $3, $4, $5, $6, $7)",
        )
        .bind(run_id)
        .bind(phase.as_str())
        .bind(step_id)
        .bind(*attempt as i64)
        .bind(&call.action)
        .bind(serde_json::to_string(&call.request)?)
        .bind(&now_text)
        .execute()
        .await?;
    }
    let entries: Vec<AuditEntry> = transition
        .records
        .iter()
        .map(|record| AuditEntry::new(record.kind, actor, record.detail.clone()))
        .collect();
    audit::append(tx, now, Some(run_id), None, &entries).await?;
    // Timers armed for the state the run left no longer apply. Only a
    // change of state (which the engine always records) can disarm one,
    // so the steps of a running run pay nothing for timers.
    if transition
        .records
        .iter()
        .any(|record| record.kind == domain::RecordKind::RunState)
    {
        timers::disarm_all_but(tx, run_id, machine.state, &now_text).await?;
    }
    timers::schedule(tx, run_id, machine.state, &transition.timers).await?;
    if machine.state.is_settled() {
        // Whoever waits for this run on another instance learns it here.
        tx.announce(Announcement::RunSettled {
            run_id,
            state: machine.state,
        })
        .await?;
    }
    Ok(expected_revision + 1)
}

async fn finish_attempt(
    tx: &mut WriteTransaction,
    run_id: &str,
    detail: &serde_json::Value,
    now: &str,
) -> Result<()> {
    tx.query(
        "UPDATE attempts SET finished_at = $1, outcome = $2 \
         WHERE run_id = $3 AND phase = $4 AND step_id = $5 AND attempt = $6 AND finished_at IS NULL",
    )
    .bind(now)
    .bind(serde_json::to_string(&detail["outcome"])?)
    .bind(run_id)
    .bind(detail["phase"].as_str().unwrap_or_default())
    .bind(detail["step"].as_str().unwrap_or_default())
    .bind(detail["attempt"].as_i64().unwrap_or_default())
    .execute()
    .await?;
    Ok(())
}

/// Claims the run in `tx` (see [`Store::claim_run`]); `None` when the run
/// or one of its targets is held elsewhere, and then `tx` must not commit.
async fn claim_in(
    tx: &mut WriteTransaction,
    run_id: &str,
    owner: &str,
    now: Timestamp,
    ttl_ms: i64,
) -> Result<Option<Lease>> {
    let expires_ms = now.as_millisecond() + ttl_ms;
    let claimed = tx
        .query(
            "UPDATE runs SET lease_owner = $1, lease_token = lease_token + 1, lease_expires_ms = $2 \
             WHERE id = $3 AND is_open = TRUE AND (lease_owner IS NULL OR lease_expires_ms < $4) \
             RETURNING lease_token, plan",
        )
        .bind(owner)
        .bind(expires_ms)
        .bind(run_id)
        .bind(now.as_millisecond())
        .fetch_optional()
        .await?;
    let Some(claimed) = claimed else {
        return Ok(None);
    };
    let plan: Plan = claimed.json("plan")?;
    let mut targets: Vec<&String> = plan.targets.iter().collect();
    targets.sort_unstable();
    targets.dedup();
    for target in targets {
        let held = tx
            .query(
                "INSERT INTO target_holds (target, run_id, expires_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (target) DO UPDATE SET run_id = excluded.run_id, expires_ms = excluded.expires_ms \
                 WHERE target_holds.run_id = excluded.run_id OR target_holds.expires_ms < $4",
            )
            .bind(target)
            .bind(run_id)
            .bind(expires_ms)
            .bind(now.as_millisecond())
            .execute()
            .await?;
        if held == 0 {
            // Another run acts on this target: no claim at all.
            return Ok(None);
        }
    }
    Ok(Some(Lease {
        owner: owner.to_owned(),
        token: claimed.get("lease_token")?,
        expires_ms,
    }))
}

/// Claims the run `run` just stored in this transaction and writes its
/// first transition, unless one of its targets is held by another run:
/// then nothing is written, and the run waits, approved, for whoever
/// claims it once the target is free. Returns the lease and the run's
/// revision after the transition.
pub(crate) async fn start_in(
    tx: &mut WriteTransaction,
    run: &NewRun,
    start: &Start,
    now: Timestamp,
) -> Result<Option<(Lease, i64)>> {
    // Looked at before anything is written, so that a held target leaves
    // nothing half-claimed in the intake's transaction; the writer holds
    // the database (and, on PostgreSQL, the lock every write batch takes
    // first), so nobody takes a target between the look and the claim.
    for target in &run.plan.targets {
        let held = tx
            .query(
                "SELECT 1 FROM target_holds WHERE target = $1 AND run_id <> $2 AND expires_ms >= $3",
            )
            .bind(target)
            .bind(&run.id)
            .bind(now.as_millisecond())
            .fetch_optional()
            .await?;
        if held.is_some() {
            return Ok(None);
        }
    }
    let Some(lease) = claim_in(tx, &run.id, &start.owner, now, start.ttl_ms).await? else {
        // Stored a moment ago in this transaction, its targets free:
        // nobody else can hold it.
        return Err(Error::Conflict {
            run_id: run.id.clone(),
            expected: 1,
        });
    };
    let revision = write_transition(
        tx,
        &run.id,
        1,
        Some(&lease),
        &start.transition,
        &start.owner,
        now,
    )
    .await?;
    Ok(Some((lease, revision)))
}

/// What a fenced commit does with the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseAfter {
    Kept,
    Released,
}

/// Gives `lease` back, when it is still the run's: the run and its
/// targets are free, and the other instances are told.
async fn release_in(tx: &mut WriteTransaction, run_id: &str, lease: &Lease) -> Result<()> {
    let released = tx
        .query(
            "UPDATE runs SET lease_owner = NULL, lease_expires_ms = NULL \
             WHERE id = $1 AND lease_owner = $2 AND lease_token = $3",
        )
        .bind(run_id)
        .bind(&lease.owner)
        .bind(lease.token)
        .execute()
        .await?;
    if released == 1 {
        tx.query("DELETE FROM target_holds WHERE run_id = $1")
            .bind(run_id)
            .execute()
            .await?;
        // Runs that waited for these targets may be claimable now.
        tx.announce(Announcement::WorkReleased { run_id }).await?;
    }
    Ok(())
}

impl Store {
    /// Commits one transition of a run: its new state, the attempts it
    /// starts or finishes, and its audit records. Fails with
    /// [`Error::Conflict`] when the run changed since `expected_revision`.
    /// Returns the new revision.
    pub async fn commit(
        &self,
        run_id: &str,
        expected_revision: i64,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        self.commit_with(run_id, expected_revision, None, transition, actor, now)
            .await
    }

    /// [`Self::commit`] for the holder of the run's lease: refused with
    /// [`Error::Fenced`] once another instance has claimed the run.
    pub async fn commit_fenced(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: &Lease,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        self.commit_with(
            run_id,
            expected_revision,
            Some((lease, LeaseAfter::Kept)),
            transition,
            actor,
            now,
        )
        .await
    }

    /// [`Self::commit_fenced`] of a driver's last transition, and the
    /// lease given back in the same transaction (as [`Self::release_lease`]
    /// does): one transaction fewer per run.
    pub async fn commit_fenced_and_release(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: &Lease,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        self.commit_with(
            run_id,
            expected_revision,
            Some((lease, LeaseAfter::Released)),
            transition,
            actor,
            now,
        )
        .await
    }

    async fn commit_with(
        &self,
        run_id: &str,
        expected_revision: i64,
        lease: Option<(&Lease, LeaseAfter)>,
        transition: &Transition,
        actor: &str,
        now: Timestamp,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let revision = write_transition(
            &mut tx,
            run_id,
            expected_revision,
            lease.map(|(lease, _)| lease),
            transition,
            actor,
            now,
        )
        .await?;
        if let Some((lease, LeaseAfter::Released)) = lease {
            release_in(&mut tx, run_id, lease).await?;
        }
        tx.commit().await?;
        self.audit_appended();
        Ok(revision)
    }

    /// Claims the run for `owner` until `now + ttl_ms`, when it is open,
    /// nobody holds an unexpired lease on it, and no other run holds one of
    /// its targets. Each claim bumps the fencing token. `None` when the run
    /// or a target is held elsewhere (or the run is finished).
    pub async fn claim_run(
        &self,
        run_id: &str,
        owner: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let mut tx = self.begin_write().await?;
        let Some(lease) = claim_in(&mut tx, run_id, owner, now, ttl_ms).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        tx.commit().await?;
        Ok(Some(lease))
    }

    /// [`Self::claim_run`] and, under the new lease, [`Self::commit_fenced`]
    /// of the run's next transition, in one transaction: what a driver
    /// starting on a run does. `None`, and nothing written, when the run or
    /// a target is held elsewhere; the new lease and revision otherwise.
    pub async fn claim_and_commit(
        &self,
        run_id: &str,
        owner: &str,
        ttl_ms: i64,
        expected_revision: i64,
        transition: &Transition,
        now: Timestamp,
    ) -> Result<Option<(Lease, i64)>> {
        let mut tx = self.begin_write().await?;
        let Some(lease) = claim_in(&mut tx, run_id, owner, now, ttl_ms).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let revision = write_transition(
            &mut tx,
            run_id,
            expected_revision,
            Some(&lease),
            transition,
            owner,
            now,
        )
        .await?;
        tx.commit().await?;
        self.audit_appended();
        Ok(Some((lease, revision)))
    }

    /// Extends a lease still held; `None` when it was lost (expired and
    /// claimed by another instance).
    pub async fn renew_lease(
        &self,
        run_id: &str,
        lease: &Lease,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<Option<Lease>> {
        let expires_ms = now.as_millisecond() + ttl_ms;
        let mut tx = self.begin_write().await?;
        let renewed = tx
            .query(
                "UPDATE runs SET lease_expires_ms = $1 \
                 WHERE id = $2 AND lease_owner = $3 AND lease_token = $4",
            )
            .bind(expires_ms)
            .bind(run_id)
            .bind(&lease.owner)
            .bind(lease.token)
            .execute()
            .await?;
        if renewed != 1 {
            return Ok(None);
        }
        tx.query("UPDATE target_holds SET expires_ms = $1 WHERE run_id = $2")
            .bind(expires_ms)
            .bind(run_id)
            .execute()
            .await?;
        tx.commit().await?;
        Ok(Some(Lease {
            expires_ms,
            ..lease.clone()
        }))
    }

    /// Gives a lease and its target holds back, so that nobody need wait
    /// for them to expire (a run waiting for approval, a finished run).
    pub async fn release_lease(&self, run_id: &str, lease: &Lease) -> Result<()> {
        let mut tx = self.begin_write().await?;
        release_in(&mut tx, run_id, lease).await?;
        tx.commit().await
    }

    /// Open runs that should be executing but that nobody holds: new
    /// approved runs, and runs whose instance stopped renewing. Oldest first.
    pub async fn claimable_runs(&self, now: Timestamp) -> Result<Vec<String>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT id FROM runs WHERE is_open = TRUE \
                 AND state IN ('approved', 'running', 'verifying', 'rolling_back') \
                 AND (lease_owner IS NULL OR lease_expires_ms < $1) ORDER BY created_ms, id",
            )
            .bind(now.as_millisecond())
            .fetch_all()
            .await?;
        rows.iter().map(|row| row.get("id")).collect()
    }

    /// The open run for a dedup key, if any.
    pub async fn open_run_for_dedup_key(&self, dedup_key: &str) -> Result<Option<String>> {
        let mut reader = self.read().await?;
        open_run_for(&mut reader, dedup_key).await
    }

    /// The latest run of a dedup key, open or finished: what a proposal
    /// sent again with the same idempotency key is answered with.
    pub async fn latest_run_for_dedup_key(&self, dedup_key: &str) -> Result<Option<RunRow>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(select_runs!(
                "WHERE dedup_key = $1 ORDER BY created_ms DESC, admission_seq DESC LIMIT 1"
            ))
            .bind(dedup_key)
            .fetch_optional()
            .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>> {
        let mut reader = self.read().await?;
        let row = reader
            .query(select_runs!("WHERE id = $1"))
            .bind(run_id)
            .fetch_optional()
            .await?;
        row.as_ref().map(RunRow::from_row).transpose()
    }

    /// Runs, newest first.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<RunRow>> {
        let limit = filter.limit.unwrap_or(100) as i64;
        let mut reader = self.read().await?;
        let rows = match filter.state {
            Some(state) => {
                reader
                    .query(select_runs!(
                        "WHERE state = $1 ORDER BY created_ms DESC, id DESC LIMIT $2"
                    ))
                    .bind(state.as_str())
                    .bind(limit)
                    .fetch_all()
                    .await?
            }
            None => {
                reader
                    .query(select_runs!("ORDER BY created_ms DESC, id DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all()
                    .await?
            }
        };
        rows.iter().map(RunRow::from_row).collect()
    }

    pub async fn attempts(&self, run_id: &str) -> Result<Vec<AttemptRow>> {
        let mut reader = self.read().await?;
        let rows = reader
            .query(
                "SELECT seq, phase, step_id, attempt, action, request, started_at, finished_at, outcome \
                 FROM attempts WHERE run_id = $1 ORDER BY seq",
            )
            .bind(run_id)
            .fetch_all()
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: Option<String> = row.get("outcome")?;
                Ok(AttemptRow {
                    seq: row.get("seq")?,
                    phase: row.get("phase")?,
                    step_id: row.get("step_id")?,
                    attempt: row.get("attempt")?,
                    action: row.get("action")?,
                    request: row.json("request")?,
                    started_at: row.get("started_at")?,
                    finished_at: row.get("finished_at")?,
                    outcome: outcome
                        .map(|text| serde_json::from_str(&text))
                        .transpose()?,
                })
            })
            .collect()
    }
}
