//! What the gate costs per decision: the runbook's guardrails alone, and
//! with the six example Rego policies. Run with `cargo bench -p policy`.
//!
//! The case is scenario (f) of the demo: a runbook with two approval stages
//! for a change to a privileged group, planned from its example event.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use domain::{Event, NewEvent};
use policy::{Facts, PolicySet, decide_with_facts, decide_with_policies, policy_input};

fn examples(path: &str) -> String {
    format!("{}/../../examples/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn governance(c: &mut Criterion) {
    let runbook_path = examples("runbooks/grant-vpn-access.yaml");
    let text = std::fs::read_to_string(&runbook_path).expect("the example runbook");
    let runbook = runbook::parse_runbook(Path::new(&runbook_path), &text, connectors::STEP_ACTIONS)
        .expect("a valid runbook");
    let event: NewEvent = serde_json::from_str(
        &std::fs::read_to_string(examples("events/vpn-access-contractor.json"))
            .expect("the example event"),
    )
    .expect("a valid event");
    let event = Event::from_new("evt-bench".to_owned(), event, jiff::Timestamp::now());
    let mut template_env = runbook::TemplateEnv::default();
    template_env.vars.insert(
        "ENDPOINT_API".to_owned(),
        "http://endpoint.example".to_owned(),
    );
    let plan = runbook.plan(&event, &template_env).expect("a plan");
    let facts = Facts::from_event(&event, event.received_at);
    let policies = PolicySet::load(Path::new(&examples("policies"))).expect("the example policies");

    let mut group = c.benchmark_group("decide");
    group.bench_function("guardrails", |b| {
        b.iter(|| decide_with_facts(&runbook, &plan, &event, &facts))
    });
    group.bench_function("guardrails_and_6_rego_policies", |b| {
        b.iter(|| {
            decide_with_policies(&runbook, &plan, &event, &facts, Some(&policies))
                .expect("a decision")
        })
    });
    // The parts of the decision above: the input document, and the
    // policies' answers in one evaluation and, as before, rule by rule.
    group.bench_function("policy_input", |b| {
        b.iter(|| policy_input(&runbook, &plan, &event, &facts))
    });
    let input = policy_input(&runbook, &plan, &event, &facts);
    group.bench_function("6_rego_policies", |b| {
        b.iter(|| policies.evaluate(input.clone()).expect("an outcome"))
    });
    group.bench_function("6_rego_policies_rule_by_rule", |b| {
        b.iter(|| {
            policies
                .evaluate_rule_by_rule(input.clone())
                .expect("an outcome")
        })
    });
    group.finish();
    c.bench_function("load_6_rego_policies", |b| {
        b.iter(|| PolicySet::load(Path::new(&examples("policies"))).expect("the example policies"))
    });
}

criterion_group!(benches, governance);
criterion_main!(benches);
