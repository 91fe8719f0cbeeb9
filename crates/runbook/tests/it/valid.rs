//! Valid runbooks: what the model holds, and the version hash.

use domain::{RetryOn, RiskClass};
use runbook::{ApprovalMode, ConditionTest, Recurrence};
use serde_json::json;

use crate::{MINIMAL, edit, fixture, parse};

#[test]
fn the_design_example_parses_into_the_model() {
    let runbook = fixture("restart-endpoint-service.yaml");
    assert_eq!(runbook.id, "restart-endpoint-service");
    assert_eq!(runbook.owner, "endpoint-team");
    assert_eq!(runbook.risk, RiskClass::Reversible);
    assert_eq!(runbook.approval.mode, ApprovalMode::Auto);
    assert_eq!(runbook.matcher.source.as_deref(), Some("servicenow"));
    assert_eq!(runbook.matcher.when.len(), 2);
    assert!(
        matches!(&runbook.matcher.when[1].test, ConditionTest::OneOf(values) if values.len() == 2)
    );
    assert_eq!(
        runbook.matcher.recurrence,
        Some(Recurrence {
            count: 3,
            window_ms: 86_400_000,
            key: vec!["subject".into(), "fields.signature".into()]
        })
    );
    assert_eq!(
        runbook.inputs.from_event.get("service").map(String::as_str),
        Some("vpnagent")
    );
    assert!(
        runbook.inputs.schema.get("from_event").is_none(),
        "from_event is not part of the schema"
    );
    assert_eq!(runbook.targets.max_targets, 1);
    assert_eq!(runbook.guardrails.environments, ["workstation"]);
    assert_eq!(
        runbook
            .guardrails
            .cooldown
            .as_ref()
            .map(|c| (c.runs, c.window_ms)),
        Some((1, 3_600_000))
    );

    let restart = &runbook.steps[1];
    assert_eq!(restart.id, "restart");
    assert_eq!(restart.call.action.name, "http.request");
    assert_eq!(restart.call.timeout_ms, 30_000);
    assert!(restart.idempotent);
    assert_eq!(restart.retry.attempts, 3);
    assert_eq!(restart.retry.multiplier, 2.0);
    assert_eq!(restart.retry.max_delay_ms, 30_000);
    assert_eq!(
        restart.retry.retry_on,
        [
            RetryOn::Connect,
            RetryOn::Timeout,
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(429)
        ]
    );
    let verify = runbook.verify.as_ref().expect("verify");
    assert_eq!((verify.within_ms, verify.every_ms), (60_000, 5_000));
    assert_eq!(
        runbook.on_failure.escalate_to.as_deref(),
        Some("group:endpoint-l2")
    );
    assert!(runbook.writeback.ticket);
    assert_eq!(
        runbook.writeback.close_code.as_deref(),
        Some("Solved (Permanently)")
    );
}

#[test]
fn defaults_are_filled_in() {
    let runbook = parse(MINIMAL);
    assert_eq!(
        runbook.approval.mode,
        ApprovalMode::Required,
        "approval is required unless a runbook says otherwise"
    );
    assert_eq!(runbook.steps[0].retry, domain::RetryPolicy::none());
    assert!(!runbook.steps[0].idempotent);
    assert!(runbook.verify.is_none());
    assert!(runbook.matcher.recurrence.is_none());
    assert!(
        runbook.matcher.rerun.is_none(),
        "one run per problem unless a runbook says otherwise"
    );
    let rerun = parse(&MINIMAL.replace(
        "  source: servicenow\n",
        "  source: servicenow\n  rerun: { after: 90m }\n",
    ));
    assert_eq!(
        rerun.matcher.rerun,
        Some(runbook::Rerun {
            after_ms: 90 * 60 * 1000
        })
    );

    let retried = parse(&format!(
        "{MINIMAL}    retry: {{ attempts: 4, backoff: fixed }}\n"
    ));
    let retry = &retried.steps[0].retry;
    assert_eq!(
        (
            retry.attempts,
            retry.initial_ms,
            retry.max_delay_ms,
            retry.multiplier,
            retry.jitter
        ),
        (4, 1_000, 30_000, 1.0, true)
    );
    assert_eq!(
        retry.retry_on,
        [
            RetryOn::Connect,
            RetryOn::Timeout,
            RetryOn::Status(429),
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504)
        ]
    );

    let command = fixture("rotate-logs-on-full-disk.yaml");
    assert_eq!(command.steps[1].call.action.name, "command.run");
    assert_eq!(command.steps[1].call.with["expect_exit"], json!([0]));
    assert_eq!(
        command.steps[1].retry.retry_on,
        [RetryOn::ExitCode(75), RetryOn::Timeout]
    );
    assert_eq!(
        command.steps[0].rollback.as_ref().map(|r| r.timeout_ms),
        Some(10_000)
    );
    assert_eq!(
        command.verify.as_ref().map(|v| v.probe.timeout_ms),
        Some(30_000)
    );
}

#[test]
fn http_method_defaults_to_get() {
    let runbook = parse(&edit("      method: POST\n", ""));
    assert_eq!(runbook.steps[0].call.with["method"], "GET");
}

#[test]
fn the_version_follows_content_not_formatting() {
    let original = parse(MINIMAL).version;
    assert_eq!(original.len(), 64);

    let reformatted = format!(
        "# A comment changes nothing.\n{}",
        MINIMAL
            .replace(
                "targets: { from: \"[inputs.device_id]\" }",
                "targets:\n  from: '[inputs.device_id]'   # flow → block"
            )
            .replace(
                "    device_id: { type: string }",
                "    device_id:\n      type: string"
            )
    );
    assert_eq!(parse(&reformatted).version, original);

    let reordered = MINIMAL.replace(
        "title: Restart a service\nowner: endpoint-team\n",
        "owner: endpoint-team\ntitle: Restart a service\n",
    );
    assert_eq!(
        parse(&reordered).version,
        original,
        "key order is not content"
    );

    assert_ne!(
        parse(&edit("timeout: 30s", "timeout: 31s")).version,
        original
    );
    assert_ne!(
        parse(&edit(
            "title: Restart a service",
            "title: Restart the service"
        ))
        .version,
        original
    );
}

#[test]
fn the_reference_example_in_the_docs_is_valid() {
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/runbooks.md"
    ))
    .expect("docs/runbooks.md exists");
    let start = docs.find("```yaml\n").expect("a yaml example") + "```yaml\n".len();
    let end = start + docs[start..].find("```").expect("the example ends");
    let from_docs = parse(&docs[start..end]);
    assert_eq!(
        from_docs.version,
        fixture("restart-endpoint-service.yaml").version,
        "the docs show the fixture"
    );
}

#[test]
fn the_repository_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/runbooks");
    let report =
        runbook::load_dir(&dir, connectors::STEP_ACTIONS).expect("examples/runbooks is readable");
    let problems: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!report.catalog.is_empty());
}

#[test]
fn approval_expiry_defaults_to_a_day_and_can_be_set() {
    let default = parse(MINIMAL);
    assert_eq!(default.approval.expires_ms, 24 * 60 * 60 * 1000);
    let short = parse(&edit(
        "risk: reversible",
        "risk: reversible\napproval: { mode: required, expires: 90m }",
    ));
    assert_eq!(
        (short.approval.mode, short.approval.expires_ms),
        (ApprovalMode::Required, 90 * 60 * 1000)
    );
}

#[test]
fn ansible_playbook_check_defaults_to_false() {
    let runbook = parse(&edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        "    action: ansible.playbook\n    with: { playbook: restart.yml, inventory: \"localhost,\" }\n",
    ));
    assert_eq!(runbook.steps[0].call.action.name, "ansible.playbook");
    assert_eq!(
        runbook.steps[0].call.with,
        json!({"playbook": "restart.yml", "inventory": "localhost,", "check": false})
    );
}

#[test]
fn graph_group_membership_takes_its_with_as_written_and_rolls_back_by_hand() {
    let runbook = parse(&edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        "    action: graph.group_membership\n    with: { group_id: \"{{ env.VPN_USERS_GROUP }}\", user_id: \"{{ event.fields.requested_by }}\", ensure: present }\n    rollback:\n      action: graph.group_membership\n      with: { group_id: \"{{ env.VPN_USERS_GROUP }}\", user_id: \"{{ event.fields.requested_by }}\", ensure: absent }\n",
    ));
    let step = &runbook.steps[0];
    assert_eq!(step.call.action.name, "graph.group_membership");
    assert_eq!(
        step.call.with,
        json!({"group_id": "{{ env.VPN_USERS_GROUP }}", "user_id": "{{ event.fields.requested_by }}", "ensure": "present"})
    );
    let rollback = step.rollback.as_ref().expect("a rollback");
    assert_eq!(rollback.action.name, "graph.group_membership");
    assert_eq!(rollback.with["ensure"], "absent");
}

#[test]
fn poll_every_becomes_milliseconds_and_is_left_to_the_connector_when_absent() {
    let awx = parse(&edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        "    action: awx.job_template\n    with: { base_url: \"{{ env.AWX_URL }}\", template_id: 42, extra_vars: { device: \"{{ inputs.device_id }}\" }, credential: awx, poll_every: 10s }\n",
    ));
    assert_eq!(awx.steps[0].call.action.name, "awx.job_template");
    assert_eq!(
        awx.steps[0].call.with,
        json!({"base_url": "{{ env.AWX_URL }}", "template_id": 42, "extra_vars": {"device": "{{ inputs.device_id }}"}, "credential": "awx", "poll_every_ms": 10_000})
    );
    let jenkins = parse(&edit(
        "    action: http.request\n    with:\n      method: POST\n      url: \"{{ env.API }}/devices/{{ inputs.device_id }}/restart\"\n",
        "    action: jenkins.build\n    with: { base_url: \"https://ci.example.com\", job: platform/deploy, credential: jenkins }\n",
    ));
    assert_eq!(jenkins.steps[0].call.action.name, "jenkins.build");
    assert_eq!(
        jenkins.steps[0].call.with,
        json!({"base_url": "https://ci.example.com", "job": "platform/deploy", "credential": "jenkins"})
    );
}

#[test]
fn every_call_and_the_credential_it_names_are_listed() {
    let runbook = parse(&format!(
        "{}    rollback:\n      action: http.request\n      with: {{ method: POST, url: \"{{{{ env.API }}}}/stop\", credential: inventory-rollback }}\nverify:\n  probe:\n    action: http.request\n    with: {{ url: \"{{{{ env.API }}}}/health\", credential: inventory-read }}\n  expect: \"response.status == 200\"\n",
        edit(
            "      method: POST\n",
            "      method: POST\n      credential: inventory-api\n"
        )
    ));
    let calls: Vec<(String, Option<&str>)> = runbook
        .calls()
        .map(|(place, call)| (place, call.credential()))
        .collect();
    assert_eq!(
        calls,
        [
            ("step `restart`".to_owned(), Some("inventory-api")),
            (
                "the rollback of step `restart`".to_owned(),
                Some("inventory-rollback")
            ),
            ("`verify.probe`".to_owned(), Some("inventory-read")),
        ]
    );
    let minimal = parse(MINIMAL);
    let without: Vec<Option<&str>> = minimal.calls().map(|(_, call)| call.credential()).collect();
    assert_eq!(without, [None]);
}

#[test]
fn a_runbook_is_live_unless_it_says_shadow() {
    assert_eq!(parse(MINIMAL).mode, runbook::Mode::Live);
    assert_eq!(
        parse(&format!("{MINIMAL}mode: live\n")).mode,
        runbook::Mode::Live
    );
    assert_eq!(
        parse(&format!("{MINIMAL}mode: shadow\n")).mode,
        runbook::Mode::Shadow {
            hold_ms: runbook::Mode::DEFAULT_SHADOW_HOLD_MS
        },
        "a subject shadowed once is held off for a day unless told"
    );
    assert_eq!(
        parse(&format!("{MINIMAL}mode: shadow\nshadow_hold: 4h\n")).mode,
        runbook::Mode::Shadow {
            hold_ms: 4 * 3_600_000
        }
    );
    // Switching a runbook from shadow to live is a new version.
    assert_ne!(
        parse(MINIMAL).version,
        parse(&format!("{MINIMAL}mode: shadow\n")).version
    );
}
