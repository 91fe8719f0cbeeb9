//! Approval chains and mid-run gates: stages in order, who is eligible,
//! distinct people across stages, escalation on a stage's timeout, and a
//! step that waits for its own approval.

use domain::{Decision, DecisionKind, RunState};
use engine::{Escalation, Input, Run, Stage, TimerKind};

use crate::script::{at, check, plan};

#[test]
fn a_gated_step_pauses_the_run_for_its_own_approval() {
    check(
        "step restart-spooler
         step rollback-driver gated",
        "@0 begin
         @1s ok
         @5s approve alice
         @5s begin
         @6s ok",
        "start approved
         @0s approved --begin--> running [call step restart-spooler #1] (run.state=running attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @5s awaiting_approval --approve alice--> running [begin] (approval.granted(alice) run.state=running)
         @5s running --begin--> running [call step rollback-driver #1] (attempt.started)
         @6s running --ok--> succeeded [] (attempt.finished run.state=succeeded)
         = succeeded
         completed: restart-spooler rollback-driver",
    );
}

#[test]
fn a_denied_or_expired_gate_hands_the_run_to_a_person() {
    check(
        "step restart-spooler
         step rollback-driver gated",
        "@0 begin
         @1s ok
         @2s deny bob",
        "start approved
         @0s approved --begin--> running [call step restart-spooler #1] (run.state=running attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @2s awaiting_approval --deny bob--> needs_human [] (approval.denied(bob) run.state=needs_human)
         = needs_human
         reason: step `rollback-driver` was denied by bob; the steps before it ran
         completed: restart-spooler",
    );
    check(
        "step restart-spooler
         step rollback-driver gated",
        "gate require_approval expires=3600s
         @0 approve alice
         @0 begin
         @1s ok
         @3600s timer approval_expiry",
        "start awaiting_approval timers: approval_expiry@3600s
         @0s awaiting_approval --approve alice--> approved [begin] (approval.granted(alice) run.state=approved)
         @0s approved --begin--> running [call step restart-spooler #1] (run.state=running attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested) timers: approval_expiry@3601s
         @3600s awaiting_approval --timer approval_expiry--> needs_human [] (approval.expired run.state=needs_human)
         = needs_human
         reason: approval expired: nobody approved step `rollback-driver` in time; the steps before it ran
         completed: restart-spooler",
    );
}

#[test]
fn a_run_cancelled_at_a_gate_undoes_the_steps_before_it() {
    // The steps before the gate ran: cancelled there, the run is undone
    // as a paused one is, and ends `cancelled` only once it is.
    check(
        "step stop-service rollback
         step patch
         step reboot gated",
        "@0 begin
         @1s ok
         @2s ok
         @3s cancel carol: the change window closed
         @3s begin
         @4s ok",
        "start approved
         @0s approved --begin--> running [call step stop-service #1] (run.state=running attempt.started)
         @1s running --ok--> running [call step patch #1] (attempt.finished attempt.started)
         @2s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --cancel carol: the change window closed--> rolling_back [begin] (run.cancelled(carol) run.state=rolling_back)
         @3s rolling_back --begin--> rolling_back [call rollback stop-service #1] (attempt.started)
         @4s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: the change window closed
         completed: stop-service patch",
    );
    // Nothing before the gate to undo: cancelled at once.
    check(
        "step patch
         step reboot gated",
        "@0 begin
         @1s ok
         @3s cancel carol: not needed",
        "start approved
         @0s approved --begin--> running [call step patch #1] (run.state=running attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --cancel carol: not needed--> cancelled [] (run.cancelled(carol) run.state=rolling_back run.state=cancelled)
         = cancelled
         reason: not needed
         completed: patch",
    );
}

#[test]
fn a_rollout_cancelled_at_a_targets_gate_undoes_what_it_did() {
    // As a paused rollout is: the current target counts as failed, and
    // every target acted on is undone.
    check(
        "step s1 rollback
         step s2 gated
         rollout 2 batch=1",
        "@0 begin
         @1s ok
         @3s approve alice
         @3s begin
         @4s ok
         @5s ok
         @6s cancel carol: stop
         @6s begin
         @7s ok
         @8s ok",
        "start approved
         @0s approved --begin--> running [call step s1@t1 #1] (run.state=running rollout.batch_started(1: t1) attempt.started)
         @1s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @3s awaiting_approval --approve alice--> running [begin] (approval.granted(alice) run.state=running)
         @3s running --begin--> running [call step s2@t1 #1] (attempt.started)
         @4s running --ok--> running [call step s1@t2 #1] (attempt.finished rollout.target_finished(t1 done) rollout.batch_finished(1: done t1; failed -) rollout.batch_started(2: t2) attempt.started)
         @5s running --ok--> awaiting_approval [] (attempt.finished run.state=awaiting_approval approval.requested)
         @6s awaiting_approval --cancel carol: stop--> rolling_back [begin] (run.cancelled(carol) rollout.halted(done t1; failed t2; untouched -; undo t1 t2) run.state=rolling_back)
         @6s rolling_back --begin--> rolling_back [call rollback s1@t2 #1] (attempt.started)
         @7s rolling_back --ok--> rolling_back [call rollback s1@t1 #1] (attempt.finished attempt.started)
         @8s rolling_back --ok--> cancelled [] (attempt.finished run.state=cancelled)
         = cancelled
         reason: stop
         done: t1
         failed: t2",
    );
}

fn stage(name: &str, eligible: &[&str], required: u32) -> Stage {
    let mut stage = Stage::any_approver(required);
    stage.name = name.to_owned();
    stage.eligible = eligible.iter().map(|person| person.to_string()).collect();
    stage
}

fn requires_approval() -> Decision {
    Decision {
        kind: DecisionKind::RequireApproval,
        reasons: vec!["security-posture change".to_owned()],
        expires_after_ms: Some(24 * 3_600_000),
        approvals_required: 1,
        stages: Vec::new(),
        policy_version: None,
    }
}

fn approve(run: &Run, by: &str, now_ms: i64) -> Result<engine::Transition, engine::Error> {
    let input = Input::Approve {
        by: by.to_owned(),
        comment: None,
    };
    engine::step(run, &plan("step grant"), input, at(now_ms), 0.5)
}

#[test]
fn stages_pass_in_order_each_to_its_own_distinct_people() {
    let plan = plan("step grant");
    let chain = vec![
        stage("manager", &["user:mike"], 1),
        stage("security", &["user:mike", "user:sara", "user:tom"], 2),
    ];
    let run = engine::start(&requires_approval(), &plan, chain, at(0)).run;
    assert_eq!(run.state, RunState::AwaitingApproval);

    let wrong = approve(&run, "user:sara", 1).unwrap_err().to_string();
    assert!(
        wrong.contains("wrong person") && wrong.contains("stage `manager`"),
        "{wrong}"
    );
    let run = approve(&run, "user:mike", 2).unwrap().run;
    assert_eq!(
        (run.state, run.progress.stage),
        (RunState::AwaitingApproval, 1)
    );
    let twice = approve(&run, "user:mike", 3).unwrap_err().to_string();
    assert!(
        twice.contains("approved stage `manager` already"),
        "{twice}"
    );
    let run = approve(&run, "user:sara", 4).unwrap().run;
    assert_eq!(run.state, RunState::AwaitingApproval, "two of security");
    let last = approve(&run, "user:tom", 5).unwrap();
    assert_eq!(last.run.state, RunState::Approved);
    assert_eq!(last.effect, Some(engine::Effect::Begin));
    let kinds: Vec<&str> = last
        .records
        .iter()
        .map(|record| record.kind.as_str())
        .collect();
    assert_eq!(kinds, ["approval.granted", "run.state"]);
}

#[test]
fn a_stage_that_times_out_escalates_level_by_level() {
    let plan = plan("step grant");
    let mut manager = stage("manager", &["user:mike"], 1);
    manager.timeout_ms = Some(3_600_000);
    manager.escalations = vec![
        Escalation {
            to: "backup of user:mike".to_owned(),
            people: vec!["user:bob".to_owned()],
        },
        Escalation {
            to: "group:on-call".to_owned(),
            people: vec!["user:alice".to_owned()],
        },
    ];
    let started = engine::start(&requires_approval(), &plan, vec![manager], at(0));
    let due: Vec<_> = started
        .timers
        .iter()
        .map(|timer| (timer.kind, timer.due))
        .collect();
    assert_eq!(
        due,
        [
            (TimerKind::ApprovalExpiry, at(24 * 3_600_000)),
            (TimerKind::StageTimeout, at(3_600_000)),
        ]
    );
    let run = started.run;
    let timeout = |run: &Run, now_ms: i64| {
        engine::step(
            run,
            &plan,
            Input::TimerFired(TimerKind::StageTimeout),
            at(now_ms),
            0.5,
        )
    };
    assert!(
        timeout(&run, 3_599_999).is_err(),
        "not before the stage's deadline"
    );
    assert!(
        approve(&run, "user:bob", 1).is_err(),
        "bob is not yet eligible"
    );

    let first = timeout(&run, 3_600_000).unwrap();
    assert_eq!(first.records[0].kind, "approval.escalated");
    assert_eq!(
        first.records[0].detail["to"],
        serde_json::json!(["user:bob"])
    );
    assert_eq!(first.timers.len(), 1, "the stage waits its timeout again");
    assert_eq!(first.timers[0].due, at(7_200_000));
    let run = first.run;
    assert!(
        timeout(&run, 3_600_001).is_err(),
        "a second firing of the first timeout is stale"
    );

    let second = timeout(&run, 7_200_000).unwrap();
    assert_eq!(
        second.records[0].detail["to"],
        serde_json::json!(["user:alice"])
    );
    let run = second.run;
    let third = timeout(&run, 10_800_000).unwrap();
    assert_eq!(third.records[0].kind, "approval.stage_timed_out");
    assert!(
        third.timers.is_empty(),
        "nobody is left: no further timeout"
    );

    // Mike, his backup and the on-call person may all approve now.
    let approved = approve(&third.run, "user:alice", 10_800_001).unwrap();
    assert_eq!(approved.run.state, RunState::Approved);
}

#[test]
fn the_chain_draws_as_many_people_as_the_decision_asks_for() {
    let plan = plan("step wipe");
    let mut decision = requires_approval();
    decision.approvals_required = 2;
    let run = engine::start(
        &decision,
        &plan,
        vec![stage("owner", &["user:olga"], 1)],
        at(0),
    )
    .run;
    let names: Vec<&str> = run
        .progress
        .stages
        .iter()
        .map(|stage| stage.name.as_str())
        .collect();
    assert_eq!(names, ["owner", "additional approvers"]);
    let run = approve(&run, "user:olga", 1).unwrap().run;
    assert!(
        approve(&run, "user:olga", 2).is_err(),
        "the second approver is someone else"
    );
    assert_eq!(
        approve(&run, "user:bob", 3).unwrap().run.state,
        RunState::Approved
    );
}
