//! Before a run starts: the gate's decision, approval, denial, cancellation.

use domain::{Decision, DecisionKind, RunState};
use engine::Input;
use serde_json::json;

use crate::script::{at, check, plan};

#[test]
fn the_gate_decides_the_initial_state() {
    check(
        "step s1",
        "gate allow",
        "start approved
         = approved",
    );
    check(
        "step s1",
        "gate require_approval",
        "start awaiting_approval
         = awaiting_approval",
    );
    check(
        "step s1",
        "gate deny: touches production; outside the change window",
        "start denied
         = denied
         reason: touches production; outside the change window",
    );
}

#[test]
fn an_approval_asks_the_runtime_to_begin() {
    check(
        "step s1",
        "gate require_approval
         @0 approve alice
         @10ms begin",
        "start awaiting_approval
         @0s awaiting_approval --approve alice--> approved [begin] (approval.granted(alice) run.state=approved)
         @0.01s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         = running
         current: step s1 #1 in flight",
    );
}

#[test]
fn a_denial_ends_the_run() {
    check(
        "step s1",
        "gate require_approval
         @0 deny bob
         @1s approve alice
         @1s begin",
        "start awaiting_approval
         @0s awaiting_approval --deny bob--> denied [] (approval.denied(bob) run.state=denied)
         @1s denied --approve alice--> error: run in state `denied` cannot take an approval
         @1s denied --begin--> error: run in state `denied` cannot take a start
         = denied
         reason: denied by bob",
    );
}

#[test]
fn a_run_is_cancelled_only_before_it_starts() {
    check(
        "step s1",
        "gate require_approval
         @0 cancel carol: duplicate of run 41",
        "start awaiting_approval
         @0s awaiting_approval --cancel carol: duplicate of run 41--> cancelled [] (run.cancelled(carol) run.state=cancelled)
         = cancelled
         reason: duplicate of run 41",
    );
    check(
        "step s1",
        "@0 cancel carol: maintenance
         @0 begin",
        "start approved
         @0s approved --cancel carol: maintenance--> cancelled [] (run.cancelled(carol) run.state=cancelled)
         @0s cancelled --begin--> error: run in state `cancelled` cannot take a start
         = cancelled
         reason: maintenance",
    );
    check(
        "step s1",
        "@0 begin
         @1s cancel carol: too slow",
        "start approved
         @0s approved --begin--> running [call step s1 #1] (run.state=running attempt.started)
         @1s running --cancel carol: too slow--> error: run in state `running` cannot take a cancellation
         = running
         current: step s1 #1 in flight",
    );
}

#[test]
fn inputs_that_do_not_apply_are_refused() {
    check(
        "step s1",
        "gate require_approval
         @0 begin
         @0 wake
         @0 ok
         @0 recover
         @0 approve alice
         @0 approve alice
         @0 deny bob",
        "start awaiting_approval
         @0s awaiting_approval --begin--> error: run in state `awaiting_approval` cannot take a start
         @0s awaiting_approval --wake--> error: run in state `awaiting_approval` cannot take a timer
         @0s awaiting_approval --ok--> error: run in state `awaiting_approval` cannot take a call result
         @0s awaiting_approval --recover--> error: run in state `awaiting_approval` cannot take a recovery
         @0s awaiting_approval --approve alice--> approved [begin] (approval.granted(alice) run.state=approved)
         @0s approved --approve alice--> error: run in state `approved` cannot take an approval
         @0s approved --deny bob--> error: run in state `approved` cannot take a denial
         = approved",
    );
}

#[test]
fn approval_records_carry_who_why_and_the_plan_hash() {
    let plan = plan("step s1");
    let run = engine::start(
        &Decision {
            kind: DecisionKind::RequireApproval,
            reasons: vec!["irreversible".to_owned()],
            expires_after_ms: None,
            approvals_required: 1,
            stages: Vec::new(),
            policy_version: None,
        },
        &plan,
        Vec::new(),
        at(0),
    )
    .run;
    let approve = Input::Approve {
        by: "alice".to_owned(),
        comment: Some("checked the dashboard".to_owned()),
    };
    let transition = engine::step(&run, &plan, approve, at(0), 0.5).expect("approvable");
    let records: Vec<_> = transition
        .records
        .iter()
        .map(|record| (record.kind.as_str(), record.detail.clone()))
        .collect();
    assert_eq!(
        records,
        [
            (
                "approval.granted",
                json!({
                    "by": "alice", "comment": "checked the dashboard", "plan_hash": plan.plan_hash,
                    "stage": "approval", "approvals": 1, "needed": 1,
                }),
            ),
            (
                "run.state",
                json!({"from": "awaiting_approval", "to": "approved"}),
            ),
        ]
    );
    assert_eq!(transition.run.state, RunState::Approved);
    assert_eq!(transition.run.reason, None);
}

#[test]
fn a_run_awaiting_approval_asks_for_its_expiry_timer() {
    check(
        "step s1",
        "gate require_approval expires=3600s",
        "start awaiting_approval timers: approval_expiry@3600s
         = awaiting_approval",
    );
    // An allowed or denied run waits for nobody: no expiry.
    check(
        "step s1",
        "gate allow expires=3600s",
        "start approved
         = approved",
    );
}

#[test]
fn an_expiry_ends_a_run_nobody_approved() {
    check(
        "step s1",
        "gate require_approval expires=3600s
         @3600s timer approval_expiry
         @3600s approve alice",
        "start awaiting_approval timers: approval_expiry@3600s
         @3600s awaiting_approval --timer approval_expiry--> expired [] (approval.expired run.state=expired)
         @3600s expired --approve alice--> error: run in state `expired` cannot take an approval
         = expired
         reason: approval expired: nobody approved the run in time",
    );
}

#[test]
fn an_expiry_after_the_approval_is_refused() {
    check(
        "step s1",
        "gate require_approval expires=3600s
         @10s approve alice
         @3600s timer approval_expiry",
        "start awaiting_approval timers: approval_expiry@3600s
         @10s awaiting_approval --approve alice--> approved [begin] (approval.granted(alice) run.state=approved)
         @3600s approved --timer approval_expiry--> error: run in state `approved` cannot take an approval expiry
         = approved",
    );
}

#[test]
fn a_decision_that_changed_before_the_start_stops_the_approved_run() {
    let plan = plan("step s1");
    let approved = engine::start(
        &crate::script::decision("require_approval"),
        &plan,
        Vec::new(),
        at(0),
    )
    .run;
    let approved = engine::step(
        &approved,
        &plan,
        Input::Approve {
            by: "alice".into(),
            comment: None,
        },
        at(1_000),
        0.5,
    )
    .unwrap()
    .run;
    let reasons = vec!["freeze `year-end` is in force".to_owned()];
    let stopped = engine::step(
        &approved,
        &plan,
        Input::DecisionChanged { reasons },
        at(2_000),
        0.5,
    )
    .unwrap();
    assert_eq!(stopped.run.state, RunState::Denied);
    assert_eq!(stopped.effect, None, "nothing is called");
    assert_eq!(stopped.records[0].kind, "decision.changed");
    assert!(
        stopped.run.reason.as_deref().unwrap().contains("year-end"),
        "{:?}",
        stopped.run.reason
    );
    // Once running, the gate has had its say.
    let running = engine::step(&approved, &plan, Input::Begin, at(2_000), 0.5)
        .unwrap()
        .run;
    let late = Input::DecisionChanged { reasons: vec![] };
    assert!(engine::step(&running, &plan, late, at(3_000), 0.5).is_err());
}

#[test]
fn a_run_needing_two_approvals_waits_for_a_second_distinct_person() {
    check(
        "step s1",
        "gate require_approval approvals=2
         @0 approve alice
         @1s approve alice
         @2s approve bob",
        "start awaiting_approval
         @0s awaiting_approval --approve alice--> awaiting_approval [] (approval.granted(alice))
         @1s awaiting_approval --approve alice--> error: alice approved stage `approval` already: it needs 2 approvals from distinct people
         @2s awaiting_approval --approve bob--> approved [begin] (approval.granted(bob) run.state=approved)
         = approved",
    );
}
