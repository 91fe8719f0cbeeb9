//! Which events a runbook handles.

use serde_json::json;

use crate::{edit, event, parse};

/// Builds a runbook whose `match` is `matcher` and checks it against events
/// given as `(source, fields, expected)`.
#[track_caller]
fn check(matcher: &str, cases: &[(&str, serde_json::Value, bool)]) {
    let text = edit(
        "match:\n  source: servicenow\n  when:\n    - field: fields.signature\n      equals: VPN client service stopped\n",
        &format!("match:\n{matcher}"),
    );
    let runbook = parse(&text);
    for (source, fields, expected) in cases {
        let event = event(source, "PC-0042", fields.clone());
        assert_eq!(
            runbook.matches(&event),
            *expected,
            "{source} {fields} against\n{matcher}"
        );
    }
}

#[test]
fn source_and_kind() {
    check(
        "  source: servicenow\n",
        &[
            ("servicenow", json!({}), true),
            ("alertmanager", json!({}), false),
        ],
    );
    check(
        "  kind: incident\n",
        &[("servicenow", json!({}), true), ("jira", json!({}), true)],
    );
    check("  kind: alert\n", &[("servicenow", json!({}), false)]);
}

#[test]
fn equals() {
    let matcher = "  when:\n    - field: fields.signature\n      equals: stopped\n";
    check(
        matcher,
        &[
            ("x", json!({"signature": "stopped"}), true),
            ("x", json!({"signature": "Stopped"}), false),
            ("x", json!({}), false),
        ],
    );
    check(
        "  when:\n    - field: fields.priority\n      equals: 2\n",
        &[
            ("x", json!({"priority": 2}), true),
            ("x", json!({"priority": 2.0}), true),
            ("x", json!({"priority": "2"}), true),
            ("x", json!({"priority": "two"}), false),
        ],
    );
    check(
        "  when:\n    - field: subject\n      equals: PC-0042\n",
        &[("x", json!({}), true)],
    );
    check(
        "  when:\n    - field: fields.labels.alertname\n      equals: DiskFull\n",
        &[
            ("x", json!({"labels": {"alertname": "DiskFull"}}), true),
            ("x", json!({"labels": "DiskFull"}), false),
        ],
    );
}

#[test]
fn in_a_list() {
    check(
        "  when:\n    - field: fields.env\n      in: [prod, staging]\n",
        &[
            ("x", json!({"env": "staging"}), true),
            ("x", json!({"env": "dev"}), false),
            ("x", json!({}), false),
        ],
    );
}

#[test]
fn exists() {
    check(
        "  when:\n    - field: fields.user\n      exists: true\n",
        &[
            ("x", json!({"user": "ada"}), true),
            ("x", json!({"user": null}), false),
            ("x", json!({}), false),
        ],
    );
    check(
        "  when:\n    - field: fields.user\n      exists: false\n",
        &[("x", json!({"user": "ada"}), false), ("x", json!({}), true)],
    );
}

#[test]
fn at_least() {
    check(
        "  when:\n    - field: fields.percent\n      at_least: 90\n",
        &[
            ("x", json!({"percent": 95}), true),
            ("x", json!({"percent": 90.0}), true),
            ("x", json!({"percent": "95"}), true),
            ("x", json!({"percent": " 89.5 "}), false),
            ("x", json!({"percent": "high"}), false),
            ("x", json!({}), false),
        ],
    );
}

#[test]
fn every_condition_must_hold() {
    let matcher = "  source: alertmanager\n  when:\n    - field: fields.a\n      equals: 1\n    - field: fields.b\n      exists: true\n";
    check(
        matcher,
        &[
            ("alertmanager", json!({"a": 1, "b": true}), true),
            ("alertmanager", json!({"a": 1}), false),
            ("servicenow", json!({"a": 1, "b": true}), false),
        ],
    );
}

#[test]
fn recurrence_is_parsed_but_left_to_the_runtime() {
    let runbook = parse(&edit(
        "  source: servicenow\n",
        "  source: servicenow\n  recurrence: { count: 3, window: 24h, key: [subject, fields.signature] }\n",
    ));
    let first = event(
        "servicenow",
        "PC-0042",
        json!({"signature": "VPN client service stopped"}),
    );
    assert!(
        runbook.matches(&first),
        "one event matches; counting is the runtime's job"
    );
    let recurrence = runbook.matcher.recurrence.as_ref().unwrap();
    let mut again = first.clone();
    again.id = "evt-2".into();
    assert_eq!(recurrence.key_for(&first), recurrence.key_for(&again));
    assert_eq!(
        recurrence.key_for(&first),
        r#"["PC-0042","VPN client service stopped"]"#
    );
    let other = event(
        "servicenow",
        "PC-0043",
        json!({"signature": "VPN client service stopped"}),
    );
    assert_ne!(recurrence.key_for(&first), recurrence.key_for(&other));
}
