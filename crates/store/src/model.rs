//! The rows the store reads and writes, in the vocabulary of the domain.

use domain::{Decision, Event, Plan, RunState};
use jiff::Timestamp;
use serde::Serialize;

/// What intake did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    StartedRun,
    Duplicate,
    NoMatch,
    Inactive,
    PlanFailed,
    /// The runbook acts only on recurring events, and this one has not
    /// recurred often enough yet.
    BelowRecurrence,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::StartedRun => "started_run",
            Disposition::Duplicate => "duplicate",
            Disposition::NoMatch => "no_match",
            Disposition::Inactive => "inactive",
            Disposition::PlanFailed => "plan_failed",
            Disposition::BelowRecurrence => "below_recurrence",
        }
    }
}

/// An audit record to append: the store adds the sequence number, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        AuditEntry {
            kind: kind.into(),
            actor: actor.into(),
            detail,
        }
    }
}

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

/// One event's intake, stored atomically.
#[derive(Debug, Clone)]
pub struct Intake {
    pub event: Event,
    pub disposition: Disposition,
    pub detail: Option<String>,
    /// Counted by [`crate::Store::count_recurrences`] when set.
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

/// A durable timer as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerRow {
    pub id: i64,
    pub run_id: String,
    pub kind: engine::TimerKind,
    /// The run state it was armed for.
    pub armed_in: RunState,
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

/// What [`crate::Store::fire_timer`] did.
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

/// A setting that decides whether a commit reaches the disk before it
/// returns, as one connection of the store sees it
/// ([`crate::Store::durability`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionDurability {
    /// Which connection: `writer`, `reader 2`, `session 5`, or `server`
    /// for a setting of the database server itself.
    pub connection: String,
    /// `synchronous` (SQLite), `synchronous_commit` or `fsync` (PostgreSQL).
    pub setting: &'static str,
    /// Its value, as the database names it (`full`, `on`).
    pub value: String,
}
