//! `opsgate policy test` and `opsgate policy eval` on the example policies,
//! runbooks and events, and on policy directories made to fail.

use crate::harness::cli;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn example(path: &str) -> String {
    format!("{ROOT}/examples/{path}")
}

/// A policy directory holding `files`.
fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a policy");
    }
    dir
}

#[test]
fn the_example_policies_pass_their_tests() {
    let (code, stdout, stderr) = cli(&["policy", "test", &example("policies")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("PASS   production_test.rego:19  data.opsgate.production_test.test_production_needs_on_call"),
        "{stdout}"
    );
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed"), "{stdout}");
}

const OPEN: &str = "package opsgate.open\n\nallow contains \"fine\" if input.fine\n";

#[test]
fn a_failing_test_fails_the_run_and_says_which() {
    let dir = policy_dir(&[
        ("open.rego", OPEN),
        (
            "open_test.rego",
            "package opsgate.open_test\n\nimport data.opsgate.open\n\ntest_fine if {\n\topen.allow == {\"fine\"} with input as {\"fine\": true}\n}\n\ntest_wrong if {\n\topen.allow == {\"fine\"} with input as {\"fine\": false}\n}\n",
        ),
    ]);
    let (code, stdout, stderr) = cli(&["policy", "test", &dir.path().to_string_lossy()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "PASS   open_test.rego:5  data.opsgate.open_test.test_fine\n\
         FAIL   open_test.rego:9  data.opsgate.open_test.test_wrong (was undefined)\n\
         1 passed, 1 failed\n"
    );
}

#[test]
fn a_policy_that_does_not_parse_is_invalid_input_at_its_line() {
    let dir = policy_dir(&[("open.rego", "package opsgate.open\n\nallow contains if {\n")]);
    let (code, stdout, stderr) = cli(&["policy", "test", &dir.path().to_string_lossy()]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("open.rego:3:"), "{stderr}");
}

fn eval(event: &str, extra: &[&str]) -> (i32, String, String) {
    let event = example(event);
    let runbooks = example("runbooks");
    let policies = example("policies");
    let directory = example("directory.yaml");
    let mut args = vec![
        "policy",
        "eval",
        "--event",
        &event,
        "--runbooks",
        &runbooks,
        "--policies",
        &policies,
        "--directory",
        &directory,
        "--at",
        "2026-11-23T10:00:00Z",
        "--var",
        "ENDPOINT_API=http://endpoint.example",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

#[track_caller]
fn assert_lines(stdout: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            stdout.lines().any(|printed| printed == *line),
            "missing line `{line}` in:\n{stdout}"
        );
    }
}

#[test]
fn eval_explains_a_production_restart_rule_by_rule() {
    let (code, stdout, stderr) = eval("events/iis-5xx-spike.json", &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("input\n  {\n"), "{stdout}");
    assert_lines(
        &stdout,
        &[
            "      \"now\": \"2026-11-23T10:00:00Z\",",
            "  pass              environments       environment `production` is one of the runbook's environments",
            "  require_approval  approval           runbook `recycle-iis-web-tier` requires approval",
            "  freeze",
            "    deny              (nothing)",
            "  low_risk",
            "    allow             reversible action on a single target: no approval needed",
            "  production",
            "    require_approval  production actions need on-call approval",
            "    stages            on-call: any of group:on-call, timeout 30m",
            "  combined: require_approval",
            "decision  require_approval",
            "  - production: production actions need on-call approval",
            "stage 1   on-call: any of group:on-call, timeout 30m",
            "          group:on-call → alice, bob",
            "expires   after 1h without a decision",
        ],
    );
    let version = stdout
        .lines()
        .find_map(|line| line.strip_prefix("policy version "))
        .unwrap_or_default();
    assert_eq!(version.len(), 64, "{stdout}");
}

#[test]
fn eval_shows_the_guardrail_that_denies_an_unsure_agent() {
    let (code, stdout, stderr) = eval(
        "events/agent-proposes-iis-restart.json",
        &["--requester", "agent:triage-bot"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_lines(
        &stdout,
        &[
            "  deny              min_confidence     agent `triage-bot` proposed with confidence 0.55, below the runbook's min_confidence 0.8",
            "  agent_confidence",
            "    require_approval  suggest only: agent `triage-bot` proposed with confidence 0.55, below 0.8; a person decides",
            "decision  deny",
            "  - agent `triage-bot` proposed with confidence 0.55, below the runbook's min_confidence 0.8",
        ],
    );
}

#[test]
fn eval_puts_a_privileged_group_to_the_manager_and_security() {
    let (code, stdout, stderr) = eval("events/vpn-access-contractor.json", &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_lines(
        &stdout,
        &[
            "  privileged_access",
            "    require_approval  membership of privileged group `VPN-Users` changes security posture: the requester's manager and security approve",
            "    stages            manager: any of manager_of(requester), timeout 4h",
            "                      security: any of group:security, timeout 4h",
            "decision  require_approval",
            "stage 1   manager: any of manager_of(requester), timeout 4h",
            "          manager_of(requester) → carol (away; frank stands in)",
            "stage 2   security: any of group:security, timeout 4h",
            "          group:security → erin, heidi",
        ],
    );
}
