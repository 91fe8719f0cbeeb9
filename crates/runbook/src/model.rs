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
    pub approval: ApprovalMode,
    pub steps: Vec<Step>,
    pub verify: Option<Verify>,
    pub on_failure: OnFailure,
    pub writeback: Writeback,
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

/// Guardrails declared by the runbook. This issue enforces `environments`
/// (against the event's `fields.environment`, when present) and
/// `max_targets`; the others are parsed and carried for the policy issue.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    pub environments: Vec<String>,
    pub cooldown: Option<Cooldown>,
}

#[derive(Debug, Clone)]
pub struct Cooldown {
    pub runs: u32,
    pub window_ms: u64,
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
}

/// A connector call before rendering: the action name, the `with:` tree of
/// templates, and the timeout.
#[derive(Debug, Clone)]
pub struct CallTemplate {
    pub action: Action,
    pub with: serde_json::Value,
    pub timeout_ms: u64,
}

/// The connector operations a runbook may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    HttpRequest,
    CommandRun,
}

impl Action {
    pub const ALL: [Action; 2] = [Action::HttpRequest, Action::CommandRun];

    pub fn parse(name: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::HttpRequest => "http.request",
            Action::CommandRun => "command.run",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Verify {
    pub probe: CallTemplate,
    /// A minijinja expression over `response` that must be true.
    pub expect: String,
    pub within_ms: u64,
    pub every_ms: u64,
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
