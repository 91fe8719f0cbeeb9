//! `rollout`: the steps run target by target, in batches — what the
//! format takes, and what a plan of many targets holds.

use std::path::Path;

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
fn a_rollout_is_refused_until_opsgate_carries_it_out() {
    check(
        &text("  canary: 1\n  batch: \"20%\"\n"),
        &[
            "27:3: `rollout` is not carried out by this version of opsgate [hint: remove `rollout` to act on every target at once]",
        ],
    );
}
