//! Recovery after a restart: what was safe to repeat is repeated, what was
//! not goes to a person, and waits resume at the time they were due.

use engine::Input;
use serde_json::json;

use crate::script::{at, check, decision, plan};

#[test]
fn an_in_flight_idempotent_step_is_reissued_as_the_next_attempt() {
    check(
        "step s1 idempotent
         step s2",
        "@0 begin
         @5s recover
         @6s ok
         @7s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @5s running --recover--> running [call step s1 #2] (run.recovered(reissue) attempt.started)
         @6s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @7s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: s1 s2",
    );
}

#[test]
fn an_in_flight_step_that_is_not_idempotent_needs_a_human() {
    check(
        "step s1 rollback idempotent
         step s2 rollback",
        "@0 begin
         @1s ok
         @5s recover",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @5s running --recover--> needs_human [] (run.recovered(needs_human) attempt.finished run.state=needs_human)
         = needs_human
         reason: step `s2` outcome unknown: opsgate stopped while the call was in flight and the step is not idempotent
         completed: s1",
    );
}

#[test]
fn a_waiting_run_resumes_its_wait() {
    check(
        "step s1 retry=3",
        "@0 begin
         @1s fail 503
         @1.5s recover
         @9s recover
         @9s wake",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --fail 503--> running [wake @1.75s] (attempt.finished attempt.retry_scheduled(#2 in 0.75s))
         @1.5s running --recover--> running [wake @1.75s] ()
         @9s running --recover--> running [wake @1.75s] ()
         @9s running --wake--> running [call step s1 #2] (attempt.started)
         = running
         current: step s1 #2 in flight",
    );
}

#[test]
fn an_approved_run_that_never_started_begins() {
    check(
        "step s1",
        "gate require_approval
         @0 approve alice
         @60s recover",
        "start awaiting_approval
         @0s awaiting_approval --approve alice--> approved [begin] (approval.granted(alice) run.state=approved)
         @60s approved --recover--> running [call step s1 #1] (run.state=running attempt.started)
         = running
         current: step s1 #1 in flight",
    );
    check(
        "step s1",
        "@60s recover",
        "start approved
         @60s approved --recover--> running [call step s1 #1] (run.state=running attempt.started)
         = running
         current: step s1 #1 in flight",
    );
}

#[test]
fn an_in_flight_probe_is_reissued_because_it_only_reads() {
    check(
        "step s1
         verify within=30s every=10s: response.json.ok",
        "@0 begin
         @1s ok
         @5s recover
         @6s probe {\"ok\": true}",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --ok--> verifying [call verify verify #1] (attempt.finished run.state=verifying attempt.started)
         @5s verifying --recover--> verifying [call verify verify #2] (run.recovered(reissue) attempt.started)
         @6s verifying --probe {\"ok\": true}--> succeeded [] (attempt.finished verify.satisfied run.state=succeeded)
         = succeeded
         completed: s1
         verify deadline: 31s",
    );
}

#[test]
fn an_in_flight_rollback_follows_its_steps_idempotency() {
    check(
        "step s1 rollback idempotent
         step s2",
        "@0 begin
         @0 ok
         @1s fail 404
         @5s recover
         @6s ok",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @1s running --fail 404--> rolling_back [call rollback s1 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @5s rolling_back --recover--> rolling_back [call rollback s1 #2] (run.recovered(reissue) attempt.started)
         @6s rolling_back --ok--> rolled_back [] (attempt.finished run.state=rolled_back)
         = rolled_back
         reason: step `s2` failed after 1 attempt: HTTP 404
         completed: s1",
    );
    check(
        "step s1 rollback
         step s2",
        "@0 begin
         @0 ok
         @1s fail 404
         @5s recover",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> running [call step s2 #1] (attempt.finished attempt.started)
         @1s running --fail 404--> rolling_back [call rollback s1 #1] (attempt.finished run.state=failed run.state=rolling_back attempt.started)
         @5s rolling_back --recover--> needs_human [] (run.recovered(needs_human) attempt.finished run.state=needs_human)
         = needs_human
         reason: step `s2` failed after 1 attempt: HTTP 404; rollback of `s1` outcome unknown: opsgate stopped while the call was in flight and the step is not idempotent
         completed: s1",
    );
}

#[test]
fn a_reissued_attempt_counts_against_the_retry_policy() {
    check(
        "step s1 idempotent retry=2",
        "@0 begin
         @5s recover
         @6s fail 503",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @5s running --recover--> running [call step s1 #2] (run.recovered(reissue) attempt.started)
         @6s running --fail 503--> rolled_back [] (attempt.finished run.state=failed run.state=rolling_back run.state=rolled_back)
         = rolled_back
         reason: step `s1` failed after 2 attempts: HTTP 503",
    );
}

#[test]
fn finished_runs_are_not_recovered() {
    check(
        "step s1",
        "@0 begin
         @0 ok
         @1s recover",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @0s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         @1s succeeded --recover--> error: run in state `succeeded` cannot take a recovery
         = succeeded
         completed: s1",
    );
}

#[test]
fn the_recovery_record_says_what_was_done() {
    let plan = plan("step s1 idempotent");
    let run = engine::start(&decision("allow"), &plan, Vec::new(), at(0)).run;
    let run = engine::step(&run, &plan, Input::Begin, at(0), 0.5)
        .unwrap()
        .run;
    let recovered = engine::step(&run, &plan, Input::Recover, at(5_000), 0.5).unwrap();
    assert_eq!(recovered.records[0].kind, "run.recovered");
    assert_eq!(
        recovered.records[0].detail,
        json!({"step": "s1", "phase": "step", "action": "reissue", "attempt": 2})
    );
}

/// The kinds of `transition`'s records, in order.
fn kinds(transition: &engine::Transition) -> Vec<&'static str> {
    transition
        .records
        .iter()
        .map(|record| record.kind.as_str())
        .collect()
}

#[test]
fn a_run_handed_over_at_a_step_boundary_sends_that_step_once_taken_up_again() {
    let plan = plan("step s1\n step s2");
    let run = engine::start(&decision("allow"), &plan, Vec::new(), at(0)).run;
    let running = engine::step(&run, &plan, Input::Begin, at(0), 0.5)
        .unwrap()
        .run;
    // s1 answers while its instance drains: s2 is not sent.
    let finished =
        engine::step(&running, &plan, crate::script::input("ok"), at(1_000), 0.5).unwrap();
    assert_eq!(kinds(&finished), ["attempt.finished", "attempt.started"]);
    let handed = engine::hand_over(finished, "instance-a", at(1_000));
    assert_eq!(handed.effect, None);
    assert_eq!(kinds(&handed), ["attempt.finished", "run.handed_over"]);
    assert_eq!(
        handed.records[1].detail,
        json!({"by": "instance-a", "phase": "step", "step": "s2", "attempt": 1})
    );
    // Whoever claims it next wakes it, and s2 goes out as its first attempt.
    let recovered = engine::step(&handed.run, &plan, Input::Recover, at(5_000), 0.5).unwrap();
    assert_eq!(recovered.effect, Some(engine::Effect::WakeAt(at(1_000))));
    let woken = engine::step(&recovered.run, &plan, Input::Wake, at(5_000), 0.5).unwrap();
    match woken.effect {
        Some(engine::Effect::Call {
            step_id, attempt, ..
        }) => {
            assert_eq!((step_id.as_str(), attempt), ("s2", 1));
        }
        other => panic!("expected s2's call, got {other:?}"),
    }
    // A transition that starts no call is handed over as it is.
    let done = engine::step(
        &woken.run,
        &plan,
        crate::script::input("ok"),
        at(6_000),
        0.5,
    )
    .unwrap();
    assert_eq!(
        engine::hand_over(done.clone(), "instance-a", at(6_000)),
        done
    );
}
