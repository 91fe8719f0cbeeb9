//! Integration tests of the policy crate, one module per feature, each
//! driven by a small `check` helper and many short cases.

mod decide;
mod directory;
mod guardrails;
mod rego;

use std::path::Path;

use domain::PrincipalKind;
use domain::{Event, EventStatus, Plan};
use jiff::Timestamp;
use policy::{Facts, RecentRuns, Requester};
use runbook::Runbook;

/// A runbook with `guardrails` (YAML lines indented by two spaces, or
/// empty), `max_targets` and `approval` as given.
pub fn runbook_with(guardrails: &str, max_targets: u32, approval: &str) -> Runbook {
    let guardrails = if guardrails.is_empty() {
        String::new()
    } else {
        format!("guardrails:\n{guardrails}")
    };
    let text = format!(
        r#"id: recycle-app-pool
title: Recycle an IIS application pool
owner: web-team
risk: reversible
match:
  source: servicenow
targets: {{ from: "event.fields.hosts", max_targets: {max_targets} }}
{guardrails}approval: {approval}
steps:
  - id: recycle
    action: http.request
    with: {{ method: POST, url: "{{{{ env.API }}}}/recycle" }}
"#
    );
    runbook::parse_runbook(
        Path::new("recycle-app-pool.yaml"),
        &text,
        connectors::STEP_ACTIONS,
    )
    .unwrap_or_else(|diagnostics| {
        let rendered: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        panic!("expected a valid runbook, got:\n{}", rendered.join("\n"))
    })
}

/// A plan of `runbook` acting on `targets` (the steps do not matter here).
pub fn plan(runbook: &Runbook, targets: &[&str]) -> Plan {
    Plan {
        precheck: None,
        runbook_id: runbook.id.clone(),
        runbook_version: runbook.version.clone(),
        title: runbook.title.clone(),
        risk: runbook.risk,
        inputs: serde_json::json!({}),
        targets: targets.iter().map(|target| target.to_string()).collect(),
        steps: Vec::new(),
        verify: None,
        ends_at: None,
        on_call: None,
        rollout: None,
        plan_hash: String::new(),
    }
}

pub fn event(environment: Option<&str>, received_at: &str) -> Event {
    let fields = match environment {
        Some(environment) => serde_json::json!({ "environment": environment }),
        None => serde_json::json!({}),
    };
    Event {
        id: "evt-1".into(),
        source: "servicenow".into(),
        kind: "incident".into(),
        dedup_key: "INC0012345".into(),
        subject: "web-01".into(),
        fields,
        status: EventStatus::Open,
        received_at: at(received_at),
        occurred_at: None,
    }
}

pub fn at(timestamp: &str) -> Timestamp {
    timestamp
        .parse()
        .unwrap_or_else(|error| panic!("`{timestamp}`: {error}"))
}

/// Facts at `now` for a user `alice` in production, with no recent runs.
pub fn facts(now: &str) -> Facts {
    Facts {
        now: at(now),
        environment: Some("production".into()),
        requester: Requester {
            kind: PrincipalKind::User,
            name: "alice".into(),
            confidence: None,
        },
        recent_runs: Some(RecentRuns::default()),
        global_rate_limit: None,
    }
}
