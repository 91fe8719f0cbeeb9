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
    let run = engine::initial_state(&Decision {
        kind: DecisionKind::RequireApproval,
        reasons: vec!["irreversible".to_owned()],
    });
    let approve = Input::Approve {
        by: "alice".to_owned(),
        comment: Some("checked the dashboard".to_owned()),
    };
    let transition = engine::step(&run, &plan, approve, at(0), 0.5).expect("approvable");
    let records: Vec<_> = transition
        .records
        .iter()
        .map(|record| (record.kind, record.detail.clone()))
        .collect();
    assert_eq!(
        records,
        [
            (
                "approval.granted",
                json!({"by": "alice", "comment": "checked the dashboard", "plan_hash": plan.plan_hash}),
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
