//! The gate on the real server, with facts only intake knows: how often the
//! runbook already ran on a target (cooldown, anti-flap), and who asks (an
//! agent's confidence).

use serde_json::{Value, json};
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, event, http_runbook};

fn runbook_with_guardrails(guardrails: &str) -> String {
    http_runbook(
        "guarded",
        "guarded",
        &[("act", "POST", "/act", "idempotent: true")],
        &format!("guardrails:\n{guardrails}"),
    )
}

fn reasons(report: &Value) -> String {
    report["decision"]["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .map(|reason| reason.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_cooldown_denies_the_run_that_would_flap_a_target() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook_with_guardrails("  cooldown: { per: target, runs: 2, window: 1h }\n"),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    for incident in ["FLAP-1", "FLAP-2"] {
        let report = server.event(&event("guarded", incident)).await;
        assert_eq!(report["decision"]["kind"], "allow", "{report:#}");
        let run = server.wait(report["run_id"].as_str().unwrap()).await;
        assert_eq!(run["state"], "succeeded");
    }
    let third = server.event(&event("guarded", "FLAP-3")).await;
    assert_eq!(third["decision"]["kind"], "deny", "{third:#}");
    assert_eq!(third["state"], "denied");
    // A denied run never started, and its intake says so.
    assert_eq!(third["disposition"], "denied_run", "{third:#}");
    let message = third["message"].as_str().unwrap();
    assert!(
        message.starts_with("runbook `guarded` matched; the run is denied and will not act"),
        "{message}"
    );
    let reasons = reasons(&third);
    assert!(reasons.contains("HOST-1"), "{reasons}");
    assert_eq!(target.calls("POST /act"), 2, "the third run never acted");
}

#[tokio::test]
async fn an_agent_below_the_confidence_threshold_is_refused_with_reasons() {
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook_with_guardrails("  min_confidence: 0.8\n"),
    );
    let agent = workspace.create_token("triage-bot", "agent");
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let proposal = |dedup_key: &str, confidence: f64| {
        let mut event = event("guarded", dedup_key);
        event["fields"]["confidence"] = json!(confidence);
        event.to_string()
    };
    let (status, unsure) = server
        .post_raw_as(&agent, "/v1/events", &proposal("AGENT-1", 0.55))
        .await;
    assert_eq!(status, 202, "{unsure}");
    assert_eq!(unsure["decision"]["kind"], "deny", "{unsure:#}");
    let reasons = reasons(&unsure);
    assert!(
        reasons.contains("0.55") && reasons.contains("0.8"),
        "{reasons}"
    );

    let (_, sure) = server
        .post_raw_as(&agent, "/v1/events", &proposal("AGENT-2", 0.93))
        .await;
    assert_ne!(sure["decision"]["kind"], "deny", "{sure:#}");
    // A person is not held to an agent's threshold.
    let person = server.event(&event("guarded", "PERSON-1")).await;
    assert_ne!(person["decision"]["kind"], "deny", "{person:#}");
}

#[tokio::test]
async fn an_approved_run_does_not_start_once_a_freeze_has_begun() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    // A freeze that begins two seconds from now, in UTC.
    let starts = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
    let civil = |at: jiff::Timestamp| {
        at.to_zoned(jiff::tz::TimeZone::UTC)
            .datetime()
            .round(jiff::Unit::Second)
            .unwrap()
    };
    let freeze = format!(
        "  freeze:\n    - {{ from: \"{}\", to: \"{}\", time_zone: UTC, reason: change freeze }}\n",
        civil(starts),
        civil(starts + jiff::SignedDuration::from_secs(3600)),
    );
    let workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook_with_guardrails(&freeze).replace("approval: auto", "approval: required"),
    );
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("guarded", "FROZEN-1")).await;
    assert_eq!(report["decision"]["kind"], "require_approval", "{report:#}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();

    // The approver is slow: by now the freeze is in force.
    tokio::time::sleep(std::time::Duration::from_millis(3_000)).await;
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "denied", "{run:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.contains("decision changed") && reason.contains("change freeze"),
        "{reason}"
    );
    assert_eq!(target.calls("POST /act"), 0, "nothing ran");
    assert_eq!(
        crate::harness::count_of(&run, "approval.granted"),
        1,
        "{run:#}"
    );
    assert_eq!(
        crate::harness::count_of(&run, "decision.changed"),
        1,
        "{run:#}"
    );
}

#[tokio::test]
async fn a_global_rate_limit_counts_runs_of_every_runbook() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &runbook_with_guardrails("  environments: []\n"));
    workspace.add_runbook(
        "other.yaml",
        &http_runbook(
            "other",
            "other",
            &[("act", "POST", "/act", "idempotent: true")],
            "",
        ),
    );
    workspace.config_yaml = Some("global_rate_limit: { runs: 2, window: 1h }\n".to_owned());
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let mut first = event("guarded", "GLOBAL-1");
    first["subject"] = json!("HOST-1");
    let mut second = event("other", "GLOBAL-2");
    second["subject"] = json!("HOST-2");
    for incident in [first, second] {
        let report = server.event(&incident).await;
        assert_eq!(report["decision"]["kind"], "allow", "{report:#}");
        server.wait(report["run_id"].as_str().unwrap()).await;
    }
    let mut third = event("guarded", "GLOBAL-3");
    third["subject"] = json!("HOST-3");
    let report = server.event(&third).await;
    assert_eq!(report["decision"]["kind"], "deny", "{report:#}");
    let reasons = reasons(&report);
    assert!(reasons.contains("all runbooks together"), "{reasons}");
    assert_eq!(target.calls("POST /act"), 2);
}

/// Writes `files` (name, Rego text) into a fresh policy directory of the
/// workspace and points the server's config at it.
fn with_policies(workspace: &mut Workspace, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = workspace.dir.path().join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    workspace.config_yaml = Some(format!("policies: {}\n", dir.display()));
    dir
}

const ON_CALL_POLICY: &str = r#"package opsgate.production

require_approval contains "production needs an on-call approval" if {
    input.event.fields.environment == "production"
}
"#;

const FREEZE_POLICY: &str = r#"package opsgate.freeze

deny contains "year-end change freeze: nothing runs" if { true }
"#;

#[tokio::test]
async fn policies_decide_with_their_version_and_a_changed_set_stops_an_approved_run() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook_with_guardrails("  environments: [production]\n"),
    );
    let policies = with_policies(&mut workspace, &[("production.rego", ON_CALL_POLICY)]);
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    let mut production = event("guarded", "POL-1");
    production["fields"]["environment"] = json!("production");
    let report = server.event(&production).await;
    assert_eq!(report["decision"]["kind"], "require_approval", "{report:#}");
    assert!(
        reasons(&report).contains("production: production needs an on-call approval"),
        "{report:#}"
    );
    let version = report["decision"]["policy_version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(version.len(), 64, "a SHA-256: {version}");
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    let decided = crate::harness::timeline(&run)
        .into_iter()
        .find(|(kind, _, _)| kind == "run.decided")
        .expect("a run.decided record");
    assert_eq!(decided.2["policy_version"], version.as_str());

    // The organisation declares a freeze while the run waits; the approval
    // that comes after it does not make the run act.
    drop(server);
    std::fs::write(policies.join("freeze.rego"), FREEZE_POLICY).unwrap();
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "denied", "{run:#}");
    let reason = run["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("freeze") && reason.contains("policy set changed"),
        "{reason}"
    );
    assert_eq!(target.calls("POST /act"), 0, "nothing ran");
}

#[tokio::test]
async fn a_policy_set_that_does_not_load_stops_the_server_with_file_and_line() {
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "r.yaml",
        &runbook_with_guardrails("  environments: [production]\n"),
    );
    let policies = with_policies(
        &mut workspace,
        &[(
            "broken.rego",
            "package opsgate.broken\n\ndeny contains if {\n",
        )],
    );
    let config = workspace.dir.path().join("serve.yaml");
    std::fs::write(&config, workspace.config_yaml.as_deref().unwrap()).unwrap();
    let output = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--runbooks"])
        .arg(workspace.runbooks())
        .args(["--database", &workspace.database_url(), "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}:3:", policies.join("broken.rego").display())),
        "{stderr}"
    );
}

/// An auto-approved run whose verdict rests on its plan alone starts on the
/// decision intake just made; one whose verdict counts other runs (or reads
/// the clock) is decided again before it acts.
#[tokio::test]
async fn a_decision_made_at_intake_stands_only_where_deciding_again_could_not_change_it() {
    let target = Scripted::default();
    target.on("POST /act", vec![Reply::json(200, json!({}))]);
    let target_server = target.start().await.unwrap();
    for (guardrails, stands) in [
        ("  sensitive_targets: [\"db-prod-*\"]\n", true),
        ("  cooldown: { per: target, runs: 2, window: 1h }\n", false),
    ] {
        let mut workspace = Workspace::new();
        workspace.capture_log = true;
        workspace.add_runbook("r.yaml", &runbook_with_guardrails(guardrails));
        let server = workspace.start(&[("TARGET", &target_server.url)]);
        let report = server.event(&event("guarded", "STANDS-1")).await;
        let run_id = report["run_id"].as_str().unwrap().to_owned();
        assert_eq!(server.wait(&run_id).await["state"], "succeeded");
        let log = std::fs::read_to_string(workspace.log_path()).unwrap();
        let stood = log.lines().any(|line| {
            line.contains(&run_id) && line.contains("decided at intake here, on the plan alone")
        });
        assert_eq!(stood, stands, "{guardrails}{log}");
    }
}
