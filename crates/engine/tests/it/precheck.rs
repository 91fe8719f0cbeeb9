//! The precheck: read just before the first step, so that a run approved
//! an hour ago does not act on a system that healed meanwhile.

use crate::script::check;

#[test]
fn a_problem_still_there_lets_the_first_step_start() {
    check(
        "precheck: response.json.status != 'running'
         step s1",
        "@0 begin
         @1s probe {\"status\": \"stopped\"}
         @2s ok",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --probe {\"status\": \"stopped\"}--> running [call step s1 #1] (attempt.finished precheck.confirmed attempt.started)
         @2s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1",
    );
}

#[test]
fn a_problem_gone_cancels_the_run_before_it_acts() {
    check(
        "precheck: response.json.status != 'running'
         step s1 rollback",
        "@0 begin
         @1s probe {\"status\": \"running\"}",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --probe {\"status\": \"running\"}--> cancelled [] (attempt.finished precheck.cleared run.state=cancelled)
         = cancelled
         reason: not executed: the problem is gone (the precheck `response.json.status != 'running'` no longer holds)",
    );
}

#[test]
fn a_precheck_that_cannot_tell_hands_the_run_to_a_person_without_acting() {
    check(
        "precheck: response.json.status != 'running'
         step s1",
        "@0 begin
         @1s fail 503",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --fail 503--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: not executed: the precheck could not tell whether the problem is still there (the probe failed: HTTP 503)",
    );
    check(
        "precheck: response.json.missing.deeper == 1
         step s1",
        "@0 begin
         @1s probe {\"status\": \"stopped\"}",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --probe {\"status\": \"stopped\"}--> needs_human [] (attempt.finished run.state=needs_human)
         = needs_human
         reason: not executed: the precheck could not tell whether the problem is still there (cannot evaluate the expectation `response.json.missing.deeper == 1`: undefined value: `response.json.missing` is undefined)",
    );
}

#[test]
fn a_precheck_in_flight_at_a_restart_is_read_again() {
    check(
        "precheck: response.json.status != 'running'
         step s1",
        "@0 begin
         @5s recover
         @6s probe {\"status\": \"stopped\"}",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @5s running --recover--> running [call precheck precheck #2] (run.recovered(reissue) attempt.started)
         @6s running --probe {\"status\": \"stopped\"}--> running [call step s1 #1] (attempt.finished precheck.confirmed attempt.started)
         = running
         current: step s1 #1 in flight",
    );
}

#[test]
fn a_freeze_holds_the_first_step_not_the_precheck() {
    check(
        "precheck: response.json.status != 'running'
         step s1",
        "freeze=pause
         @0 begin
         @1s probe {\"status\": \"stopped\"}",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --probe {\"status\": \"stopped\"}--> paused [] (attempt.finished precheck.confirmed run.paused(before s1) run.state=paused)
         = paused
         current: step s1 #0 waiting until 1s",
    );
}

#[test]
fn a_run_paused_before_it_acted_reads_the_problem_again_when_it_resumes() {
    check(
        "precheck: response.json.status != 'running'
         step s1",
        "freeze=pause
         @0 begin
         @1s probe {\"status\": \"stopped\"}
         freeze=off
         @60s resume opsgate
         @61s probe {\"status\": \"running\"}",
        "start approved
         @0s approved --begin--> running [call precheck precheck #1] (run.state=running attempt.started)
         @1s running --probe {\"status\": \"stopped\"}--> paused [] (attempt.finished precheck.confirmed run.paused(before s1) run.state=paused)
         @60s paused --resume opsgate--> running [call precheck precheck #1] (run.resumed(opsgate) run.state=running attempt.started)
         @61s running --probe {\"status\": \"running\"}--> cancelled [] (attempt.finished precheck.cleared run.state=cancelled)
         = cancelled
         reason: not executed: the problem is gone (the precheck `response.json.status != 'running'` no longer holds)",
    );
}
