//! Random walks through the machine: whatever arrives in whatever order,
//! the engine neither panics nor breaks the invariants the harness checks
//! after every transition, and a finished run stays finished.
//!
//! A seeded generator keeps it reproducible and free of dependencies; a
//! failure names the seed and the inputs that led to it.

use domain::{Decision, DecisionKind, Plan};
use engine::Run;

use crate::script::{at, check_invariants, freeze, input, plan};

/// xorshift64*: enough randomness to wander, the same walk every time.
struct Generator(u64);

impl Generator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const PLANS: [&str; 5] = [
    "step s1",
    "precheck: response.json.ok == false
     step s1 rollback idempotent
     step s2 rollback",
    "step s1 rollback idempotent retry=3
     step s2 rollback retry=2 on=503,connect
     step s3
     verify within=20s every=3s: response.json.ok",
    "verify within=5s every=1s: response.json.ok",
    "step s1 rollback
     step s2 rollback idempotent retry=4 nojitter
     verify within=9s every=4s: response.json.ok == true",
];

const INPUTS: [&str; 17] = [
    "begin",
    "wake",
    "recover",
    "resume olga",
    "approve alice",
    "deny bob",
    "cancel carol: changed my mind",
    "ok",
    "probe {\"ok\": true}",
    "probe {\"ok\": false}",
    "probe {\"state\": \"starting\"}",
    "fail 503",
    "fail 503 retry-after=4s",
    "fail 404",
    "fail connect",
    "fail timeout",
    "unknown: lost",
];

#[test]
fn random_walks_keep_the_invariants() {
    let plans: Vec<Plan> = PLANS.iter().map(|spec| plan(spec)).collect();
    let mut generator = Generator(0x0b5_9a7e);
    for walk in 0..400 {
        let plan = &plans[walk % plans.len()];
        let kind = match generator.below(3) {
            0 => DecisionKind::Allow,
            1 => DecisionKind::RequireApproval,
            _ => DecisionKind::Deny,
        };
        let mut run = engine::start(
            &Decision {
                kind,
                reasons: vec!["policy".to_owned()],
                expires_after_ms: None,
                approvals_required: 1,
                stages: Vec::new(),
                policy_version: None,
            },
            plan,
            Vec::new(),
            at(0),
        )
        .run;
        let mut now_ms = 0;
        let mut history = Vec::new();
        for _ in 0..60 {
            if run.state.is_terminal() {
                assert_finished(&run, plan, now_ms, &history);
                break;
            }
            // Favour the inputs that move a run along, so walks get far.
            let text = if generator.below(3) == 0 {
                INPUTS[generator.below(INPUTS.len() as u64) as usize]
            } else {
                likely_input(&run, &mut generator)
            };
            now_ms += generator.below(6_000) as i64;
            history.push(format!("@{now_ms}ms {text}"));
            // Now and then an operator's freeze covers the run.
            let hold = match generator.below(10) {
                0 => freeze("pause"),
                1 => freeze("cancel"),
                _ => None,
            };
            let unit = generator.unit();
            match engine::step_held(&run, plan, input(text), at(now_ms), unit, hold.as_ref()) {
                Ok(transition) => {
                    check_invariants(plan, &transition);
                    check_state_records(&run, &transition, &history);
                    run = transition.run;
                }
                Err(engine::Error::InvalidInput { state, .. }) => {
                    assert_eq!(state, run.state, "after {history:#?}")
                }
                Err(engine::Error::ApprovalRefused { reason }) => {
                    assert!(reason.contains("already"), "{reason} after {history:#?}")
                }
            }
        }
    }
}

/// An input that applies to a run in this state, picked at random.
fn likely_input(run: &Run, generator: &mut Generator) -> &'static str {
    use domain::RunState::*;
    let choices: &[&str] = match run.state {
        AwaitingApproval => &["approve alice", "approve alice", "deny bob"],
        Approved => &["begin", "begin", "recover"],
        Paused => &["resume olga", "resume olga", "cancel carol: stop it"],
        Running | Verifying | RollingBack => &[
            "ok",
            "ok",
            "probe {\"ok\": true}",
            "probe {\"ok\": false}",
            "fail 503",
            "fail 404",
            "wake",
            "wake",
            "recover",
        ],
        _ => &["begin"],
    };
    choices[generator.below(choices.len() as u64) as usize]
}

/// The `run.state` records chain from the old state to the new one.
fn check_state_records(before: &Run, transition: &engine::Transition, history: &[String]) {
    let mut state = before.state.as_str();
    for record in transition
        .records
        .iter()
        .filter(|record| record.kind == "run.state")
    {
        assert_eq!(record.detail["from"], state, "after {history:#?}");
        state = record.detail["to"].as_str().expect("a state");
    }
    assert_eq!(state, transition.run.state.as_str(), "after {history:#?}");
}

fn assert_finished(run: &Run, plan: &Plan, now_ms: i64, history: &[String]) {
    for text in INPUTS {
        let result = engine::step(run, plan, input(text), at(now_ms), 0.5);
        assert!(
            result.is_err(),
            "a {} run took `{text}` after {history:#?}",
            run.state
        );
    }
}
