//! Event values in step URLs, end to end: a subject that tries to walk the
//! path reaches the target as one encoded segment or is refused at plan
//! time, and `opsgate plan` shows the URL exactly as it will be sent.

use serde_json::json;
use test_support::scripted::{Reply, Scripted};

use crate::harness::{Workspace, cli};

const RUNBOOK: &str = r#"
id: restart-device
title: Restart a device
owner: tests
risk: reversible
approval: auto
match:
  kind: device_stopped
targets:
  from: "[event.subject]"
steps:
  - id: restart
    action: http.request
    with: { method: POST, url: "{{ env.TARGET }}/devices/{{ event.subject }}/restart" }
    idempotent: true
"#;

fn stopped(subject: &str, dedup_key: &str) -> serde_json::Value {
    json!({
        "source": "tests", "kind": "device_stopped", "dedup_key": dedup_key,
        "subject": subject, "status": "firing", "fields": {}
    })
}

#[tokio::test]
async fn a_subject_cannot_walk_the_targets_path() {
    let target = Scripted::default();
    let ok = || vec![Reply::json(200, json!({"ok": true}))];
    target.on("POST /admin/restart", ok());
    target.on("POST /devices/..%2F..%2Fadmin/restart", ok());
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("restart.yaml", RUNBOOK);
    let server = workspace.start(&[("TARGET", &target_server.url)]);

    // Encoded, `../../admin` is one segment under /devices/.
    let report = server.event(&stopped("../../admin", "walk-1")).await;
    assert_eq!(report["disposition"], "started_run", "{report:#}");
    let run = server.wait(report["run_id"].as_str().unwrap()).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    assert_eq!(
        run["plan"]["steps"][0]["call"]["request"]["url"],
        format!("{}/devices/..%2F..%2Fadmin/restart", target_server.url)
    );
    assert_eq!(target.calls("POST /devices/..%2F..%2Fadmin/restart"), 1);

    // A dot segment is refused before any run exists.
    for (subject, dedup_key) in [("..", "walk-2"), ("%2e%2e", "walk-3")] {
        let report = server.event(&stopped(subject, dedup_key)).await;
        assert_eq!(report["disposition"], "plan_failed", "{report:#}");
        let message = report["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("refused step `restart` with.url")
                && message.contains("a `.` or `..` path segment"),
            "{report:#}"
        );
        assert!(report["run_id"].is_null(), "{report:#}");
    }

    assert_eq!(target.calls("POST /admin/restart"), 0);
    assert_eq!(target.calls("POST /restart"), 0);
    assert_eq!(target.calls("POST /devices/restart"), 0);
}

#[test]
fn opsgate_plan_shows_the_encoded_url() {
    let workspace = Workspace::new();
    workspace.add_runbook("restart.yaml", RUNBOOK);
    let event = workspace.runbooks().join("../event.json");
    std::fs::write(&event, stopped("../../admin?x=1#y", "plan-1").to_string()).unwrap();
    let (code, stdout, stderr) = cli(&[
        "plan",
        "--event",
        event.to_str().unwrap(),
        "--runbooks",
        workspace.runbooks().to_str().unwrap(),
        "--var",
        "TARGET=http://endpoint.invalid/api",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            r#""url":"http://endpoint.invalid/api/devices/..%2F..%2Fadmin%3Fx%3D1%23y/restart""#
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_plan_that_would_send_a_credential_off_its_hosts_is_refused_before_anyone_approves() {
    // The host comes from the event, so it is known only when the plan is
    // made: that is when the credential's `hosts` refuse it.
    let mut workspace = Workspace::new();
    workspace.add_runbook(
        "restart.yaml",
        &RUNBOOK.replace(
            "with: { method: POST, url: \"{{ env.TARGET }}/devices/{{ event.subject }}/restart\" }",
            "with: { method: POST, url: \"http://{{ event.subject }}.endpoints.example/restart\", credential: endpoints }",
        ),
    );
    workspace.config_yaml = Some(
        "credentials:\n  endpoints:\n    header: { name: X-Api-Key, value: env:TESTS_ENDPOINTS_KEY }\n    hosts: [\"*.allowed.example\"]\n"
            .to_owned(),
    );
    workspace.env = vec![("TESTS_ENDPOINTS_KEY".into(), "k-0123456789abcdef".into())];
    let server = workspace.start(&[]);
    let report = server.event(&stopped("dev-1", "off-hosts-1")).await;
    assert_eq!(report["disposition"], "plan_failed", "{report:#}");
    let message = report["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("credential `endpoints` may only be sent to *.allowed.example"),
        "{message}"
    );
    assert!(report["run_id"].is_null(), "{report:#}");
    let (status, dry_run) = server
        .post("/v1/plan", &stopped("127.0.0.1", "off-hosts-2"))
        .await;
    assert_eq!(status, 200, "{dry_run}");
    assert!(
        dry_run["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`hosts`"),
        "{dry_run:#}"
    );
}
