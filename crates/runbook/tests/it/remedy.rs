//! `then_if_unverified`: a second remedy, tried when the steps did not
//! verify — what the format takes, and what the plan carries of it.

use std::path::Path;

use serde_json::json;

use crate::MINIMAL;

const VERIFY: &str = "verify:
  probe: { action: http.request, with: { method: GET, url: \"{{ env.API }}/devices/{{ inputs.device_id }}\" } }
  expect: response.json.ok
";

const SECOND_REMEDY: &str = "then_if_unverified:
  - id: rollback-driver
    action: http.request
    with:
      method: POST
      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/driver/rollback\"
  - id: restart-again
    action: http.request
    with:
      method: POST
      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"
";

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
fn the_second_remedy_follows_the_steps_and_its_first_step_is_gated() {
    let runbook = crate::parse(&format!(
        "{MINIMAL}{VERIFY}{SECOND_REMEDY}on_failure: {{ escalate_to: \"group:endpoint-oncall\" }}\n"
    ));
    let steps: Vec<(&str, bool, bool)> = runbook
        .steps
        .iter()
        .map(|step| (step.id.as_str(), step.if_unverified, step.requires_approval))
        .collect();
    assert_eq!(
        steps,
        [
            ("restart", false, false),
            ("rollback-driver", true, true),
            ("restart-again", true, false),
        ]
    );
    let mut env = runbook::TemplateEnv::default();
    env.vars
        .insert("API".into(), "https://endpoint.example".into());
    let event = crate::event(
        "servicenow",
        "ws-01",
        json!({"signature": "VPN client service stopped"}),
    );
    let plan = runbook.plan(&event, &env).unwrap();
    assert_eq!(plan.on_call.as_deref(), Some("group:endpoint-oncall"));
    assert!(plan.steps[1].if_unverified && plan.steps[1].requires_approval);
}

#[test]
fn the_second_remedy_may_go_ungated_when_the_runbook_says_so() {
    let text = format!("{MINIMAL}{VERIFY}{SECOND_REMEDY}").replace(
        "  - id: rollback-driver\n",
        "  - id: rollback-driver\n    requires_approval: false\n",
    );
    let runbook = crate::parse(&text);
    assert!(!runbook.steps[1].requires_approval);
}

#[test]
fn a_second_remedy_is_refused_without_verify_empty_or_reusing_a_step_id() {
    check(
        &format!("{MINIMAL}{SECOND_REMEDY}"),
        &[
            "25:1: `then_if_unverified` needs `verify` [hint: the second remedy runs only when the runbook's verification fails after the first; without `verify` it never would]",
        ],
    );
    check(
        &format!("{MINIMAL}{VERIFY}then_if_unverified: []\n"),
        &[
            "28:21: `then_if_unverified` is empty [hint: write the second remedy's steps, or leave `then_if_unverified` out]",
        ],
    );
    check(
        &format!("{MINIMAL}{VERIFY}{SECOND_REMEDY}")
            .replace("- id: restart-again", "- id: restart"),
        &[
            "34:9: step id `restart` is used twice [hint: it is first used on line 19; step ids must be unique within a runbook]",
        ],
    );
}
