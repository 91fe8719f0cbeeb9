//! The run state machine, as pure functions: `(run, input, now) -> (run, effect, records)`.
//!
//! The engine decides; it never acts. It does not know tokio, SQL or HTTP:
//! the runtime feeds it [`Input`]s (an approval, a finished call, a timer, a
//! restart), commits the returned [`Transition`] to the store, and only then
//! carries out its [`Effect`]s. Because the clock and the jitter's random
//! number are arguments, every path — retries, verification deadlines,
//! rollback, recovery after a crash — is testable in microseconds.
//!
//! Terminal states follow one rule a person can predict:
//! - a step failed and every completed step was compensated → `rolled_back`
//!   (the world is as it was; trying again later is safe);
//! - verification failed (the fix ran but did not fix) → the completed steps
//!   are compensated, then `needs_human`;
//! - a compensation failed, or a non-idempotent call was in flight when the
//!   process stopped (outcome unknown) → `needs_human` at once;
//! - a rollout that halted (or reached its end with failed targets) →
//!   `rolled_back` when its rollbacks left every target as it was,
//!   `needs_human` when changes remain (done targets its `rollback` keeps,
//!   a verification that failed).

mod approval;
mod handover;
mod machine;

pub use approval::{Escalation, Stage, StandIn, approval_refusal};
pub use handover::hand_over;
pub use machine::{
    Current, Effect, Hold, Input, Progress, Record, RolloutProgress, Run, TargetOutcome,
    TargetState, Timer, TimerKind, Transition, WaitOrFlight, shadow, shadow_would, start, step,
    step_held,
};

use domain::RunState;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The approval chain does not take this person's approval: they are
    /// not an approver of the open stage, or they approved already.
    #[error("{reason}")]
    ApprovalRefused { reason: String },
    /// The input does not apply to a run in this state (approving a run that
    /// is already running, a call result when no call is in flight).
    #[error("run in state `{state}` cannot take {input}")]
    InvalidInput {
        state: RunState,
        input: &'static str,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
