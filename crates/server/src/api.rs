//! The API's answers as Rust types: what the handlers send, what the
//! OpenAPI document describes (`openapi.rs`), and what the CLI reads back
//! — one definition for all three, so that none drifts from the others.
//!
//! Plans and decisions are the domain's own types, described from their
//! definitions (`domain`'s `openapi` feature); the rest of a run's own
//! documents (its progress, attempts, audit details) travel as they
//! serialise and are described as objects.

use domain::{Decision, DecisionKind, Plan, RiskClass, RunState};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`); `ready` or `draining` (`/readyz`).
    pub status: String,
}

/// A run, as the list shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    /// `planned`, `awaiting_approval`, `running`, `succeeded`, …
    #[schema(value_type = String)]
    pub state: RunState,
    pub runbook: String,
    pub runbook_version: String,
    pub targets: Vec<String>,
    pub dedup_key: String,
    /// `allow`, `require_approval` or `deny`.
    #[schema(value_type = String)]
    pub decision: DecisionKind,
    /// Why the run is where it is, when it stopped short.
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

/// `GET /v1/runs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// The newest first.
    pub runs: Vec<RunSummary>,
}

/// One audit record of a run, in its timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineRecord {
    pub seq: i64,
    /// When it was recorded (RFC 3339).
    pub at: String,
    /// Its kind (`run.state`, `approval.granted`, …).
    pub kind: String,
    pub actor: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

/// `GET /v1/runs/{id}` and `/wait`: a run with everything that happened.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub id: String,
    #[schema(value_type = String)]
    pub state: RunState,
    pub runbook: String,
    pub runbook_version: String,
    pub targets: Vec<String>,
    pub dedup_key: String,
    pub reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
    /// The event that started it.
    #[schema(value_type = Object)]
    pub event: Value,
    /// Every rendered request, the targets, the plan hash.
    pub plan: Plan,
    /// The gate's verdict and its reasons.
    pub decision: Decision,
    /// Where it is: steps done, approval stages.
    #[schema(value_type = Object)]
    pub progress: Value,
    #[schema(value_type = Vec<Object>)]
    pub attempts: Value,
    #[schema(value_type = Vec<Object>)]
    pub timers: Value,
    #[schema(value_type = Vec<Object>)]
    pub writebacks: Value,
    pub timeline: Vec<TimelineRecord>,
}

/// `POST /v1/runs/{id}/approve`, `/deny`, `/cancel`: what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decided {
    pub run_id: String,
    /// The run's state now.
    #[schema(value_type = String)]
    pub state: RunState,
    /// Who decided (`user:alice`).
    pub by: String,
}

/// `POST /v1/events`: what intake did with the event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntakeAnswer {
    pub event_id: String,
    /// `started_run`, `denied_run`, `duplicate` (its dedup key's run is
    /// open), `suppressed` (its dedup key already had a run and the
    /// problem was not resolved since — or the change it reports was
    /// opsgate's own: no run, nothing decided), `linked` (a new ticket
    /// about a subject another ticket's open run of the runbook works on:
    /// linked to that run, both tickets told), `no_match`, `inactive`,
    /// `plan_failed`, `below_recurrence` or `frozen` (an operator's freeze
    /// covers it: nothing runs).
    pub disposition: String,
    pub runbook: Option<String>,
    pub runbook_version: Option<String>,
    /// The run it started; the open run it joined, was linked to or
    /// withdrew; or the earlier run that suppressed it.
    pub run_id: Option<String>,
    #[schema(value_type = Option<String>)]
    pub state: Option<RunState>,
    pub decision: Option<Decision>,
    /// What happened, in a sentence.
    pub message: String,
}

impl From<runtime::IntakeReport> for IntakeAnswer {
    fn from(report: runtime::IntakeReport) -> IntakeAnswer {
        IntakeAnswer {
            event_id: report.event_id,
            disposition: report.disposition.as_str().to_owned(),
            runbook: report.runbook,
            runbook_version: report.runbook_version,
            run_id: report.run_id,
            state: report.state,
            decision: report.decision,
            message: report.message,
        }
    }
}

/// `POST /v1/proposals`: what became of an agent's proposal.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProposalAnswer {
    /// In a word: `executing` (auto-approved, running), `awaiting_approval`
    /// (a person decides, on opsgate's own page), `denied` (with the
    /// decision's reasons), `shadowed`, `finished` (a replayed proposal
    /// whose run ended), or, with no run, the intake's disposition
    /// (`no_match`, `frozen`, …).
    pub outcome: String,
    /// True when the idempotency key was sent before: this is the earlier
    /// proposal's run, as it is now.
    pub replayed: bool,
    /// Awaiting approval: where an approver gets their own signed approval
    /// page (the agent never approves, and is never handed a form).
    pub approval_url: Option<String>,
    #[serde(flatten)]
    pub intake: IntakeAnswer,
}

impl ProposalAnswer {
    /// `public_url` is how people reach this server, when configured.
    pub fn new(report: runtime::ProposalReport, public_url: Option<&str>) -> ProposalAnswer {
        let intake = IntakeAnswer::from(report.intake);
        // A denied decision makes a run born `denied` (or `shadowed`), so
        // the run's state alone says the outcome.
        let outcome = match intake.state {
            Some(RunState::AwaitingApproval) => "awaiting_approval",
            Some(RunState::Denied) => "denied",
            Some(RunState::Shadowed) => "shadowed",
            Some(state) if state.is_terminal() => "finished",
            Some(_) => "executing",
            None => intake.disposition.as_str(),
        }
        .to_owned();
        let approval_url = (outcome == "awaiting_approval")
            .then(|| Some(approval_url(public_url, intake.run_id.as_deref()?)))
            .flatten();
        ProposalAnswer {
            outcome,
            replayed: report.replayed,
            approval_url,
            intake,
        }
    }
}

/// Where an approver of `run_id` gets their own signed page: the agent
/// that proposed it is told this, never handed a form.
pub(crate) fn approval_url(public_url: Option<&str>, run_id: &str) -> String {
    let base = public_url.unwrap_or("").trim_end_matches('/');
    format!("{base}/v1/runs/{run_id}/approval-links")
}

/// `POST /v1/plan`: what intake would do, with nothing touched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DryRunAnswer {
    /// The runbook that would run.
    pub matched: Option<String>,
    pub runbook_version: Option<String>,
    /// Other runbooks that also match (the first in id order wins).
    pub also_matching: Vec<String>,
    /// Every rendered request, the targets, the plan hash.
    pub plan: Option<Plan>,
    pub decision: Option<Decision>,
    /// What would happen, in a sentence.
    pub message: String,
}

impl From<runtime::DryRun> for DryRunAnswer {
    fn from(dry_run: runtime::DryRun) -> DryRunAnswer {
        DryRunAnswer {
            matched: dry_run.matched,
            runbook_version: dry_run.runbook_version,
            also_matching: dry_run.also_matching,
            plan: dry_run.plan,
            decision: dry_run.decision,
            message: dry_run.message,
        }
    }
}

/// A runbook of the catalogue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunbookSummary {
    pub id: String,
    pub title: String,
    pub owner: String,
    /// `read_only`, `reversible` or `irreversible`.
    #[schema(value_type = String)]
    pub risk: RiskClass,
    /// The SHA-256 of its canonical content.
    pub version: String,
    /// The file it was loaded from.
    pub path: String,
    /// How many steps it has.
    pub steps: usize,
    /// `live`, or `shadow`: its runs stop before any call and record what
    /// they would have done.
    pub mode: String,
}

/// `GET /v1/runbooks`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunbookList {
    pub runbooks: Vec<RunbookSummary>,
}

/// `POST /v1/runs/{id}/approval-links`: the caller's own signed page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedLink {
    /// The page; its token is the approver's credential.
    pub url: String,
    pub approver: String,
    /// The approval stage it decides.
    pub stage: String,
    /// When it stops working, in Unix seconds.
    pub expires_at: i64,
}

/// An event, as `/v1/events` takes it and `/v1/plan` judges it: the
/// schema of `domain::NewEvent`, which the handlers read (a test keeps the
/// two alike).
#[derive(ToSchema)]
#[schema(as = NewEvent)]
#[serde(deny_unknown_fields)]
#[allow(dead_code, reason = "a description of a body, never built")]
pub(crate) struct NewEventSchema {
    /// Who sent it (`alertmanager`, `monitoring`, …); not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    source: String,
    /// What it reports (`alert`, `ticket`, …); not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    kind: String,
    /// Events with one dedup key are one problem: at most one open run.
    #[schema(min_length = 1, pattern = r"\S")]
    dedup_key: String,
    /// What it is about (a host, a mailbox); not blank.
    #[schema(min_length = 1, pattern = r"\S")]
    subject: String,
    /// Whatever else the sender says, read by runbooks' `match` and templates.
    #[schema(value_type = Object, required = false)]
    fields: Option<Value>,
    status: EventStatusSchema,
    /// When it happened (RFC 3339), if not when it is sent: recurrences,
    /// cooldowns, rate limits, change windows and business hours are
    /// judged at this time, bounded by when opsgate receives it.
    #[schema(value_type = Option<String>, format = DateTime, required = false)]
    occurred_at: Option<String>,
}

/// Whether the condition is still there: only `firing` and `open` events
/// may start a run.
#[derive(ToSchema)]
#[schema(as = EventStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "a description of a body, never built")]
pub(crate) enum EventStatusSchema {
    Firing,
    Resolved,
    Open,
    Closed,
}

/// `POST /v1/hooks/{source}`: the intake reports of the events a sender's
/// request told of, in the shape its source answers in — `report` (one
/// event's, `null` when the request told of none) with `message` saying
/// why when there is a reason; or `events`, a report per event, in order;
/// or, for a sender whose own API answers with fields of its own
/// (PagerDuty's `status`, `message`, `dedup_key`), those fields beside
/// `report`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HookAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IntakeAnswer>)]
    pub report: Option<Option<IntakeAnswer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<IntakeAnswer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The sender's own fields, when its source answers with them.
    #[serde(flatten)]
    #[schema(ignore)]
    pub sender_fields: serde_json::Map<String, Value>,
}

impl HookAnswer {
    /// The answer to a request `taken` in.
    pub fn new(taken: runtime::Taken) -> HookAnswer {
        let mut reports = taken.reports.into_iter().map(IntakeAnswer::from);
        let empty = HookAnswer {
            report: None,
            events: None,
            message: None,
            sender_fields: serde_json::Map::new(),
        };
        match taken.answer {
            runtime::Answer::One { message } => HookAnswer {
                report: Some(reports.next()),
                message,
                ..empty
            },
            runtime::Answer::Each => HookAnswer {
                events: Some(reports.collect()),
                ..empty
            },
            runtime::Answer::Fields(fields) => HookAnswer {
                report: Some(reports.next()),
                sender_fields: fields,
                ..empty
            },
        }
    }
}

/// `GET /v1/freezes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FreezeList {
    /// The freezes in force, oldest first.
    pub freezes: Vec<domain::Freeze>,
}

/// `GET /v1/status`: whether automation is live, at a glance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusAnswer {
    /// `live` (no freeze), `partly_frozen` (a freeze covers some
    /// runbooks, targets or principals) or `frozen` (all automation).
    #[schema(value_type = String)]
    pub automation: runtime::Automation,
    /// The freezes in force, oldest first.
    pub freezes: Vec<domain::Freeze>,
    /// The runs a freeze paused, waiting for it to lift.
    pub paused_runs: Vec<String>,
}

/// `GET /v1/reports/shadow`: per runbook, what opsgate saw and would have
/// done in shadow mode, beside what people then did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShadowReportAnswer {
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
    /// One entry per runbook that shadowed or held off an event.
    pub runbooks: Vec<RunbookShadowAnswer>,
}

/// One runbook's shadow record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunbookShadowAnswer {
    pub runbook: String,
    /// The runbook's mode now: `shadow`, `live` or `unknown` (no longer
    /// in the catalog).
    pub mode: String,
    /// Events that matched it: shadowed plus held off.
    pub events_seen: u64,
    /// Runs stopped before any call, recording what they would have done.
    pub shadowed: u64,
    /// Events on a subject shadowed within the runbook's `shadow_hold`.
    pub held_off: u64,
    pub would_run: u64,
    pub would_ask: u64,
    pub would_refuse: u64,
    /// Shadowed runs whose problem a person has resolved since.
    pub resolved: u64,
    /// Resolved the way opsgate would have (the runbook's close code).
    pub agreed: u64,
    /// Resolved otherwise, or opsgate would have refused.
    pub differed: u64,
    /// Resolved, but the runbook declares no close code to compare with.
    pub not_comparable: u64,
    /// `agreed / (agreed + differed)`, when anything was compared.
    pub agreement: Option<f64>,
    /// The cases that differ, oldest first.
    pub differing: Vec<ShadowCaseAnswer>,
}

/// A shadowed run a person resolved otherwise than opsgate would have.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShadowCaseAnswer {
    pub run_id: String,
    pub subject: String,
    pub ticket: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub shadowed_at: Timestamp,
    /// `run`, `ask for approval` or `refuse`.
    pub would: String,
    pub would_close_code: Option<String>,
    pub resolved_by: Option<String>,
    pub close_code: Option<String>,
    pub close_notes: Option<String>,
    pub group: Option<String>,
}

impl From<runtime::ShadowReport> for ShadowReportAnswer {
    fn from(report: runtime::ShadowReport) -> Self {
        ShadowReportAnswer {
            since: report.since,
            runbooks: report
                .runbooks
                .into_iter()
                .map(|shadow| RunbookShadowAnswer {
                    runbook: shadow.runbook,
                    mode: shadow.mode.to_owned(),
                    events_seen: shadow.events_seen,
                    shadowed: shadow.shadowed,
                    held_off: shadow.held_off,
                    would_run: shadow.would_run,
                    would_ask: shadow.would_ask,
                    would_refuse: shadow.would_refuse,
                    resolved: shadow.resolved,
                    agreed: shadow.agreed,
                    differed: shadow.differed,
                    not_comparable: shadow.not_comparable,
                    agreement: shadow.agreement,
                    differing: shadow
                        .differing
                        .into_iter()
                        .map(|case| ShadowCaseAnswer {
                            run_id: case.run_id,
                            subject: case.subject,
                            ticket: case.ticket,
                            shadowed_at: case.shadowed_at,
                            would: case.would,
                            would_close_code: case.would_close_code,
                            resolved_by: case.resolved_by,
                            close_code: case.close_code,
                            close_notes: case.close_notes,
                            group: case.group,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
