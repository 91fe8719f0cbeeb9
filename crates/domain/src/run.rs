//! Runs: the states a run moves through, and the outcome of one attempt.

use serde::{Deserialize, Serialize};

/// The state of a run (DESIGN.md section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Planned,
    AwaitingApproval,
    Approved,
    Running,
    Verifying,
    /// A time-bound run's change holds until its plan's `ends_at`; then
    /// it is undone (the steps' rollbacks) and the run ends `succeeded`.
    InEffect,
    /// An operator's freeze stopped the run before its next step; it goes
    /// on when the freeze is lifted or expires.
    Paused,
    Succeeded,
    Denied,
    Expired,
    Cancelled,
    Failed,
    RollingBack,
    RolledBack,
    NeedsHuman,
    /// A run of a runbook (or a proposer) in shadow mode: matched, planned
    /// and decided, and stopped before any call, with what it would have
    /// done recorded.
    Shadowed,
}

impl RunState {
    pub const ALL: [RunState; 16] = [
        RunState::Planned,
        RunState::AwaitingApproval,
        RunState::Approved,
        RunState::Running,
        RunState::Verifying,
        RunState::InEffect,
        RunState::Paused,
        RunState::Succeeded,
        RunState::Denied,
        RunState::Expired,
        RunState::Cancelled,
        RunState::Failed,
        RunState::RollingBack,
        RunState::RolledBack,
        RunState::NeedsHuman,
        RunState::Shadowed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planned => "planned",
            RunState::AwaitingApproval => "awaiting_approval",
            RunState::Approved => "approved",
            RunState::Running => "running",
            RunState::Verifying => "verifying",
            RunState::InEffect => "in_effect",
            RunState::Paused => "paused",
            RunState::Succeeded => "succeeded",
            RunState::Denied => "denied",
            RunState::Expired => "expired",
            RunState::Cancelled => "cancelled",
            RunState::Failed => "failed",
            RunState::RollingBack => "rolling_back",
            RunState::RolledBack => "rolled_back",
            RunState::NeedsHuman => "needs_human",
            RunState::Shadowed => "shadowed",
        }
    }

    pub fn parse(value: &str) -> crate::Result<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == value).ok_or_else(|| {
            crate::Error::UnknownVariant {
                what: "run state",
                value: value.to_owned(),
                expected: "planned, awaiting_approval, approved, running, verifying, in_effect, paused, succeeded, denied, \
                           expired, cancelled, failed, rolling_back, rolled_back, needs_human, shadowed",
            }
        })
    }

    /// Whether the run has nothing to do of its own: it is finished, waits
    /// for a person's approval or for a freeze to lift, or holds a
    /// time-bound change until its end. Whoever waits for a run waits for
    /// this.
    pub fn is_settled(self) -> bool {
        self.is_terminal()
            || matches!(
                self,
                RunState::AwaitingApproval | RunState::InEffect | RunState::Paused
            )
    }

    /// A terminal run never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded
                | RunState::Denied
                | RunState::Expired
                | RunState::Cancelled
                | RunState::RolledBack
                | RunState::NeedsHuman
                | RunState::Shadowed
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one attempt of a call came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum AttemptOutcome {
    /// The call did what it should; `response` is its summary.
    Succeeded { response: serde_json::Value },
    /// The call failed. `cause` lets the step's retry policy decide whether
    /// another attempt is worth it; `retry_after_ms` is the peer's `Retry-After`.
    Failed {
        cause: FailureCause,
        error: String,
        response: Option<serde_json::Value>,
        retry_after_ms: Option<u64>,
    },
    /// The process stopped while the call was in flight: whether it took
    /// effect cannot be known.
    Unknown { reason: String },
}

/// Why an attempt failed, in the terms a retry policy is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum FailureCause {
    /// The connection could not be made: nothing reached the peer.
    Connect,
    /// The request was sent and no answer came within the timeout.
    Timeout,
    Status(u16),
    ExitCode(i32),
    /// The request was sent and the peer hung up, or answered with
    /// something that is not HTTP.
    NoAnswer,
    /// Anything else: a bad request we built, a signal, an IO error.
    Other,
}

impl FailureCause {
    /// Whether the peer may have acted although the attempt failed: the
    /// request reached it and no answer said what it did. A step that is
    /// not idempotent is then never sent again (`engine`).
    pub fn may_have_acted(self) -> bool {
        matches!(self, FailureCause::Timeout | FailureCause::NoAnswer)
    }

    /// Whether a policy that retries on `retry_on` covers this failure.
    pub fn is_covered_by(self, retry_on: &[crate::RetryOn]) -> bool {
        use crate::RetryOn;
        retry_on.iter().any(|on| match (on, self) {
            (RetryOn::Connect, FailureCause::Connect) => true,
            (RetryOn::Timeout, FailureCause::Timeout) => true,
            (RetryOn::Status(wanted), FailureCause::Status(got)) => *wanted == got,
            (RetryOn::ExitCode(wanted), FailureCause::ExitCode(got)) => *wanted == got,
            _ => false,
        })
    }
}

/// Which part of a run an attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    /// The read before the first step: is the problem still there?
    Precheck,
    Step,
    Verify,
    Rollback,
}

impl StepPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            StepPhase::Precheck => "precheck",
            StepPhase::Step => "step",
            StepPhase::Verify => "verify",
            StepPhase::Rollback => "rollback",
        }
    }
}
