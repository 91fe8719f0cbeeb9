//! Rollback: after a step fails, the completed steps that have a rollback
//! are compensated, newest first.

use crate::script::check;

#[test]
fn a_failed_step_compensates_the_completed_steps_newest_first() {
    // `s2` has no rollback and `s4` never completed: neither is compensated.
    check(
        "step s1 rollback
         step s2
         step s3 rollback
         step s4 rollback",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok
         @4s fail 404
         @5s ok
         @6s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s3 #1] (attempt.finished attempt.started)
         @3s running --ok--> running [call step s4 #1] (attempt.finished attempt.started)
         @4s running --fail 404--> rolling_back [call rollback s3 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @5s rolling_back --ok--> rolling_back [call rollback s1 #1] (attempt.finished attempt.started)
         @6s rolling_back --ok--> rolled_back [] (attempt.finished run.state=rolled_back)
         = rolled_back
         reason: step `s4` failed after 1 attempt: HTTP 404
         completed: s1 s2 s3",
    );
}

#[test]
fn a_failed_rollback_needs_a_human_and_says_both_why() {
    check(
        "step s1 rollback
         step s2",
        "@0 begin
         @1s ok
         @2s fail 404
         @3s fail 500",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --fail 404--> rolling_back [call rollback s1 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @3s rolling_back --fail 500--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: step `s2` failed after 1 attempt: HTTP 404; rollback of `s1` failed: HTTP 500
         completed: s1",
    );
    // The rollbacks still to do are left for the person to see.
    check(
        "step s1 rollback
         step s2 rollback
         step s3",
        "@0 begin
         @0 ok
         @0 ok
         @0 fail other
         @1s unknown: agent lost",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @0s running --ok--> running [call step s3 #1] (attempt.finished attempt.started)
         @0s running --fail other--> rolling_back [call rollback s2 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @1s rolling_back --unknown: agent lost--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: step `s3` failed after 1 attempt: invalid request; rollback of `s2` outcome unknown: agent lost
         completed: s1 s2
         rollback pending: s1",
    );
}

#[test]
fn a_rollback_is_retried_by_its_steps_policy() {
    check(
        "step s1 rollback retry=2
         step s2",
        "@0 begin
         @0 ok
         @0 fail 404
         @0 fail 503
         @0.75s wake
         @1s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @0s running --fail 404--> rolling_back [call rollback s1 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @0s rolling_back --fail 503--> rolling_back [wake @0.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @0.75s rolling_back --wake--> rolling_back [call rollback s1 #2] (attempt.started)
         @1s rolling_back --ok--> rolled_back [] (attempt.finished run.state=rolled_back)
         = rolled_back
         reason: step `s2` failed after 1 attempt: HTTP 404
         completed: s1",
    );
}

#[test]
fn a_failed_rollback_after_a_failed_verification_keeps_both_reasons() {
    check(
        "step s1 rollback
         verify within=1s every=1s: response.json.ok",
        "@0 begin
         @0 ok
         @1s probe {\"ok\": false}
         @2s fail 409",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @1s verifying --probe {\"ok\": false}--> rolling_back [call rollback s1 #1] (attempt.finished verify.failed run.state=failed run.state=rolling_back attempt.started)
         @2s rolling_back --fail 409--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: verification failed within 1s: `response.json.ok` was false; rollback of `s1` failed: HTTP 409
         completed: s1
         verify deadline: 1s
         verification failed",
    );
}
