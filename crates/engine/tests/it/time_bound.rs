//! Time-bound changes: a plan with an end holds `in_effect` once it has
//! succeeded, and a durable timer undoes it (the steps' rollbacks, newest
//! first) at that end, or a person ends it early.

use crate::script::check;

#[test]
fn a_verified_change_holds_until_its_end_and_is_then_undone() {
    check(
        r#"step grant rollback idempotent
           verify: response.json.member == true
           until 3600s"#,
        r#"@0 begin
           @1s ok
           @2s probe {"member": true}
           @3600s timer term_ends
           @3600s begin
           @3601s ok"#,
        r#"start approved
           @0s approved --begin--> running [call step grant #1] (run.state=running attempt.started)
           @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
           @2s verifying --probe {"member": true}--> in_effect [] (attempt.finished verify.satisfied run.state=in_effect time_bound.scheduled) timers: term_ends@3600s
           @3600s in_effect --timer term_ends--> rolling_back [begin] (time_bound.ended run.state=rolling_back)
           @3600s rolling_back --begin--> rolling_back [call rollback grant #1] (attempt.started)
           @3601s rolling_back --ok--> succeeded [] (attempt.finished run.state=succeeded)
           = succeeded
           completed: grant
           verify deadline: 61s"#,
    );
}

#[test]
fn ending_early_undoes_every_step_and_a_failed_removal_needs_a_human() {
    check(
        "step add-vpn rollback
         step add-mail rollback
         until 10s",
        "@0 begin
         @1s ok
         @2s ok
         @5s cancel erin: the contractor left
         @5s begin
         @6s ok
         @7s fail 403",
        "start approved
         @0s approved --begin--> running [call step add-vpn #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step add-mail #1] (attempt.finished attempt.started)
         @2s running --ok--> in_effect [] (attempt.finished run.state=in_effect time_bound.scheduled) timers: term_ends@10s
         @5s in_effect --cancel erin: the contractor left--> rolling_back [begin] (time_bound.ended run.state=rolling_back)
         @5s rolling_back --begin--> rolling_back [call rollback add-mail #1] (attempt.started)
         @6s rolling_back --ok--> rolling_back [call rollback add-vpn #1] (attempt.finished attempt.started)
         @7s rolling_back --fail 403--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: the time-bound change could not be undone: rollback of `add-vpn` failed: HTTP 403
         completed: add-vpn add-mail",
    );
}

#[test]
fn a_restart_while_undoing_resumes_the_removal() {
    // The timer fired (and was committed), then the process stopped: the
    // first removal is due; an idempotent removal in flight is sent again.
    check(
        "step grant rollback idempotent
         until 10s",
        "@0 begin
         @1s ok
         @10s timer term_ends
         @30s recover
         @30s wake
         @31s recover
         @32s ok",
        "start approved
         @0s approved --begin--> running [call step grant #1] (run.state=running attempt.started)
         @1s running --ok--> in_effect [] (attempt.finished run.state=in_effect time_bound.scheduled) timers: term_ends@10s
         @10s in_effect --timer term_ends--> rolling_back [begin] (time_bound.ended run.state=rolling_back)
         @30s rolling_back --recover--> rolling_back [wake @10s] ()
         @30s rolling_back --wake--> rolling_back [call rollback grant #1] (attempt.started)
         @31s rolling_back --recover--> rolling_back [call rollback grant #2] (run.recovered(reissue) attempt.started)
         @32s rolling_back --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: grant",
    );
}

#[test]
fn an_end_that_passed_before_the_approval_denies_the_run_unexecuted() {
    check(
        "step grant rollback
         until 10s",
        "gate require_approval
         @5s approve ann
         @20s begin",
        "start awaiting_approval
         @5s awaiting_approval --approve ann--> approved [begin] (approval.granted(ann) run.state=approved)
         @20s approved --begin--> denied [] (run.state=denied)
         = denied
         reason: not executed: its end date 2023-11-14T22:13:30Z passed before it could start",
    );
}

#[test]
fn only_a_change_in_effect_can_end() {
    check(
        "step grant rollback
         verify: response.json.member == true
         until 60s",
        r#"@0 begin
           @0 timer term_ends
           @1s ok
           @2s probe {"member": false}
           @70s wake
           @70s probe {"member": false}
           @70s ok
           @71s cancel erin: too late"#,
        r#"start approved
           @0s approved --begin--> running [call step grant #1] (run.state=running attempt.started)
           @0s running --timer term_ends--> error: run in state `running` cannot take the end of a time-bound change
           @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
           @2s verifying --probe {"member": false}--> verifying [wake @7s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
           @70s verifying --wake--> verifying [call verify verify #2] (attempt.started)
           @70s verifying --probe {"member": false}--> rolling_back [call rollback grant #1] (attempt.finished verify.failed run.state=failed run.state=rolling_back attempt.started)
           @70s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
           @71s needs_human --cancel erin: too late--> error: run in state `needs_human` cannot take a cancellation
           = needs_human
           reason: verification failed within 1m: `response.json.member == true` was false
           completed: grant
           verify deadline: 61s
           verification failed"#,
    );
}
