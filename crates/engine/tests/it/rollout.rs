//! Batched rollouts: the steps run target by target (`t1`..`tn`), the
//! canary batch first, with a pause between batches; a stop condition
//! halts the rollout, its rollbacks run, and the records list what is
//! done, failed and untouched.

use crate::script::check;

#[test]
fn canary_then_batches_with_a_pause_between() {
    check(
        "step s1 rollback
         rollout 4 canary=1 batch=2 pause=30s",
        "@0 begin
         @1s ok
         @31s wake
         @32s ok
         @33s ok
         @63s wake
         @64s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [wake @31s] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -))
         @31s running --wake--> running [call step s1@t2 #1] (rollout.batch_started(2: t2 t3) attempt.started)
         @32s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @33s running --ok--> running [wake @63s] (attempt.finished rollout.target_finished(t3 done) rollout.batch_finished(2: done t2 t3; failed -))
         @63s running --wake--> running [call step s1@t4 #1] (rollout.batch_started(3: t4) attempt.started)
         @64s running --ok--> succeeded [] (attempt.finished rollout.target_finished(t4 done) rollout.batch_finished(3: done t4; failed -) rollout.finished(done t1 t2 t3 t4; failed -; untouched -; undo -) run.state=succeeded)
         = succeeded
         done: t1 t2 t3 t4",
    );
}

#[test]
fn a_second_failure_halts_and_the_failed_batch_is_rolled_back() {
    check(
        "step s1 rollback
         step s2 rollback
         rollout 6 canary=1 batch=3 failures=2",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok
         @4s ok
         @5s fail 500
         @6s ok
         @7s fail 500
         @8s ok
         @9s ok
         @10s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s2@t1 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3 t4) attempt.started)
         @3s running --ok--> running [call step s2@t2 #1] (attempt.finished attempt.started)
         @4s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @5s running --fail 500--> running [call step s1@t4 #1] (attempt.finished rollout.target_finished(t3 failed) attempt.started)
         @6s running --ok--> running [call step s2@t4 #1] (attempt.finished attempt.started)
         @7s running --fail 500--> rolling_back [call rollback s1@t4 #1] (attempt.finished rollout.target_finished(t4 failed) rollout.halted(done t1 t2; failed t3 t4; untouched t5 t6; undo t2 t4) run.state=failed run.state=rolling_back attempt.started)
         @8s rolling_back --ok--> rolling_back [call rollback s2@t2 #1] (attempt.finished attempt.started)
         @9s rolling_back --ok--> rolling_back [call rollback s1@t2 #1] (attempt.finished attempt.started)
         @10s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: rollout halted: 2 target(s) failed (`stop_when.failures: 2`)
         done: t1 t2
         failed: t3 t4
         untouched: t5 t6",
    );
}

#[test]
fn all_done_rolls_back_every_target_acted_on() {
    check(
        "step s1 rollback
         rollout 4 canary=1 batch=2 failures=1 all_done",
        "@0 begin
         @1s ok
         @2s ok
         @3s fail 500
         @4s ok
         @5s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @2s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @3s running --fail 500--> rolling_back [call rollback s1@t2 #1] (attempt.finished rollout.target_finished(t3 failed) rollout.halted(done t1 t2; failed t3; untouched t4; undo t1 t2) run.state=failed run.state=rolling_back attempt.started)
         @4s rolling_back --ok--> rolling_back [call rollback s1@t1 #1] (attempt.finished attempt.started)
         @5s rolling_back --ok--> rolled_back [] (attempt.finished run.state=rolled_back)
         = rolled_back
         reason: rollout halted: 1 target(s) failed (`stop_when.failures: 1`)
         done: t1 t2
         failed: t3
         untouched: t4",
    );
}

#[test]
fn a_failure_rate_is_judged_when_a_batch_ends() {
    check(
        "step s1
         rollout 7 canary=1 batch=3 rate=50",
        "@0 begin
         @1s ok
         @2s fail 500
         @3s ok
         @4s ok
         @5s fail 500
         @6s fail 500
         @7s fail 500",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3 t4) attempt.started)
         @2s running --fail 500--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 failed) attempt.started)
         @3s running --ok--> running [call step s1@t4 #1] (attempt.finished rollout.target_finished(t3 done) attempt.started)
         @4s running --ok--> running [call step s1@t5 #1] (attempt.finished rollout.target_finished(t4 done) rollout.batch_finished(2: done t3 t4; failed t2) rollout.batch_started(3: t5 t6 t7) attempt.started)
         @5s running --fail 500--> running [call step s1@t6 #1] (attempt.finished rollout.target_finished(t5 failed) attempt.started)
         @6s running --fail 500--> running [call step s1@t7 #1] (attempt.finished rollout.target_finished(t6 failed) attempt.started)
         @7s running --fail 500--> needs_human [] (attempt.finished rollout.target_finished(t7 failed) rollout.batch_finished(3: done -; failed t5 t6 t7) rollout.halted(done t1 t3 t4; failed t2 t5 t6 t7; untouched -; undo -) run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: rollout halted: 4 of 7 targets failed, at least 50% (`stop_when.failure_rate`)
         done: t1 t3 t4
         failed: t2 t5 t6 t7",
    );
}

#[test]
fn a_failed_verification_halts_when_stop_when_says_so() {
    check(
        "step s1 rollback
         verify within=10s every=5s: response.json.up
         rollout 3 canary=1 batch=2 verify_failed",
        "@0 begin
         @1s ok
         @2s probe {\"up\": true}
         @3s ok
         @4s probe {\"up\": false}
         @9s wake
         @10s probe {\"up\": false}
         @11s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> verifying [call verify verify@t1 #1] (attempt.finished run.state=verifying attempt.started)
         @2s verifying --probe {\"up\": true}--> running [call step s1@t2 #1] (attempt.finished verify.satisfied run.state=running rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @3s running --ok--> verifying [call verify verify@t2 #1] (attempt.finished run.state=verifying attempt.started)
         @4s verifying --probe {\"up\": false}--> verifying [wake @9s] (attempt.finished attempt.retry_scheduled(#2 in 5s))
         @9s verifying --wake--> verifying [call verify verify@t2 #2] (attempt.started)
         @10s verifying --probe {\"up\": false}--> rolling_back [call rollback s1@t2 #1] (attempt.finished verify.failed run.state=running rollout.target_finished(t2 verify_failed) rollout.halted(done t1; failed t2; untouched t3; undo t2) run.state=failed run.state=rolling_back attempt.started)
         @11s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: rollout halted: a target's verification failed (`stop_when.verify_failed`)
         done: t1
         verify_failed: t2
         untouched: t3",
    );
}

#[test]
fn a_freeze_pauses_a_rollout_between_two_steps_and_it_resumes_there() {
    check(
        "step s1
         step s2
         rollout 10 canary=1 batch=3",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok
         @4s ok
         freeze=pause
         @5s ok
         freeze=off
         @60s resume user:olga
         @61s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s2@t1 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3 t4) attempt.started)
         @3s running --ok--> running [call step s2@t2 #1] (attempt.finished attempt.started)
         @4s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @5s running --ok--> paused [] (attempt.finished run.paused(before s2) run.state=paused)
         @60s paused --resume user:olga--> running [call step s2@t3 #1] (run.resumed(user:olga) run.state=running attempt.started)
         @61s running --ok--> running [call step s1@t4 #1] (attempt.finished rollout.target_finished(t3 done) attempt.started)
         = running
         current: step s1 #1 in flight
         done: t1 t2 t3
         untouched: t4 t5 t6 t7 t8 t9 t10",
    );
}

#[test]
fn a_freeze_holds_the_next_batch_before_it_opens() {
    check(
        "step s1
         rollout 3 canary=1 batch=2 pause=30s",
        "@0 begin
         @1s ok
         freeze=pause
         @31s wake
         freeze=off
         @40s resume opsgate
         @41s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [wake @31s] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -))
         @31s running --wake--> paused [] (run.paused(before s1) run.state=paused)
         @40s paused --resume opsgate--> running [call step s1@t2 #1] (run.resumed(opsgate) run.state=running rollout.batch_started(2: t2 t3) attempt.started)
         @41s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         = running
         current: step s1 #1 in flight
         done: t1 t2
         untouched: t3",
    );
}

#[test]
fn a_freeze_that_cancels_a_rollout_undoes_every_target_acted_on() {
    check(
        "step s1 rollback
         step s2 rollback
         rollout 5 canary=1 batch=2",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok
         freeze=cancel
         @4s ok
         freeze=off
         @5s begin
         @6s ok
         @7s ok
         @8s ok
         @9s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s2@t1 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @3s running --ok--> running [call step s2@t2 #1] (attempt.finished attempt.started)
         @4s running --ok--> rolling_back [begin] (attempt.finished rollout.target_finished(t2 done) run.cancelled(user:olga) rollout.halted(done t1 t2; failed -; untouched t3 t4 t5; undo t1 t2) run.state=rolling_back)
         @5s rolling_back --begin--> rolling_back [call rollback s2@t2 #1] (attempt.started)
         @6s rolling_back --ok--> rolling_back [call rollback s1@t2 #1] (attempt.finished attempt.started)
         @7s rolling_back --ok--> rolling_back [call rollback s2@t1 #1] (attempt.finished attempt.started)
         @8s rolling_back --ok--> rolling_back [call rollback s1@t1 #1] (attempt.finished attempt.started)
         @9s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: freeze frz-1 stopped it before step `s1`: incident in progress
         done: t1 t2
         untouched: t3 t4 t5",
    );
}

#[test]
fn the_rest_waits_for_an_approval_after_the_canary() {
    check(
        "step s1
         rollout 3 canary=1 batch=2 approve_after_canary",
        "@0 begin
         @1s ok
         @5s approve user:alice
         @5s begin
         @6s ok
         @7s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) run.state=awaiting_approval approval.requested)
         @5s awaiting_approval --approve user:alice--> running [begin] (approval.granted(user:alice) run.state=running)
         @5s running --begin--> running [call step s1@t2 #1] (rollout.batch_started(2: t2 t3) attempt.started)
         @6s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @7s running --ok--> succeeded [] (attempt.finished rollout.target_finished(t3 done) rollout.batch_finished(2: done t2 t3; failed -) rollout.finished(done t1 t2 t3; failed -; untouched -; undo -) run.state=succeeded)
         = succeeded
         done: t1 t2 t3",
    );
}

#[test]
fn a_denial_after_the_canary_halts_and_keeps_the_canary() {
    check(
        "step s1 rollback
         rollout 3 canary=1 batch=2 approve_after_canary",
        "@0 begin
         @1s ok
         @5s deny user:alice",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) run.state=awaiting_approval approval.requested)
         @5s awaiting_approval --deny user:alice--> needs_human [] (approval.denied(user:alice) rollout.halted(done t1; failed -; untouched t2 t3; undo -) run.state=needs_human)
         = needs_human
         reason: rollout halted: going on past the canary was denied by user:alice
         done: t1
         untouched: t2 t3",
    );
}

#[test]
fn an_unknown_outcome_halts_at_once_and_undoes_nothing() {
    check(
        "step s1 rollback
         rollout 3 canary=1 batch=2 failures=2",
        "@0 begin
         @1s ok
         @2s unknown: connection reset",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @2s running --unknown: connection reset--> needs_human [] (attempt.finished rollout.halted(done t1; failed t2; untouched t3; undo -) run.state=needs_human)
         = needs_human
         reason: rollout halted: step `s1` outcome unknown: connection reset
         done: t1
         failed: t2
         untouched: t3",
    );
}

#[test]
fn a_failure_under_the_limit_goes_on_and_the_end_hands_it_to_a_person() {
    // The failed target's completed steps are undone; the done ones stay.
    check(
        "step s1 rollback
         step s2
         rollout 3 canary=1 batch=2 failures=2",
        "@0 begin
         @1s ok
         @2s ok
         @3s ok
         @4s fail 500
         @5s ok
         @6s ok
         @7s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s2@t1 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @3s running --ok--> running [call step s2@t2 #1] (attempt.finished attempt.started)
         @4s running --fail 500--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 failed) attempt.started)
         @5s running --ok--> running [call step s2@t3 #1] (attempt.finished attempt.started)
         @6s running --ok--> rolling_back [call rollback s1@t2 #1] (attempt.finished rollout.target_finished(t3 done) rollout.batch_finished(2: done t3; failed t2) rollout.finished(done t1 t3; failed t2; untouched -; undo t2) run.state=failed run.state=rolling_back attempt.started)
         @7s rolling_back --ok--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: the rollout reached its end with 1 failed target(s)
         done: t1 t3
         failed: t2",
    );
}

#[test]
fn a_restart_during_the_pause_waits_out_what_is_left_of_it() {
    check(
        "step s1
         rollout 2 canary=1 batch=1 pause=30s",
        "@0 begin
         @1s ok
         @10s recover
         @31s wake
         @32s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [wake @31s] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -))
         @10s running --recover--> running [wake @31s] ()
         @31s running --wake--> running [call step s1@t2 #1] (rollout.batch_started(2: t2) attempt.started)
         @32s running --ok--> succeeded [] (attempt.finished rollout.target_finished(t2 done) rollout.batch_finished(2: done t2; failed -) rollout.finished(done t1 t2; failed -; untouched -; undo -) run.state=succeeded)
         = succeeded
         done: t1 t2",
    );
}

#[test]
fn cancelled_while_waiting_past_the_canary_the_canary_is_undone() {
    check(
        "step s1 rollback
         rollout 3 canary=1 batch=2 approve_after_canary",
        "@0 begin
         @1s ok
         @5s cancel alice: not today
         @5s begin
         @6s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) run.state=awaiting_approval approval.requested)
         @5s awaiting_approval --cancel alice: not today--> rolling_back [begin] (run.cancelled(alice) rollout.halted(done t1; failed -; untouched t2 t3; undo t1) run.state=rolling_back)
         @5s rolling_back --begin--> rolling_back [call rollback s1@t1 #1] (attempt.started)
         @6s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: not today
         done: t1
         untouched: t2 t3",
    );
}

#[test]
fn after_a_restart_the_step_in_flight_is_sent_again_to_the_same_target() {
    check(
        "step s1 idempotent
         step s2
         rollout 3 canary=1 batch=2",
        "@0 begin
         @1s ok
         @2s ok
         @3s recover
         @4s ok
         @5s ok
         @6s ok
         @7s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> running [call step s2@t1 #1] (attempt.finished attempt.started)
         @2s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2 t3) attempt.started)
         @3s running --recover--> running [call step s1@t2 #2] (run.recovered(reissue) attempt.started)
         @4s running --ok--> running [call step s2@t2 #1] (attempt.finished attempt.started)
         @5s running --ok--> running [call step s1@t3 #1] (attempt.finished rollout.target_finished(t2 done) attempt.started)
         @6s running --ok--> running [call step s2@t3 #1] (attempt.finished attempt.started)
         @7s running --ok--> succeeded [] (attempt.finished rollout.target_finished(t3 done) rollout.batch_finished(2: done t2 t3; failed -) rollout.finished(done t1 t2 t3; failed -; untouched -; undo -) run.state=succeeded)
         = succeeded
         done: t1 t2 t3",
    );
}

#[test]
fn a_shadowed_rollout_lists_every_targets_requests() {
    let plan = crate::script::plan(
        "step s1
         rollout 2 canary=1 batch=1",
    );
    let decision = crate::script::decision("allow");
    let shadowed = engine::shadow(&decision, &plan);
    let steps: Vec<(&str, &str)> = shadowed.records[0].detail["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|request| {
            (
                request["step"].as_str().unwrap(),
                request["request"]["target"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [("s1 on t1", "t1"), ("s1 on t2", "t2")]);
}

#[test]
fn a_batch_that_would_pass_the_blast_radius_cap_does_not_start() {
    // The plan's cap is checked again before each batch: a plan whose
    // batches reach past it (it never should) halts before acting more.
    check(
        "step s1 rollback
         rollout 3 canary=1 batch=2 cap=2",
        "@0 begin
         @1s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> needs_human [] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.halted(done t1; failed -; untouched t2 t3; undo -) run.state=failed run.state=rolling_back run.state=needs_human)
         = needs_human
         reason: rollout halted: batch 2 would bring the targets acted on to 3, over the blast-radius cap of 2 (`max_targets`)
         done: t1
         untouched: t2 t3",
    );
}

#[test]
fn a_gated_step_asks_for_its_approval_on_every_target() {
    check(
        "step s1 gated
         rollout 2 batch=2",
        "@0 begin
         @1s approve user:alice
         @1s begin
         @2s ok
         @3s approve user:alice
         @3s begin
         @4s ok",
        "start approved
         @0s approved --begin--> awaiting_approval [] (run.state=running rollout.batch_started(1: t1 t2) run.state=awaiting_approval approval.requested)
         @1s awaiting_approval --approve user:alice--> running [begin] (approval.granted(user:alice) run.state=running)
         @1s running --begin--> running [call step s1@t1 #1] (attempt.started)
         @2s running --ok--> awaiting_approval [] (attempt.finished rollout.target_finished(t1 done) run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --approve user:alice--> running [begin] (approval.granted(user:alice) run.state=running)
         @3s running --begin--> running [call step s1@t2 #1] (attempt.started)
         @4s running --ok--> succeeded [] (attempt.finished rollout.target_finished(t2 done) rollout.batch_finished(1: done t1 t2; failed -) rollout.finished(done t1 t2; failed -; untouched -; undo -) run.state=succeeded)
         = succeeded
         done: t1 t2",
    );
}
