//! Shadow mode: a run is matched, planned and decided, and stops before
//! any call, saying what it would have done and every request it would
//! have sent.

use domain::RunState;
use engine::Input;
use serde_json::json;

use crate::script::{at, decision, plan};

#[test]
fn a_shadowed_run_is_born_finished_with_every_request_it_would_have_sent() {
    let plan = plan(
        "precheck: response.json.status != 'running'
         step s1 rollback
         step s2
         verify: response.json.ok",
    );
    for (gate, would) in [
        ("allow", "run"),
        ("require_approval", "ask for approval"),
        ("deny: too risky", "refuse"),
    ] {
        let shadowed = engine::shadow(&decision(gate), &plan);
        assert_eq!(shadowed.run.state, RunState::Shadowed, "{gate}");
        assert!(shadowed.run.state.is_terminal(), "nothing drives it");
        assert!(shadowed.effect.is_none(), "{gate}: nothing is called");
        assert!(shadowed.timers.is_empty(), "{gate}: nothing waits");
        assert_eq!(
            shadowed.run.reason.as_deref(),
            Some(format!("shadow mode: opsgate would {would}; nothing was executed").as_str())
        );
        let [record] = shadowed.records.as_slice() else {
            panic!("one record: {:?}", shadowed.records);
        };
        assert_eq!(record.kind, domain::RecordKind::RunShadowed);
        assert_eq!(record.detail["would"], would);
        assert_eq!(record.detail["plan_hash"], plan.plan_hash);
        // In the order a live run would send them, each exactly as planned;
        // a rollback is sent only when something fails, so not listed.
        let steps: Vec<&str> = record.detail["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|request| request["step"].as_str().unwrap())
            .collect();
        assert_eq!(steps, ["precheck", "s1", "s2", "verify"]);
        assert_eq!(
            record.detail["requests"][1],
            json!({"step": "s1", "action": "http.request", "request": plan.steps[0].call.request})
        );
    }
}

#[test]
fn a_shadowed_run_is_finished_for_every_input() {
    let plan = plan("step s1");
    let shadowed = engine::shadow(&decision("allow"), &plan);
    for input in [Input::Begin, Input::Recover, Input::Wake] {
        let next = engine::step(&shadowed.run, &plan, input.clone(), at(1_000), 0.5);
        assert!(
            next.as_ref().is_err()
                || next
                    .as_ref()
                    .is_ok_and(|t| t.effect.is_none() && t.run.state == RunState::Shadowed),
            "{input:?} → {next:?}"
        );
    }
}
