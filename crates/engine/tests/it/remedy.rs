//! Escalating remedies: when the steps did not verify, the second remedy
//! (`then` steps, `if_unverified` in the plan) runs behind its own
//! approval and is verified by the same probe; when it fails too, the run
//! stops — a rollout halts with its lists — and on-call is alerted.

use crate::script::check;

/// A restart, then a driver rollback as the second remedy, verified within
/// 5 s; on-call is endpoint-oncall.
const TWO_REMEDIES: &str = "step restart rollback
         then rollback-driver rollback
         verify within=5s every=5s: response.json.ok
         on_call group:endpoint-oncall";

#[test]
fn the_first_remedy_verifies_and_the_second_never_runs() {
    check(
        "step restart rollback
         then rollback-driver rollback
         verify within=10s every=5s: response.json.ok
         on_call group:endpoint-oncall",
        "@0 begin
         @1s ok
         @2s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> running [call step restart #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: restart
         verify deadline: 11s",
    );
}

#[test]
fn unverified_asks_for_the_second_remedy_which_verifies() {
    check(
        TWO_REMEDIES,
        "@0 begin
         @1s ok
         @2s probe {\"ok\": false}
         @3s approve user:carol
         @3s begin
         @4s ok
         @5s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> running [call step restart #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated run.state=running run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --approve user:carol--> running [begin] (approval.granted(user:carol) run.state=running)
         @3s running --begin--> running [call step rollback-driver #1] (attempt.started)
         @4s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @5s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: restart rollback-driver
         verify deadline: 9s",
    );
}

#[test]
fn a_denied_second_remedy_leaves_the_run_to_a_person() {
    check(
        TWO_REMEDIES,
        "@0 begin
         @1s ok
         @2s probe {\"ok\": false}
         @3s deny user:carol",
        "start approved
         @0s approved --begin--> running [call step restart #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated run.state=running run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --deny user:carol--> needs_human [] (approval.denied(user:carol) run.state=needs_human)
         = needs_human
         reason: the second remedy (step `rollback-driver`) was denied by user:carol; the first remedy ran and did not verify
         completed: restart",
    );
}

#[test]
fn a_second_remedy_that_does_not_verify_rolls_back_and_alerts_on_call() {
    check(
        TWO_REMEDIES,
        "@0 begin
         @1s ok
         @2s probe {\"ok\": false}
         @3s approve user:carol
         @3s begin
         @4s ok
         @5s probe {\"ok\": false}
         @6s ok
         @7s ok",
        "start approved
         @0s approved --begin--> running [call step restart #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated run.state=running run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --approve user:carol--> running [begin] (approval.granted(user:carol) run.state=running)
         @3s running --begin--> running [call step rollback-driver #1] (attempt.started)
         @4s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @5s verifying --probe {\"ok\": false}--> rolling_back [call rollback rollback-driver #1] (attempt.finished verify.failed oncall.alerted(group:endpoint-oncall) run.state=failed run.state=rolling_back attempt.started)
         @6s rolling_back --ok--> rolling_back [call rollback restart #1] (attempt.finished attempt.started)
         @7s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: the second remedy did not fix it: verification failed within 5s: `response.json.ok` was false
         completed: restart rollback-driver
         verify deadline: 9s
         verification failed",
    );
}

#[test]
fn a_second_remedy_that_fails_on_one_target_halts_the_rollout_and_alerts_on_call() {
    check(
        "step restart rollback
         then rollback-driver rollback
         verify within=5s every=5s: response.json.ok
         on_call group:endpoint-oncall
         rollout 5 canary=1 batch=2",
        "@0 begin
         @1s ok
         @2s probe {\"ok\": true}
         @3s ok
         @4s probe {\"ok\": true}
         @5s ok
         @6s probe {\"ok\": false}
         @7s approve user:carol
         @7s begin
         @8s fail 500
         @9s ok
         @10s ok",
        "start approved
         @0s approved --begin--> running [call step restart@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> verifying [call verify verify@t1 #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": true}--> running [call step restart@t2 #1] (attempt.finished verify.satisfied run.state=running rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @3s running --ok--> verifying [call verify verify@t2 #1] (attempt.finished run.state=verifying attempt.started)
         @4s verifying --probe {\"ok\": true}--> running [call step restart@t3 #1] (attempt.finished verify.satisfied run.state=running rollout.target_finished(t2 done) attempt.started)
         @5s running --ok--> verifying [call verify verify@t3 #1] (attempt.finished run.state=verifying attempt.started)
         @6s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated(t3) run.state=running run.state=awaiting_approval approval.requested)
         @7s awaiting_approval --approve user:carol--> running [begin] (approval.granted(user:carol) run.state=running)
         @7s running --begin--> running [call step rollback-driver@t3 #1] (attempt.started)
         @8s running --fail 500--> rolling_back [call rollback restart@t3 #1] (attempt.finished rollout.target_finished(t3 failed) oncall.alerted(group:endpoint-oncall t3) rollout.halted(done t1 t2; failed t3; untouched t4 t5; undo t2 t3) run.state=failed run.state=rolling_back attempt.started)
         @9s rolling_back --ok--> rolling_back [call rollback restart@t2 #1] (attempt.finished attempt.started)
         @10s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: rollout halted: the second remedy did not fix t3: step `rollback-driver` failed after 1 attempt: HTTP 500
         done: t1 t2
         failed: t3
         untouched: t4 t5",
    );
}

#[test]
fn a_denied_second_remedy_halts_the_rollout_where_it_is() {
    check(
        "step restart rollback
         then rollback-driver rollback
         verify within=5s every=5s: response.json.ok
         rollout 3 canary=1 batch=2",
        "@0 begin
         @1s ok
         @2s probe {\"ok\": false}
         @3s deny user:carol",
        "start approved
         @0s approved --begin--> running [call step restart@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> verifying [call verify verify@t1 #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated(t1) run.state=running run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --deny user:carol--> needs_human [] (approval.denied(user:carol) rollout.halted(done -; failed t1; untouched t2 t3; undo -) run.state=needs_human)
         = needs_human
         reason: rollout halted: the second remedy (step `rollback-driver`) on t1 was denied by user:carol; the first did not verify there
         verify_failed: t1
         untouched: t2 t3",
    );
}

#[test]
fn a_second_remedy_nobody_approves_in_time_halts_the_rollout_where_it_is() {
    check(
        "step restart
         then rollback-driver
         verify within=5s every=5s: response.json.ok
         rollout 2",
        "gate require_approval expires=3600s
         @0 approve user:carol
         @0 begin
         @1s ok
         @2s probe {\"ok\": false}
         @3602s timer approval_expiry",
        "start awaiting_approval timers: approval_expiry@3600s
         @0s awaiting_approval --approve user:carol--> approved [begin] (approval.granted(user:carol) run.state=approved)
         @0s approved --begin--> running [call step restart@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> verifying [call verify verify@t1 #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"ok\": false}--> awaiting_approval [] (attempt.finished verify.failed remedy.escalated(t1) run.state=running run.state=awaiting_approval approval.requested) timers: approval_expiry@3602s
         @3602s awaiting_approval --timer approval_expiry--> needs_human [] (approval.expired rollout.halted(done -; failed t1; untouched t2; undo -) run.state=needs_human)
         = needs_human
         reason: rollout halted: nobody approved the second remedy (step `rollback-driver`) in time
         verify_failed: t1
         untouched: t2",
    );
}
