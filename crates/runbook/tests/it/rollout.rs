//! `rollout`: the steps run target by target, in batches — what the
//! format takes, and what a plan of many targets holds.

use std::path::Path;

use serde_json::json;

use crate::MINIMAL;

/// MINIMAL acting on every target of `fields.hosts`, with `rollout` as
/// given (YAML, written after `rollout:`, from line 26).
fn text(rollout: &str) -> String {
    let text = MINIMAL
        .replace(
            "targets: { from: \"[inputs.device_id]\" }",
            "targets: { from: \"event.fields.hosts\", max_targets: 20 }",
        )
        .replace(
            "/devices/{{ inputs.device_id }}/restart",
            "/devices/{{ target }}/restart",
        );
    format!("{text}rollout:\n{rollout}")
}

fn diagnostics(text: &str) -> Vec<String> {
    match runbook::parse_runbook(Path::new("runbook.yaml"), text, connectors::STEP_ACTIONS) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics
            .iter()
            .map(|d| match &d.hint {
                Some(hint) => format!("{}:{}: {} [hint: {hint}]", d.line, d.column, d.message),
                None => format!("{}:{}: {}", d.line, d.column, d.message),
            })
            .collect(),
    }
}

#[track_caller]
fn check(text: &str, expected: &[&str]) {
    assert_eq!(diagnostics(text).join("\n"), expected.join("\n"));
}

#[test]
fn a_rollout_is_refused_with_every_mistake_at_its_line() {
    check(
        &text("  batch: \"120%\"\n  canary: -1\n  pause: 30\n"),
        &[
            "26:10: `batch` in `rollout`: `120%` is not a percentage [hint: write a whole number from 1 to 100 and `%`, in quotes: `\"20%\"`]",
            "27:11: `canary` in `rollout`: -1 is out of range; it must be at least 0",
            "28:10: `pause` in `rollout`: expected a duration such as `30s`, found an integer [hint: give a unit, e.g. `30s` or `500ms`]",
        ],
    );
    check(
        &text("  canary: 1\n"),
        &["26:3: missing required key `batch` in `rollout`"],
    );
    check(
        &text("  batch: 0\n"),
        &["26:10: `batch` in `rollout`: 0 is out of range; it must be at least 1"],
    );
    check(
        &text("  batch: 5\n  approve_after_canary: true\n"),
        &[
            "27:3: `approve_after_canary` needs a canary batch in `rollout` [hint: add `canary: 1` (or more): the approval is asked for once it is done]",
        ],
    );
    check(
        &text("  batch: 5\n  stop_when: { verify_failed: false }\n  rollback: everything\n"),
        &[
            "27:14: `rollout.stop_when` names no condition, so nothing would halt the rollout [hint: give `failures`, `failure_rate` or `verify_failed: true`; leave `stop_when` out to halt at the first failure]",
            "28:13: `rollback` in `rollout`: unknown value `everything` [hint: expected one of: failed_batch, all_done]",
        ],
    );
}

#[test]
fn only_a_rollout_renders_a_step_per_target() {
    // Without `rollout`, the steps are rendered once: there is no `target`.
    let once = MINIMAL.replace(
        "/devices/{{ inputs.device_id }}/restart",
        "/devices/{{ target }}/restart",
    );
    check(
        &once,
        &[
            "23:12: unknown template variable `target` in step `restart` with.url [hint: did you mean `targets`?]",
        ],
    );
}

#[test]
fn a_rollout_cannot_be_time_bound() {
    let text = text("  batch: 5\n").replace(
        "rollout:\n",
        "time_bound: { until: \"2026-12-01\" }\nrollout:\n",
    );
    let found = diagnostics(&text);
    assert!(
        found
            .iter()
            .any(|line| line.contains("`rollout` and `time_bound` cannot be used together")),
        "{found:?}"
    );
}

#[test]
fn a_mistyped_stop_condition_is_named() {
    check(
        &text("  batch: 5\n  stop_when: { failure: 2, failure_rate: 20% }\n"),
        &["27:16: unknown key `failure` in `rollout.stop_when` [hint: did you mean `failures`?]"],
    );
}

/// The plan of `rollout` for an event naming `hosts` targets.
fn plan(rollout: &str, hosts: &[&str]) -> domain::Plan {
    let runbook = crate::parse(&text(rollout));
    let mut env = runbook::TemplateEnv::default();
    env.vars.insert("API".into(), "https://api.example".into());
    let event = crate::event(
        "servicenow",
        "fleet",
        json!({"signature": "VPN client service stopped", "hosts": hosts}),
    );
    runbook.plan(&event, &env).expect("the plan is made")
}

#[test]
fn each_target_gets_its_own_steps_and_the_batches_are_counted() {
    let hosts = [
        "web-1", "web-2", "web-3", "web-4", "web-5", "web-6", "web-7",
    ];
    let plan = plan("  canary: 1\n  batch: 2\n  pause: 30s\n", &hosts);
    let rollout = plan.rollout.as_ref().expect("a rollout");
    let urls: Vec<&str> = rollout
        .targets
        .iter()
        .map(|target| target.steps[0].call.request["url"].as_str().unwrap())
        .collect();
    assert_eq!(urls[0], "https://api.example/devices/web-1/restart");
    assert_eq!(urls[6], "https://api.example/devices/web-7/restart");
    assert_eq!(rollout.batches, [1, 2, 2, 2]);
    assert_eq!(rollout.pause_ms, 30_000);
    assert_eq!(rollout.max_targets, 20);
    // Without `stop_when`, the first failure halts.
    assert_eq!(rollout.stop_when.failures, Some(1));
    assert!(rollout.stop_when.verify_failed);
    // The plan's own steps are the first target's.
    assert_eq!(plan.steps, rollout.targets[0].steps);
    assert_eq!(plan.plan_hash, plan.compute_hash());
}

#[test]
fn a_share_of_the_targets_is_rounded_up() {
    let check = |rollout: &str, count: usize, expected: &[usize]| {
        let hosts: Vec<String> = (1..=count).map(|n| format!("h{n}")).collect();
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        assert_eq!(
            plan(rollout, &hosts).rollout.unwrap().batches,
            expected,
            "{rollout} on {count}"
        );
    };
    check("  batch: \"20%\"\n", 10, &[2, 2, 2, 2, 2]);
    check("  batch: \"20%\"\n", 7, &[2, 2, 2, 1]);
    check("  batch: \"1%\"\n", 3, &[1, 1, 1]);
    check("  canary: 2\n  batch: \"100%\"\n", 5, &[2, 3]);
    check("  canary: 3\n  batch: 5\n", 2, &[2]);
}

#[test]
fn the_rollout_is_bound_by_the_plan_hash() {
    let hosts = ["web-1", "web-2"];
    let first = plan("  batch: 1\n", &hosts);
    let second = plan("  batch: 2\n", &hosts);
    assert_ne!(first.plan_hash, second.plan_hash);
}
