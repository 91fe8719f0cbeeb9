//! Durable timers on the real server: an approval's expiry fires at its due
//! time — also when it fell due while no opsgate was running — exactly once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Server, Workspace, count_of, event, http_runbook};

/// A runbook whose runs wait at most `expires` for approval.
fn expiring_runbook(expires: &str) -> String {
    http_runbook(
        "gated",
        "gated",
        &[("act", "POST", "/act", "idempotent: true")],
        "",
    )
    .replace(
        "approval: auto",
        &format!("approval: {{ mode: required, expires: {expires} }}"),
    )
}

/// Reads the run until `done` holds, for at most `within`.
pub(crate) async fn run_when(
    server: &Server,
    run_id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let run = server.get(&format!("/v1/runs/{run_id}")).await;
        if done(&run) || std::time::Instant::now() > deadline {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_expiry_that_fell_due_while_opsgate_was_down_fires_after_the_restart() {
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &expiring_runbook("2s"));
    let mut server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let report = server.event(&event("gated", "INC-1")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    assert_eq!(report["state"], "awaiting_approval", "{report:#}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["timers"][0]["kind"], "approval_expiry", "{run:#}");
    assert_eq!(run["timers"][0]["status"], "pending");
    server.kill9();

    // Due while nothing runs.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let server = workspace.start(&[("TARGET", "http://127.0.0.1:9")]);
    let run = run_when(&server, &run_id, Duration::from_secs(10), |run| {
        run["state"] == "expired"
    })
    .await;
    assert_eq!(run["state"], "expired", "{run:#}");
    assert_eq!(
        run["reason"],
        "approval expired: nobody approved the run in time"
    );
    assert_eq!(run["timers"][0]["status"], "fired");
    assert_eq!(count_of(&run, "approval.expired"), 1, "{run:#}");

    // Too late to approve now, and the refusal is audited.
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 409, "{body}");
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(count_of(&run, "run.input_refused"), 1, "{run:#}");
}

#[tokio::test]
async fn an_approval_in_time_disarms_the_expiry() {
    let target = test_support::scripted::Scripted::default();
    target.on(
        "POST /act",
        vec![test_support::scripted::Reply::json(200, json!({}))],
    );
    let target_server = target.start().await.unwrap();
    let workspace = Workspace::new();
    workspace.add_runbook("r.yaml", &expiring_runbook("1500ms"));
    let server = workspace.start(&[("TARGET", &target_server.url)]);
    let report = server.event(&event("gated", "INC-2")).await;
    let run_id = report["run_id"].as_str().unwrap().to_owned();
    let (status, body) = server.approve(&run_id).await;
    assert_eq!(status, 200, "{body}");
    let run = server.wait(&run_id).await;
    assert_eq!(run["state"], "succeeded", "{run:#}");
    // Past the would-be expiry: nothing fires.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let run = server.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["timers"][0]["status"], "disarmed", "{run:#}");
    assert_eq!(count_of(&run, "approval.expired"), 0);
}
