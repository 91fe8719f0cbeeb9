//! Running the steps: in order, each retried as its policy says.

use domain::AttemptOutcome;
use engine::{Error, Input};
use serde_json::json;

use crate::script::{at, check, decision, plan};

#[test]
fn without_verification_a_run_succeeds_after_its_last_step() {
    check(
        "step s1
         step s2
         step s3",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s3 #1] (attempt.finished attempt.started)
         @3s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1 s2 s3",
    );
}

#[test]
fn a_plan_without_steps_goes_straight_to_verification_or_success() {
    check(
        "",
        "@0 begin",
        "start approved
         @0s approved --begin--> succeeded [] (run.state=running run.state=succeeded)
         = succeeded",
    );
    check(
        "verify within=10s every=5s: response.json.ok",
        "@0 begin
         @1s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> verifying [call verify verify #1] (run.state=running run.state=verifying attempt.started)
         @1s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         verify deadline: 10s",
    );
}

#[test]
fn a_covered_failure_waits_for_the_backoff_then_tries_again() {
    // retry=3: 1s initial, ×2, equal jitter; rand=0.5 puts each delay at
    // three quarters of its ceiling: 750ms, then 1.5s.
    check(
        "step s1 retry=3",
        "@0 begin
         @2s fail 503
         @2.7s wake
         @2.75s wake
         @3s fail 503
         @4.5s wake
         @5s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @2s running --fail 503--> running [wake @2.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @2.7s running --wake--> running [wake @2.75s] ()
         @2.75s running --wake--> running [call step s1 #2] (attempt.started)
         @3s running --fail 503--> running [wake @4.5s] (attempt.finished attempt.retry_scheduled(#3 in 1.5s))
         @4.5s running --wake--> running [call step s1 #3] (attempt.started)
         @5s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1",
    );
}

#[test]
fn the_jitter_spreads_the_delay_between_half_and_all_of_the_ceiling() {
    check(
        "step s1 retry=3",
        "rand=0
         @0 begin
         @0 fail 503",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail 503--> running [wake @0.5s] (attempt.finished attempt.retry_scheduled(#2 in 0.5s))
         = running
         current: step s1 #1 waiting until 0.5s",
    );
    check(
        "step s1 retry=3",
        "rand=0.999
         @0 begin
         @0 fail 503",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail 503--> running [wake @0.999s] (attempt.finished attempt.retry_scheduled(#2 in 0.999s))
         = running
         current: step s1 #1 waiting until 0.999s",
    );
}

#[test]
fn without_jitter_the_delay_doubles_up_to_the_maximum() {
    check(
        "step s1 idempotent retry=5 nojitter initial=1s max=3s",
        "@0 begin
         @0 fail timeout
         @1s wake
         @1s fail timeout
         @3s wake
         @3s fail timeout
         @6s wake
         @6s fail timeout
         @9s wake",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail timeout--> running [wake @1s] (attempt.finished attempt.retry_scheduled(#2 in 1s))
         @1s running --wake--> running [call step s1 #2] (attempt.started)
         @1s running --fail timeout--> running [wake @3s] (attempt.finished attempt.retry_scheduled(#3 in 2s))
         @3s running --wake--> running [call step s1 #3] (attempt.started)
         @3s running --fail timeout--> running [wake @6s] (attempt.finished attempt.retry_scheduled(#4 in 3s))
         @6s running --wake--> running [call step s1 #4] (attempt.started)
         @6s running --fail timeout--> running [wake @9s] (attempt.finished attempt.retry_scheduled(#5 in 3s))
         @9s running --wake--> running [call step s1 #5] (attempt.started)
         = running
         current: step s1 #5 in flight",
    );
}

#[test]
fn a_longer_retry_after_wins_over_the_backoff() {
    check(
        "step s1 retry=3",
        "@0 begin
         @1s fail 503 retry-after=5s
         @5.9s wake
         @6s wake",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 503 retry-after=5s--> running [wake @6s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
         @5.9s running --wake--> running [wake @6s] ()
         @6s running --wake--> running [call step s1 #2] (attempt.started)
         = running
         current: step s1 #2 in flight",
    );
    // A shorter one does not shorten it.
    check(
        "step s1 retry=3",
        "@0 begin
         @1s fail 429 retry-after=100ms",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 429 retry-after=100ms--> running [wake @1.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         = running
         current: step s1 #1 waiting until 1.75s",
    );
}

#[test]
fn a_failure_the_policy_does_not_cover_is_not_retried() {
    check(
        "step s1 retry=3",
        "@0 begin
         @1s fail 404",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 404--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 1 attempt: HTTP 404",
    );
    // Nor is a failure whose retry-after suggests it could be.
    check(
        "step s1 retry=3 on=exit:75",
        "@0 begin
         @1s fail 503 retry-after=1s",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 503 retry-after=1s--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 1 attempt: HTTP 503",
    );
    // Without `retry`, a step has one attempt whatever happens.
    check(
        "step s1",
        "@0 begin
         @1s fail connect",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail connect--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 1 attempt: connection refused",
    );
}

#[test]
fn retry_on_matches_the_exact_cause() {
    check(
        "step s1 retry=3 on=connect,exit:75",
        "@0 begin
         @0 fail exit:75
         @1s wake
         @1s fail connect
         @3s wake
         @3s fail exit:1",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail exit:75--> running [wake @0.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @1s running --wake--> running [call step s1 #2] (attempt.started)
         @1s running --fail connect--> running [wake @2.5s] (attempt.finished attempt.retry_scheduled(#3 in 1.5s))
         @3s running --wake--> running [call step s1 #3] (attempt.started)
         @3s running --fail exit:1--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 3 attempts: exit code 1",
    );
    check(
        "step s1 retry=3 on=timeout",
        "@0 begin
         @0 fail other",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail other--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 1 attempt: invalid request",
    );
}

#[test]
fn a_step_fails_once_its_attempts_are_exhausted() {
    check(
        "step s1 retry=2",
        "@0 begin
         @0 fail 503
         @1s wake
         @1s fail 503",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail 503--> running [wake @0.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @1s running --wake--> running [call step s1 #2] (attempt.started)
         @1s running --fail 503--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 2 attempts: HTTP 503",
    );
}

#[test]
fn an_unknown_step_outcome_needs_a_human_without_rollback() {
    // Whether `s2` took effect cannot be known, so compensating `s1` could
    // make things worse: a person decides.
    check(
        "step s1 rollback
         step s2 rollback",
        "@0 begin
         @1s ok
         @2s unknown: connector crashed",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --unknown: connector crashed--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: step `s2` outcome unknown: connector crashed
         completed: s1",
    );
}

#[test]
fn a_step_that_is_not_idempotent_is_never_sent_again_once_it_may_have_acted() {
    // The request went out and no answer said what the peer did: sending
    // it again could do it twice, and compensating `s1` could make things
    // worse. Its retry policy covers timeouts, and still: a person decides.
    for (failure, error) in [
        ("timeout", "timed out after 10s"),
        ("no-answer", "connection closed before message completed"),
    ] {
        check(
            "step s1 rollback
             step s2 rollback retry=3",
            &format!(
                "@0 begin
                 @1s ok
                 @2s fail {failure}"
            ),
            &format!(
                "start approved
                 @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
                 @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
                 @2s running --fail {failure}--> needs_human [] (attempt.finished run.state=needs_human)
                 = needs_human
                 reason: step `s2` outcome unknown: {error}; the request was sent, and the step is not idempotent, so it is not sent again
                 completed: s1"
            ),
        );
    }
    // Refused before anything was sent, it is tried again as its policy says.
    check(
        "step s1 nojitter retry=3",
        "@0 begin
         @0 fail connect",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --fail connect--> running [wake @1s] (attempt.finished attempt.retry_scheduled(#2 in 1s))
         = running
         current: step s1 #1 waiting until 1s",
    );
}

#[test]
fn call_results_and_timers_only_apply_to_what_is_pending() {
    check(
        "step s1 retry=2",
        "@0 begin
         @0 wake
         @0 fail 503
         @0 ok
         @0 begin
         @1s wake
         @1s ok
         @1s ok
         @1s wake",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --wake--> error: run in state `running` cannot take a timer
         @0s running --fail 503--> running [wake @0.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @0s running --ok--> error: run in state `running` cannot take a call result
         @0s running --begin--> error: run in state `running` cannot take a start
         @1s running --wake--> running [call step s1 #2] (attempt.started)
         @1s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         @1s succeeded --ok--> error: run in state `succeeded` cannot take a call result
         @1s succeeded --wake--> error: run in state `succeeded` cannot take a timer
         = succeeded
         completed: s1",
    );
}

#[test]
fn a_call_result_with_nothing_in_flight_is_invalid_input() {
    let plan = plan("step s1 retry=2");
    let run = engine::start(&decision("allow"), &plan, Vec::new(), at(0)).run;
    let failed = AttemptOutcome::Failed {
        cause: domain::FailureCause::Status(503),
        error: "HTTP 503".to_owned(),
        response: None,
        retry_after_ms: None,
    };
    let run = engine::step(&run, &plan, Input::Begin, at(0), 0.5)
        .unwrap()
        .run;
    let waiting = engine::step(&run, &plan, Input::CallFinished(failed), at(0), 0.5)
        .unwrap()
        .run;
    let finished = Input::CallFinished(AttemptOutcome::Succeeded {
        response: json!({}),
    });
    let error = engine::step(&waiting, &plan, finished, at(1), 0.5).unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidInput {
                state: domain::RunState::Running,
                input: "a call result"
            }
        ),
        "{error:?}"
    );
}

/// `Retry-After` comes from the peer and the HTTP connector turns any number
/// of seconds into milliseconds (saturating), so the engine sees whatever a
/// misbehaving server sends. Whatever it is, the run must keep waiting for a
/// time after now: neither panic (the wake time past the calendar's end) nor
/// retry at once (the delay wrapped to a negative duration).
#[test]
fn an_absurd_retry_after_still_schedules_a_wait_in_the_future() {
    let plan = plan("step s1 retry=3");
    let allowed = engine::start(&decision("allow"), &plan, Vec::new(), at(0)).run;
    let running = engine::step(&allowed, &plan, Input::Begin, at(0), 0.5)
        .unwrap()
        .run;
    let mut problems = Vec::new();
    // 10^13 seconds, and the header `Retry-After: 18446744073709552`.
    for retry_after_ms in [10_u64.pow(16), u64::MAX] {
        let outcome = AttemptOutcome::Failed {
            cause: domain::FailureCause::Status(503),
            error: "HTTP 503".to_owned(),
            response: None,
            retry_after_ms: Some(retry_after_ms),
        };
        let now = at(1_000);
        let result = std::panic::catch_unwind(|| {
            engine::step(&running, &plan, Input::CallFinished(outcome), now, 0.5)
        });
        match result {
            Err(_) => problems.push(format!(
                "retry-after {retry_after_ms}ms: the engine panicked"
            )),
            Ok(Err(error)) => problems.push(format!("retry-after {retry_after_ms}ms: {error}")),
            Ok(Ok(transition)) => match transition.effect.as_slice() {
                [engine::Effect::WakeAt(until)] if *until > now => {}
                effects => problems.push(format!(
                    "retry-after {retry_after_ms}ms: expected a wake after {now}, got {effects:?}"
                )),
            },
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
