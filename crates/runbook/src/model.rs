//! The validated runbook, as the rest of opsgate sees it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use domain::{RetryPolicy, RiskClass};

/// A runbook that passed validation. Its invariants: step ids are unique,
/// every template only names variables that exist, the inputs schema is a
/// valid JSON Schema, every rollback names an action.
#[derive(Debug, Clone)]
pub struct Runbook {
    pub id: String,
    pub title: String,
    pub owner: String,
    pub risk: RiskClass,
    /// SHA-256 (hex) of the canonical JSON form of the runbook's content.
    pub version: String,
    /// The file it was read from.
    pub path: PathBuf,
    pub matcher: Matcher,
    pub inputs: Inputs,
    pub targets: Targets,
    pub guardrails: Guardrails,
    pub approval: Approval,
    pub steps: Vec<Step>,
    pub precheck: Option<Precheck>,
    pub verify: Option<Verify>,
    /// Set when the change holds only for a while (temporary access): it is
    /// undone, through the steps' rollbacks, at the plan's end.
    pub time_bound: Option<TimeBound>,
    /// Set when the steps run target by target, in batches, rather than
    /// once for all targets.
    pub rollout: Option<Rollout>,
    pub on_failure: OnFailure,
    pub writeback: Writeback,
    /// The hosts its calls may reach (`endpoint.example`, `*.corp.example`,
    /// as [`domain::host_matches`] reads them); empty: any. A plan whose
    /// step, rollback or probe names another host is refused.
    pub allowed_hosts: Vec<String>,
    /// `live` (the default) or `shadow`: matched, planned and decided, and
    /// stopped before any call.
    pub mode: Mode,
}

/// Whether a runbook acts, or only says what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Live,
    /// Runs stop before any call (`shadowed`), recording the requests they
    /// would have sent; a subject shadowed once is not shadowed again
    /// within `hold_ms`, so a recurring alert is not re-shadowed every
    /// minute.
    Shadow { hold_ms: u64 },
}

impl Mode {
    /// How long a shadowed subject is held off when none is given: a day.
    pub const DEFAULT_SHADOW_HOLD_MS: u64 = 24 * 3_600_000;

    /// `live` or `shadow`, as runbooks write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::Shadow { .. } => "shadow",
        }
    }
}

/// Which events a runbook handles. All conditions must hold.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The event's `source` must equal this, when set.
    pub source: Option<String>,
    /// The event's `kind` must equal this, when set.
    pub kind: Option<String>,
    pub when: Vec<Condition>,
    /// When set, the runtime starts a run only once this many matching
    /// events arrived within the window ([`Runbook::matches`] ignores it).
    pub recurrence: Option<Recurrence>,
    /// When a dedup key that already had a run may start another before
    /// the problem was resolved: `None`, never (one run per problem).
    pub rerun: Option<Rerun>,
}

/// `rerun: { after: 1h }`: a dedup key whose last run of the runbook was
/// created at least `after_ms` ago may start a new one, resolved or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rerun {
    pub after_ms: u64,
}

/// "The same `key` seen `count` times within `window_ms`": events are grouped
/// by the values of the `key` fields (dotted paths, as in [`Condition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurrence {
    pub count: u32,
    pub window_ms: u64,
    pub key: Vec<String>,
}

/// A condition on one field of the event, addressed by a dotted path into
/// the event's JSON form (`subject`, `fields.signature`, `fields.labels.alertname`).
#[derive(Debug, Clone)]
pub struct Condition {
    pub field: String,
    pub test: ConditionTest,
}

#[derive(Debug, Clone)]
pub enum ConditionTest {
    Equals(serde_json::Value),
    OneOf(Vec<serde_json::Value>),
    Exists(bool),
    /// Numeric comparison: the field is a number (or a string holding one)
    /// greater than or equal to this.
    AtLeast(f64),
}

#[derive(Debug, Clone)]
pub struct Inputs {
    /// The JSON Schema the resolved inputs must satisfy (without `from_event`).
    pub schema: serde_json::Value,
    /// Input name → template rendered against the event.
    pub from_event: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Targets {
    /// An expression (minijinja) that yields a string or a list of strings.
    pub from: String,
    pub max_targets: u32,
}

/// Guardrails declared by the runbook: limits on where, when, how often and
/// on what it may act. The runbook crate parses and carries them; `policy`
/// judges them against the facts of the moment (the clock, recent runs, who
/// asks), and the engine enforces its verdict.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    /// Environments the runbook may act in (the event's
    /// `fields.environment`); empty means anywhere.
    pub environments: Vec<String>,
    /// When the runbook may run. Outside all of them a plan is denied; empty
    /// means at any time.
    pub change_windows: Vec<WeeklyWindow>,
    /// Periods in which the runbook never runs (a year-end freeze).
    pub freezes: Vec<Freeze>,
    /// Hours in which people are around to watch; outside them, `outside`.
    pub business_hours: Option<BusinessHours>,
    pub cooldown: Option<Cooldown>,
    pub rate_limit: Option<RateLimit>,
    /// At most this many runs of the runbook under way at once: let go and
    /// not yet finished (`store::is_under_way` says which states).
    pub max_concurrent: Option<u32>,
    /// Glob patterns (`*`, `?`) of targets that need a person's approval.
    pub sensitive_targets: Vec<String>,
    /// An agent's proposal whose confidence is below this is denied.
    pub min_confidence: Option<f64>,
}

/// At most `runs` runs per target within `window_ms`: anti-flap, so a fix
/// that does not hold is not repeated forever on the same machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooldown {
    pub runs: u32,
    pub window_ms: u64,
}

/// At most `runs` runs within `window_ms`, whatever the targets: a brake on
/// a storm of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub runs: u32,
    pub window_ms: u64,
}

/// A span of wall-clock time repeating every week: on each of `days`, from
/// `from` until `to`, read on the clocks of `time_zone`. When `to` is not
/// after `from` the window ends on the next day (22:00–02:00 is a night;
/// `days` names the day it opens), and `from == to` is a whole day.
///
/// Being wall-clock time, a window follows the zone's daylight-saving
/// changes: the night clocks go forward a 01:30–03:30 window lasts one hour,
/// the night they go back it lasts three.
#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyWindow {
    /// Monday first, each day once.
    pub days: Vec<jiff::civil::Weekday>,
    pub from: jiff::civil::Time,
    pub to: jiff::civil::Time,
    pub time_zone: jiff::tz::TimeZone,
}

/// A period in which the runbook does not run: from `from` (inclusive) to
/// `to` (exclusive), civil date-times read in `time_zone`.
#[derive(Debug, Clone, PartialEq)]
pub struct Freeze {
    pub from: jiff::civil::DateTime,
    pub to: jiff::civil::DateTime,
    pub time_zone: jiff::tz::TimeZone,
    pub reason: Option<String>,
}

impl Freeze {
    /// The instant the freeze begins. A `from` that the clocks skip (in a
    /// spring-forward gap) or show twice (in a fall-back fold) is read as
    /// jiff's "compatible" rule does: the later reading for a gap, the
    /// earlier for a fold, as most calendars do.
    pub fn starts_at(&self) -> jiff::Timestamp {
        instant(self.from, &self.time_zone)
    }

    /// The instant the freeze ends (the first instant not frozen).
    pub fn ends_at(&self) -> jiff::Timestamp {
        instant(self.to, &self.time_zone)
    }
}

fn instant(civil: jiff::civil::DateTime, time_zone: &jiff::tz::TimeZone) -> jiff::Timestamp {
    time_zone
        .to_ambiguous_timestamp(civil)
        .compatible()
        // Only a date-time at the very edge of jiff's range fails; the
        // validator refuses those, so the edge itself is a safe answer.
        .unwrap_or(jiff::Timestamp::MAX)
}

/// Business hours and what happens outside them.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    pub hours: WeeklyWindow,
    pub outside: Outside,
}

/// The verdict when a run is asked for outside its business hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outside {
    Deny,
    RequireApproval,
}

/// How a run of this runbook is approved: on its own, or by `approvals`
/// distinct people — or through `stages`, in order — within `expires_ms`
/// (after which the run ends `expired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub mode: ApprovalMode,
    pub expires_ms: u64,
    /// How many distinct people must approve (at least 1) when there are
    /// no stages.
    pub approvals: u32,
    /// The approval chain; empty: one stage of `approvals` approvers.
    pub stages: Vec<domain::ApprovalStage>,
}

impl Approval {
    /// A run nobody approves for a day is stale: the incident has moved on.
    pub const DEFAULT_EXPIRES_MS: u64 = 24 * 60 * 60 * 1000;

    /// Approval required, with the defaults.
    pub fn required() -> Approval {
        Approval {
            mode: ApprovalMode::Required,
            expires_ms: Approval::DEFAULT_EXPIRES_MS,
            approvals: 1,
            stages: Vec::new(),
        }
    }
}

/// Whether a run of this runbook starts on its own or waits for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    Auto,
    Required,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    pub call: CallTemplate,
    pub retry: RetryPolicy,
    pub idempotent: bool,
    pub rollback: Option<CallTemplate>,
    /// The run pauses before this step for an approval of its own.
    pub requires_approval: bool,
    /// The step is one of the second remedy's (`then_if_unverified`): it
    /// runs only when the steps before it did not verify.
    pub if_unverified: bool,
}

/// A connector call before rendering: the step action (by what it takes),
/// the `with:` tree of templates, and the timeout.
#[derive(Debug, Clone)]
pub struct CallTemplate {
    pub action: &'static domain::ActionShape,
    pub with: serde_json::Value,
    pub timeout_ms: u64,
}

impl CallTemplate {
    /// The named credential the call authenticates with. The validator
    /// accepts only a literal name there, so it is known before any plan.
    pub fn credential(&self) -> Option<&str> {
        self.with["credential"].as_str()
    }

    /// The host the call is sent to when configuration alone says it (the
    /// URL written out, or starting with `{{ env.NAME }}`): what a
    /// credential's `hosts` can be checked against before any event.
    /// `None` for calls without a URL, or whose host comes from the event.
    pub fn host_before_planning(&self, env: &crate::TemplateEnv) -> Option<String> {
        let text = self.with[self.action.address?].as_str()?;
        let context = crate::template::context(serde_json::json!({ "env": env.to_json() }));
        crate::url_template::host_before_planning(text, |expression| {
            crate::template::evaluate(expression, &context)
        })
    }
}

impl Runbook {
    /// Every call the runbook can make, with where it is written: the
    /// precheck probe, each step (`step `restart``), its rollback, and the
    /// verification probe.
    pub fn calls(&self) -> impl Iterator<Item = (String, &CallTemplate)> {
        let steps = self.steps.iter().flat_map(|step| {
            let rollback = step
                .rollback
                .as_ref()
                .map(|rollback| (format!("the rollback of step `{}`", step.id), rollback));
            std::iter::once((format!("step `{}`", step.id), &step.call)).chain(rollback)
        });
        let precheck = self
            .precheck
            .as_ref()
            .map(|precheck| ("`precheck.probe`".to_owned(), &precheck.probe));
        let probe = self
            .verify
            .as_ref()
            .map(|verify| ("`verify.probe`".to_owned(), &verify.probe));
        precheck.into_iter().chain(steps).chain(probe)
    }
}

/// The read before the first step (`precheck:`): `expect` must hold on
/// the probe's `response` — the problem is still there — or the run does
/// not act.
#[derive(Debug, Clone)]
pub struct Precheck {
    pub probe: CallTemplate,
    /// A minijinja expression over `response`, true while the problem is.
    pub expect: String,
}

#[derive(Debug, Clone)]
pub struct Verify {
    pub probe: CallTemplate,
    /// A minijinja expression over `response` that must be true.
    pub expect: String,
    pub within_ms: u64,
    pub every_ms: u64,
}

/// How long a time-bound change holds. Every step of such a runbook has a
/// rollback: that is what undoes the change.
#[derive(Debug, Clone)]
pub struct TimeBound {
    /// A template for the end: an RFC 3339 timestamp, or a date (the
    /// change then holds through that day, UTC). Rendered into the plan's
    /// `ends_at`.
    pub until: String,
    /// The furthest the end may lie after the event, when set.
    pub at_most_ms: Option<u64>,
}

/// `rollout:`: each target gets its own rendered steps (templates read
/// `target`), acted on in batches — the canary batch, then batches of
/// `batch` — with `pause_ms` between batches, until a stop condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// How many targets the first batch takes; 0: no canary batch.
    pub canary: u32,
    pub batch: BatchSize,
    /// 0: the next batch starts at once.
    pub pause_ms: u64,
    pub stop_when: domain::StopWhen,
    pub rollback: domain::HaltRollback,
    pub approve_after_canary: bool,
}

/// How many targets a batch after the canary takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Count(u32),
    /// A share of all the targets, in percent (1 to 100), rounded up.
    Percent(u32),
}

impl Rollout {
    /// The batch sizes for `targets` targets: the canary batch (when there
    /// is one), then batches of `batch`, the last one what is left. A
    /// percentage is of all the targets, rounded up, and at least 1.
    pub fn batches(&self, targets: usize) -> Vec<usize> {
        let size = match self.batch {
            BatchSize::Count(count) => count as usize,
            BatchSize::Percent(percent) => (targets * percent as usize).div_ceil(100),
        }
        .max(1);
        let mut batches = Vec::new();
        let mut left = targets;
        let canary = (self.canary as usize).min(left);
        if canary > 0 {
            batches.push(canary);
            left -= canary;
        }
        while left > 0 {
            let next = size.min(left);
            batches.push(next);
            left -= next;
        }
        batches
    }
}

#[derive(Debug, Clone, Default)]
pub struct OnFailure {
    pub escalate_to: Option<String>,
    pub ticket_state: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Writeback {
    pub ticket: bool,
    pub close_code: Option<String>,
}
