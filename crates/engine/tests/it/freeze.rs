//! An operator's freeze: checked where a step would start, never mid-step.
//! A run it covers pauses before its next step and goes on, with that
//! step, when no freeze holds it; or, when the freeze says so, it is
//! cancelled and its completed steps are rolled back.

use crate::script::check;

#[test]
fn a_freeze_pauses_a_run_before_its_next_step_and_it_resumes_there() {
    check(
        "step s1
         step s2",
        "@0 begin
         freeze=pause
         @1s ok
         freeze=off
         @9s resume user:olga
         @10s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> paused [] (attempt.finished run.paused(before s2) run.state=paused)
         @9s paused --resume user:olga--> running [call step s2 #1] (run.resumed(user:olga) run.state=running attempt.started)
         @10s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1 s2",
    );
}

#[test]
fn a_run_approved_during_a_freeze_pauses_before_its_first_step() {
    // Resumed while a freeze still holds it, it pauses again at once.
    check(
        "step s1",
        "freeze=pause
         @0 begin
         @3s resume opsgate
         freeze=off
         @4s resume opsgate
         @5s ok",
        "start approved
         @0s approved --begin--> paused [] (run.state=running run.paused(before s1) run.state=paused)
         @3s paused --resume opsgate--> paused [] (run.resumed(opsgate) run.state=running run.paused(before s1) run.state=paused)
         @4s paused --resume opsgate--> running [call step s1 #1] (run.resumed(opsgate) run.state=running attempt.started)
         @5s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1",
    );
}

#[test]
fn a_retry_due_during_a_freeze_waits_for_it_to_lift() {
    check(
        "step s1 retry=3",
        "@0 begin
         @1s fail 503
         freeze=pause
         @2s wake
         freeze=off
         @8s resume user:olga
         @9s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 503--> running [wake @1.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @2s running --wake--> paused [] (run.paused(before s1) run.state=paused)
         @8s paused --resume user:olga--> running [call step s1 #2] (run.resumed(user:olga) run.state=running attempt.started)
         @9s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1",
    );
}

#[test]
fn a_freeze_that_cancels_rolls_back_the_completed_steps() {
    check(
        "step s1 rollback
         step s2 rollback
         step s3",
        "@0 begin
         @1s ok
         freeze=cancel
         @2s ok
         @3s ok
         @4s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @2s running --ok--> rolling_back [call rollback s2 #1] (attempt.finished run.cancelled(user:olga) run.state=rolling_back attempt.started)
         @3s rolling_back --ok--> rolling_back [call rollback s1 #1] (attempt.finished attempt.started)
         @4s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: freeze frz-1 stopped it before step `s3`: incident in progress
         completed: s1 s2",
    );
}

#[test]
fn a_paused_run_cancelled_by_a_person_rolls_back_then_ends_cancelled() {
    check(
        "step s1 rollback
         step s2",
        "@0 begin
         freeze=pause
         @1s ok
         @5s cancel olga: the change is abandoned
         @5s begin
         @6s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> paused [] (attempt.finished run.paused(before s2) run.state=paused)
         @5s paused --cancel olga: the change is abandoned--> rolling_back [begin] (run.cancelled(olga) run.state=rolling_back)
         @5s rolling_back --begin--> rolling_back [call rollback s1 #1] (attempt.started)
         @6s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: the change is abandoned
         completed: s1",
    );
    // Nothing done, nothing to undo.
    check(
        "step s1",
        "freeze=pause
         @0 begin
         @5s cancel olga: not needed",
        "start approved
         @0s approved --begin--> paused [] (run.state=running run.paused(before s1) run.state=paused)
         @5s paused --cancel olga: not needed--> cancelled [] (run.cancelled(olga) run.state=rolling_back run.state=cancelled)
         = cancelled
         reason: not needed",
    );
}

#[test]
fn rollbacks_and_probes_are_not_held() {
    check(
        "step s1 rollback
         verify within=10s every=5s: response.json.ok",
        "@0 begin
         freeze=pause
         @1s ok
         @2s probe {\"ok\": false}
         @7s wake
         @8s probe {\"ok\": false}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> verifying [wake @7s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
         @7s verifying --wake--> verifying [call verify verify #2] (attempt.started)
         @8s verifying --probe {\"ok\": false}--> rolling_back [call rollback s1 #1] (attempt.finished verify.failed run.state=failed run.state=rolling_back attempt.started)
         = rolling_back
         reason: verification failed within 10s: `response.json.ok` was false
         completed: s1
         current: rollback s1 #1 in flight
         verify deadline: 11s
         verification failed",
    );
}
