//! Integration tests of the runbook crate, one module per feature, each
//! driven by a small `check` helper and many short cases.

mod catalog;
mod diagnostics;
mod guardrails;
mod matching;
mod on_failure;
mod plan;
mod remedy;
mod rollout;
mod time_bound;
mod valid;

use std::path::Path;

/// A small valid runbook; cases edit one line of it so that line numbers in
/// expected diagnostics stay easy to read.
pub const MINIMAL: &str = r#"id: restart-service
title: Restart a service
owner: endpoint-team
risk: reversible
match:
  source: servicenow
  when:
    - field: fields.signature
      equals: VPN client service stopped
inputs:
  type: object
  required: [device_id]
  properties:
    device_id: { type: string }
  from_event:
    device_id: "{{ event.subject }}"
targets: { from: "[inputs.device_id]" }
steps:
  - id: restart
    action: http.request
    with:
      method: POST
      url: "{{ env.API }}/devices/{{ inputs.device_id }}/restart"
    timeout: 30s
"#;

/// `MINIMAL` with `from` replaced by `to` (which must occur exactly once).
pub fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        MINIMAL.matches(from).count(),
        1,
        "`{from}` must occur once in MINIMAL"
    );
    MINIMAL.replace(from, to)
}

pub fn parse(text: &str) -> runbook::Runbook {
    runbook::parse_runbook(Path::new("runbook.yaml"), text, connectors::STEP_ACTIONS)
        .unwrap_or_else(|diagnostics| {
            let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("expected a valid runbook, got:\n{}", rendered.join("\n"))
        })
}

pub fn fixture(name: &str) -> runbook::Runbook {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture exists");
    parse(&text)
}

pub fn event(source: &str, subject: &str, fields: serde_json::Value) -> domain::Event {
    domain::Event {
        id: "evt-1".into(),
        source: source.into(),
        kind: "incident".into(),
        dedup_key: "INC0012345".into(),
        subject: subject.into(),
        fields,
        status: domain::EventStatus::Open,
        received_at: "2026-11-20T10:00:00Z".parse().unwrap(),
        occurred_at: None,
    }
}
