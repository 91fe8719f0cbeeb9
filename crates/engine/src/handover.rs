//! Handing a run over at a step boundary, when the instance driving it is
//! shutting down.
//!
//! A transition that starts a call has already marked it in flight, and a
//! call in flight that nobody finishes ends a non-idempotent step in
//! `needs_human` (its outcome is unknown). So a draining instance never
//! commits such a transition: it turns it into the same state with the
//! call *due now* instead — exactly what a retry's wait looks like — and
//! stops. Whoever claims the run next (another instance at once, or this
//! one after its restart) wakes it and sends that call, under the same
//! attempt number. Only the call is deferred; everything else the
//! transition recorded (the outcome that came in, the next step's place)
//! is kept.

use domain::RecordKind;
use jiff::Timestamp;
use serde_json::json;

use crate::{Effect, Record, Transition, WaitOrFlight};

/// `transition` with the call it would start deferred to whoever drives the
/// run next, and a `run.handed_over` record saying so; any other
/// transition unchanged. `by` names the instance that stops.
pub fn hand_over(mut transition: Transition, by: &str, now: Timestamp) -> Transition {
    let Some(Effect::Call {
        phase,
        step_id,
        attempt,
        ..
    }) = &transition.effect
    else {
        return transition;
    };
    let Some(current) = transition.run.progress.current.as_mut() else {
        return transition;
    };
    // The attempt was only announced, never sent: its record goes.
    if transition
        .records
        .last()
        .is_some_and(|record| record.kind == RecordKind::AttemptStarted)
    {
        transition.records.pop();
    }
    // Waking sends the attempt after the one it waits for.
    current.attempt = attempt.saturating_sub(1);
    current.status = WaitOrFlight::WaitingUntil(now);
    transition.records.push(Record {
        kind: RecordKind::RunHandedOver,
        detail: json!({
            "by": by,
            "phase": phase.as_str(),
            "step": step_id,
            "attempt": attempt,
        }),
    });
    transition.effect = None;
    transition
}
